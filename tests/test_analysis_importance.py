"""Parameter importance, marginal effects, the acceptance-rate plot and the full report."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pathfm.analysis.importance import marginal_effect, param_importance
from synthetic_results import synthetic_results
from pathfm.cli import main
from pathfm.errors import PathfmError


def _random_search(n: int = 60, seed: int = 0) -> pl.DataFrame:
    """Trials whose score depends strongly on log10(lr), weakly on kde_weight, not at all on 'noise'."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        lr = 10 ** rng.uniform(-5, -2)
        kde = rng.uniform(0, 0.2)
        noise = rng.choice(["a", "b", "c"])
        score = 0.9 - 0.05 * (np.log10(lr) + 3.5) ** 2 + 0.1 * kde + rng.normal(0, 0.003)
        base = dict(sweep="rs", trial_id=f"t{i:03d}", arm=None, status="TERMINATED", seed=0, step=100, final=True,
                    **{"param.lr": lr, "param.kde_weight": kde, "param.noise": str(noise)})
        rows.append({**base, "kind": "eval", "task": "crc", "probe": "linear", "backbone": "trained", "fold": 0,
                     "metric": "balanced_accuracy", "value": score})
        rows.append({**base, "kind": "train", "task": None, "probe": None, "backbone": None, "fold": None,
                     "metric": "acceptance_rate", "value": float(rng.uniform(0.3, 0.9))})
    return pl.DataFrame(rows)


@pytest.mark.parametrize("method", ["fanova", "permutation"])
def test_importance_ranks_the_knob_that_matters_first(method):
    from pathfm.analysis.load import trial_values

    tv = trial_values(_random_search())
    imp = param_importance(tv, method=method, n_boot=4, seed=0)
    order = [imp.params[i] for i in np.argsort(-imp.point)]
    assert order[0] == "lr", (order, imp.point)
    assert imp.point.sum() == pytest.approx(1.0)
    i_lr, i_noise = imp.params.index("lr"), imp.params.index("noise")
    assert imp.lo[i_lr] > imp.hi[i_noise]  # error bars separate the real knob from the dummy one


def test_marginal_effect_bins_continuous_knobs_and_keeps_levels():
    from pathfm.analysis.load import trial_values

    tv = trial_values(_random_search())
    me = marginal_effect(tv, "param.lr")
    assert me.height == 8 and me["n"].sum() == 60 and (me["ci_low"] <= me["mean"]).all()
    peak = me["x"][int(np.argmax(me["mean"].to_numpy()))]
    assert 10 ** -4.3 < peak < 10 ** -2.7  # the true optimum is at 10^-3.5
    cat = marginal_effect(tv, "param.noise")
    assert cat["label"].to_list() == ["a", "b", "c"]


def test_importance_cli_and_acceptance_plot(tmp_path, capsys):
    _random_search().write_parquet(tmp_path / "results.parquet")
    out = tmp_path / "imp"
    assert main(["analyze", "importance", str(tmp_path), "--imp-boot", "3", "--against", "acceptance_rate",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| lr |" in text and "Pearson r" in text
    for stem in ("importance", "score_vs_acceptance_rate"):
        png = out / f"{stem}.png"
        assert png.stat().st_size > 5000
        assert np.asarray(Image.open(png).convert("L")).std() > 10
        meta = json.loads((out / f"{stem}.json").read_text())
        assert len(meta["trial_ids"]) == 60 and meta["git_commit"]


def test_importance_without_searched_params_is_a_clear_error():
    df = synthetic_results(arms={"a": 0.0}, n_slides=(100,), seeds=2, tasks=("crc",), folds=1, steps=(10,))
    from pathfm.analysis.load import trial_values

    with pytest.raises(PathfmError, match="no searched parameter varies"):
        param_importance(trial_values(df))
    with pytest.raises(PathfmError, match="no train rows with metric 'tissue_rate'"):
        from pathfm.analysis.load import train_metric

        train_metric(df, "tissue_rate")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_report_has_tables_and_embedded_figures(tmp_path):
    synthetic_results(seeds=2, tasks=("crc", "osteo"), folds=2, steps=(10,)).write_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep_meta.json").write_text(json.dumps({"study": "smoke", "baseline_arm": "baseline"}))
    out = tmp_path / "report"
    assert main(["analyze", "report", str(tmp_path), "--target", "0.85", "--fit-boot", "30",
                 "--imp-boot", "3", "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert md.startswith("# pathfm analysis report: test_report_has_tables_and_0 (study smoke)") or "(study smoke)" in md.splitlines()[0]
    assert "## Ablation table" in md and "Δ Average" in md and "## Data efficiency" in md
    assert "![data_efficiency](data_efficiency.png)" in md and "Parameter importance and acceptance rate" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<b>" in html  # ablation, curve, importance, acceptance
    assert (out / "table.tex").read_text().count(r"\midrule") == 1
