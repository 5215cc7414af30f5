"""Experimental designs over recipe knobs: full factorial and 2-level fractional factorial.

One-at-a-time ablations cannot see interactions (does KDE help only when HED is on?). A 2-level
factorial over k factors estimates every main effect and interaction from 2^k runs; a regular fractional
factorial 2^(k-p) keeps the main effects (and, at resolution IV, keeps them clear of two-factor
interactions) in 2^(k-p) runs by *generating* p columns as products of the k-p base columns.

Conventions (Box, Hunter & Hunter, *Statistics for Experimenters*, 2nd ed., ch. 5-6; Montgomery,
*Design and Analysis of Experiments*, ch. 8):

* coded levels are -1 (low / off) and +1 (high / on); runs are in standard (Yates) order, the first
  factor alternating fastest;
* a generator ``"D = A*B*C"`` (or ``"D=-A*B*C"``) sets column D to the product of columns A, B, C;
  the words ``I = A*B*C*D`` it implies, multiplied together, form the *defining relation*;
* the *resolution* is the length of the shortest word of the defining relation: III confounds main
  effects with two-factor interactions, IV keeps main effects clear of them, V keeps two-factor
  interactions clear of each other.

Everything here is pure (numpy only) so it is testable and usable from a study YAML.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from pathfm.errors import ConfigError

# Minimum-aberration regular designs (Box, Hunter & Hunter 2005, Table 6.22; Montgomery Table 8.14),
# written with letters A, B, C, ... for the k factors in order. Key: (k, p) -> generators.
STANDARD_GENERATORS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 1): ("C=A*B",),
    (4, 1): ("D=A*B*C",),
    (5, 1): ("E=A*B*C*D",),
    (5, 2): ("D=A*B", "E=A*C"),
    (6, 1): ("F=A*B*C*D*E",),
    (6, 2): ("E=A*B*C", "F=B*C*D"),
    (6, 3): ("D=A*B", "E=A*C", "F=B*C"),
    (7, 1): ("G=A*B*C*D*E*F",),
    (7, 2): ("F=A*B*C*D", "G=A*B*D*E"),
    (7, 3): ("E=A*B*C", "F=B*C*D", "G=A*C*D"),
    (7, 4): ("D=A*B", "E=A*C", "F=B*C", "G=A*B*C"),
    (8, 2): ("G=A*B*C*D", "H=A*B*E*F"),
    (8, 3): ("F=A*B*C", "G=A*B*D", "H=B*C*D*E"),
    (8, 4): ("E=B*C*D", "F=A*C*D", "G=A*B*C", "H=A*B*D"),
}


def full_factorial(levels: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the given levels, first factor varying fastest (standard order).

    ``full_factorial({"kde_weight": [0, 0.05], "hed_strength": [0, 0.05]})`` -> 4 runs.
    """
    if not levels:
        raise ConfigError("full_factorial needs at least one factor")
    for name, values in levels.items():
        if not isinstance(values, (list, tuple)) or len(values) < 1:
            raise ConfigError(f"factor '{name}' needs a list of levels, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"factor '{name}' repeats a level: {list(values)}")
    names = list(levels)
    runs = []
    # itertools.product varies the LAST factor fastest; reverse to make the first one fastest.
    for combo in itertools.product(*(levels[n] for n in reversed(names))):
        runs.append(dict(zip(reversed(names), combo)))
    return [{n: run[n] for n in names} for run in runs]


def two_level_full(k: int) -> np.ndarray:
    """The 2^k design matrix in coded units (-1/+1), standard order, shape (2^k, k)."""
    if k < 1:
        raise ConfigError(f"a factorial needs k >= 1 factors, got {k}")
    n = 2**k
    rows = np.arange(n)[:, None]
    return np.where((rows >> np.arange(k)[None, :]) & 1, 1, -1).astype(int)


@dataclass(frozen=True)
class Generator:
    """``target = sign * product(sources)``."""

    target: str
    sources: tuple[str, ...]
    sign: int = 1

    @property
    def word(self) -> frozenset[str]:
        """The defining word ``I = target * sources`` (as a set of factor names)."""
        return frozenset((self.target, *self.sources))


def parse_generator(text: str, factors: Sequence[str]) -> Generator:
    """Parse ``"D=A*B*C"`` / ``"highres = -kde*hsv*hed"`` (``*`` or whitespace between factor names;
    single letters may also be run together, ``D=ABC``, when every factor is one letter)."""
    if "=" not in text:
        raise ConfigError(f"generator '{text}' must look like 'D=A*B*C'")
    target, rhs = (s.strip() for s in text.split("=", 1))
    sign = 1
    if rhs.startswith("-"):
        sign, rhs = -1, rhs[1:].strip()
    elif rhs.startswith("+"):
        rhs = rhs[1:].strip()
    if "*" in rhs or " " in rhs:
        sources = tuple(s for s in rhs.replace("*", " ").split() if s)
    elif all(len(f) == 1 for f in factors):
        sources = tuple(rhs)
    else:
        sources = (rhs,)
    known = set(factors)
    for name in (target, *sources):
        if name not in known:
            raise ConfigError(f"generator '{text}': '{name}' is not one of the factors {list(factors)}")
    if target in sources:
        raise ConfigError(f"generator '{text}': '{target}' cannot generate itself")
    if len(sources) < 2:
        raise ConfigError(f"generator '{text}' must be a product of at least two factors")
    if len(set(sources)) != len(sources):
        raise ConfigError(f"generator '{text}' repeats a factor")
    return Generator(target, sources, sign)


def defining_relation(generators: Sequence[Generator]) -> list[frozenset[str]]:
    """All words of the defining contrast subgroup (products of every non-empty subset of the
    generator words; a factor appearing twice cancels, since x*x = I)."""
    words = [g.word for g in generators]
    out: set[frozenset[str]] = set()
    for r in range(1, len(words) + 1):
        for subset in itertools.combinations(words, r):
            w: frozenset[str] = frozenset()
            for x in subset:
                w = w ^ x
            if w:
                out.add(w)
    return sorted(out, key=lambda w: (len(w), sorted(w)))


def resolution(generators: Sequence[Generator]) -> int | None:
    """Length of the shortest defining word (None for a full factorial)."""
    words = defining_relation(generators)
    return min(len(w) for w in words) if words else None


def aliases(effect: Sequence[str], generators: Sequence[Generator], max_order: int = 2) -> list[str]:
    """Effects confounded with ``effect`` (e.g. ``["kde", "hed"]``) up to interactions of ``max_order``."""
    e = frozenset(effect)
    out = []
    for w in defining_relation(generators):
        a = e ^ w
        if 0 < len(a) <= max_order:
            out.append("*".join(sorted(a)))
    return sorted(set(out), key=lambda s: (s.count("*"), s))


@dataclass(frozen=True)
class FactorialDesign:
    """A 2-level (fractional) factorial: coded matrix, factor names and its generators."""

    factors: tuple[str, ...]
    matrix: np.ndarray  # (runs, k) of -1/+1
    generators: tuple[Generator, ...] = ()

    @property
    def n_runs(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def resolution(self) -> int | None:
        return resolution(self.generators)

    def runs(self) -> list[dict[str, int]]:
        return [dict(zip(self.factors, map(int, row))) for row in self.matrix]

    def alias_table(self, max_order: int = 2) -> dict[str, list[str]]:
        """Main effects and two-factor interactions -> what they are confounded with."""
        order = {f: i for i, f in enumerate(self.factors)}

        def in_order(effect: str) -> str:
            return "*".join(sorted(effect.split("*"), key=order.__getitem__))

        table = {}
        effects = [(f,) for f in self.factors] + list(itertools.combinations(self.factors, 2))
        for eff in effects:
            table["*".join(eff)] = [in_order(a) for a in aliases(eff, self.generators, max_order)]
        return table

    def describe(self) -> str:
        k, n = len(self.factors), self.n_runs
        p = len(self.generators)
        if not p:
            return f"2^{k} full factorial, {n} runs"
        roman = {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}.get(self.resolution or 0, "?")
        gens = ", ".join(_generator_text(g) for g in self.generators)
        return f"2^({k}-{p}) resolution {roman}, {n} runs, generators {gens}"


def _generator_text(g: Generator) -> str:
    return f"{g.target}={'-' if g.sign < 0 else ''}{'*'.join(g.sources)}"


def fractional_factorial(
    factors: Sequence[str],
    generators: Sequence[str] | None = None,
    *,
    min_resolution: int | None = None,
) -> FactorialDesign:
    """A regular 2-level design over ``factors``.

    With ``generators`` (e.g. ``["highres=kde*hsv*hed"]``) the generated factors are computed from the
    others; with ``min_resolution`` the smallest standard design of at least that resolution is picked
    from :data:`STANDARD_GENERATORS` (letters mapped onto ``factors`` in order); with neither, the full
    2^k factorial.
    """
    factors = tuple(factors)
    if len(set(factors)) != len(factors):
        raise ConfigError(f"factors repeat a name: {list(factors)}")
    k = len(factors)
    if k < 1:
        raise ConfigError("a design needs at least one factor")
    if generators and min_resolution:
        raise ConfigError("give either generators or min_resolution, not both")
    if min_resolution is not None:
        generators = _standard_for(factors, min_resolution)
    gens = tuple(parse_generator(g, factors) for g in (generators or ()))
    targets = [g.target for g in gens]
    if len(set(targets)) != len(targets):
        raise ConfigError(f"each factor may be generated once, got targets {targets}")
    base = [f for f in factors if f not in targets]
    for g in gens:
        bad = [s for s in g.sources if s in targets]
        if bad:
            raise ConfigError(f"generator {_generator_text(g)} uses generated factor(s) {bad}; use base factors {base}")
    if not base:
        raise ConfigError("every factor is generated; at least one must be a base factor")
    base_matrix = two_level_full(len(base))
    cols = {f: base_matrix[:, i] for i, f in enumerate(base)}
    for g in gens:
        col = np.full(base_matrix.shape[0], g.sign, dtype=int)
        for s in g.sources:
            col = col * cols[s]
        cols[g.target] = col
    matrix = np.stack([cols[f] for f in factors], axis=1)
    design = FactorialDesign(factors, matrix, gens)
    if len({tuple(r) for r in matrix}) != design.n_runs:
        raise ConfigError(f"the generators {list(generators or [])} give repeated runs; the design is degenerate")
    return design


def _standard_for(factors: Sequence[str], min_resolution: int) -> list[str]:
    """The most fractionated standard design with resolution >= ``min_resolution``."""
    k = len(factors)
    if min_resolution < 3:
        raise ConfigError(f"min_resolution must be >= 3 (III), got {min_resolution}")
    letters = "ABCDEFGH"
    best: tuple[str, ...] = ()
    for p in range(1, k):
        gens = STANDARD_GENERATORS.get((k, p))
        if gens is None:
            continue
        parsed = [parse_generator(g, letters[:k]) for g in gens]
        if (resolution(parsed) or 99) >= min_resolution:
            best = gens
    mapping = dict(zip(letters, factors))
    out = []
    for g in best:
        target, rhs = g.split("=")
        out.append(f"{mapping[target]}={'*'.join(mapping[s] for s in rhs.split('*'))}")
    return out


# --------------------------------------------------------------------------------------- checks
def is_balanced(matrix: np.ndarray) -> bool:
    """Every column has as many -1 as +1."""
    return bool(np.all(np.asarray(matrix).sum(axis=0) == 0))


def is_orthogonal(matrix: np.ndarray) -> bool:
    """Main-effect columns are mutually orthogonal: X^T X = n I."""
    x = np.asarray(matrix, dtype=float)
    return bool(np.allclose(x.T @ x, x.shape[0] * np.eye(x.shape[1])))


def interaction_column(matrix: np.ndarray, factors: Sequence[str], effect: Sequence[str]) -> np.ndarray:
    """The contrast column of an interaction, e.g. ``["kde", "hed"]`` -> kde * hed."""
    idx = [list(factors).index(f) for f in effect]
    return np.prod(np.asarray(matrix)[:, idx], axis=1)
