"""eva's linear probe vs pathfm's probes on the same embeddings (docs/eva.md).

    PYTHONPATH=. python benchmarks/eva_agreement.py OUT_DIR [--tasks crc9 pcam] [--baseline-seed 1234] [--skip-trained]

For the `smoke` config's pico backbone (built with torch seed 0, untrained: the bundled tests' backbone) and a
random-init baseline (``Backbone.random_init(--baseline-seed)``; seed 0 would rebuild the very same weights):
writes the eva config for ``pathfm:<task>`` (fold 0, eva's defaults: 5 head runs, 12,500 steps max
with early stopping), runs eva, and prints the comparison of :func:`pathfm.eva.agreement.compare_with_pathfm`
as JSON lines.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def main(out: Path, tasks: list[str], baseline_seed: int, skip_trained: bool) -> None:
    import torch

    from pathfm.backbone.backbone_file import export_backbone
    from pathfm.backbone.vit import build_backbone
    from pathfm.config import load_config
    from pathfm.eva.agreement import compare_with_pathfm
    from pathfm.eva.config import eva_config, write_eva_config
    from pathfm.eva.results import run_eva

    run = out / "pico_run"
    run.mkdir(parents=True, exist_ok=True)
    cfg = load_config("smoke")
    torch.manual_seed(0)
    export_backbone(build_backbone(cfg.model), run / "teacher_backbone.pt", step=0, model_cfg=cfg.model)
    (run / "config.yaml").write_text(cfg.to_yaml())
    for task in tasks:
        for seed in ([] if skip_trained else [None]) + [baseline_seed]:
            d = out / task / ("trained" if seed is None else "random_init")
            t0 = time.time()
            path = write_eva_config(eva_config(str(run), f"pathfm:{task}", out_dir=d, random_init_seed=seed), d / "eva.yaml")
            res = run_eva(path)
            row = compare_with_pathfm(d, res, source=str(run), task=task, random_init_seed=seed)
            print(json.dumps({"task": task, "backbone": "trained" if seed is None else "random_init",
                              "wall_s": round(time.time() - t0, 1), **row}), flush=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--tasks", nargs="+", default=["crc9", "pcam"])
    ap.add_argument("--baseline-seed", type=int, default=1234)  # pathfm.eval.backbones.RANDOM_INIT_SEED
    ap.add_argument("--skip-trained", action="store_true")
    a = ap.parse_args()
    main(a.out, a.tasks, a.baseline_seed, a.skip_trained)
