#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (slow end-to-end tests included) on
# PATHFM_TEST_WORKERS pytest-xdist workers (default 2: most tests run one torch thread or wait for Ray
# processes to start, so two workers keep two cores busy). Every test module runs on one worker
# (tests/conftest.py), so module fixtures are built once. PATHFM_TEST_WORKERS=0 runs in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg XFORMERS_DISABLED=1
exec .venv/bin/python -m pytest -n "${PATHFM_TEST_WORKERS:-2}" --dist loadgroup "$@"
