"""The arm generators of a study's blocks: cumulative (build the recipe up), leave-one-out (tear it down), grid
(a full factorial over knob values, optionally relative to the base config), fractional factorial (a
resolution-IV/V design over components and two-level knobs) and the data ladder (nested data sizes, equal
steps or equal epochs). Each returns :class:`RawArm` s; :func:`pathfm.ablations.expand.expand_study`
deduplicates them into the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pathfm.ablations.design import fractional_factorial
from pathfm.ablations.study import BlockEntry, RelativeValues, Study, StudyError
from pathfm.config import Config, get_dotted, resolve_key
from pathfm.errors import ConfigError

# Schedules that an equal-epochs arm shortens together with its steps.
STEP_SCHEDULES = ("optim.warmup_steps", "optim.teacher_temp_warmup_steps", "optim.freeze_last_layer_steps")


def alias_of(dotted: str) -> str:
    """The short knob alias of a dotted path (``loss.kde_weight`` -> ``kde_weight``), else the path."""
    from pathfm.config import KNOB_ALIASES

    return next((alias for alias, path in KNOB_ALIASES.items() if path == dotted), dotted)


def count_slides(cfg: Config) -> int:
    """Number of slides ``cfg.data.slides`` names (a folder of slides or a .csv/.parquet manifest), read
    with the data part's own manifest reader, so the ladder's "all" is what training would see."""
    from pathfm.data.manifest import load_manifest
    from pathfm.errors import PathfmError

    try:
        return len(load_manifest(cfg.data.slides))
    except PathfmError as e:
        raise StudyError(f"{e}\n(the data ladder counts the slides of data.slides for its 'all' rung; set it with "
                         "--set data.slides=PATH, or give --max-slides N)") from None


def geometric_grid(start: int, stop: int, factor: float = 2.0) -> list[int]:
    """``start, start*f, start*f^2, ... < stop``, then ``stop`` (distinct integers, ascending)."""
    if start > stop:
        raise StudyError(f"ladder start {start} exceeds the maximum {stop}")
    out: list[int] = []
    x = float(start)
    while round(x) < stop:
        v = int(round(x))
        if not out or v > out[-1]:
            out.append(v)
        x *= factor
    out.append(stop)
    return out


def fill_name(template: str, values: dict[str, Any], ctx: str) -> str:
    safe = {k.replace(".", "_"): v for k, v in values.items()}
    try:
        return template.format(**safe)
    except (KeyError, IndexError, ValueError) as e:
        raise StudyError(f"{ctx}: name template {template!r} cannot be filled from {sorted(safe)}: {e}") from None


def component(study: Study, name: str, ctx: str):
    if name not in study.components:
        raise StudyError(f"{ctx}: unknown component '{name}'; the study defines: {', '.join(study.components) or 'none'}")
    return study.components[name]


def components_state(study: Study, on: set[str], order: list[str]) -> dict[str, Any]:
    ov: dict[str, Any] = {}
    for c in order:
        comp = study.components[c]
        ov.update(comp.enabled if c in on else comp.disabled)
    return ov


# ---------------------------------------------------------------------------------- generators
@dataclass
class RawArm:
    """An arm as a generator makes it, before deduplication (:func:`pathfm.ablations.expand.expand_study`)."""

    name: str
    overrides: dict[str, Any]
    block: str
    labels: dict[str, Any] = field(default_factory=dict)
    comparisons: list[tuple[str, str]] = field(default_factory=list)
    derived: set[str] = field(default_factory=set)  # keys computed from the base config (follow --set)
    seed_offset: int = 0


def cumulative_arms(study: Study, b: BlockEntry, ctx: str) -> list[RawArm]:
    spec = b.cumulative
    assert spec is not None
    for c in spec.order:
        component(study, c, ctx)
    base_name = spec.baseline_name or study.baseline
    arms = [RawArm(base_name, components_state(study, set(), spec.order), "cumulative",
                    {c: 0 for c in spec.order})]
    on: set[str] = set()
    for c in spec.order:
        on.add(c)
        name = spec.names.get(c, f"+{c}")
        arms.append(RawArm(name, components_state(study, on, spec.order), "cumulative",
                            {x: int(x in on) for x in spec.order}, [(name, arms[-1].name)]))
    return arms


def leave_one_out_arms(study: Study, b: BlockEntry, ctx: str) -> list[RawArm]:
    spec = b.leave_one_out
    assert spec is not None
    order = spec.order or list(study.components)
    for c in order:
        component(study, c, ctx)
    full = set(order)
    arms = [RawArm(spec.full_name, components_state(study, full, order), "leave_one_out", {c: 1 for c in order})]
    for c in order:
        name = spec.names.get(c, f"-{c}")
        on = full - {c}
        arms.append(RawArm(name, components_state(study, on, order), "leave_one_out",
                            {x: int(x in on) for x in order}, [(name, spec.full_name)]))
    return arms


def grid_arms(study: Study, b: BlockEntry, base_cfg: Config, ctx: str) -> list[RawArm]:
    from pathfm.ablations.design import full_factorial

    assert b.grid is not None
    levels: dict[str, list[Any]] = {}
    resolved: dict[str, dict[Any, Any]] = {}
    for knob, spec in b.grid.items():
        if isinstance(spec, RelativeValues):
            ref = get_dotted(base_cfg, spec.relative_to)
            if not isinstance(ref, (int, float)) or isinstance(ref, bool):
                raise StudyError(f"{ctx}: grid.{knob}.relative_to={spec.relative_to} is not a number ({ref!r})")
            levels[knob] = list(spec.values)
            resolved[knob] = {v: max(1, int(round(ref * v))) if isinstance(ref, int) else ref * v for v in spec.values}
        else:
            levels[knob] = list(spec)
    arms = []
    for run in full_factorial(levels):
        values = {k: resolved[k][v] if k in resolved else v for k, v in run.items()}
        template = b.name or ",".join(f"{k}={{{k.replace('.', '_')}}}" for k in run)
        name = fill_name(template, run, ctx)
        labels = {alias_of(resolve_key(k)): v for k, v in values.items()}
        labels.update({f"{k}_fraction": run[k] for k in resolved})
        arms.append(RawArm(name, {**b.fixed, **values}, "grid", labels))
    return arms


def factorial_arms(study: Study, b: BlockEntry, ctx: str, designs: list[dict[str, Any]]) -> list[RawArm]:
    spec = b.factorial
    assert spec is not None
    for f in spec.factors:
        if f not in spec.levels:
            component(study, f, ctx)
        elif len(spec.levels[f]) != 2:
            raise StudyError(f"{ctx}: factorial.levels.{f} must be [low, high], got {spec.levels[f]}")
    try:
        design = fractional_factorial(spec.factors, spec.generators, min_resolution=spec.min_resolution)
    except ConfigError as e:
        raise StudyError(f"{ctx}: {e}") from None
    arms = []
    for run in design.runs():
        ov: dict[str, Any] = {}
        parts = []
        for f, level in run.items():
            if f in spec.levels:
                value = spec.levels[f][0 if level < 0 else 1]
                ov[f] = value
                parts.append(f"{f}={value}")
            else:
                comp = study.components[f]
                ov.update(comp.enabled if level > 0 else comp.disabled)
                if level > 0:
                    parts.append(f"+{f}")
        if all(level < 0 for level in run.values()):
            name = spec.none_name or study.baseline
        else:
            name = "".join(p if p.startswith("+") else f"[{p}]" for p in parts) or (spec.none_name or study.baseline)
        labels = {f"design.{f}": level for f, level in run.items()}
        arms.append(RawArm(name, {**b.fixed, **ov}, "factorial", labels))
    designs.append({
        "factors": list(design.factors),
        "generators": [f"{g.target}={'-' if g.sign < 0 else ''}{'*'.join(g.sources)}" for g in design.generators],
        "resolution": design.resolution,
        "runs": design.n_runs,
        "description": design.describe(),
        "aliases": {k: v for k, v in design.alias_table().items() if v},
        "arms": [a.name for a in arms],
    })
    return arms


def ladder_arms(study: Study, b: BlockEntry, base_cfg: Config, ctx: str, max_override: int | None) -> list[RawArm]:
    spec = b.ladder
    assert spec is not None
    if spec.max == "all":
        top = max_override if max_override is not None else count_slides(base_cfg)
    else:
        top = int(spec.max)
    grid = geometric_grid(spec.start, top, spec.factor)
    steps = base_cfg.optim.steps
    arms = []
    names_at_top = {v: fill_name(spec.all_name, {"variant": v, "n": top}, ctx) if spec.all_name else None for v in spec.variants}
    for variant in spec.variants:
        for n in grid:
            ov: dict[str, Any] = {spec.knob: n}
            labels: dict[str, Any] = {spec.knob: n, "variant": variant, "fraction_of_data": n / top}
            if variant == "equal_epochs":
                frac = n / top
                ov["optim.steps"] = max(spec.min_steps, int(round(steps * frac)))
                for key in STEP_SCHEDULES:
                    ov[key] = int(round(get_dotted(base_cfg, key) * frac))
                labels["steps"] = ov["optim.steps"]
            else:
                labels["steps"] = steps
            name = names_at_top[variant] if n == top and names_at_top[variant] else fill_name(spec.name, {"n": n, "variant": variant}, ctx)
            derived = {"optim.steps", *STEP_SCHEDULES} if variant == "equal_epochs" else set()
            arms.append(RawArm(name, {**b.fixed, **ov}, "ladder", labels, derived=derived))
    return arms


def block_arms(study: Study, entry: BlockEntry, base_cfg: Config, ctx: str, designs: list[dict[str, Any]],
               max_slides: int | None) -> list[RawArm]:
    """The arms of one generator block of ``study`` (factorial blocks also append their design to ``designs``)."""
    kind = entry.kind
    if kind == "cumulative":
        return cumulative_arms(study, entry, ctx)
    if kind == "leave_one_out":
        return leave_one_out_arms(study, entry, ctx)
    if kind == "grid":
        return grid_arms(study, entry, base_cfg, ctx)
    if kind == "factorial":
        return factorial_arms(study, entry, ctx, designs)
    if kind == "ladder":
        return ladder_arms(study, entry, base_cfg, ctx, max_slides)
    raise StudyError(f"{ctx}: unknown generator '{kind}'")
