"""One entry of a sweep's search space and its translations, in one place: a numpy draw (seeded random
search, :meth:`Distribution.sample`), a Ray Tune domain (:meth:`Distribution.tune_domain`) and an Optuna
suggestion (:meth:`Distribution.suggest`); YAML forms in :mod:`pathfm.sweeps.spec`."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator

from pathfm.errors import ConfigError

DIST_KINDS = ("choice", "grid", "uniform", "loguniform", "int", "constant")


def categorical_value(value: Any) -> Any:
    """A parameter value as Optuna categoricals and Tune configs hold it: None/bool/int/float/str as is,
    anything else (a list, a mapping) as its JSON text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


class Distribution(BaseModel):
    """One entry of the search space: exactly one of the fields is set.

    ``Distribution(grid=[0, 0.1])``, ``Distribution.model_validate({"loguniform": [1e-4, 1e-2]})`` or a
    plain constant ``Distribution.model_validate(0.1)``. ``int`` is an inclusive range; ``log: true``
    samples an ``int`` range log-uniformly.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    log: bool = False
    constant: Any = None

    @model_validator(mode="before")
    @classmethod
    def _wrap_constant(cls, data: Any) -> Any:
        if isinstance(data, Distribution):
            return data
        if isinstance(data, dict) and data and set(data) <= set(DIST_KINDS) | {"log", "int_"}:
            return data
        if isinstance(data, dict) and data:
            raise ValueError(
                f"a search-space entry is a constant or one of {{{', '.join(DIST_KINDS[:5])}: ...}}, got keys {sorted(data)}"
            )
        return {"constant": data}

    @model_validator(mode="after")
    def _exactly_one(self) -> "Distribution":
        set_kinds = [k for k in DIST_KINDS if k != "constant" and self._get(k) is not None]
        if len(set_kinds) > 1:
            raise ValueError(f"give exactly one of {', '.join(DIST_KINDS[:5])}; got {', '.join(set_kinds)}")
        for k in ("choice", "grid"):
            v = self._get(k)
            if v is not None and len(v) == 0:
                raise ValueError(f"{k} needs at least one value")
        for k in ("uniform", "loguniform", "int"):
            v = self._get(k)
            if v is not None and not v[0] <= v[1]:
                raise ValueError(f"{k}: [low, high] needs low <= high, got {list(v)}")
        lu = self.loguniform
        if lu is not None and lu[0] <= 0:
            raise ValueError(f"loguniform needs positive bounds, got {list(lu)}")
        if self.log and self.int_ is not None and self.int_[0] <= 0:
            raise ValueError("int with log: true needs low >= 1")
        return self

    def _get(self, kind: str) -> Any:
        return self.int_ if kind == "int" else getattr(self, kind)

    @property
    def kind(self) -> str:
        for k in DIST_KINDS[:5]:
            if self._get(k) is not None:
                return k
        return "constant"

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("choice", "grid", "constant")

    def values(self) -> list[Any]:
        """All values of a discrete entry (grid/choice/constant)."""
        if self.kind in ("choice", "grid"):
            return list(self._get(self.kind))
        if self.kind == "constant":
            return [self.constant]
        raise ConfigError(f"{self.kind} has no finite list of values")

    def extremes(self) -> list[Any]:
        """Values that bound the entry (used to validate configs of adaptive searches up front)."""
        if self.is_discrete:
            return self.values()
        lo, hi = self._get(self.kind)
        return [lo, hi]

    def sample(self, rng: Any) -> Any:
        """Draw one value with a numpy Generator (seeded random search)."""
        k = self.kind
        if k == "constant":
            return self.constant
        if k in ("choice", "grid"):
            vals = self._get(k)
            return vals[int(rng.integers(len(vals)))]
        lo, hi = self._get(k)
        if k == "uniform":
            return float(rng.uniform(lo, hi))
        if k == "loguniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if self.log:
            return int(min(hi, math.floor(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))
        return int(rng.integers(lo, hi + 1))

    def categories(self) -> list[Any]:
        """The values of a discrete entry as search libraries accept them (:func:`categorical_value`)."""
        return [categorical_value(v) for v in self.values()]

    def decode(self, value: Any) -> Any:
        """The spec's value for a value drawn by a search library (undoes :func:`categorical_value`)."""
        if self.is_discrete and isinstance(value, str):
            return next((v for v in self.values() if categorical_value(v) == value), value)
        return value

    def tune_domain(self, *, grid: bool = False) -> Any:
        """This entry as a Ray Tune search-space domain: ``grid``: discrete values as ``tune.grid_search``
        (every value), else ``tune.choice``; ``uniform``/``loguniform``/``int`` as Tune's samplers with the
        same bounds (``int`` inclusive); a constant as itself."""
        from ray import tune

        k = self.kind
        if k in ("choice", "grid"):
            return tune.grid_search(self.categories()) if grid else tune.choice(self.categories())
        if k == "uniform":
            return tune.uniform(*self.uniform)
        if k == "loguniform":
            return tune.loguniform(*self.loguniform)
        if k == "int":
            lo, hi = self.int_
            return tune.lograndint(lo, hi + 1) if self.log else tune.randint(lo, hi + 1)
        return categorical_value(self.constant)

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this entry as parameter ``name`` of an Optuna trial (the spec's value, decoded)."""
        k = self.kind
        if k in ("choice", "grid"):
            return self.decode(trial.suggest_categorical(name, self.categories()))
        if k == "uniform":
            return trial.suggest_float(name, *self.uniform)
        if k == "loguniform":
            return trial.suggest_float(name, *self.loguniform, log=True)
        if k == "int":
            return trial.suggest_int(name, *self.int_, log=self.log)
        return self.constant

    @model_serializer(mode="plain")
    def _to_yaml_form(self) -> Any:
        k = self.kind
        if k == "constant":
            return self.constant
        v = self._get(k)
        out: dict[str, Any] = {k: list(v)}
        if k == "int" and self.log:
            out["log"] = True
        return out
