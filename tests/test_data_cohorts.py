"""``data.cohorts`` / ``data.cohort_weights`` on the bundled manifest (cohorts TCGA: 1 slide,
openslide-testdata: 2 slides)."""

from __future__ import annotations

import numpy as np
import pytest

from pathfm.config import load_config
from pathfm.data.cohorts import select_cohorts, slide_weights
from pathfm.data.dataset import OnlinePatchDataset
from pathfm.data.manifest import load_manifest
from pathfm.errors import ConfigError

MANIFEST = "samples/wsi/manifest.csv"


def test_selection_keeps_the_named_cohorts_and_names_an_empty_one():
    entries = load_manifest(MANIFEST)
    assert [e.slide_id for e in select_cohorts(entries, ["TCGA"], MANIFEST)] == ["TCGA-CR-7395-01A-01-TS1"]
    assert len(select_cohorts(entries, None, MANIFEST)) == 3
    with pytest.raises(ConfigError, match=r"no slide of cohort GTEx in samples/wsi/manifest.csv.*"
                                          r"TCGA \(1\), openslide-testdata \(2\)"):  # fmt: skip
        select_cohorts(entries, ["TCGA", "GTEx"], MANIFEST)


def test_cohort_share_is_split_over_its_slides():
    entries = load_manifest(MANIFEST)
    w = slide_weights(entries, ["TCGA", "openslide-testdata"], [3.0, 1.0])
    assert w == pytest.approx([0.125, 0.125, 0.75])
    assert slide_weights(entries, ["TCGA"], None) is None
    with pytest.raises(ConfigError, match="data.cohort_weights"):
        load_config("smoke", ["data.cohort_weights=[1.0]"])


def test_sampler_draws_cohorts_in_their_shares_and_only_selected_cohorts():
    cfg = load_config("smoke", ["data.cohorts=[TCGA, openslide-testdata]", "data.cohort_weights=[0.9, 0.1]"])
    sampler = OnlinePatchDataset.from_config(cfg).sampler
    rng = np.random.default_rng(0)
    active = sampler.active()
    picks = [sampler.pick(active, rng).entry.cohort for _ in range(4000)]
    assert picks.count("TCGA") / len(picks) == pytest.approx(0.9, abs=0.02)
    only = OnlinePatchDataset.from_config(load_config("smoke", ["data.cohorts=[openslide-testdata]"]))
    assert {s.entry.cohort for s in only.sampler.sources} == {"openslide-testdata"}
    assert only[0]["slide_id"].startswith("CMU-1")
