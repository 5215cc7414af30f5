"""Expand a study at a scale into a plan: the arms (deduplicated), seeds, baseline and comparisons.

A study compiles to a typed ``pathfm.sweeps.spec.SweepSpec`` (explicit ``arms`` x ``seeds``, the study's
search space) that ``pathfm.sweeps.runner.run_sweep`` runs; the :class:`StudyPlan` wraps that spec with what
only the study knows (arm aliases, designs, extra evaluation resolutions). Its trial count is
``len(expand_trials(spec))``. The override precedence, study layers and sweep layers in one chain, is written
once in docs/studies-to-sweeps.md.

The arm generators of a study's blocks (cumulative, leave-one-out, grid, factorial, ladder) are
:mod:`pathfm.ablations.generators`. Two arms whose resolved training configs are identical (e.g. the leave-one-out arm "-highres" and the
cumulative arm "+hed") run once; the arm keeps its first name and records the others as aliases, and
comparisons naming an alias are rewritten to the kept name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pathfm.ablations.generators import RawArm, alias_of, block_arms, geometric_grid
from pathfm.ablations.scales import Scale, get_scale
from pathfm.ablations.study import ExplicitArm, Study, StudyError
from pathfm.config import Config, load_config, resolve_key
from pathfm.errors import ConfigError


@dataclass
class ArmPlan:
    name: str
    overrides: dict[str, Any]  # dotted config path -> value
    aliases: list[str] = field(default_factory=list)
    block: str = "explicit"  # which generator made it
    labels: dict[str, Any] = field(default_factory=dict)  # knob values / design coding for the analysis
    seed_offset: int = 0  # trains with seed + seed_offset (an independent replicate, e.g. a null arm)


@dataclass
class StudyPlan:
    """A study expanded at a scale: the typed sweep it compiles to (:attr:`spec`: base, overrides, arms x
    seeds, search space, resources, evaluation, study meta) plus what only the study knows (arm aliases and
    generator blocks, factorial designs, extra evaluation resolutions, its source). The sweep-level fields
    (``base``, ``seeds``, ``resources``, ...) are read from the spec, so they cannot disagree with it."""

    study: str
    version: int
    description: str
    scale: str
    spec: Any  # pathfm.sweeps.spec.SweepSpec (compiled by expand_study)
    arms: list[ArmPlan]
    baseline_arm: str | None
    comparisons: list[tuple[str, str]]
    eval_resolutions: list[str] | None = None
    analysis: dict[str, Any] = field(default_factory=dict)
    designs: list[dict[str, Any]] = field(default_factory=list)  # factorial blocks: factors, generators, aliases
    source: str | None = None

    # ------------------------------------------------------------------ views of the compiled sweep
    @property
    def base(self) -> str:
        return self.spec.base

    @property
    def overrides(self) -> dict[str, Any]:
        """Applied to every trial (dotted paths)."""
        return dict(self.spec.overrides)

    @property
    def seeds(self) -> list[int]:
        return list(self.spec.seeds)

    @property
    def resources(self) -> dict[str, float]:
        return self.spec.resources.model_dump()

    @property
    def report_every(self) -> int:
        return self.spec.report_every

    @property
    def max_concurrent_trials(self) -> int | None:
        return self.spec.max_concurrent_trials

    @property
    def eval(self) -> dict[str, Any]:
        return self.spec.eval.model_dump()

    @property
    def objective(self) -> dict[str, Any]:
        return self.spec.objective.model_dump()

    @property
    def space(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")["space"]

    @property
    def search(self) -> dict[str, Any]:
        return self.spec.search.model_dump()

    @property
    def n_trials(self) -> int:
        """Trials the sweep of this plan creates: ``len(expand_trials(spec))``."""
        return len(self.sweep_trials())

    def sweep_trials(self) -> list[dict]:
        """The trials of this plan's sweep as ``pathfm.sweeps.spec.expand_trials`` makes them (configs not
        validated; an adaptive search's trials have ``arm: None`` as their arm is chosen while it runs)."""
        from pathfm.sweeps.spec import expand_trials

        return expand_trials(self.spec, validate=False)

    def arm(self, name: str) -> ArmPlan:
        for a in self.arms:
            if a.name == name or name in a.aliases:
                return a
        raise KeyError(name)

    def arm_config(self, name: str) -> Config:
        return load_config(self.base, {**self.overrides, **self.arm(name).overrides})

    def sweep_name(self) -> str:
        return sweep_name(self.study, self.version, self.scale)

    def to_dict(self) -> dict[str, Any]:
        """``study_plan.json``: the study's own fields, the sweep-level fields and the trial count."""
        return {
            "study": self.study, "version": self.version, "description": self.description, "scale": self.scale,
            "base": self.base, "overrides": self.overrides, "arms": [asdict(a) for a in self.arms],
            "seeds": self.seeds, "baseline_arm": self.baseline_arm,
            "comparisons": [list(c) for c in self.comparisons], "resources": self.resources,
            "report_every": self.report_every, "max_concurrent_trials": self.max_concurrent_trials,
            "eval": self.eval, "eval_resolutions": self.eval_resolutions, "objective": self.objective,
            "space": self.space, "search": self.search, "analysis": dict(self.analysis), "designs": self.designs,
            "source": self.source, "n_trials": self.n_trials,
            "arm_aliases": {a.name: a.aliases for a in self.arms if a.aliases},
        }

    def to_sweep_spec(self):  # -> pathfm.sweeps.spec.SweepSpec
        """A copy of the compiled sweep spec (the caller may rename it)."""
        return self.spec.model_copy(deep=True)


def sweep_name(study: str, version: int, scale: str) -> str:
    return f"{study}-v{version}-{scale}"


def compile_sweep(study: Study, scale: Scale, *, arms: list[ArmPlan], seeds: list[int], overrides: dict[str, Any],
                  baseline: str | None, comparisons: list[tuple[str, str]], ev: dict[str, Any]):
    """The typed SweepSpec of a study at a scale (explicit arms x seeds); a bad field is a StudyError naming it."""
    from pathfm.sweeps.spec import spec_from_dict

    data: dict[str, Any] = {
        "name": sweep_name(study.study, study.version, scale.name),
        "base": scale.base,
        "overrides": dict(overrides),
        "arms": [{"name": a.name, "overrides": dict(a.overrides), "seed_offset": a.seed_offset,
                  "labels": dict(a.labels)} for a in arms],
        "seeds": list(seeds),
        "resources": dict(scale.resources),
        "report_every": scale.report_every,
        "max_concurrent_trials": scale.max_concurrent_trials,
        "eval": dict(ev),
        "space": dict(study.space),
        "meta": {"study": study.study, "version": study.version, "description": study.description,
                 "baseline_arm": baseline, "comparisons": [list(c) for c in comparisons],
                 "analysis": dict(study.analysis)},
    }
    if study.objective:
        data["objective"] = dict(study.objective)
    if study.search:
        data["search"] = dict(study.search)
    try:
        return spec_from_dict(data, source=f"study {study.study} at scale {scale.name}")
    except ConfigError as e:
        raise StudyError(str(e)) from None


# ------------------------------------------------------------------------------------ helpers
def _dotted(mapping: dict[str, Any], ctx: str) -> dict[str, Any]:
    out = {}
    for k, v in mapping.items():
        try:
            out[resolve_key(k)] = v
        except ConfigError as e:
            raise StudyError(f"{ctx}: {e}") from None
    return out


# ------------------------------------------------------------------------------------ expansion
def _scale_filter(entry_scales: list[str] | None, scale: str) -> bool:
    return entry_scales is None or scale in entry_scales


def expand_study(
    study: Study,
    scale: str | Scale,
    *,
    seeds: int | list[int] | None = None,
    overrides: dict[str, Any] | None = None,
    only_arms: list[str] | None = None,
    max_slides: int | None = None,
) -> StudyPlan:
    """Expand ``study`` at ``scale`` into a validated :class:`StudyPlan` (every arm's config is built with
    :func:`pathfm.config.load_config` here, so a bad value fails before anything runs)."""
    sc = scale if isinstance(scale, Scale) else get_scale(scale)
    src = study.source or study.study
    per_scale = study.scales.get(sc.name)
    common: dict[str, Any] = {}
    common.update(_dotted(sc.overrides, f"scale {sc.name} overrides"))
    common.update(_dotted(study.overrides, f"{src}: overrides"))
    if per_scale:
        common.update(_dotted(per_scale.overrides, f"{src}: scales.{sc.name}.overrides"))
    cli = _dotted(overrides or {}, "--set")
    common.update(cli)
    try:
        base_cfg = load_config(sc.base, common)
    except ConfigError as e:
        raise StudyError(f"{src} at scale {sc.name}: {e}") from None

    raw: list[RawArm] = []
    designs: list[dict[str, Any]] = []
    for i, entry in enumerate(study.arms):
        ctx = f"{src}: arms[{i}]"
        if isinstance(entry, ExplicitArm):
            if _scale_filter(entry.scales, sc.name):
                labels = dict(entry.labels) or {k: v for k, v in entry.overrides.items()}
                raw.append(RawArm(entry.name, dict(entry.overrides), "explicit", labels, seed_offset=entry.seed_offset))
            continue
        if not _scale_filter(entry.scales, sc.name):
            continue
        raw += block_arms(study, entry, base_cfg, ctx, designs, max_slides)

    arms, alias_of = _dedup(raw, sc.base, common, src, sc.name)
    # --set must not silently fight the arms: a knob the arms vary cannot be fixed from the command line.
    derived = {k for r in raw for k in r.derived}
    varied = {k for a in arms for k in a.overrides} - derived
    clash = sorted(set(cli) & varied)
    if clash:
        raise StudyError(
            f"--set {', '.join(clash)}: study {study.study} varies {'it' if len(clash) == 1 else 'them'} across arms; "
            "copy the study YAML and edit its arms instead"
        )

    def canon(name: str, what: str) -> str:
        if name not in alias_of:
            raise StudyError(f"{src}: {what} names arm '{name}', which the study does not define; arms: "
                             f"{', '.join(a.name for a in arms)}")
        return alias_of[name]

    baseline = canon(study.baseline, "baseline")
    pairs: list[tuple[str, str]] = []
    for r in raw:
        pairs += r.comparisons
    pairs += [tuple(c) for c in study.comparisons]  # type: ignore[misc]
    comparisons: list[tuple[str, str]] = []
    for a, ref in pairs:
        ca, cr = canon(a, "a comparison"), canon(ref, "a comparison")
        if ca != cr and (ca, cr) not in comparisons and (cr, ca) not in comparisons:
            comparisons.append((ca, cr))

    if only_arms:
        keep = {canon(n, "--arms") for n in only_arms}
        arms = [a for a in arms if a.name in keep]
        comparisons = [c for c in comparisons if c[0] in keep and c[1] in keep]
        if baseline not in keep:
            baseline = None  # type: ignore[assignment]

    seed_list = _seed_list(seeds, per_scale.seeds if per_scale and per_scale.seeds is not None else sc.seeds)
    ev = {**sc.eval, **study.eval, **(per_scale.eval if per_scale else {})}
    spec = compile_sweep(study, sc, arms=arms, seeds=seed_list, overrides=common, baseline=baseline,
                         comparisons=comparisons, ev=ev)
    return StudyPlan(
        study=study.study,
        version=study.version,
        description=study.description,
        scale=sc.name,
        spec=spec,
        arms=arms,
        baseline_arm=baseline,
        comparisons=comparisons,
        eval_resolutions=list(study.eval_resolutions) if study.eval_resolutions else None,
        analysis=dict(study.analysis),
        designs=designs,
        source=study.source,
    )


def _seed_list(seeds: int | list[int] | None, default: int | list[int]) -> list[int]:
    s = default if seeds is None else seeds
    if isinstance(s, int):
        if s < 1:
            raise StudyError(f"--seeds must be >= 1, got {s}")
        return list(range(s))
    if not s or len(set(s)) != len(s):
        raise StudyError(f"seeds must be a non-empty list of distinct integers, got {s}")
    return list(s)


def _dedup(raw: list[RawArm], base: str, common: dict[str, Any], src: str, scale: str):
    """Merge arms whose resolved configs are identical; returns (arms, name -> kept name)."""
    arms: list[ArmPlan] = []
    by_key: dict[str, ArmPlan] = {}
    key_of_name: dict[str, str] = {}
    alias_of: dict[str, str] = {}
    for r in raw:
        ov = _dotted(r.overrides, f"{src}: arm '{r.name}'")
        try:
            cfg = load_config(base, {**common, **ov})
        except ConfigError as e:
            raise StudyError(f"{src}: arm '{r.name}' at scale {scale}: {e}") from None
        key = json.dumps([cfg.model_dump(mode="json"), r.seed_offset], sort_keys=True)  # offset: another run
        if r.name in key_of_name:
            if key_of_name[r.name] != key:
                raise StudyError(f"{src}: arm name '{r.name}' is used for two different configurations; rename one")
            continue
        key_of_name[r.name] = key
        if key in by_key:
            kept = by_key[key]
            kept.aliases.append(r.name)
            for k, v in r.labels.items():
                kept.labels.setdefault(k, v)
            alias_of[r.name] = kept.name
            continue
        arm = ArmPlan(r.name, ov, [], r.block, dict(r.labels), r.seed_offset)
        by_key[key] = arm
        arms.append(arm)
        alias_of[r.name] = r.name
    return arms, alias_of


def plan_for(name_or_path: str | Path, scale: str, **kw: Any) -> StudyPlan:
    """Load a study (bundled name or YAML path) and expand it at ``scale``."""
    from pathfm.ablations.study import load_study

    return expand_study(load_study(name_or_path), scale, **kw)


__all__ = ["ArmPlan", "StudyPlan", "alias_of", "compile_sweep", "expand_study", "geometric_grid", "plan_for", "sweep_name"]
