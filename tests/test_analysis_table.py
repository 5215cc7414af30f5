"""Ablation tables from hand-made results frames, the published Midnight table, and bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pathfm.analysis.load import Selection, fold_scores
from pathfm.analysis.table import build_table, table_from_results
from pathfm.cli import main
from pathfm.errors import PathfmError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "midnight_table2"


def _frame(values: dict[tuple[str, int, str, int], float], **extra) -> pl.DataFrame:
    """Tidy eval rows from {(arm, seed, task, fold): value}."""
    rows = [dict(sweep="s", trial_id=f"{a}-{s}", arm=a, status="TERMINATED", seed=s, kind="eval", step=10, final=True,
                 task=t, probe="linear", backbone="trained", fold=f, metric="balanced_accuracy", value=v, **extra)
            for (a, s, t, f), v in values.items()]
    return pl.DataFrame(rows)


HAND = {
    # baseline: seed 0 -> crc (0.80, 0.82) osteo (0.70, 0.72); seed 1 -> crc (0.84, 0.86) osteo (0.74, 0.76)
    ("base", 0, "crc", 0): 0.80, ("base", 0, "crc", 1): 0.82, ("base", 0, "osteo", 0): 0.70, ("base", 0, "osteo", 1): 0.72,
    ("base", 1, "crc", 0): 0.84, ("base", 1, "crc", 1): 0.86, ("base", 1, "osteo", 0): 0.74, ("base", 1, "osteo", 1): 0.76,
    # kde: +0.05 on crc, -0.02 on osteo, same seeds
    ("kde", 0, "crc", 0): 0.85, ("kde", 0, "crc", 1): 0.87, ("kde", 0, "osteo", 0): 0.68, ("kde", 0, "osteo", 1): 0.70,
    ("kde", 1, "crc", 0): 0.89, ("kde", 1, "crc", 1): 0.91, ("kde", 1, "osteo", 0): 0.72, ("kde", 1, "osteo", 1): 0.74,
}


def test_hand_made_cells():
    t = build_table(fold_scores(_frame(HAND)), baseline="base")
    assert t.arms == ["base", "kde"]  # baseline first
    assert t.columns == ["crc", "osteo", "Average", "IQM"]
    # hand-computed: mean over folds, then over seeds
    np.testing.assert_allclose(t.mean[0], [0.83, 0.73, 0.78, 0.78])
    np.testing.assert_allclose(t.mean[1], [0.88, 0.71, 0.795, 0.795])
    np.testing.assert_allclose(t.delta[1, :3], [0.05, -0.02, 0.015])
    # the difference is identical on every seed and fold -> a degenerate paired CI at the point
    np.testing.assert_allclose([t.delta_lo[1, 0], t.delta_hi[1, 0]], [0.05, 0.05])
    # a constant difference is certain: p = 0 (before and after Holm over the one comparison)
    assert t.delta_p[1, 0] < 1e-12 and t.delta_p_adj[1, 0] < 1e-12 and t.delta_verdicts("crc")["kde"] == "better"
    assert t.delta_verdicts("osteo")["kde"] == "worse"
    assert (t.n_seeds == 2).all()
    md = t.to_markdown()
    assert "| kde | 2 | **0.880** [" in md
    assert "| base (baseline) | 2 | 0.830 [" in md
    assert "**0.730**" in md  # osteo: baseline is best
    assert "+0.015 [+0.015, +0.015] | <0.0001* (<0.0001) |" in md
    tex = t.to_latex()
    assert r"\toprule" in tex and r"\textbf{0.880}" in tex and r"\bottomrule" in tex
    rows = list(csv.DictReader(t.to_csv().splitlines()))
    cell = next(r for r in rows if r["arm"] == "kde" and r["column"] == "crc")
    assert float(cell["mean"]) == pytest.approx(0.88) and cell["best"] == "true"


def test_underline_when_not_significantly_worse_than_best():
    rng = np.random.default_rng(0)
    vals = {}
    for s in range(6):
        noise = rng.normal(0, 0.03)
        for f in range(3):
            vals[("a", s, "crc", f)] = 0.80 + noise + rng.normal(0, 0.02)
            vals[("b", s, "crc", f)] = 0.80 + noise + rng.normal(0, 0.02) + 0.002  # within noise of a
            vals[("c", s, "crc", f)] = 0.70 + noise + rng.normal(0, 0.002)  # clearly worse
    t = build_table(fold_scores(_frame(vals)))
    col = t.columns.index("crc")
    by_arm = {a: i for i, a in enumerate(t.arms)}
    best = max(("a", "b"), key=lambda a: t.mean[by_arm[a], col])
    other = "b" if best == "a" else "a"
    assert t.best[by_arm[best], col]
    assert t.tied_with_best[by_arm[other], col]
    assert not t.tied_with_best[by_arm["c"], col] and not t.best[by_arm["c"], col]
    assert "<ins>" in t.to_markdown() and r"\underline{" in t.to_latex()


def test_baseline_from_sweep_meta_and_cli_formats(tmp_path, capsys):
    _frame(HAND).write_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep_meta.json").write_text(json.dumps({"baseline_arm": "base", "comparisons": ["kde"]}))
    assert main(["analyze", "table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| base (baseline) | 2 |" in out and "Δ Average" in out
    assert main(["analyze", "table", str(tmp_path), "--out", str(tmp_path / "t.tex")]) == 0
    assert (tmp_path / "t.tex").read_text().startswith("% requires \\usepackage{booktabs}")
    assert main(["analyze", "table", str(tmp_path / "results.parquet"), "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("arm,column,metric,mean")


def test_normalisation_between_floor_backbone_and_ceiling():
    vals = dict(HAND)
    df = _frame(vals)
    floor = df.with_columns(pl.lit("random_init").alias("backbone"), pl.lit(0.5).alias("value"))
    t = table_from_results(pl.concat([df, floor]), Selection(), baseline="base", normalise="random_init")
    # (0.83 - 0.5) / (1 - 0.5)
    assert t.mean[t.arms.index("base"), 0] == pytest.approx(0.66)


def test_midnight_table_average_and_ranking(capsys):
    """The published Midnight main table (one seed) entered as results: pathfm's Average column
    reproduces the paper's AVG to 3 decimals and its ranking."""
    published = list(csv.DictReader((EXAMPLE / "published_average.csv").open()))
    assert len(published) == 15
    rc = main(["analyze", "table", str(EXAMPLE / "results.csv"), "--metric", "balanced_accuracy,dice,pearson_r",
               "--probe", "all", "--format", "csv"])
    assert rc == 0
    rows = [r for r in csv.DictReader(capsys.readouterr().out.splitlines()) if r["column"] == "Average"]
    ours = {r["arm"]: float(r["mean"]) for r in rows}
    assert len(ours) == 15
    for p in published:
        assert f"{ours[p['model']]:.3f}" == p["average"], p["model"]
    ranking = [r["arm"] for r in rows]  # rows come best-first
    assert ranking == [p["model"] for p in sorted(published, key=lambda p: int(p["rank"]))]
    assert all(r["ci_low"] == "n/a" for r in rows)  # one seed: no CI, never faked
    assert sum(r["best"] == "true" for r in rows) == 1


# ---------------------------------------------------------------- bad input
def test_missing_metric_column_is_a_clear_error(tmp_path):
    _frame(HAND).drop("metric").write_parquet(tmp_path / "results.parquet")
    with pytest.raises(PathfmError, match=r"missing column\(s\) \['metric'\]"):
        table_from_results(tmp_path)


def test_unknown_metric_names_the_present_ones():
    with pytest.raises(PathfmError, match="metric \\['dice'\\] not found .*balanced_accuracy"):
        fold_scores(_frame(HAND), Selection(metric="dice"))


def test_single_seed_marks_ci_na_not_faked():
    one = {k: v for k, v in HAND.items() if k[1] == 0}
    t = build_table(fold_scores(_frame(one)), baseline="base")
    assert np.isnan(t.lo).all() and np.isnan(t.delta_lo).all() and np.isnan(t.delta_p).all()
    md = t.to_markdown()
    assert "[n/a]" in md and "CI n/a for 2 arm(s) with a single seed" in md
    assert not t.tied_with_best.any()


def test_arm_without_baseline_is_a_clear_error(tmp_path):
    with pytest.raises(PathfmError, match="baseline arm 'nope' is not in the results .*'base', 'kde'"):
        table_from_results(_frame(HAND), baseline="nope")
    # an arm with no seed shared with the baseline gets Δ n/a and a note
    other = {("lonely", 7, t, f): 0.5 for t in ("crc", "osteo") for f in (0, 1)}
    t = build_table(fold_scores(_frame({**HAND, **other})), baseline="base")
    assert np.isnan(t.delta[t.arms.index("lonely"), 2])
    assert "no seed shared with the baseline 'base'" in t.to_markdown()


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    assert main(["analyze", "table", str(tmp_path)]) == 2
    assert "no results.parquet in this folder" in capsys.readouterr().err


def test_planned_comparisons_from_sweep_meta(tmp_path, capsys):
    third = {("kde+hed", s, t, f): v + 0.01 for (a, s, t, f), v in HAND.items() if a == "kde"}
    _frame({**HAND, **third}).write_parquet(tmp_path / "results.parquet")
    meta = {"baseline_arm": "base", "comparisons": [["kde", "base"], ["kde+hed", "kde"], ["ghost", "base"]]}
    (tmp_path / "sweep_meta.json").write_text(json.dumps(meta))
    t = table_from_results(tmp_path)
    assert [(c["arm"], c["reference"]) for c in t.comparisons] == [("kde", "base"), ("kde+hed", "kde")]
    second = t.comparisons[1]
    np.testing.assert_allclose(second["delta"][:3], [0.01, 0.01, 0.01])  # crc, osteo, Average
    assert second["p"][2] < 1e-12 and second["p_adj"][2] < 1e-12 and int(second["n_pairs"][2]) == 2
    md = t.to_markdown()
    assert "| kde+hed vs kde | 2 | +0.010 [+0.010, +0.010] |" in md
    rows = [r for r in csv.DictReader(t.to_csv().splitlines()) if r["row_type"] == "comparison"]
    assert len(rows) == 6 and {r["baseline"] for r in rows} == {"base", "kde"}
    assert main(["analyze", "table", str(tmp_path), "--compare", "base:kde+hed"]) == 0
    assert "| base vs kde+hed | 2 | -0.060" in capsys.readouterr().out


def test_lower_is_better_best_step_and_missing_task():
    vals = dict(HAND)
    df = _frame(vals)
    # an earlier, better step for 'base': --step best picks it, the default (final) does not
    early = df.filter(pl.col("arm") == "base").with_columns(pl.lit(5, dtype=pl.Int64).alias("step"), pl.lit(False).alias("final"),
                                                            pl.col("value") + 0.1)
    both = pl.concat([df, early])
    assert fold_scores(both, Selection(step="best")).filter(pl.col("arm") == "base")["value"].mean() == pytest.approx(0.88)
    assert fold_scores(both).filter(pl.col("arm") == "base")["value"].mean() == pytest.approx(0.78)
    t = build_table(fold_scores(df), higher_is_better=False)
    assert t.best[t.arms.index("base"), 0] and t.best[t.arms.index("kde"), 1]  # lower crc / lower osteo
    # an arm without one task: per-task cells exist, its Average is n/a (never averaged over fewer tasks)
    partial = {k: v for k, v in HAND.items() if not (k[0] == "kde" and k[2] == "osteo")}
    t = build_table(fold_scores(_frame(partial)))
    assert np.isnan(t.mean[t.arms.index("kde"), 2]) and "Average n/a for arm(s) ['kde']" in t.to_markdown()


def test_eval_parquet_of_pathfm_eval_tabulates_by_source_and_never_pools_backbones(tmp_path):
    """`pathfm eval` writes eval.parquet (source, backbone, task, probe, fold, metric, value, step, ...)
    without trial/arm/seed columns: the source names the arm; with --backbone all, backbones stay apart."""
    rows = [dict(source=src, backbone=bb, task=t, probe="linear", fold=f, metric="balanced_accuracy",
                 value=base + (0.2 if bb == "trained" else 0.0) + 0.01 * f, step=100, n_train=10, n_test=5)
            for src, base in (("runs/a", 0.5), ("timm:vit_small", 0.6))
            for bb in ("trained", "random_init") for t in ("crc", "osteo") for f in range(3)]
    pl.DataFrame(rows).write_parquet(tmp_path / "eval.parquet")
    t = table_from_results(tmp_path / "eval.parquet")
    assert t.arms == ["timm:vit_small", "runs/a"]
    np.testing.assert_allclose(t.mean[:, 2], [0.81, 0.71])
    t = table_from_results(tmp_path / "eval.parquet", Selection(backbone="all"))
    assert set(t.arms) == {f"{s}, backbone={b}" for s in ("runs/a", "timm:vit_small") for b in ("trained", "random_init")}


def test_params_name_only_the_arms_in_which_they_vary(tmp_path):
    """An ablation (arm set, no varying params) next to a grid sweep (no arm, kde_weight varies): the
    ablation keeps its arm names, the sweep's trials are named by their setting."""
    abl = _frame(HAND).with_columns(pl.lit(None, dtype=pl.Float64).alias("param.kde_weight"))
    grid = _frame({("x", s, t, f): v for (a, s, t, f), v in HAND.items() if a == "base"})
    grid = pl.concat([grid.with_columns(pl.lit(None, dtype=pl.String).alias("arm"), pl.lit(w).alias("param.kde_weight"),
                                        pl.col("trial_id") + f"-{w}")
                      for w in (0.0, 0.1)])
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    abl.write_parquet(tmp_path / "a" / "results.parquet")
    grid.write_parquet(tmp_path / "b" / "results.parquet")
    t = table_from_results([tmp_path / "a", tmp_path / "b"], sort="name")
    assert t.arms == ["base", "kde", "kde_weight=0.0", "kde_weight=0.1"]


# ------------------------------------------------------------------------------ reference rows
def _with_reference(values: dict, ri: dict[str, float], ch: float = 0.5, init_shift: tuple[float, ...] = (),
                    **extra) -> pl.DataFrame:
    """Trial rows plus a sweep's reference rows (trial_id "reference", arm null) on the same folds: random init
    at one init seed (``seed`` null, as sweeps wrote them before) or, with ``init_shift``, at init seeds 0, 1, ...
    scoring ``ri + shift`` (``seed`` = the init seed)."""
    df = _frame(values, **extra)
    folds = sorted({(t, f) for (_, _, t, f) in values})
    inits = list(enumerate(init_shift)) if init_shift else [(None, 0.0)]
    ref = [dict(sweep="s", trial_id="reference", arm=None, status="TERMINATED", seed=i, kind="eval", step=0,
                final=True, task=t, probe="linear", backbone="random_init", fold=f, metric="balanced_accuracy",
                value=ri[t] + 0.01 * f + shift, **{k: None for k in extra})
           for t, f in folds for i, shift in inits]
    ref += [dict(sweep="s", trial_id="reference", arm=None, status="TERMINATED", seed=None, kind="eval", step=0,
                 final=True, task=t, probe="linear", backbone="color_histogram", fold=f, metric="balanced_accuracy",
                 value=ch, **{k: None for k in extra}) for t, f in folds]
    return pl.concat([df, pl.DataFrame(ref, schema=df.schema)])


# HAND with a third seed (seed 0's values + 0.02): the untrained-network tests need 3 seeds to conclude anything
HAND3 = {**HAND, **{(a, 2, t, f): v + 0.02 for (a, s, t, f), v in HAND.items() if s == 0}}


def test_reference_rows_and_the_untrained_network_check():
    df = _with_reference(HAND, {"crc": 0.82, "osteo": 0.70})
    plain = build_table(fold_scores(_frame(HAND)), baseline="base")
    t = table_from_results(df, baseline="base")
    # the arms' numbers do not move when the references join
    for name in ("mean", "lo", "hi", "delta", "delta_lo", "delta_hi", "delta_p", "delta_p_adj"):
        np.testing.assert_allclose(getattr(t, name), getattr(plain, name), equal_nan=True)
    assert t.arms == ["base", "kde"] and t.references == ["random_init", "color_histogram"]
    np.testing.assert_allclose(t.ref_mean[0, :3], [0.825, 0.705, 0.765])
    np.testing.assert_allclose(t.ref_mean[1, :3], [0.5, 0.5, 0.5])
    # Δ vs random init = mean over seeds of (arm - random init) on the same folds, by hand
    np.testing.assert_allclose(t.untrained_delta[0, :3], [0.830 - 0.825, 0.730 - 0.705, 0.780 - 0.765])
    np.testing.assert_allclose(t.untrained_delta[1, :3], [0.880 - 0.825, 0.710 - 0.705, 0.795 - 0.765])
    assert (t.untrained_pairs[:, :3] == 2).all()
    # one init seed: a one-sample t-test per arm over its 2 seeds (kde +0.01, +0.05: t = 1.5 on 1 df, p = 0.37),
    # and a note that the random init's own variance is not in it
    assert t.untrained_verdicts() == {"base": "indistinguishable", "kde": "indistinguishable"}
    assert t.untrained_p[1, 2] == pytest.approx(0.3743, abs=1e-3)
    assert "one init seed only" in t.to_markdown()
    md = t.to_markdown()
    check, table = md.index("Untrained-network check"), md.index("| Arm | Seeds | crc |")
    assert check < table  # the check comes before any comparison of arms
    assert "**⚠ not distinguishable from an untrained network**" in md
    assert "NOT distinguishable from an untrained network: base, kde" in md
    assert "| *random init (untrained, reference)* | ref | *0.825* [" in md and "| reference |" in md
    assert "Untrained-network check" not in t.to_markdown(untrained=False)
    assert r"\emph{random init (untrained, reference)}" in t.to_latex()
    rows = list(csv.DictReader(t.to_csv().splitlines()))
    refs = [r for r in rows if r["row_type"] == "reference"]
    assert {r["arm"] for r in refs} == {"random_init", "color_histogram"} and len(refs) == 8
    base_avg = next(r for r in rows if r["arm"] == "base" and r["column"] == "Average")
    assert base_avg["vs_random_init"] == "indistinguishable" and float(base_avg["delta_random_init"]) == pytest.approx(0.015)
    assert "random init (untrained, reference)" in t.to_html()


def test_worse_than_untrained_one_seed_and_missing_reference():
    df = _with_reference(HAND3, {"crc": 0.95, "osteo": 0.95})  # a random init better than every arm
    t = table_from_results(df, baseline="base")
    assert t.untrained_verdicts() == {"base": "worse", "kde": "worse"}
    # two seeds cannot show it (t_{0.975,1} = 12.7): the verdict says so instead of guessing
    t2 = table_from_results(_with_reference(HAND, {"crc": 0.95, "osteo": 0.95}), baseline="base")
    assert t2.untrained_verdicts() == {"base": "indistinguishable", "kde": "indistinguishable"}
    assert "WORSE than an untrained network: base, kde" in t.to_markdown()
    one = {k: v for k, v in HAND.items() if k[1] == 0}
    t = table_from_results(_with_reference(one, {"crc": 0.5, "osteo": 0.5}))
    assert set(t.untrained_verdicts().values()) == {"n/a"} and "fewer than 2 seeds" in t.to_markdown()
    t = table_from_results(_frame(HAND))  # results without reference rows: said so, not hidden
    assert t.untrained_delta is None and "no random-init reference rows" in t.to_markdown()
    t = table_from_results(_with_reference(HAND, {"crc": 0.5, "osteo": 0.5}), Selection(backbone="all"))
    assert t.references == [] and "Untrained-network check" not in t.to_markdown()


def test_normalise_by_the_reference_rows_with_a_param_filter(tmp_path):
    df = _with_reference(HAND, {"crc": 0.80, "osteo": 0.70}, **{"param.n_slides": 3})
    df = pl.concat([df, _frame({("base", 0, "crc", 0): 0.1}, **{"param.n_slides": 1})])  # another data size
    df.write_parquet(tmp_path / "results.parquet")
    sel = Selection(filters={"n_slides": "3"})
    t = table_from_results(tmp_path, sel, baseline="base", normalise="random_init")
    np.testing.assert_allclose(t.ref_mean[0, :2], [0.0, 0.0], atol=1e-12)  # the floor itself is 0
    np.testing.assert_allclose(t.mean[0, :2], [(0.83 - 0.805) / (1 - 0.805), (0.73 - 0.705) / (1 - 0.705)])
    assert main(["analyze", "table", str(tmp_path), "--normalise", "random_init", "--where", "n_slides=3"]) == 0


def test_per_trial_baselines_that_disagree_are_not_pooled():
    """Trials that evaluated their own baselines with different architectures: no single reference."""
    df = _frame(HAND)
    own = df.with_columns(pl.lit("random_init").alias("backbone"),
                          pl.when(pl.col("arm") == "kde").then(0.3).otherwise(0.4).alias("value"))
    t = table_from_results(pl.concat([df, own]))
    assert t.references == [] and "differ between trials" in t.reference_note


def test_no_comparisons_in_sweep_meta_shows_every_arm(tmp_path):
    _frame(HAND).write_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep_meta.json").write_text(json.dumps({"baseline_arm": "base", "comparisons": []}))
    assert table_from_results(tmp_path).arms == ["base", "kde"]


def test_random_init_at_several_init_seeds_is_an_unpaired_t_test_holm_over_the_arms():
    from scipy import stats

    shifts = (0.0, 0.01, -0.01, 0.02, -0.02)
    df = _with_reference(HAND3, {"crc": 0.75, "osteo": 0.65}, init_shift=shifts)
    t = table_from_results(df, baseline="base")
    assert t.ref_seeds[t.references.index("random_init")] == 5 and "one init seed only" not in t.to_markdown()
    avg = t.columns.index("Average")
    arm_avg = {a: [np.mean([np.mean([HAND3[(a, s, task, f)] for f in (0, 1)]) for task in ("crc", "osteo")])
                   for s in range(3)] for a in ("base", "kde")}
    ri_avg = [np.mean([np.mean([{"crc": 0.75, "osteo": 0.65}[task] + 0.01 * f + sh for f in (0, 1)])
                       for task in ("crc", "osteo")]) for sh in shifts]
    def p_value(a, b):  # Welch's standard error, Hsu's min(n) - 1 degrees of freedom
        se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        return 2 * stats.t.sf(abs(np.mean(a) - np.mean(b)) / se, min(len(a), len(b)) - 1)

    raw = {a: p_value(arm_avg[a], ri_avg) for a in ("base", "kde")}
    for a in ("base", "kde"):
        i = t.arms.index(a)
        assert t.untrained_p[i, avg] == pytest.approx(raw[a], rel=1e-6)
        assert t.untrained_delta[i, avg] == pytest.approx(np.mean(arm_avg[a]) - np.mean(ri_avg))
    lo, hi = sorted(raw.values())
    np.testing.assert_allclose(sorted(t.untrained_p_adj[:, avg]), [2 * lo, max(2 * lo, hi)], rtol=1e-6)  # Holm, m = 2
    assert t.untrained_verdicts() == {"base": "beats", "kde": "beats"}
    m, lo_ci, hi_ci = t.ref_mean[0, avg], t.ref_lo[0, avg], t.ref_hi[0, avg]
    half = stats.t.ppf(0.975, 4) * np.std(ri_avg, ddof=1) / np.sqrt(5)
    assert (lo_ci, hi_ci) == (pytest.approx(m - half), pytest.approx(m + half))


def test_a_results_file_that_is_not_parquet_is_one_clear_line(tmp_path, capsys):
    bad = tmp_path / "results.parquet"
    bad.write_bytes(b"not a parquet file at all" * 10)
    assert main(["analyze", "table", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not readable as a Parquet results table" in err and "Traceback" not in err and str(bad) in err
