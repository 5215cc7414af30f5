"""Cohorts as a data knob: train on the slides of chosen manifest cohorts, with per-cohort sampling shares.

The manifest's ``cohort`` column names each slide's cohort (TCGA, NKI, CPTAC, GTEx ...). ``data.cohorts``
keeps the slides of the listed cohorts (before ``data.n_slides`` subsets them); a listed cohort without
a slide is an error naming the manifest and the cohorts it holds. ``data.cohort_weights`` gives each listed
cohort its share of the draws, split evenly over its usable slides; without weights every slide is
equally likely (cohorts weigh by their slide counts), as without cohorts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from pathfm.data.manifest import SlideEntry
from pathfm.errors import ConfigError

NO_COHORT = "(none)"


def cohort_of(entry: SlideEntry) -> str:
    return entry.cohort or NO_COHORT


def select_cohorts(entries: Sequence[SlideEntry], cohorts: Sequence[str] | None, source: str) -> list[SlideEntry]:
    """The entries of ``cohorts`` (all entries when None), in manifest order."""
    if cohorts is None:
        return list(entries)
    present = Counter(cohort_of(e) for e in entries)
    empty = [c for c in cohorts if present.get(c, 0) == 0]
    if empty:
        held = ", ".join(f"{c} ({n})" for c, n in sorted(present.items()))
        raise ConfigError(
            f"data.cohorts: no slide of cohort {', '.join(empty)} in {source}; its cohort column holds {held} "
            "(slides per cohort in brackets); fix the names or the manifest's cohort column"
        )
    keep = set(cohorts)
    return [e for e in entries if cohort_of(e) in keep]


def slide_weights(entries: Sequence[SlideEntry], cohorts: Sequence[str] | None,
                  weights: Sequence[float] | None) -> list[float] | None:
    """Per-slide draw probabilities: cohort share / its number of slides; None without cohort weights."""
    if weights is None:
        return None
    if cohorts is None or len(cohorts) != len(weights):
        raise ConfigError("data.cohort_weights needs data.cohorts and one weight per cohort")
    count = Counter(cohort_of(e) for e in entries)
    share = dict(zip(cohorts, weights))
    total = sum(share[c] for c in count)
    return [share[cohort_of(e)] / count[cohort_of(e)] / total for e in entries]
