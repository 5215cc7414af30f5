#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv if needed, then run two small real ablation
# studies of the Midnight recipe at smoke scale on the bundled whole-slide images (local Ray, CPU):
#   1. `component`: DINOv2 baseline -> +KDE -> +HSV filter -> +HED -> +high-res, and leave-one-out, 2 seeds
#   2. `data`: the data-efficiency ladder over nested slide subsets (1, 2, 3 slides), 2 seeds
# Every trial is trained, evaluated on the bundled labelled tiles and recorded; then the ablation table
# (Markdown, LaTeX, CSV) and the data-efficiency figure (PNG, PDF, SVG) are written.
#
#   bash scripts/demo.sh                     # ~10-15 minutes on 2 CPU cores after set-up
#   PATHFM_DEMO_SIZE=tiny bash scripts/demo.sh   # the smallest size (CI): fewer steps, 1 seed
#   PATHFM_DEMO_DIR=/some/where bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg XFORMERS_DISABLED=1

size="${PATHFM_DEMO_SIZE:-full}"
case "$size" in
  full) seeds=2; steps=30 ;;
  tiny) seeds=1; steps=4 ;;
  *) echo "PATHFM_DEMO_SIZE must be full or tiny, got '$size'" >&2; exit 2 ;;
esac
out="${PATHFM_DEMO_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
pathfm=.venv/bin/pathfm
start=$(date +%s)

echo "== [1/4] component ablation (smoke scale, $seeds seed(s), $steps steps per trial) -> $out" >&2
$pathfm ablate run component --scale smoke --seeds "$seeds" --set steps="$steps" --storage "$out" --name component
echo "== [2/4] data-efficiency ladder (nested slide subsets)" >&2
$pathfm ablate run data --scale smoke --seeds "$seeds" --set steps="$steps" --storage "$out" --name data
echo "== [3/4] ablation table and report" >&2
$pathfm analyze report "$out/component" --out "$out/report-component"
echo "== [4/4] data-efficiency curve and report" >&2
$pathfm analyze report "$out/data" --out "$out/report-data"

[ -n "${PATHFM_DEMO_DIR:-}" ] || ln -sfn "$out" runs/demo-latest
echo >&2
echo "done in $(( $(date +%s) - start )) s. Look at:" >&2
ls "$out"/report-component/*.md "$out"/report-data/*.png 2>/dev/null | sed 's/^/  /' >&2
