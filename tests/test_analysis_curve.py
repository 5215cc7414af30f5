"""Data-efficiency curves: the power-law fit recovers known parameters; few sizes do not crash."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pathfm.analysis.curve import data_efficiency, fit_power_law, plot_curve, power_law
from synthetic_results import synthetic_results
from pathfm.cli import main
from pathfm.errors import PathfmError


def test_power_law_fit_recovers_known_parameters():
    a, b, c = 0.92, 0.8, 0.45
    rng = np.random.default_rng(0)
    x = np.repeat([10, 30, 100, 300, 1000, 3000, 10000], 4).astype(float)
    y = power_law(x, a, b, c) + rng.normal(0, 0.004, x.size)
    fit = fit_power_law(x, y, n_boot=150, seed=0)
    assert fit.ok
    assert fit.a == pytest.approx(a, abs=0.01)
    assert fit.c == pytest.approx(c, abs=0.06)
    assert fit.b == pytest.approx(b, rel=0.25)
    assert fit.c_ci[0] <= c <= fit.c_ci[1] and fit.a_ci[0] <= a <= fit.a_ci[1]
    # slides to reach 0.85: solve a - b x^-c = 0.85
    truth = (b / (a - 0.85)) ** (1 / c)
    point, lo, hi = fit.x_for(0.85)
    assert lo < point < hi and point == pytest.approx(truth, rel=0.1)
    assert fit.x_for(0.99)[0] == float("inf")  # above the asymptote: never reached


@pytest.mark.parametrize("sizes", [(100, 1000), (10, 100, 1000)])
def test_two_or_three_sizes_are_under_determined_not_a_crash(tmp_path, sizes):
    df = synthetic_results(n_slides=sizes, seeds=2, tasks=("crc",), folds=2, steps=(10,))
    res = data_efficiency(df, target=0.8, n_boot=20)
    assert all(ac.fit.status == "under-determined" for ac in res.arms)
    assert "under-determined" in res.to_markdown()
    if len(sizes) == 2:  # drawing is slow on a busy machine: once is enough
        files = plot_curve(res, tmp_path / "curve")
        assert all(f.stat().st_size > 0 for f in files)


def test_curve_cli_writes_figures_with_caption_data(tmp_path, capsys):
    synthetic_results(seeds=2, tasks=("crc", "osteo"), folds=2, steps=(10,)).write_parquet(tmp_path / "results.parquet")
    out = tmp_path / "fig"
    assert main(["analyze", "curve", str(tmp_path), "--target", "0.85", "--fit-boot", "40", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exponent c" in text and "| baseline | 6 |" in text and "95% uncertainty" in text
    for ext in ("pdf", "svg", "png", "json"):
        assert (out / f"data_efficiency.{ext}").stat().st_size > 1000
    img = Image.open(out / "data_efficiency.png")
    assert img.size[0] > 800 and np.asarray(img.convert("L")).std() > 10  # not blank
    meta = json.loads(img.info["Description"])
    assert len(meta["trial_ids"]["kde"]) == 12 and meta["seeds"]["kde"] == ["0", "1"] and meta["git_commit"]
    side = json.loads((out / "data_efficiency.json").read_text())
    assert side["summary"]["arms"][0]["fit"]["status"] == "ok"
    assert b"git_commit" in (out / "data_efficiency.svg").read_bytes()


def test_curve_x_tiles_seen_and_bad_x():
    df = synthetic_results(seeds=2, tasks=("crc",), folds=1, steps=(10,))
    res = data_efficiency(df, x="tiles_seen", n_boot=20, arms=["baseline"])
    assert res.x == "tiles_seen" and res.arms[0].points["x"].min() == 10_000
    with pytest.raises(PathfmError, match="x column 'param.epochs' not in the results"):
        data_efficiency(df, x="param.epochs")
    with pytest.raises(PathfmError, match=r"arm\(s\) \['nope'\] not in the results"):
        data_efficiency(df, arms=["nope"])


def test_arm_label_excludes_the_x_param_and_keeps_others():
    df = synthetic_results(arms={"a": 0.0, "kde": 0.02}, seeds=1, tasks=("crc",), folds=1, steps=(10,))
    no_arm = df.with_columns(pl.lit(None, dtype=pl.String).alias("arm"))
    res = data_efficiency(no_arm, n_boot=10)
    assert [ac.arm for ac in res.arms] == ["kde_weight=0.0", "kde_weight=0.1"]
    one = no_arm.filter(pl.col("param.kde_weight") == 0.0)
    res = data_efficiency(one, n_boot=10)
    assert [ac.arm for ac in res.arms] == ["synthetic"] and res.arms[0].points.height == 6


def test_data_ladder_study_hints_group_curves_by_variant(tmp_path, capsys):
    """`pathfm ablate` data study: one arm per (size, variant), e.g. n4/equal_compute, with param.n_slides and
    param.variant; study_plan.json carries analysis hints {x, group_by, table_order}."""
    df = synthetic_results(arms={"equal_compute": 0.0, "equal_epochs": -0.02}, seeds=2, tasks=("crc",), folds=1,
                           n_slides=(1, 2, 4, 8, 16), steps=(10,))
    df = df.with_columns(pl.col("arm").alias("param.variant"),
                         pl.format("n{}/{}", pl.col("param.n_slides"), pl.col("arm")).alias("arm"))
    df.write_parquet(tmp_path / "results.parquet")
    order = [f"n{n}/{v}" for v in ("equal_compute", "equal_epochs") for n in (16, 8, 4, 2, 1)]
    (tmp_path / "study_plan.json").write_text(json.dumps(
        {"analysis": {"x": "n_slides", "group_by": "variant", "curve": True, "table_order": order}}))
    out = tmp_path / "fig"
    assert main(["analyze", "curve", str(tmp_path), "--fit-boot", "20", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| equal_compute | 5 |" in text and "| equal_epochs | 5 |" in text
    assert main(["analyze", "table", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| Arm"))  # after the untrained-network check
    rows = [line.split(" | ")[0].strip("| ") for line in lines[header + 2:header + 12]]
    assert rows == order
    # without hints, a ladder of one-size arms becomes one curve, not ten under-determined ones
    res = data_efficiency(df, n_boot=10)
    assert [ac.arm for ac in res.arms] == ["all arms"] and res.arms[0].fit.ok


def test_curve_draws_random_init_over_its_init_seeds_and_the_colour_histogram(tmp_path):
    df = synthetic_results(arms={"base": 0.0}, seeds=2, tasks=("crc", "osteo"), folds=2, steps=(10,))
    df = df.filter(pl.col("backbone") == "trained")  # keep the sweep-level reference rows only (added below)
    rows = [dict(sweep="synthetic", trial_id="reference", status="TERMINATED", seed=init, kind="eval", step=0, final=True,
                 task=task, probe="linear", backbone="random_init", fold=f, metric="balanced_accuracy",
                 value=0.5 + 0.01 * init + (0.02 if task == "osteo" else 0.0))
            for init in range(4) for task in ("crc", "osteo") for f in range(2)]
    rows += [dict(sweep="synthetic", trial_id="reference", status="TERMINATED", seed=None, kind="eval", step=0,
                  final=True, task=task, probe="linear", backbone="color_histogram", fold=f,
                  metric="balanced_accuracy", value=0.7) for task in ("crc", "osteo") for f in range(2)]
    df = pl.concat([df, pl.DataFrame(rows)], how="diagonal_relaxed")
    res = data_efficiency(df, n_boot=10)
    refs = {r["reference"]: r for r in res.references}
    # per init seed: the mean over tasks 0.51 + 0.01 * init; 4 init seeds -> 0.525 with a t interval
    assert refs["random_init"]["mean"] == pytest.approx(0.525) and refs["random_init"]["n_init_seeds"] == 4
    half = 3.182446 * np.std([0.51, 0.52, 0.53, 0.54], ddof=1) / 2  # t(0.975, 3) s / sqrt(4)
    assert refs["random_init"]["ci_high"] == pytest.approx(0.525 + half, rel=1e-5)
    assert refs["color_histogram"]["mean"] == pytest.approx(0.7) and np.isnan(refs["color_histogram"]["ci_low"])
    assert "random init (untrained) 0.525 [" in res.to_markdown()
    plot_curve(res, tmp_path / "curve")
    side = json.loads((tmp_path / "curve.json").read_text())
    assert [r["reference"] for r in side["summary"]["references"]] == ["random_init", "color_histogram"]
