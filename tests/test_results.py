"""The results schema's one owner (pathfm.results): one sweep_meta.json reader that collection and analysis
share, typed frames in the documented schemas (fast, real files)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from pathfm.analysis.load import ResultsError, sweep_meta_of
from pathfm.errors import PathfmError
from pathfm.io import append_jsonl, atomic_write_json
from pathfm.records import read_sweep_meta
from pathfm.results import EVAL_SCHEMA, SWEEP_SCHEMA, eval_frame, sweep_frame
from pathfm.sweeps.collect import collect


def test_one_sweep_meta_reader_for_collection_and_analysis(tmp_path: Path):
    sweep = tmp_path / "sw"
    d = sweep / "trial_x_00000"
    append_jsonl(d / "metrics.jsonl", {"step": 1, "loss": 2.0, "time_s": 1.0})
    atomic_write_json(d / "trial.json", {"trial_id": "x_00000", "params": {"kde_weight": 0.1}, "status": "TERMINATED"})
    assert read_sweep_meta(sweep) == {}  # missing: {} for everyone
    results = collect(sweep)
    assert sweep_meta_of(results) == {}
    atomic_write_json(sweep / "sweep_meta.json", {"sweep": "named", "params": ["kde_weight"]})
    assert pl.read_parquet(collect(sweep))["sweep"].unique().to_list() == ["named"]
    assert sweep_meta_of(results)["sweep"] == "named"
    (sweep / "sweep_meta.json").write_text("{not json")  # unreadable: one error naming the file and the fix
    with pytest.raises(PathfmError, match=r"sweep_meta\.json: not readable as JSON.*delete it"):
        collect(sweep)
    with pytest.raises(ResultsError, match=r"sweep_meta\.json: not readable as JSON"):
        sweep_meta_of(results)


def test_frames_carry_the_schema_columns_and_types():
    empty = eval_frame([])
    assert empty.columns == list(EVAL_SCHEMA) and empty.schema["fold"] == pl.Int64
    rows = [{"trial_id": "a", "step": 3, "value": 1, "param.k": 1}, {"trial_id": "b", "param.k": 2.5},
            {"trial_id": "c", "param.m": [1, 2]}]
    df = sweep_frame(rows, ["k", "m"])
    assert df.columns == [*SWEEP_SCHEMA, "param.k", "param.m"]
    assert df.schema["value"] == pl.Float64 and df.schema["param.k"] == pl.Float64 and df.schema["final"] == pl.Boolean
    assert df["param.k"].to_list() == [1.0, 2.5, None] and df["param.m"].to_list() == [None, None, "[1, 2]"]
