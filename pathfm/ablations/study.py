"""Study files: the schema of ``pathfm/ablations/studies/*.yaml`` and the loader.

A study is a versioned YAML file a user can copy and edit::

    study: hed                 # name (the file name of a bundled study)
    version: 1                 # bump when the arms change, so results of different versions never mix
    description: one line, shown by `pathfm ablate list`
    baseline: sigma0           # the arm every other arm is compared with
    components: {kde: {disabled: {...}, enabled: {...}}, ...}   # named switches used by generator blocks
    overrides: {...}           # applied to every arm at every scale
    scales: {smoke: {overrides: {...}, seeds: 2}}     # per-scale additions
    arms:                      # explicit arms and generator blocks, expanded in order
      - {name: koleo, overrides: {koleo_weight: 0.1, kde_weight: 0}}
      - {name: null, overrides: {}, seed_offset: 1000}    # the baseline again, independently seeded
      - {grid: {hed_strength: [0, 0.05]}, name: "sigma{hed_strength:g}"}
      - {cumulative: {order: [kde, hsv]}}  /  {leave_one_out: {...}}  /  {factorial: {...}}  /  {ladder: {...}}
    comparisons: [[arm, reference], ...]              # extra pairs beyond the ones the blocks declare
    eval_resolutions: [train, highres]                # evaluate every arm at these input sizes
    eval: {tasks: [crc]}                              # over the scale's evaluation settings (also per scale)
    analysis: {x: hed_strength}                       # free-form hints for pathfm.analysis

Keys of every override mapping are knob aliases (:data:`pathfm.config.KNOB_ALIASES`) or dotted paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pathfm.config import read_yaml, resolve_key
from pathfm.errors import ConfigError, PathfmError

STUDIES_DIR = Path(__file__).parent / "studies"


class StudyError(PathfmError):
    """A study file that cannot be expanded (names the file, the arm or block, and the fix)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(_Strict):
    """A named switch: the overrides that turn it off (``disabled``) and on (``enabled``). YAML 1.1 reads
    bare ``on``/``off`` keys as booleans, so those are accepted and mapped here too."""

    description: str = ""
    disabled: dict[str, Any] = Field(default_factory=dict)
    enabled: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _yaml_booleans(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = dict(v)
            for raw, name in ((True, "enabled"), (False, "disabled"), ("on", "enabled"), ("off", "disabled")):
                if raw in v and name not in v:
                    v[name] = v.pop(raw)
        return v


class ScaleSettings(_Strict):
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: int | list[int] | None = None
    eval: dict[str, Any] = Field(default_factory=dict)  # over the scale's and the study's eval settings


# ------------------------------------------------------------------------------------ arm entries
class ExplicitArm(_Strict):
    name: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    scales: list[str] | None = None
    labels: dict[str, Any] = Field(default_factory=dict)
    seed_offset: int = Field(0, ge=0, description="train with seed + seed_offset: an independent replicate of an "
                                                  "identical config (a null arm; never merged with it)")


class CumulativeSpec(_Strict):
    order: list[str]
    baseline_name: str | None = None  # default: the study's baseline
    names: dict[str, str] = Field(default_factory=dict)  # component -> arm name (default "+<component>")


class LeaveOneOutSpec(_Strict):
    order: list[str] | None = None  # default: every component
    full_name: str = "full"
    names: dict[str, str] = Field(default_factory=dict)  # component -> arm name (default "-<component>")


class RelativeValues(_Strict):
    relative_to: str
    values: list[float]


class FactorialSpec(_Strict):
    factors: list[str]  # components (off/on) or knobs listed in `levels`
    levels: dict[str, list[Any]] = Field(default_factory=dict)  # knob -> [low, high]
    generators: list[str] | None = None
    min_resolution: int | None = None
    none_name: str | None = None  # name of the all-low run (default: the study's baseline)


class LadderSpec(_Strict):
    knob: Literal["n_slides", "n_tiles"] = "n_slides"
    factor: float = Field(2.0, gt=1.0)
    start: int = Field(1, ge=1)
    max: int | Literal["all"] = "all"
    variants: list[Literal["equal_compute", "equal_epochs"]] = Field(
        default_factory=lambda: ["equal_compute", "equal_epochs"]
    )
    min_steps: int = Field(1, ge=1)
    name: str = "n{n}-{variant}"
    all_name: str | None = None


class BlockEntry(_Strict):
    """A generator block: exactly one of the generator fields."""

    cumulative: CumulativeSpec | None = None
    leave_one_out: LeaveOneOutSpec | None = None
    grid: dict[str, list[Any] | RelativeValues] | None = None
    factorial: FactorialSpec | None = None
    ladder: LadderSpec | None = None
    fixed: dict[str, Any] = Field(default_factory=dict)  # added to every arm of the block
    name: str | None = None  # name template (grid) with {knob} fields
    scales: list[str] | None = None

    @property
    def kind(self) -> str:
        kinds = [k for k in ("cumulative", "leave_one_out", "grid", "factorial", "ladder") if getattr(self, k) is not None]
        return kinds[0]


GENERATOR_KEYS = ("cumulative", "leave_one_out", "grid", "factorial", "ladder")


class Study(_Strict):
    study: str
    version: int = Field(ge=1)
    description: str
    baseline: str
    components: dict[str, Component] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    scales: dict[str, ScaleSettings] = Field(default_factory=dict)
    arms: list[ExplicitArm | BlockEntry]
    comparisons: list[tuple[str, str]] = Field(default_factory=list)
    eval_resolutions: list[Literal["train", "highres"]] | None = None
    eval: dict[str, Any] = Field(default_factory=dict)  # over the scale's eval (tasks, probes, n_folds, ...)
    objective: dict[str, Any] | None = None
    space: dict[str, Any] = Field(default_factory=dict)
    search: dict[str, Any] | None = None
    analysis: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, exclude=True)

    @field_validator("arms", mode="before")
    @classmethod
    def _parse_arms(cls, v: Any) -> Any:
        if not isinstance(v, list) or not v:
            raise ValueError("arms must be a non-empty list of arms and generator blocks")
        out = []
        for i, entry in enumerate(v):
            if not isinstance(entry, dict):
                raise ValueError(f"arms[{i}] must be a mapping, got {entry!r}")
            gens = [k for k in GENERATOR_KEYS if k in entry]
            if len(gens) > 1:
                raise ValueError(f"arms[{i}] has several generators {gens}; use one block per entry")
            try:
                out.append(BlockEntry.model_validate(entry) if gens else ExplicitArm.model_validate(entry))
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise ValueError(f"arms[{i}].{loc}: {err['msg']}") from None
        return out


def _check_keys(study: Study, where: str) -> None:
    """Every override key names a config field (cheap, before any expansion)."""

    def check(mapping: dict[str, Any], ctx: str) -> None:
        for key in mapping:
            try:
                resolve_key(key)
            except ConfigError as e:
                raise StudyError(f"{where}: {ctx}: {e}") from None

    check(study.overrides, "overrides")
    for name, comp in study.components.items():
        check(comp.disabled, f"components.{name}.disabled")
        check(comp.enabled, f"components.{name}.enabled")
    for sname, s in study.scales.items():
        check(s.overrides, f"scales.{sname}.overrides")
    for i, arm in enumerate(study.arms):
        if isinstance(arm, ExplicitArm):
            check(arm.overrides, f"arms[{i}] ({arm.name}).overrides")
        else:
            check(arm.fixed, f"arms[{i}].fixed")
            if arm.grid:
                check(arm.grid, f"arms[{i}].grid")
            if arm.factorial:
                check(arm.factorial.levels, f"arms[{i}].factorial.levels")


def parse_study(data: dict, source: str = "<study>") -> Study:
    try:
        study = Study.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc or '<root>'}: {err['msg'].removeprefix('Value error, ')}")
        raise StudyError(f"{source} is not a valid study:\n" + "\n".join(lines)) from None
    study.source = source
    _check_keys(study, source)
    return study


def bundled_studies() -> dict[str, Path]:
    return {p.stem: p for p in sorted(STUDIES_DIR.glob("*.yaml"))}


def find_study(name_or_path: str | Path) -> Path:
    """A bundled study name (``component``) or a path to a study YAML."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if p.exists():
            return p
        raise StudyError(f"study file '{p}' does not exist")
    known = bundled_studies()
    if str(name_or_path) in known:
        return known[str(name_or_path)]
    import difflib

    close = difflib.get_close_matches(str(name_or_path), list(known), n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise StudyError(
        f"unknown study '{name_or_path}'{hint}; named studies: {', '.join(known)}; or give a path to a study YAML"
    )


def load_study(name_or_path: str | Path) -> Study:
    path = find_study(name_or_path)
    return parse_study(read_yaml(path), source=str(path))


def list_studies() -> list[Study]:
    return [load_study(p) for p in bundled_studies().values()]
