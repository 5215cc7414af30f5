"""``pathfm train CONFIG [key=value ...]`` and ``pathfm train resume=RUN_DIR [key=value ...]``.

Examples::

    pathfm train configs/smoke.yaml                       # CPU smoke run on the bundled slides
    pathfm train smoke optim.steps=60 loss.kde_weight=0.1  # preset name + dotted overrides (or knob aliases)
    pathfm train resume=runs/smoke-20250101-120000         # continue the latest valid checkpoint
    pathfm train resume=runs/x optim.steps=200             # ... and extend it
    pathfm train midnight_vitg14 --stage highres model.init_from=runs/x/checkpoints/step_00500000.pt
    pathfm train midnight_vitg14 --dry-run                 # resolve config, stages and init weights only
    torchrun --nproc-per-node 8 -m pathfm.cli train configs/vitb14_ablation.yaml --run-dir runs/b14

Nothing heavy is imported at module level (``pathfm --help`` stays instant).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a DINOv2/Midnight model (run dir with metrics, checkpoints, exported teacher)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("items", nargs="*", metavar="CONFIG|key=value",
                   help="a preset name or YAML path, then dotted overrides; resume=RUN_DIR continues a run")  # fmt: skip
    p.add_argument("--run-dir", default=None, help="run directory (default: run.output_dir/<run.name or preset-time>)")
    p.add_argument("--stage", choices=("all", "main", "highres"), default="all",
                   help="which stages to run (highres: only the high-resolution post-training)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config, list the stages, locate model.init_from and print the per-GPU memory "
                   "estimate (refused when it cannot fit run.gpu_memory_gib / the visible GPU); train nothing")  # fmt: skip
    p.set_defaults(func=handle)


def _split_items(items: list[str]) -> tuple[str | None, str | None, list[str]]:
    """-> (config, resume dir, overrides)."""
    config, resume, overrides = None, None, []
    for item in items:
        if "=" not in item:
            if config is not None:
                from pathfm.errors import ConfigError

                raise ConfigError(f"two configs given ({config}, {item}); overrides must look like key=value")
            config = item
        elif item.split("=", 1)[0].strip() == "resume":
            resume = item.split("=", 1)[1].strip()
        else:
            overrides.append(item)
    return config, resume, overrides


def _default_run_dir(cfg, config_name: str) -> Path:
    name = cfg.run.name
    if not name:
        stem = Path(config_name).stem
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank must agree on the folder
            name = f"{stem}-{os.environ.get('TORCHELASTIC_RUN_ID', 'ddp')}"
        else:
            name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.run.output_dir).expanduser() / name


def handle(args: argparse.Namespace) -> int:
    from pathfm.config import load_config
    from pathfm.errors import ConfigError
    from pathfm.eval.hook import probe_teacher
    from pathfm.ssl.trainer import train

    config, resume, overrides = _split_items(args.items)
    if resume:
        from pathfm.records import RunFolder

        run_dir = Path(resume)
        saved = RunFolder(run_dir).config
        if not saved.exists():
            raise ConfigError(f"resume={resume}: {saved} not found (is this a pathfm run directory?)")
        if config is not None:
            print(f"pathfm train: resuming {run_dir} with its own config.yaml ({config} ignored)", file=sys.stderr)
        cfg = load_config(saved, overrides)
    else:
        if config is None:
            raise ConfigError("give a config (a preset name such as smoke, or a YAML path) or resume=RUN_DIR")
        cfg = load_config(config, overrides)
        run_dir = Path(args.run_dir) if args.run_dir else _default_run_dir(cfg, config)
    if getattr(args, "dry_run", False):
        print(_dry_run_summary(cfg, run_dir, args.stage))
        return 0
    result = train(cfg, run_dir, resume=bool(resume), stages=args.stage, probe=probe_teacher)
    loss = result.metrics.get("loss")
    state = "stopped early" if result.stopped_early else "done"
    if result.stop_reason:  # a run.guards guard: collapsed / diverged / probe_dropped (run_dir/guard.json)
        state += f" ({result.stop_reason}, see guard.json)"
    loss_txt = f", loss {loss:.4f}" if isinstance(loss, float) else ""
    print(f"{state}: {result.run_dir} (step {result.final_step}{loss_txt}); teacher backbone: {result.teacher_path}")
    return 0


def _dry_run_summary(cfg, run_dir: Path, stages: str) -> str:
    """What a run would do: model, stages, and the init weights file (a ConfigError if it is missing), after
    the start-up checks a real start runs (pathfm.ssl.sharding.startup_checks) at $WORLD_SIZE processes."""
    from pathfm.backbone.foreign_weights import resolve_weights_source
    from pathfm.ssl.sharding import intended_device_type, startup_checks
    from pathfm.ssl.stages import plan_stages

    m = cfg.model
    world = int(os.environ.get("WORLD_SIZE", "1"))  # under torchrun: the processes of this run
    plan = plan_stages(cfg, stages)
    device = intended_device_type(cfg)
    strategy = startup_checks(cfg, world, device, stage_cfgs=[s.cfg for s in plan])  # refuses as a start would
    lines = [f"dry run: {run_dir}", f"  model {m.arch}/{m.patch_size}, registers {m.n_registers}, ffn {m.ffn}",
             f"  start-up checks passed: strategy {strategy} on {device}, {world} process(es)"]
    if m.init_from:
        lines.append(f"  init {m.init_from}: {resolve_weights_source(m.init_from)}")
    from pathfm.ssl.memory import memory_line

    for s in plan:
        c = s.cfg
        lines.append(f"  stage {s.name}: {c.optim.steps} steps, batch {c.data.batch_size} x accumulation "
                     f"{c.optim.grad_accum}, crops {c.data.crops.global_size}/{c.data.crops.local_size}")  # fmt: skip
        batch_key = "highres.batch_size" if s.name == "highres" else "data.batch_size"
        lines.append("    " + memory_line(c, world, f"stage {s.name}", batch_key))  # refuses what cannot fit the GPU
    return "\n".join(lines)
