"""``train(cfg, run_dir)``: the DINOv2 / Midnight training loop, its run directory and its stages.

Run directory (the contract in docs/architecture.md; the names are :class:`pathfm.records.RunFolder`'s)::

    run_dir/config.yaml                 resolved config (rewritten when a resume changes it: config_changes.jsonl)
    run_dir/metrics.jsonl               one record per logged step (keys: step_record.METRIC_KEYS [+ probe/<task>/<metric>])
    run_dir/checkpoints/step_XXXXXXXX.pt (+ .sha256), last cfg.run.keep_checkpoints kept
                                        (step_XXXXXXXX.dcp/ directories with run.strategy=fsdp: sharded_checkpoint)
    run_dir/teacher_backbone.pt         exported EMA teacher backbone (+ .sha256), refreshed at every checkpoint
    run_dir/training_slides.csv         the slides / patients trained on (pathfm.data.provenance; leakage audit)
    run_dir/DONE                        written when the run finished (or was stopped by a callback or a guard)
    run_dir/guard.json                  what stopped the run when a ``run.guards`` guard did (pathfm.ssl.guards)

Stages: ``main`` and, if ``cfg.highres.enabled``, ``highres`` (= ``cfg.highres_stage()``: larger tiles and
crops, the same positional embeddings interpolated, its own lr schedule and a fresh optimizer). Steps
are counted globally across stages. Works in one process (CPU or GPU) and under ``torchrun`` (DDP, or
FSDP2 with ``run.strategy=fsdp``: pathfm.ssl.sharding).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from pathfm.backbone import checkpoint as ckpt
from pathfm.config import Config, lr_scaled
from pathfm.errors import ConfigError, NonFiniteLossError, TrainingInterrupted
from pathfm.io import append_jsonl, atomic_write_text, ensure_writable_dir, read_jsonl
from pathfm.records import RunFolder
from pathfm.ssl import run_files, sharding
from pathfm.ssl.distributed import (
    DistEnv,
    all_reduce_hook,
    all_reduce_mean_dict,
    all_reduce_sum_dict,
    barrier,
    broadcast_object,
    init_distributed,
)
from pathfm.backbone.backbone_file import config_sha, export_backbone
from pathfm.backbone.sharded_checkpoint import shared_checksum
from pathfm.backbone.foreign_weights import load_init_weights
from pathfm.backbone.vit import count_parameters
from pathfm.ssl.finite_agreement import check_finite_on_all_ranks
from pathfm.ssl.guards import Guards, GuardState
from pathfm.ssl.runtime import build_centers, effective_precision, peak_memory_mb, reset_peak_memory, seed_everything
from pathfm.ssl.stages import Progress, Stage, plan_stages
from pathfm.ssl.step import LOSS_PARTS, build_student_teacher
from pathfm.ssl.step_record import DIAGNOSTIC_KEYS, METRIC_KEYS, probe_scores, step_record
from pathfm.ssl.train_state import TrainState, check_resumable, gather_rng_states, set_rng_state
from pathfm.ssl.termination import SigtermFlag, agreed
from pathfm.ssl.training_step import StepModels, StepPosition, training_step
from pathfm.tracking import tracking_callbacks

# the in-training probe: (teacher backbone, cfg.probe) -> {"probe/<task>/<metric>": score} (pathfm.eval.hook)
TeacherProbe = Callable[[nn.Module, Any], dict[str, float]]

__all__ = ["DIAGNOSTIC_KEYS", "METRIC_KEYS", "Progress", "Stage", "StopTraining", "TeacherProbe", "TrainResult",
           "plan_stages", "train"]


class StopTraining(Exception):
    """Raised by a callback's ``on_log`` to end the run early (e.g. an ASHA scheduler's decision)."""


@dataclass
class TrainResult:
    run_dir: Path
    final_step: int
    metrics: dict[str, Any]
    teacher_path: Path | None
    stopped_early: bool = False
    stop_reason: str | None = None  # a guard's reason (pathfm.ssl.guards.REASONS) when one stopped the run


# ------------------------------------------------------------------------------------------ the run
class _Run:
    """One training run: networks, optimizer, loader, counters, and the loop over stages."""

    def __init__(self, cfg: Config, run_dir: Path, env: DistEnv, callbacks: Sequence[Any], stages: list[Stage],
                 probe: TeacherProbe | None = None):
        self.cfg, self.run_dir, self.env, self.callbacks, self.stages = cfg, run_dir, env, list(callbacks), stages
        self.probe = probe
        self.folder = RunFolder(run_dir)
        self.device = env.device
        self.precision = effective_precision(cfg, self.device)
        self.progress = Progress()
        self.all_reduce = all_reduce_hook(env)
        self.sha = config_sha(cfg)
        self.last_record: dict[str, Any] = {}
        self.stopped_early = False
        self.guards = Guards(cfg.run.guards, run_dir) if cfg.run.guards is not None else None
        self.stop_reason: str | None = None
        self.sigterm = SigtermFlag()  # entered by train() around the loop
        self._tqdm = None

        # what the strategy cannot run is refused before anything is built
        self.strategy = sharding.startup_checks(cfg, env.world_size, self.device.type,
                                                stage_cfgs=[s.cfg for s in stages])  # the dry-runs run these too
        torch.manual_seed(cfg.seed)  # identical init on every rank
        student, teacher = build_student_teacher(cfg)
        self.init_note = load_init_weights(student, teacher, cfg.model) if cfg.model.init_from else None
        self.student = student.to(self.device)
        self.teacher = teacher.to(self.device)
        self.centers = build_centers(cfg, self.device)
        self.student_fwd: nn.Module = self.student
        self.shard_units: list[nn.Module] = []  # FSDP units of the student (gradient sync switch)
        if cfg.model.compile:
            from pathfm.backbone.vit import compile_blocks

            compile_blocks(self.student.backbone)
            compile_blocks(self.teacher.backbone)
        if self.strategy == "fsdp" and env.distributed:
            policy = sharding.mixed_precision_policy(self.device.type, self.precision)
            self.shard_units = sharding.shard_net(self.student, policy)
            sharding.shard_net(self.teacher, policy)
        elif env.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.student_fwd = nn.parallel.DistributedDataParallel(self.student, device_ids=ids)
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None

    # ------------------------------------------------------------------------------ stage setup
    def _setup_stage(self, stage: Stage) -> None:
        from pathfm.ssl.param_groups import param_groups

        scfg = stage.cfg
        groups = param_groups(list(self.student.named_parameters()), self.student.backbone.depth, scfg.optim)
        fused = {"foreach": True} if self.device.type == "cuda" else {}
        self.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=tuple(scfg.optim.betas), **fused)
        fp16 = self.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda") if fp16 else None
        self.base_lr = lr_scaled(scfg, self.env.world_size)

    def _loader(self, stage: Stage) -> Iterator[dict]:
        from pathfm.data.loader import build_train_loader, iterate_outside_rng

        scfg = stage.cfg
        per_step = scfg.data.batch_size * self.env.world_size * scfg.optim.grad_accum
        loader = build_train_loader(
            scfg, rank=self.env.rank, world_size=self.env.world_size, start_sample=self.progress.stage_step * per_step,
            device=self.device,  # data.augment_on: auto/device apply the crops batched on the training device
        )
        return iterate_outside_rng(loader)

    # ------------------------------------------------------------------------------ checkpoints
    def _train_state(self, rngs: list[dict], with_nets: bool) -> TrainState:
        """The checkpoint payload; ``with_nets=False``: without the networks and optimizer (a sharded
        checkpoint holds those in its shards)."""
        return TrainState(
            config=self.cfg.model_dump(mode="json"),
            model=self.cfg.model.model_dump(mode="json"),
            backbone_model=dict(self.teacher.backbone.cfg or {}),
            config_sha=self.sha,
            stage=self.stages[self.progress.stage_index].name,
            progress=self.progress.as_dict(),
            student=ckpt.net_state(self.student) if with_nets else {},
            teacher=ckpt.net_state(self.teacher) if with_nets else {},
            optimizer=self.optimizer.state_dict() if with_nets else {},
            scaler=self.scaler.state_dict() if self.scaler is not None else {},
            centers={k: c.state_dict() for k, c in (self.centers or {}).items()},
            rng=rngs,
            world_size=self.env.world_size,
            guards=self.guards.state.as_dict() if self.guards is not None else None,
        )

    def save(self) -> Path | None:
        rngs = gather_rng_states(self.env.distributed, self.env.world_size)
        step, keep = self.progress.global_step, self.cfg.run.keep_checkpoints
        path, teacher_state = None, None
        if self.strategy == "fsdp":  # every rank writes its shards; the exported teacher is gathered whole
            from pathfm.backbone.sharded_checkpoint import save_sharded

            path = save_sharded(self.run_dir, step, self._train_state(rngs, with_nets=False).to_payload(), self.student,
                                self.teacher, self.optimizer, keep, self.env.is_main)
            teacher_state = sharding.full_state_dict(self.teacher.backbone)
        elif self.env.is_main:
            path = ckpt.save_checkpoint(self.run_dir, step, self._train_state(rngs, with_nets=True).to_payload(), keep)
        if self.env.is_main:
            export_backbone(self.teacher.backbone, self.folder.teacher_backbone, step=step, config_sha=self.sha,
                            state_dict=teacher_state)
            for cb in self.callbacks:
                if hasattr(cb, "on_checkpoint"):
                    cb.on_checkpoint(step, path)
        barrier(self.env)
        return path

    def restore(self, state: TrainState, source: Path) -> None:
        names = [s.name for s in self.stages]
        check_resumable(state, self.cfg, names, source, sharded_run=bool(self.shard_units), world_size=self.env.world_size)
        sharded = source.is_dir()  # a DCP checkpoint (pathfm.backbone.sharded_checkpoint), from any process count
        if not sharded:
            ckpt.load_net_state(self.student, state.student, source)
            ckpt.load_net_state(self.teacher, state.teacher, source)
        self.progress = Progress(**state.progress)
        self.progress.stage_index = names.index(state.stage)
        self._setup_stage(self.stages[self.progress.stage_index])
        if sharded:
            from pathfm.backbone.sharded_checkpoint import load_sharded

            load_sharded(source, self.student, self.teacher, self.optimizer)
        else:
            self.optimizer.load_state_dict(state.optimizer)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        for k, c in (self.centers or {}).items():
            c.load_state_dict(state.centers[k])
        if self.guards is not None and state.guards is not None:
            self.guards.state = GuardState.from_dict(state.guards)  # the guard windows continue where they were
        self._saved_rng = (state.rng, source)

    def restore_rng(self) -> None:
        """Set the RNG states saved with the checkpoint (after the data iterator exists: creating a torch
        DataLoader iterator draws from torch's global RNG)."""
        rngs, source = self._saved_rng
        if len(rngs) == self.env.world_size:
            set_rng_state(rngs[self.env.rank])
        else:
            warnings.warn(f"{source}: saved with {len(rngs)} processes, resuming with {self.env.world_size}: "
                          "random streams (drop path) are re-seeded, data order is unchanged")  # fmt: skip
            seed_everything(self.cfg.seed + self.progress.global_step, self.env.rank)

    # ------------------------------------------------------------------------------ one step
    def _next_step_is_logged(self, stage: Stage) -> bool:
        """Whether the coming optimizer step writes a metrics record (every ``run.log_every``, and the last)."""
        p = self.progress
        return (p.global_step + 1) % self.cfg.run.log_every == 0 or p.stage_step + 1 == stage.cfg.optim.steps

    def _optimizer_step(self, stage: Stage, it: Iterator[dict], logged: bool) -> dict[str, Any]:
        """One step of :func:`pathfm.ssl.training_step.training_step` on the next ``grad_accum`` batches, with
        this run's ranks, precision and finite-loss agreement; the progress counters move on."""
        scfg, env, p = stage.cfg, self.env, self.progress
        tiles = {"images": 0.0, "accepted": 0.0, "rejected": 0.0, "skipped": 0.0}

        def crops() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for _ in range(scfg.optim.grad_accum):
                batch = next(it)
                stats = batch.get("tile_stats") or {}
                tiles["images"] += int(batch["n_images"])
                tiles["accepted"] += stats.get("accepted", 0)
                tiles["rejected"] += stats.get("rejected", 0)
                tiles["skipped"] += stats.get("skipped_slides", 0)
                yield (batch["global_crops"].to(self.device, non_blocking=True),
                       batch["local_crops"].to(self.device, non_blocking=True))

        models = StepModels(self.student, self.teacher, self.optimizer, self.centers, self.student_fwd, self.scaler,
                            self.shard_units)
        position = StepPosition(p.stage_index, p.stage_step, p.global_step, env.rank, env.world_size)
        result = training_step(
            models, scfg, self.base_lr, position, crops(), device=self.device, precision=self.precision,
            all_reduce=self.all_reduce, diagnose=logged,
            check_finite=lambda parts: check_finite_on_all_ranks(parts, p.global_step + 1, env, self.device),
        )  # fmt: skip
        p.count_step(all_reduce_sum_dict(tiles, env, self.device))
        sums = {**result.values, **{f"grad_norm/{k}": v for k, v in result.grad_norms.items()}}
        means = all_reduce_mean_dict(sums, env, self.device)
        losses = {k: means[k] for k in LOSS_PARTS}
        diagnostics = {k: v for k, v in means.items() if k not in losses}
        return {"losses": losses, "diagnostics": diagnostics, "sched": result.sched}

    # ------------------------------------------------------------------------------ logging
    def _record(self, stage: Stage, step_out: dict, images_per_s: float) -> dict[str, Any]:
        return step_record(self.progress, stage.name, step_out, images_per_s, peak_memory_mb(self.device))

    def _maybe_probe(self, rec: dict[str, Any], stage: Stage) -> None:
        every = stage.cfg.probe.every
        if every > 0 and self.progress.global_step % every == 0:
            rec.update(probe_scores(self.probe, self.teacher.backbone, stage.cfg.probe))

    def _log(self, rec: dict[str, Any]) -> None:
        """Append the record, notify callbacks (rank 0), and agree on StopTraining across ranks."""
        stop = False
        if self.env.is_main:
            append_jsonl(self.folder.metrics, rec)
            self.last_record = rec
            trip = self.guards.check(rec) if self.guards is not None else None
            if trip is not None:
                stop, self.stop_reason = True, trip.reason
                print(f"pathfm train: stopped by a guard at step {trip.step}: {trip.message}", file=sys.stderr, flush=True)
            try:
                for cb in self.callbacks if not stop else ():
                    if hasattr(cb, "on_log"):
                        cb.on_log(rec)
            except StopTraining:
                stop = True
        if self.env.distributed:
            stop = bool(broadcast_object(stop, self.env))
        if stop:
            raise StopTraining

    # ------------------------------------------------------------------------------ the loop
    def run_stage(self, stage: Stage, bar, it: Iterator[dict] | None = None) -> None:
        scfg = stage.cfg
        it = it if it is not None else self._loader(stage)
        t_last, images_last = time.perf_counter(), self.progress.tiles_seen
        targets = "n/a"  # the progress bar's target entropy / ln K, refreshed on logged steps
        while self.progress.stage_step < scfg.optim.steps:
            t0 = time.perf_counter()
            logged = self._next_step_is_logged(stage)
            try:
                step_out = self._optimizer_step(stage, it, logged)
            except NonFiniteLossError as e:
                if self.guards is None or not self.guards.cfg.stop_on_non_finite:
                    raise
                self.guards.non_finite(self.progress.global_step + 1, str(e))  # nothing saved for this step
                self.stopped_early, self.stop_reason = True, "diverged"
                print(f"pathfm train: stopped by a guard (diverged): {e}", file=sys.stderr, flush=True)
                raise StopTraining("diverged") from None
            now = time.perf_counter()
            self.progress.time_s += now - t0
            if bar is not None:
                bar.update(1)
                diag = step_out["diagnostics"]
                if "diag/dino_target_entropy" in diag:
                    # teacher target entropy / ln K: near 1.00 = uniform targets, DINO is not learning
                    targets = f"{diag['diag/dino_target_entropy'] / diag['diag/dino_ln_k']:.2f} of lnK"
                bar.set_postfix(stage=stage.name, loss=f"{sum(step_out['losses'].values()):.3f}",
                                lr=f"{step_out['sched']['lr']:.2e}", targets=targets)
            last = self.progress.stage_step == scfg.optim.steps
            if logged:
                ips = (self.progress.tiles_seen - images_last) / max(now - t_last, 1e-9)
                t_last, images_last = now, self.progress.tiles_seen
                rec = self._record(stage, step_out, ips)
                if self.env.is_main:
                    self._maybe_probe(rec, stage)
                try:
                    self._log(rec)
                except StopTraining:
                    self.stopped_early = True
                    self.save()
                    raise
            interrupted = agreed(self.sigterm.received, self.env, self.device)  # SIGTERM: save this step and stop
            if self.progress.global_step % self.cfg.run.checkpoint_every == 0 or last or interrupted:
                path = self.save()
            if interrupted:
                raise TrainingInterrupted(f"SIGTERM: stopped after step {self.progress.global_step}, its checkpoint "
                                          f"saved ({path}); continue with `pathfm train resume={self.run_dir}`")

    def banner(self) -> str:
        b = self.student.backbone
        lines = [
            f"pathfm train: {self.run_dir}",
            f"  model {self.cfg.model.arch}/{self.cfg.model.patch_size} ({count_parameters(self.student) / 1e6:.1f}M params "
            f"incl. heads), attention={b.attention_backend(self.device)}, device={self.device}, precision={self.precision}, "
            f"world_size={self.env.world_size}, strategy={self.strategy}, "
            f"activation_checkpointing={self.cfg.model.activation_checkpointing}, compile={self.cfg.model.compile}",
            "  stages: " + ", ".join(f"{s.name} ({s.cfg.optim.steps} steps, crops {s.cfg.data.crops.global_size}/"
                                     f"{s.cfg.data.crops.local_size})" for s in self.stages),  # fmt: skip
        ]
        if self.init_note:
            lines.append(f"  init: {self.init_note}")
        return "\n".join(lines)


def train(
    cfg: Config,
    run_dir: str | Path,
    resume: bool | str | Path = False,
    callbacks: Sequence[Any] | None = None,
    *,
    stages: str = "all",
    probe: TeacherProbe | None = None,
) -> TrainResult:
    """Train (or continue) a run in ``run_dir``; see the module docstring for what it writes.

    ``resume=True`` continues from the newest valid checkpoint in ``run_dir`` (bit-identical on CPU);
    ``resume=<path>`` from that checkpoint. ``stages``: ``all`` | ``main`` | ``highres`` (only the
    post-training stage, usually with ``model.init_from`` = a finished run's checkpoint). ``probe``: the
    in-training probe ``probe(teacher_backbone, cfg.probe) -> {"probe/<task>/<metric>": score}``, called every
    ``cfg.probe.every`` steps (:func:`pathfm.eval.hook.probe_teacher`; needed when ``probe.every > 0``).
    """
    if not isinstance(cfg, Config):
        raise TypeError("train() takes a pathfm.config.Config (see pathfm.config.load_config)")
    plan = plan_stages(cfg, stages)
    if probe is None and any(s.cfg.probe.every > 0 for s in plan):
        raise ConfigError(f"probe.every={max(s.cfg.probe.every for s in plan)} asks for the in-training probe, but train() "
                          "was given none: pass probe=pathfm.eval.hook.probe_teacher (the `pathfm train` command "
                          "and sweeps do), or set probe.every=0")
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    env = init_distributed(cfg.run.device, cfg.run.collective_timeout_s)
    reset_peak_memory(env.device)  # this run's peak, also in a process that trained before
    if env.is_main:
        ensure_writable_dir(run_dir, "run directory")  # before building anything
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    found = run_files.prepare_run_dir(run_dir, resume, shared_checksum if env.distributed else None)
    if found is not None and folder.done.exists() and found[1]["progress"]["global_step"] >= sum(s.cfg.optim.steps for s in plan):
        rec = read_jsonl(folder.metrics)
        return TrainResult(run_dir, found[1]["progress"]["global_step"], rec[-1] if rec else {},
                           folder.teacher_backbone)  # fmt: skip

    run = _Run(cfg, run_dir, env, tracking_callbacks(cfg, run_dir, callbacks) if env.is_main else callbacks or [], plan,
               probe)
    if found is not None:
        path, state = found
        run.restore(TrainState.from_payload(state), path)
        first_it = run._loader(plan[run.progress.stage_index])
        run.restore_rng()
        if env.is_main:
            run_files.continue_run_files(cfg, run_dir, run.progress.global_step)
    else:
        run._setup_stage(plan[0])
        if env.is_main:
            run_files.start_run_files(cfg, run_dir)
        first_it = run._loader(plan[0])
        seed_everything(cfg.seed, env.rank)
    total = sum(s.cfg.optim.steps for s in plan)
    bar = None
    if env.is_main:
        print(run.banner(), file=sys.stderr, flush=True)
        if cfg.run.progress:
            from pathfm.progress import progress_bar

            bar = progress_bar(total=total, initial=run.progress.global_step, desc="train", unit="step", file=sys.stderr)
    with run.sigterm:  # SIGTERM: the step ends, is saved, and TrainingInterrupted says so
        try:
            for index in range(run.progress.stage_index, len(plan)):
                it = None
                if index != run.progress.stage_index:  # entering a new stage
                    run.progress.stage_index, run.progress.stage_step = index, 0
                    run._setup_stage(plan[index])
                else:
                    it = first_it
                run.run_stage(plan[index], bar, it)
        except StopTraining:
            pass
        finally:
            if bar is not None:
                bar.close()
    teacher_path = folder.teacher_backbone
    if env.is_main:
        status = "stopped" if run.stopped_early else "finished"
        reason = f": {run.stop_reason}" if run.stop_reason else ""
        atomic_write_text(folder.done, f"{status} at step {run.progress.global_step}{reason}\n")
    result = TrainResult(run_dir, run.progress.global_step, run.last_record, teacher_path, run.stopped_early,
                         run.stop_reason)
    if env.is_main:
        for cb in run.callbacks:
            if hasattr(cb, "on_end"):
                cb.on_end(result)
    barrier(env)
    return result
