"""Collapse and divergence guards: stop a run early, with a named reason, when its health signals say it is lost.

A guard reads the records the trainer logs (``metrics.jsonl``: the ``diag/*`` signals of
:mod:`pathfm.ssl.diagnostics`, the loss, and the in-training probe when ``probe.every > 0``) and trips when
one condition of ``run.guards`` (:class:`pathfm.config.GuardsConfig`) holds for ``patience`` logged steps in
a row, from ``start_step`` on. Reasons (:data:`REASONS`):

* ``collapsed``      teacher DINO target entropy >= ``max_target_entropy_fraction`` x ln K (uniform targets:
                     DINO/iBOT give no signal), or teacher CLS std across the batch < ``min_teacher_cls_std``
                     (every image the same embedding), or their RankMe effective rank < ``min_effective_rank``;
* ``diverged``       loss > ``max_loss_ratio`` x the lowest loss logged so far, or a NaN/inf loss or gradient
                     (immediately, no patience);
* ``probe_dropped``  ``probe/<task>/balanced_accuracy`` more than ``max_probe_drop`` below its best so far.

A tripped guard writes ``guard.json`` in the run directory (:attr:`pathfm.records.RunFolder.guard`) and raises
:class:`pathfm.ssl.trainer.StopTraining` with the reason; the trainer saves a checkpoint, writes
``DONE`` ("stopped at step N: <reason>") and returns ``TrainResult.stop_reason``. Sweeps record it in
``trial.json`` (``stop_reason``) and the results table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathfm.config import GuardsConfig
from pathfm.io import atomic_write_json
from pathfm.records import RunFolder

REASONS = ("collapsed", "diverged", "probe_dropped")
PROBE_METRIC = "balanced_accuracy"  # the in-training probe metric the probe_dropped guard follows


@dataclass(frozen=True)
class Violation:
    """One guard condition that holds on one logged record."""

    reason: str  # one of REASONS
    signal: str  # the metrics key (or the derived quantity) that crossed its threshold
    value: float
    threshold: float

    def describe(self) -> str:
        return f"{self.reason}: {self.signal} = {self.value:.4g} (threshold {self.threshold:.4g})"


@dataclass
class GuardTrip:
    """What stopped the run (written as the run folder's ``guard.json``)."""

    reason: str
    step: int
    signal: str
    value: float | None  # None for a non-finite loss (JSON has no NaN)
    threshold: float | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GuardState:
    """What the guards remember between records: the lowest loss, the best probe score per task, and how
    many logged steps in a row each condition has held."""

    min_loss: float = math.inf
    best_probe: dict[str, float] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain types, saved in the training checkpoint so a resumed run continues its windows."""
        return {"min_loss": self.min_loss, "best_probe": dict(self.best_probe), "streaks": dict(self.streaks)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GuardState":
        return cls(float(d["min_loss"]), {k: float(v) for k, v in d["best_probe"].items()},
                   {k: int(v) for k, v in d["streaks"].items()})


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def violations(record: dict[str, Any], cfg: GuardsConfig, state: GuardState) -> list[Violation]:
    """The conditions of ``cfg`` that hold on ``record``, judged against ``state`` (read, not changed)."""
    out: list[Violation] = []
    entropy, ln_k = _finite(record.get("diag/dino_target_entropy")), _finite(record.get("diag/dino_ln_k"))
    if cfg.max_target_entropy_fraction is not None and entropy is not None and ln_k:
        frac = entropy / ln_k
        if frac >= cfg.max_target_entropy_fraction:
            out.append(Violation("collapsed", "diag/dino_target_entropy / ln K", frac, cfg.max_target_entropy_fraction))
    std = _finite(record.get("diag/teacher_cls_std"))
    if cfg.min_teacher_cls_std is not None and std is not None and std < cfg.min_teacher_cls_std:
        out.append(Violation("collapsed", "diag/teacher_cls_std", std, cfg.min_teacher_cls_std))
    rank = _finite(record.get("diag/teacher_cls_rank"))
    if cfg.min_effective_rank is not None and rank is not None and rank < cfg.min_effective_rank:
        out.append(Violation("collapsed", "diag/teacher_cls_rank", rank, cfg.min_effective_rank))
    loss = _finite(record.get("loss"))
    if cfg.max_loss_ratio is not None and loss is not None and state.min_loss > 0 and math.isfinite(state.min_loss):
        if loss > cfg.max_loss_ratio * state.min_loss:
            out.append(Violation("diverged", "loss / lowest loss so far", loss / state.min_loss, cfg.max_loss_ratio))
    if cfg.max_probe_drop is not None:
        for task, best in state.best_probe.items():
            now = _finite(record.get(f"probe/{task}/{PROBE_METRIC}"))
            if now is not None and best - now > cfg.max_probe_drop:
                out.append(Violation("probe_dropped", f"probe/{task}/{PROBE_METRIC} drop from best", best - now,
                                     cfg.max_probe_drop))
    return out


def remember(record: dict[str, Any], state: GuardState) -> None:
    """Fold ``record`` into the running lowest loss and best probe scores (after it was judged)."""
    loss = _finite(record.get("loss"))
    if loss is not None:
        state.min_loss = min(state.min_loss, loss)
    suffix = f"/{PROBE_METRIC}"
    for key, value in record.items():
        v = _finite(value)
        if key.startswith("probe/") and key.endswith(suffix) and v is not None:
            task = key[len("probe/"):-len(suffix)]
            state.best_probe[task] = max(state.best_probe.get(task, -math.inf), v)


class Guards:
    """The guards of one run: the trainer passes every logged record to :meth:`check`."""

    def __init__(self, cfg: GuardsConfig, run_dir: str | Path | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir) if run_dir is not None else None
        self.state = GuardState()
        self.trip: GuardTrip | None = None

    def check(self, record: dict[str, Any]) -> GuardTrip | None:
        """Judge one record; returns the trip when a condition has now held ``patience`` times in a row."""
        step = int(record.get("step", 0))
        if step < self.cfg.start_step:
            remember(record, self.state)
            return None
        found = violations(record, self.cfg, self.state)
        remember(record, self.state)
        held = {f"{v.reason}|{v.signal}": v for v in found}
        self.state.streaks = {k: self.state.streaks.get(k, 0) + 1 for k in held}
        for key, v in held.items():
            if self.state.streaks[key] >= self.cfg.patience:
                return self._tripped(GuardTrip(v.reason, step, v.signal, v.value, v.threshold,
                                               f"{v.describe()} for {self.cfg.patience} logged step(s) in a row"))
        return None

    def non_finite(self, step: int, message: str) -> GuardTrip:
        """A NaN/inf loss or gradient (``NonFiniteLossError``): diverged, at once."""
        return self._tripped(GuardTrip("diverged", step, "non-finite loss", None, None, message))

    def _tripped(self, trip: GuardTrip) -> GuardTrip:
        self.trip = trip
        if self.run_dir is not None:
            atomic_write_json(RunFolder(self.run_dir).guard, trip.as_dict())
        return trip


def read_guard_trip(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's ``guard.json`` content (None: no guard stopped it)."""
    import json

    path = RunFolder(run_dir).guard
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
