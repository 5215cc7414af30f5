#!/usr/bin/env bash
# The main job, end to end on a fresh machine: set up .venv if needed, then run a small real ablation study
# on the bundled whole-slide images (local Ray, CPU) that shows an effect on a held-out task:
#   `photometric` at the `cpu` scale (pico ViT, configs/cpu.yaml) for 300 steps, 3 seeds per arm:
#     no_photometric (the cpu preset), photometric (DINOv2's photometric augmentation on),
#     photometric_nokde (the same without the KDE term)
# Every trial is trained, evaluated on the bundled crc9 tiles (linear probe and kNN) and recorded; the sweep
# evaluates the untrained network (random init, at 5 init seeds) and colour histograms once, on the same folds;
# then a report per probe (ablation table in Markdown, LaTeX, CSV; figures) is written: report-knn, report-linear.
#
#   bash scripts/demo.sh                         # ~10-15 minutes on 2 CPU cores after set-up (9 trials)
#   PATHFM_DEMO_SIZE=tiny bash scripts/demo.sh   # the smallest size (CI): the same study, 4 steps, 2 seeds
#   PATHFM_DEMO_DIR=/some/where bash scripts/demo.sh
# The data-efficiency curve is not part of the main job: `pathfm ablate run data --scale cpu` makes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-disabled}" RAY_USAGE_STATS_ENABLED=0 MPLBACKEND=Agg XFORMERS_DISABLED=1

size="${PATHFM_DEMO_SIZE:-full}"
case "$size" in
  full) seeds=3; steps=300 ;;
  tiny) seeds=2; steps=4 ;;
  *) echo "PATHFM_DEMO_SIZE must be full or tiny, got '$size'" >&2; exit 2 ;;
esac
out="${PATHFM_DEMO_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
pathfm=.venv/bin/pathfm
start=$(date +%s)

echo "== [1/2] photometric ablation (cpu scale, $seeds seeds, $steps steps per trial, crc9) -> $out" >&2
$pathfm ablate run photometric --scale cpu --seeds "$seeds" --set steps="$steps" --storage "$out" --name photometric
echo "== [2/2] ablation tables and reports (kNN, linear probe)" >&2
for probe in knn linear; do
  $pathfm analyze report "$out/photometric" --probe "$probe" --out "$out/report-$probe"
done

[ -n "${PATHFM_DEMO_DIR:-}" ] || ln -sfn "$out" runs/demo-latest
echo >&2
echo "done in $(( $(date +%s) - start )) s. Look at:" >&2
ls "$out"/report-*/report.md 2>/dev/null | sed 's/^/  /' >&2
