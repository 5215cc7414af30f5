"""Data size as a knob: nested, seeded subsets of the slide manifest.

``nested_subset(entries, n, seed)`` takes the first ``n`` slides of one seeded permutation, so for a fixed
seed every smaller subset is contained in every larger one (the 12-slide set is inside the 48-slide set),
which is what clean data-efficiency curves need. The permutation is taken over the slides sorted by
``slide_id``, so it does not depend on the manifest's row order.

With ``group_by_patient`` the *patients* are permuted and their slides kept together; the subset is the
first ``n`` slides of that order (nested as well; only the last patient may be cut).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pathfm.data.manifest import SlideEntry
from pathfm.errors import ConfigError


def subset_order(entries: Sequence[SlideEntry], seed: int, group_by_patient: bool = False) -> list[SlideEntry]:
    """All entries in the seeded order whose prefixes are the nested subsets."""
    ordered = sorted(entries, key=lambda e: e.slide_id)
    rng = np.random.default_rng([int(seed), 0x5EB5E7])
    if not group_by_patient:
        return [ordered[i] for i in rng.permutation(len(ordered))]
    groups: dict[str, list[SlideEntry]] = {}
    for e in ordered:
        groups.setdefault(e.patient_id or f"slide:{e.slide_id}", []).append(e)
    keys = sorted(groups)
    return [e for i in rng.permutation(len(keys)) for e in groups[keys[i]]]


def nested_subset(entries: Sequence[SlideEntry], n: int | None, seed: int,
                  group_by_patient: bool = False) -> list[SlideEntry]:
    """The first ``n`` slides of :func:`subset_order` (all of them, in manifest order, when n is None)."""
    if n is None:
        return list(entries)
    if n > len(entries):
        raise ConfigError(f"data.n_slides={n} but the manifest has only {len(entries)} slides")
    return subset_order(entries, seed, group_by_patient)[:n]
