"""The sweep spec: one YAML file describing every trial of a sweep (examples: sweeps/examples/).

A spec is a base training config (preset + overrides) plus a search space over any config key (knob
alias such as ``kde_weight`` or a dotted path such as ``loss.kde_weight``), optional explicit arms
(ablations), replicate seeds, the objective, the search algorithm and scheduler, resources per trial
and a budget. :func:`load_spec` validates the YAML; :func:`expand_trials` turns a spec into the list
of trials and validates every trial's config with :func:`pathfm.config.load_config` before any work.

Search-space entries (YAML form)::

    kde_weight: {grid: [0.0, 0.05, 0.1]}     # every value (grid search)
    hed_strength: {choice: [0.0, 0.05]}       # categorical; expanded like a grid when algorithm: grid
    base_lr: {loguniform: [1.0e-4, 1.0e-2]}   # random / optuna only
    kde_kappa: {uniform: [2.0, 8.0]}
    n_slides: {int: [1, 3]}                   # inclusive integer range
    highres: false                            # a plain constant
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from pathfm.config import TrackingConfig, config_from_dict, find_preset, load_config, resolve_key, resolve_path
from pathfm.errors import ConfigError, SweepError
from pathfm.sweeps.distributions import Distribution


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Arm(_Strict):
    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    seed_offset: int = Field(0, ge=0, description="train with seed + seed_offset: an independent replicate of "
                                                  "another arm's config (a null arm), still paired by seed")
    labels: dict[str, Any] = Field(default_factory=dict, description="what the arm stands for in the analysis "
                                   "(knob values, design coding, ladder variant): recorded in trial.json and "
                                   "sweep_meta.json; a label that varies across arms becomes a param.<label> column")


class Objective(_Strict):
    metric: str = "eval/mean_balanced_accuracy"
    mode: Literal["max", "min"] = "max"

    @property
    def in_training(self) -> bool:
        return not self.metric.startswith("eval/")


class SearchConfig(_Strict):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="grid: repeats of the whole grid; random/optuna: trials")
    seed: int = 0


class SchedulerConfig(_Strict):
    type: Literal["none", "asha"] = "none"
    metric: str | None = Field(None, description="default: 'loss' (min) unless the objective is in-training")
    mode: Literal["max", "min"] | None = None
    grace_period: int = Field(10, ge=1, description="in reports (one report every `report_every` steps)")
    reduction_factor: int = Field(2, ge=2)


class Resources(_Strict):
    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)
    workers: int = Field(1, ge=1, description="> 1: a DDP trial via Ray Train's TorchTrainer")


class Budget(_Strict):
    time_s: float | None = Field(None, gt=0, description="wall-clock budget of the whole sweep")
    steps: int | None = Field(None, ge=1, description="training steps per trial (sets optim.steps)")
    trial_time_s: float | None = Field(None, gt=0, description="wall-clock budget per trial (stops it early)")


class EvalSpec(_Strict):
    tasks: list[str] = Field(default_factory=lambda: ["crc", "osteo"])
    probes: list[str] = Field(default_factory=lambda: ["linear", "knn"])
    baselines: bool = Field(False, description="also evaluate the baselines in every trial (not needed: the sweep "
                                                "evaluates them once, see `reference`)")
    reference: bool = Field(True, description="evaluate the random-init and colour-histogram baselines once per "
                                              "sweep (results.parquet rows with trial_id 'reference')")
    random_init_seeds: int = Field(5, ge=1, le=100, description=(
        "init seeds at which the sweep's reference evaluates the untrained network: the check 'beats an untrained "
        "network' compares the arms' seeds with these (Welch), so it accounts for the random init's own variance"))
    enabled: bool = Field(True, description="false: no evaluation at the end of a trial")
    n_folds: int | None = Field(None, ge=2, description="cross-validation folds per task (None: the task's default)")
    probe_seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description=(
        "fold/probe seeds of the final evaluation (eva-style repeats): each gives its own rows (column probe_seed); "
        "`pathfm analyze` averages them per fold within each pretraining seed, the unit of replication"))


class StudyMeta(_Strict):
    study: str | None = None
    version: int | None = None
    description: str = ""
    baseline_arm: str | None = None
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    analysis: dict[str, Any] = Field(default_factory=dict, description="hints for `pathfm analyze` (table_order, "
                                     "x, group_by, plot_against), recorded in sweep_meta.json")


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    base: str = "smoke"
    overrides: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Distribution] = Field(default_factory=dict)
    arms: list[Arm] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    objective: Objective = Field(default_factory=Objective)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: Resources = Field(default_factory=Resources)
    max_concurrent_trials: int | None = Field(None, ge=1)
    budget: Budget = Field(default_factory=Budget)
    report_every: int = Field(5, ge=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    meta: StudyMeta = Field(default_factory=StudyMeta)
    # --- resilience and tracking
    max_failures: int = Field(0, ge=-1, description="retries of a failed trial from its last checkpoint")
    tracking: TrackingConfig | None = Field(None, description="log every trial to MLflow / W&B / TensorBoard "
                                            "(grouped by the sweep name); replaces the base config's tracking")
    # every key of overrides / space / arms -> its dotted config path, resolved once when the spec is loaded
    _dotted: dict[str, str] = PrivateAttr(default_factory=dict)

    def dotted(self, key: str) -> str:
        """The dotted config path of a key of this spec (resolved once, at load; :func:`resolve_key`)."""
        if key not in self._dotted:
            self._dotted[key] = resolve_key(key)
        return self._dotted[key]

    @model_validator(mode="after")
    def _coherent(self) -> "SweepSpec":
        if self.arms is not None:
            names = [a.name for a in self.arms]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"arms: duplicate arm names {dup}")
            if not names:
                raise ValueError("arms: give at least one arm or leave it out")
        if "seed" in self.space and self.seeds != [0]:
            raise ValueError("give replicate seeds either in `seeds` or as `space.seed`, not both")
        if self.meta.baseline_arm is not None:
            arm_names = [a.name for a in self.arms or []]
            if self.meta.baseline_arm not in arm_names:
                raise ValueError(f"meta.baseline_arm '{self.meta.baseline_arm}' is not an arm ({arm_names})")
        if self.search.algorithm == "grid":
            cont = [k for k, d in self.space.items() if not d.is_discrete]
            if cont:
                raise ValueError(
                    f"space: {', '.join(cont)} are continuous; grid search needs grid/choice/constant "
                    "entries (or set search.algorithm: random or optuna)"
                )
        return self

    # -------------------------------------------------------------------------------- helpers
    @property
    def searched_params(self) -> list[str]:
        """Names of parameters that vary (as written in `space`; constants excluded)."""
        return [k for k, d in self.space.items() if d.kind != "constant"]

    @property
    def param_names(self) -> list[str]:
        return list(self.space)

    def scheduler_metric(self) -> tuple[str, str]:
        """(metric, mode) that ASHA/pruning acts on: must be reported during training."""
        if self.scheduler.metric:
            return self.scheduler.metric, self.scheduler.mode or self.objective.mode
        if self.objective.in_training:
            return self.objective.metric, self.objective.mode
        return "loss", "min"

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=False), sort_keys=False)


# ---------------------------------------------------------------------------------------- loading
def spec_from_dict(data: dict, *, source: str = "sweep spec", base_dir: Path | None = None) -> SweepSpec:
    """Validate a spec mapping; errors name the field (``space.kde_weight``) and the fix."""
    try:
        spec = SweepSpec.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
            lines.append(f"  {loc or '<root>'}: {err['msg'].removeprefix('Value error, ')}")
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(lines)) from None
    if base_dir is not None and spec.base.endswith((".yaml", ".yml")):
        cand = (base_dir / spec.base).resolve()
        if not Path(spec.base).is_absolute() and cand.exists():
            spec.base = str(cand)
    _check_keys(spec, source)
    return spec


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a sweep spec YAML (safe loader). Raises ConfigError naming file and field."""
    p = resolve_path(path)
    if not p.exists():
        raise ConfigError(f"sweep spec '{path}' not found (looked in the current folder and the repository root)")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a sweep spec is a mapping (name:, base:, space:, ...)")
    return spec_from_dict(data, source=str(p), base_dir=p.parent)


def _check_keys(spec: SweepSpec, source: str) -> None:
    """Every key in overrides/space/arms must name a config field (alias or dotted path); each is resolved
    here, once, and remembered by the spec (:meth:`SweepSpec.dotted`)."""
    try:
        find_preset(spec.base)
    except ConfigError as e:
        raise ConfigError(f"{source}: base: {e}") from None
    groups: list[tuple[str, dict]] = [("overrides", spec.overrides), ("space", spec.space)]
    groups += [(f"arms[{a.name}].overrides", a.overrides) for a in spec.arms or []]
    for where, d in groups:
        for key in d:
            try:
                spec.dotted(key)
            except ConfigError as e:
                raise ConfigError(f"{source}: {where}.{key}: {e}") from None


# -------------------------------------------------------------------------------------- expansion
def _merge_overrides(spec: SweepSpec, *layers: dict[str, Any]) -> dict[str, Any]:
    """Merge override layers keyed by dotted path (the spec's resolved keys; later layers win)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for k, v in layer.items():
            out[spec.dotted(k)] = v
    return out


def trial_overrides(spec: SweepSpec, arm: str | None, seed: int | None, params: dict[str, Any]) -> dict[str, Any]:
    """The dotted overrides of one trial: spec.overrides < arm < params < seed < budget (the whole chain, a
    study's layers included: docs/studies-to-sweeps.md). The training seed is
    the replicate ``seed`` plus the arm's ``seed_offset`` (the trial's ``seed`` stays the replicate label)."""
    arm_spec = next((a for a in spec.arms or [] if a.name == arm), None)
    arm_ov = arm_spec.overrides if arm_spec is not None else {}
    extra: dict[str, Any] = {}
    if seed is not None:
        extra["seed"] = seed + (arm_spec.seed_offset if arm_spec is not None else 0)
    if spec.budget.steps is not None:
        extra["optim.steps"] = spec.budget.steps
    return _merge_overrides(spec, spec.overrides, arm_ov, params, extra)


def validate_trial(spec: SweepSpec, trial: dict, where: str = "") -> Any:
    """Build and return the trial's Config (its overrides are resolved dotted paths); ConfigError naming the
    trial if invalid."""
    label = where or trial_label(trial)
    try:
        cfg = load_config(spec.base, dict(trial["overrides"]), resolved=True)
    except ConfigError as e:
        raise ConfigError(f"sweep '{spec.name}', {label}: {e}") from None
    check_slides(spec, cfg, label)
    return cfg


def sweep_hang_timeouts(spec: SweepSpec, configs: list[Any]) -> list[float | None]:
    """``run.hang_timeout_s`` of every trial config of a sweep; for an adaptive search (no configs built
    before it runs) the base config's with each arm's overrides, plus a positive stand-in when the search
    space samples it (the watchdog: :mod:`pathfm.infra.hang`)."""
    if configs:
        return [c.run.hang_timeout_s for c in configs]
    arms = [a.name for a in spec.arms] if spec.arms else [None]
    found = [load_config(spec.base, trial_overrides(spec, arm, None, {}), resolved=True).run.hang_timeout_s
             for arm in arms]
    return found + [1.0 for key in spec.space if spec.dotted(key) == "run.hang_timeout_s"]


def trial_label(trial: dict) -> str:
    return f"trial {trial.get('index')} (arm={trial.get('arm')}, params={trial.get('params')})"


def check_slides(spec: SweepSpec, cfg: Any, label: str) -> None:
    """The trial's ``data.slides`` must exist (where the check runs: the driver, and again on the trial's node)."""
    slides = resolve_path(cfg.data.slides)
    if not slides.exists():
        raise ConfigError(
            f"sweep '{spec.name}', {label}: data.slides '{cfg.data.slides}' does not exist; "
            "set it in the spec's overrides to a folder of slides or a manifest"
        )
    if spec.eval.enabled and cfg.probe.every > 0:  # the probe must not see the final evaluation's test tiles
        from pathfm.eval.probe_overlap import check_probe_disjoint

        check_probe_disjoint(cfg.probe.tasks, spec.eval.tasks, where=f"sweep '{spec.name}', {label}")


def trial_configs(spec: SweepSpec, trials: list[dict]) -> list[Any]:
    """Build every trial's training Config once (which validates it), in trial order; an adaptive search's
    trials, sampled while it runs, are validated at the bounds of every distribution instead (``[]``)."""
    if spec.search.algorithm == "optuna":
        arms: list[str | None] = [a.name for a in spec.arms] if spec.arms else [None]
        _validate_bounds(spec, arms, [None] if "seed" in spec.space else list(spec.seeds))
        return []
    return [validate_trial(spec, t) for t in trials]


def expand_trials(spec: SweepSpec, *, validate: bool = True) -> list[dict]:
    """One dict per trial: ``{"index", "arm", "seed", "repeat", "params", "overrides", "sampled"}``.

    * grid: arms x seeds x (cross product of grid/choice/constant entries), repeated ``num_samples`` times;
    * random: arms x seeds x ``num_samples`` draws (seeded by ``search.seed``; grid entries are crossed);
    * optuna: ``num_samples`` trials whose params are chosen adaptively (``sampled: False``); arms and
      seeds, if more than one, become categorical parameters ``arm``/``seed``. Configs are validated at
      the bounds of every distribution.

    Order: repeat, then seed, then arm, then grid point, so a partially finished sweep already has
    every arm of the first seeds.
    """
    import numpy as np

    arms: list[str | None] = [a.name for a in spec.arms] if spec.arms else [None]
    seeds: list[int | None] = [None] if "seed" in spec.space else list(spec.seeds)
    trials: list[dict] = []
    algo = spec.search.algorithm
    if algo == "optuna":
        for r in range(spec.search.num_samples):
            trials.append({"index": r, "arm": None, "seed": None, "repeat": r, "params": {}, "overrides": {},
                           "sampled": False})
        if validate:
            trial_configs(spec, trials)
        return trials

    discrete = {k: d for k, d in spec.space.items() if d.is_discrete}
    continuous = {k: d for k, d in spec.space.items() if not d.is_discrete}
    grid_points = [dict(zip(discrete, combo)) for combo in itertools.product(*(d.values() for d in discrete.values()))]
    rng = np.random.default_rng(spec.search.seed)
    draws = spec.search.num_samples
    for r in range(draws):
        for seed in seeds:
            for arm in arms:
                for point in grid_points:
                    params = dict(point)
                    for k, d in continuous.items():  # random search only
                        params[k] = d.sample(rng)
                    params = {k: params[k] for k in spec.space}  # keep the spec's order
                    trials.append({"index": len(trials), "arm": arm, "seed": seed, "repeat": r,
                                   "params": params, "overrides": trial_overrides(spec, arm, seed, params),
                                   "sampled": True})
    if validate:
        trial_configs(spec, trials)
    return trials


def _validate_bounds(spec: SweepSpec, arms: list, seeds: list) -> None:
    """Adaptive search: validate the config at each bound/value of each entry, others at their lows."""
    lows = {k: d.extremes()[0] for k, d in spec.space.items()}
    for arm in arms:
        for seed in seeds[:1]:
            validate_trial(spec, {"overrides": trial_overrides(spec, arm, seed, lows)}, where=f"arm {arm} at the lower bounds")
            for k, d in spec.space.items():
                for v in d.extremes():
                    params = dict(lows, **{k: v})
                    validate_trial(spec, {"overrides": trial_overrides(spec, arm, seed, params)},
                                   where=f"arm {arm}, {k}={v!r}")


def optuna_categories(spec: SweepSpec) -> dict[str, list]:
    """Extra categorical dimensions of an adaptive search: arms and replicate seeds (if > 1 each)."""
    out: dict[str, list] = {}
    if spec.arms and len(spec.arms) > 1:
        out["arm"] = [a.name for a in spec.arms]
    if "seed" not in spec.space and len(spec.seeds) > 1:
        out["seed"] = list(spec.seeds)
    return out


def check_search_space(spec: SweepSpec) -> None:
    """An adaptive (Optuna) search needs something to choose: a varying ``space`` entry, arms or seeds. Without
    one every trial would train the same config; refused before any trial, with the fix."""
    if spec.search.algorithm != "optuna" or spec.searched_params or optuna_categories(spec):
        return
    fixed = f" (only constants: {', '.join(spec.space)})" if spec.space else ""
    raise SweepError(
        f"sweep '{spec.name}': the search space is empty{fixed}, so every Optuna trial would train the same config; "
        "add a varying entry under space: (e.g. kde_weight: {loguniform: [0.001, 0.2]}), or run fixed settings "
        "with `pathfm sweep run` and seeds: / arms:")


def trial_from_sample(spec: SweepSpec, index: int | None, sample: dict[str, Any]) -> dict:
    """Build the trial dict of an adaptive search from its sampled values (params + arm/seed)."""
    arm = sample.get("arm") if "arm" in optuna_categories(spec) else (spec.arms[0].name if spec.arms else None)
    if "seed" in spec.space:
        seed = None
    else:
        seed = sample.get("seed") if "seed" in optuna_categories(spec) else spec.seeds[0]
    params = {k: d.decode(sample[k]) if k in sample else d.constant for k, d in spec.space.items()}
    return {"index": index, "arm": arm, "seed": seed, "repeat": 0, "params": params,
            "overrides": trial_overrides(spec, arm, seed, params), "sampled": True}


def total_steps(cfg: Any) -> int:
    """Steps of a run including the optional high-res stage (steps are counted across stages)."""
    return cfg.optim.steps + (cfg.highres.steps if cfg.highres.enabled else 0)


__all__ = [
    "Arm", "Budget", "Distribution", "EvalSpec", "Objective", "Resources", "SchedulerConfig",
    "SearchConfig", "StudyMeta", "SweepSpec", "check_search_space", "config_from_dict", "expand_trials", "load_spec", "optuna_categories",
    "spec_from_dict", "total_steps", "trial_configs", "trial_from_sample", "trial_overrides", "validate_trial",
]
