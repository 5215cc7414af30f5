"""Last vs average-of-last-K vs best-by-probe checkpoint, on a real short training run with an in-training kNN
probe: the candidates are the right checkpoints, all are evaluated on the same folds, and best-by-probe is left
out when the probe task overlaps the evaluation's test tiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from pathfm.eval.checkpoint_compare import best_probe_step, candidates, compare_checkpoints, comparison_markdown


def test_best_probe_step_only_among_kept_checkpoints():
    recs = [{"step": 2, "probe/crc/balanced_accuracy": 0.5}, {"step": 3, "probe/crc/balanced_accuracy": 0.9},
            {"step": 4, "probe/crc/balanced_accuracy": 0.7}, {"step": 5, "loss": 1.0},
            {"step": 6, "probe/crc/balanced_accuracy": float("nan")}]
    assert best_probe_step(recs, [2, 4, 6]) == (4, "probe/crc/balanced_accuracy", 0.7)
    assert best_probe_step(recs, [5]) is None


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory) -> Path:
    from pathfm.config import load_config
    from pathfm.eval.hook import probe_teacher
    from pathfm.ssl.trainer import train

    run = tmp_path_factory.mktemp("ckcmp") / "run"
    cfg = load_config("smoke", ["data.batch_size=2", "data.crops.n_local=2", "run.progress=false", "optim.steps=6",
                                "optim.warmup_steps=1", "run.checkpoint_every=2", "run.keep_checkpoints=3",
                                "run.threads=1", "probe.every=2", "probe.tasks=[crc]", "data.assume_mpp=0.5"])
    train(cfg, run, probe=probe_teacher)
    return run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_three_candidates_evaluated_side_by_side(probed_run: Path):
    cands, notes = candidates(probed_run, 3, ["pcam_train"])
    names = {c.name: c.steps for c in cands}
    assert names["last"] == (6,) and names["avg_last_3"] == (2, 4, 6)
    assert len(names["best_probe"]) == 1 and names["best_probe"][0] in (2, 4, 6)
    table, notes = compare_checkpoints(probed_run, ["pcam_train"], probes=["knn"], k=3, device="cpu")
    assert sorted(table["candidate"].to_list()) == ["avg_last_3", "best_probe", "last"]
    assert set(table["n"].to_list()) == {5}  # the same 5 folds for every candidate
    assert all(0.0 <= v <= 1.0 for v in table["mean"].to_list())
    text = comparison_markdown(table, notes)
    assert "| avg_last_3 | 2,4,6 |" in text and "best_probe: step" in text
    # the probe (crc) would select on crc's test tiles: best-by-probe is left out with the reason
    cands, notes = candidates(probed_run, 3, ["crc9"])
    assert "best_probe" not in {c.name for c in cands}
    assert any("probe task 'crc' holds" in n for n in notes)
