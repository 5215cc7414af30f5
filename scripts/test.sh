#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (slow end-to-end tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg XFORMERS_DISABLED=1
exec .venv/bin/python -m pytest "$@"
