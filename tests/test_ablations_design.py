"""Design matrices: full factorial order, regular fractional factorials (balance, orthogonality,
resolution, aliasing) against textbook facts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pathfm.ablations.design import (
    STANDARD_GENERATORS,
    defining_relation,
    fractional_factorial,
    full_factorial,
    interaction_column,
    is_balanced,
    is_orthogonal,
    parse_generator,
    resolution,
    two_level_full,
)
from pathfm.errors import ConfigError


def test_full_factorial_is_every_combination_first_factor_fastest():
    runs = full_factorial({"kde_weight": [0.0, 0.05], "hed_strength": [0.0, 0.02, 0.05]})
    assert len(runs) == 6
    assert runs[0] == {"kde_weight": 0.0, "hed_strength": 0.0}
    assert runs[1] == {"kde_weight": 0.05, "hed_strength": 0.0}  # first factor alternates fastest
    assert {tuple(r.values()) for r in runs} == set(itertools.product([0.0, 0.05], [0.0, 0.02, 0.05]))


def test_full_factorial_rejects_repeated_levels():
    with pytest.raises(ConfigError, match="repeats a level"):
        full_factorial({"kde_weight": [0.1, 0.1]})


def test_two_level_full_is_balanced_and_orthogonal():
    for k in range(1, 6):
        x = two_level_full(k)
        assert x.shape == (2**k, k)
        assert is_balanced(x) and is_orthogonal(x)
        assert len({tuple(r) for r in x}) == 2**k


def test_half_fraction_of_four_factors_is_resolution_iv():
    d = fractional_factorial(["kde", "hsv", "hed", "highres"], ["highres=kde*hsv*hed"])
    assert d.n_runs == 8 and d.resolution == 4
    x = d.matrix
    assert is_balanced(x) and is_orthogonal(x)
    assert np.array_equal(x[:, 3], x[:, 0] * x[:, 1] * x[:, 2])
    # resolution IV: every main effect is orthogonal to every two-factor interaction ...
    for f in d.factors:
        for pair in itertools.combinations(d.factors, 2):
            col = interaction_column(x, d.factors, pair)
            assert col @ x[:, d.factors.index(f)] == 0
    # ... while two-factor interactions are aliased in pairs: kde*hed == hsv*highres
    assert np.array_equal(interaction_column(x, d.factors, ["kde", "hed"]),
                          interaction_column(x, d.factors, ["hsv", "highres"]))
    assert d.alias_table()["kde*hed"] == ["hsv*highres"]
    assert d.alias_table()["kde"] == []


def test_resolution_iii_design_confounds_main_effects_with_interactions():
    d = fractional_factorial(list("ABC"), ["C=A*B"])
    assert d.resolution == 3 and d.n_runs == 4
    assert np.array_equal(d.matrix[:, 2], interaction_column(d.matrix, d.factors, ["A", "B"]))
    assert "A*B" in d.alias_table()["C"]


@pytest.mark.parametrize("k,p", sorted(STANDARD_GENERATORS))
def test_standard_designs_are_balanced_orthogonal_with_the_textbook_resolution(k, p):
    factors = list("ABCDEFGH"[:k])
    d = fractional_factorial(factors, list(STANDARD_GENERATORS[(k, p)]))
    assert d.n_runs == 2 ** (k - p)
    assert is_balanced(d.matrix) and is_orthogonal(d.matrix)
    # textbook resolutions (Box, Hunter & Hunter Table 6.22)
    expected = {(3, 1): 3, (4, 1): 4, (5, 1): 5, (5, 2): 3, (6, 1): 6, (6, 2): 4, (6, 3): 3, (7, 1): 7,
                (7, 2): 4, (7, 3): 4, (7, 4): 3, (8, 2): 5, (8, 3): 4, (8, 4): 4}
    assert d.resolution == expected[(k, p)]


def test_min_resolution_picks_the_smallest_design_that_reaches_it():
    names = ["kde", "hsv", "hed", "highres", "n_slides", "steps"]
    assert fractional_factorial(names, min_resolution=4).n_runs == 16  # 2^(6-2) IV
    assert fractional_factorial(names, min_resolution=3).n_runs == 8  # 2^(6-3) III
    assert fractional_factorial(names, min_resolution=6).n_runs == 32  # 2^(6-1) VI
    assert fractional_factorial(["kde", "hed"], min_resolution=4).n_runs == 4  # nothing smaller: full


def test_defining_relation_multiplies_words():
    gens = [parse_generator(g, list("ABCDEF")) for g in ("E=A*B*C", "F=B*C*D")]
    words = {"".join(sorted(w)) for w in defining_relation(gens)}
    assert words == {"ABCE", "BCDF", "ADEF"}
    assert resolution(gens) == 4


def test_negative_generator_and_letter_shorthand():
    d = fractional_factorial(list("ABCD"), ["D=-ABC"])
    assert np.array_equal(d.matrix[:, 3], -d.matrix[:, 0] * d.matrix[:, 1] * d.matrix[:, 2])


@pytest.mark.parametrize("gens,msg", [
    (["D=A*B*Z"], "not one of the factors"),
    (["D=A"], "at least two factors"),
    (["D=A*B", "C=A*D"], "uses generated factor"),
    (["D A B"], "must look like"),
])
def test_bad_generators_are_named(gens, msg):
    with pytest.raises(ConfigError, match=msg):
        fractional_factorial(list("ABCD"), gens)
