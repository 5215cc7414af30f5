"""Multi-GPU (DDP) trials: a Ray Train ``TorchTrainer`` launched from inside the Tune function (Train V2).

The Tune function of a ``resources.workers > 1`` trial requests almost nothing itself and starts a
``TorchTrainer`` with ``workers`` workers (``resources.cpu``/``gpu`` each; Ray Train sets up the
process group and RANK/WORLD_SIZE/LOCAL_RANK, which :func:`pathfm.ssl.trainer.train` picks up).
Every worker runs the same ``train(cfg, run_dir)`` on the shared trial folder; rank 0 does what a
single-process trial does (trial.json, checkpoints, metrics.jsonl, the final evaluation).

The Tune function follows rank 0's ``metrics.jsonl`` and reports to Tune every ``report_every``
steps with a pointer checkpoint; when the scheduler stops the trial it drops a ``STOP`` file that
rank 0's callback turns into ``StopTraining`` (agreed across ranks by the trainer). The Ray Train
run has a stable name per trial (``<trial folder>/ray_train``), which is how Train V2 restores.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from pathfm.io import read_jsonl
from pathfm.records import RunFolder, TrialRecord
from pathfm.records.run_folder import RAY_TRAIN_DIR
from pathfm.sweeps.spec import SweepSpec, spec_from_dict
from pathfm.sweeps.trainable import numeric_fields, pointer_checkpoint_dir, resume_point, run_trial, trial_config


def _worker_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import yaml

    from pathfm.eval.hook import probe_teacher
    from pathfm.ssl.trainer import train

    spec = spec_from_dict(yaml.safe_load(config["spec_yaml"]))
    run_dir = Path(config["run_dir"])
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:
        run_trial(spec, config["trial"], run_dir, trial_id=config["trial_id"], sweep=spec.name, report=None,
                  node_id=config.get("node_id"), stop_file=RunFolder(run_dir).stop)
        return
    cfg = trial_config(spec, config["trial"])
    resume, _ = resume_point(run_dir, None)
    train(cfg, run_dir, resume=resume, callbacks=[], probe=probe_teacher)


def run_ddp_trial(spec: SweepSpec, trial: dict, run_dir: Path, *, trial_id: str, node_id: str | None) -> None:
    """The Tune-side driver of one DDP trial (see the module docstring)."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer

    from pathfm.backbone import checkpoint as ckpt

    r = spec.resources
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    RunFolder(run_dir).stop.unlink(missing_ok=True)
    use_gpu = r.gpu > 0
    per_worker = {"CPU": r.cpu, **({"GPU": r.gpu} if use_gpu else {})}
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"spec_yaml": spec.to_yaml(), "trial": trial, "run_dir": str(run_dir),
                           "trial_id": trial_id, "node_id": node_id},
        scaling_config=ray.train.ScalingConfig(num_workers=r.workers, use_gpu=use_gpu, resources_per_worker=per_worker),
        # Ray Train builds the process group: give it the trial's run.collective_timeout_s (Ray's default is 30 min)
        torch_config=TorchConfig(timeout_s=trial_config(spec, trial).run.collective_timeout_s),
        run_config=ray.train.RunConfig(name=RAY_TRAIN_DIR, storage_path=str(run_dir),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the Tune function below
            box["error"] = e

    thread = threading.Thread(target=fit, name="pathfm-ddp-fit", daemon=True)
    thread.start()
    last_step, last_ckpt = 0, None
    stopped = False
    while True:
        alive = thread.is_alive()
        recs = read_jsonl(RunFolder(run_dir).metrics)
        new = [x for x in recs if int(x.get("step", 0)) >= last_step + spec.report_every]
        if new and not stopped:
            rec = new[-1]
            last_step = int(rec["step"])
            found = ckpt.list_checkpoints(run_dir)
            pointer_dir = None
            if found and found[-1][0] != last_ckpt:
                last_ckpt = found[-1][0]
                pointer_dir = pointer_checkpoint_dir(found[-1][0], found[-1][1], run_dir)
            try:
                if pointer_dir is None:
                    tune.report(numeric_fields(rec))
                else:
                    tune.report(numeric_fields(rec), checkpoint=tune.Checkpoint.from_directory(pointer_dir))
            except SystemExit:
                RunFolder(run_dir).stop.write_text("stopped by the scheduler\n")
                stopped = True
            finally:
                if pointer_dir is not None:
                    shutil.rmtree(pointer_dir, ignore_errors=True)
        if not alive:
            break
        time.sleep(1.0)
    thread.join()
    if "error" in box:
        raise box["error"]
    info = TrialRecord.read(run_dir) or TrialRecord()
    if stopped or info.status != "TERMINATED":
        return
    last = numeric_fields(recs[-1]) if recs else {}
    try:
        tune.report(dict(last, **(info.objective or {}), done_step=float(info.final_step or 0)))
    except SystemExit:
        pass
