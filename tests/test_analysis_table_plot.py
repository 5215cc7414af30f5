"""The ablation figure: files written, sidecar lists arms/seeds and the table's own CI numbers, significance
colouring, single seed (no CI) and no baseline, and its CLI/report wiring."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pathfm.analysis.load import fold_scores
from pathfm.analysis.table import build_table
from pathfm.analysis.table_plot import figure_caption, plot_table, significance
from pathfm.cli import main


def _frame(values: dict[tuple[str, int, str, int], float]) -> pl.DataFrame:
    rows = [dict(sweep="s", trial_id=f"{a}-{s}", arm=a, status="TERMINATED", seed=s, kind="eval", step=10, final=True,
                 task=t, probe="linear", backbone="trained", fold=f, metric="balanced_accuracy", value=v)
            for (a, s, t, f), v in values.items()]
    return pl.DataFrame(rows)


def _values(seeds: int = 3) -> dict:
    """base; 'up' +0.05 on every seed (CI excludes 0); 'down' -0.06; 'same' ±0.002 noise around base."""
    out = {}
    for arm, eff in (("base", 0.0), ("up", 0.05), ("down", -0.06), ("same", 0.0)):
        for s in range(seeds):
            for t in ("crc", "osteo"):
                for f in range(2):
                    jitter = 0.002 * ((s + f) % 2 * 2 - 1) if arm == "same" else 0.0
                    out[(arm, s, t, f)] = 0.7 + eff + 0.01 * s + 0.003 * f + jitter
    return out


def _assert_files(files, stem):
    assert [f.name for f in files] == [f"{stem.name}.{x}" for x in ("pdf", "svg", "png", "json")]
    for f in files:
        assert f.stat().st_size > 0, f
    assert files[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figure_files_and_sidecar_match_the_table(tmp_path):
    t = build_table(fold_scores(_frame(_values())), baseline="base", sort="none")
    stem = tmp_path / "ablation"
    files = plot_table(t, stem)
    _assert_files(files, stem)
    side = json.loads((tmp_path / "ablation.json").read_text())
    assert side["arms"] == t.arms == ["base", "down", "same", "up"] and side["baseline"] == "base"
    assert side["seeds"] == {a: ["0", "1", "2"] for a in t.arms}
    assert side["trial_ids"]["up"] == ["up-0", "up-1", "up-2"]
    assert side["git_commit"]
    c = t.columns.index("Average")
    rows = {r["arm"]: r for r in side["rows"]}
    for a, arm in enumerate(t.arms):  # the very numbers of the table, not a recomputation
        assert rows[arm]["mean"] == pytest.approx(t.mean[a, c])
        assert rows[arm]["ci_low"] == pytest.approx(t.lo[a, c]) and rows[arm]["ci_high"] == pytest.approx(t.hi[a, c])
    assert rows["base"]["delta"] == "n/a" and rows["base"]["significance"] == "baseline"
    assert rows["up"]["delta"] == pytest.approx(0.05) and rows["up"]["delta_ci_low"] == pytest.approx(t.delta_lo[3, c])
    assert {a: rows[a]["significance"] for a in ("up", "down", "same")} == {"up": "better", "down": "worse", "same": "unsure"}
    assert "significant after Holm" in side["caption"] and "up, down" not in side["caption"] and "down, up" in side["caption"]


def test_lower_is_better_flips_the_highlight(tmp_path):
    t = build_table(fold_scores(_frame(_values())), baseline="base", higher_is_better=False)
    assert significance(t) == {"base": "baseline", "up": "worse", "down": "better", "same": "unsure"}


def test_single_seed_draws_points_and_says_na(tmp_path):
    one = {k: v for k, v in _values().items() if k[1] == 0}
    t = build_table(fold_scores(_frame(one)), baseline="base")
    files = plot_table(t, tmp_path / "one")
    _assert_files(files, tmp_path / "one")
    side = json.loads((tmp_path / "one.json").read_text())
    assert side["seeds"] == {a: ["0"] for a in t.arms}
    assert all(r["ci_low"] == "n/a" and r["ci_high"] == "n/a" for r in side["rows"])
    assert all(r["significance"] in ("n/a", "baseline") for r in side["rows"])
    assert "CI n/a (single seed" in side["caption"]


def test_no_baseline_draws_the_score_panel_only(tmp_path):
    t = build_table(fold_scores(_frame(_values(2))), baseline=None)
    assert t.delta is None
    files = plot_table(t, tmp_path / "nobase")
    _assert_files(files, tmp_path / "nobase")
    side = json.loads((tmp_path / "nobase.json").read_text())
    assert side["baseline"] is None and "delta" not in side["rows"][0]
    assert "No baseline arm" in figure_caption(t)


def test_cli_table_plot_and_report_embed_the_figure(tmp_path):
    _frame(_values(2)).write_parquet(tmp_path / "results.parquet")
    (tmp_path / "sweep_meta.json").write_text(json.dumps({"baseline_arm": "base"}))
    stem = tmp_path / "fig" / "abl"
    stem.parent.mkdir()
    assert main(["analyze", "table", str(tmp_path), "--plot", str(stem)]) == 0
    assert (tmp_path / "fig" / "abl.png").stat().st_size > 0
    assert json.loads((tmp_path / "fig" / "abl.json").read_text())["arms"][0] == "base"
    out = tmp_path / "report"
    assert main(["analyze", "report", str(tmp_path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    table_at, fig_at = md.index("## Ablation table"), md.index("![ablation](ablation.png)")
    assert table_at < fig_at < md.index("## ", table_at + 3)  # right after the table, before the next section
    html = (out / "report.html").read_text()
    assert html.index("</table>") < html.index('alt="ablation" src="data:image/png;base64,')
    assert np.isfinite(json.loads((out / "ablation.json").read_text())["rows"][1]["delta"])
    assert "## Leakage audit\n\nnot available: the results name no trial folders" in md  # hand-made results


def test_reference_lines_and_untrained_marks_in_figure_and_sidecar(tmp_path):
    from pathfm.analysis.table import table_from_results

    df = _frame(_values())
    ref = [dict(sweep="s", trial_id="reference", arm=None, status="TERMINATED", seed=None, kind="eval", step=0,
                final=True, task=t, probe="linear", backbone=b, fold=f, metric="balanced_accuracy",
                value=0.705 if b == "random_init" else 0.6)
           for t in ("crc", "osteo") for f in range(2) for b in ("random_init", "color_histogram")]
    t = table_from_results(pl.concat([df, pl.DataFrame(ref, schema=df.schema)]), baseline="base")
    files = plot_table(t, tmp_path / "abl")
    _assert_files(files, tmp_path / "abl")
    side = json.loads((tmp_path / "abl.json").read_text())
    assert [r["reference"] for r in side["references"]] == ["random_init", "color_histogram"]
    assert side["references"][0]["mean"] == pytest.approx(0.705)
    rows = {r["arm"]: r for r in side["rows"]}
    assert rows["up"]["vs_random_init"] == "beats" and rows["down"]["vs_random_init"] == "worse"
    assert rows["same"]["vs_random_init_text"] == "not distinguishable from an untrained network"
    assert "Vertical lines: reference rows" in side["caption"] and "down" in side["caption"].split("untrained network)")[-1]
