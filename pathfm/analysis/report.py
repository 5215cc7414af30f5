"""``pathfm analyze report RESULTS``: one Markdown + one self-contained HTML report (tables and figures,
PNGs embedded in the HTML) with everything a sweep's results support: first, per arm, whether it beats an
untrained network (paired CI of arm minus random init; flagged when it does not), then the ablation table
with its reference rows (random init, colour histogram), the
data-efficiency curve (when the data size varies), parameter importance (when searched knobs vary) and
the score against the measured tissue acceptance rate (when trials logged it)."""

from __future__ import annotations

import base64
import datetime as _dt
import html
from pathlib import Path
from typing import Sequence

import polars as pl

from pathfm.analysis.load import ResultsError, Selection, read_analysis_hints, scan_results, sweep_meta_of
from pathfm.results import fill_defaults
from pathfm.analysis.markdown import md_table_to_html
from pathfm.io import atomic_write_text

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}thead th{border-bottom:2px solid #333}img{max-width:100%}
small{color:#555}code{background:#f4f4f4;padding:1px 4px}"""


def _inline_code(text: str) -> str:
    """Escape ``text`` for HTML and turn `code` spans into <code> elements."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<p><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></p>'


def _run_dirs(srcs: list[str], full: pl.LazyFrame) -> list[Path]:
    """The trial folders behind the results (``trial_dir`` is relative to the folder of results.parquet)."""
    if "trial_dir" not in full.collect_schema().names():  # hand-made results without trial folders
        return []
    roots = [Path(s) if Path(s).is_dir() else Path(s).parent for s in srcs]
    names = full.filter(pl.col("trial_id") != "reference").select(pl.col("trial_dir").drop_nulls().unique()).collect()
    return [root / n for root in roots for n in sorted(names["trial_dir"]) if (root / n).is_dir()]


def write_report(
    results: str | Path | Sequence[str | Path],
    out: Path,
    sel: Selection | None = None,
    baseline: str | None = None,
    x: str | None = None,
    target: float | None = None,
    group_by: str | None = None,
    seed: int = 0,
    fit_boot: int = 200,
    imp_boot: int = 20,
) -> list[Path]:
    """Write ``out/report.md``, ``out/report.html``, the table as CSV/LaTeX and every figure; returns paths."""
    from pathfm.analysis.curve import data_efficiency, plot_curve, resolve_x
    from pathfm.analysis.figures import git_commit
    from pathfm.analysis.importance import importance_report
    from pathfm.analysis.table import table_from_results
    from pathfm.analysis.table_plot import figure_caption, plot_table

    sel = sel or Selection()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lf = scan_results(results)
    full = fill_defaults(lf)
    names = full.collect_schema().names()
    meta = sweep_meta_of(results)
    hints = read_analysis_hints(results)  # the study's hints: x, group_by, plot_against, table_order
    x = x or hints.get("x") or "param.n_slides"
    group_by = group_by or hints.get("group_by")
    n_rows = full.select(pl.len()).collect().item()
    n_trials = full.filter(pl.col("trial_id") != "reference").select(pl.col("trial_id").n_unique()).collect().item()
    srcs = [str(results)] if isinstance(results, (str, Path)) else [str(r) for r in results]
    name = Path(srcs[0]).name if Path(srcs[0]).is_dir() else Path(srcs[0]).parent.name
    study = meta.get("study") or meta.get("study_name")
    md: list[str] = [f"# pathfm analysis report: {name}" + (f" (study {study})" if study and study != name else ""), "",
                     f"Results: {', '.join(f'`{s}`' for s in srcs)}; {n_rows:,} rows, {n_trials} trials. "
                     f"Selection: kind={sel.kind}, backbone={sel.backbone}, probe={sel.probe}, metric={sel.metric}, "
                     f"step={sel.step}. Generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC, "
                     f"pathfm commit `{git_commit()}`.", ""]
    body_html: list[str] = []
    written: list[Path] = []

    def section(title: str, text_md: str, pngs: Sequence[Path] = ()) -> None:
        md.extend([f"## {title}", "", text_md.strip(), ""])
        md.extend(f"![{p.stem}]({p.name})" for p in pngs)
        md.append("")
        body_html.append(f"<h2>{html.escape(title)}</h2>")
        body_html.append(text_md if text_md.lstrip().startswith("<") else md_table_to_html(text_md))
        body_html.extend(_img(p) for p in pngs)

    # ---- ablation table (at the largest data size when the data size varies)
    x_col = None
    try:
        x_col = resolve_x(x, names)
    except ResultsError:
        pass
    table_sel = sel
    note = ""
    if x_col is not None and x_col.startswith("param."):
        xs = full.select(pl.col(x_col).drop_nulls().unique()).collect()[x_col]
        if xs.len() > 1:
            largest = xs.max()
            table_sel = Selection(**{**sel.__dict__, "filters": {**sel.filters, x_col: str(largest)}})
            note = f"Table at the largest {x_col} = {largest}; the curve below covers all sizes.\n\n"
    try:
        table = table_from_results(results, table_sel, baseline=baseline, top=25)
        table.to_csv(out / "table.csv")
        atomic_write_text(out / "table.tex", table.to_latex())
        written += [out / "table.csv", out / "table.tex"]
        # first: does each arm beat an untrained network? (before any comparison between arms)
        check = table.untrained_markdown() or "not available: the selection is not of trained backbones."
        title = "Does each arm beat an untrained network?"
        md.extend([f"## {title}", "", check.strip(), ""])
        body_html += [f"<h2>{html.escape(title)}</h2>", md_table_to_html(check.replace("**", ""))]
        md.extend(["## Ablation table", "", note + table.to_markdown(untrained=False), "",
                   "(also `table.csv`, `table.tex`)", ""])
        body_html += ["<h2>Ablation table</h2>", f"<p>{html.escape(note)}</p>" if note else "",
                      table.to_html(untrained=False)]
        files = plot_table(table, out / "ablation")
        written += files
        caption = figure_caption(table)
        md.extend(["![ablation](ablation.png)", "", caption, ""])
        body_html += [_img(out / "ablation.png"), f"<p><small>{html.escape(caption)}</small></p>"]
    except ResultsError as e:
        section("Ablation table", f"not available: {e}")

    # ---- data-efficiency curve
    if x_col is not None:
        n_x = full.select(pl.col(x_col).drop_nulls().n_unique()).collect().item()
        if n_x >= 2:
            try:
                res = data_efficiency(lf, x=x_col, sel=sel, target=target, n_boot=fit_boot, seed=seed,
                                      group_by=group_by)
                files = plot_curve(res, out / "data_efficiency", size="single")
                written += files
                section("Data efficiency", res.to_markdown(), [out / "data_efficiency.png"])
            except ResultsError as e:
                section("Data efficiency", f"not available: {e}")

    # ---- importance of searched knobs, and the score vs the measured acceptance rate
    against = hints.get("plot_against") or "acceptance_rate"
    has_acc = (full.filter((pl.col("kind") == "train") & (pl.col("metric") == against)).select(pl.len()).collect().item() > 0)
    try:
        text, files = importance_report(lf.collect(), sel, out, against=against if has_acc else None,
                                        size="double", seed=seed, n_boot=imp_boot)
        written += files
        pngs = [f for f in files if f.suffix == ".png"]
        section("Parameter importance" + (f" and {against.replace('_', ' ')}" if has_acc else ""), text, pngs)
    except ResultsError as e:
        section("Parameter importance", f"not available: {e}")

    # ---- leakage: pretraining slides / patients that an evaluated task tests on
    from pathfm.eval.leakage import leakage_markdown

    tasks = sorted(full.filter(pl.col("kind") == "eval").select(pl.col("task").drop_nulls().unique()).collect()["task"])
    section("Leakage audit", leakage_markdown(_run_dirs(srcs, full), tasks))

    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    title = html.escape(md[0].lstrip("# "))
    atomic_write_text(html_path, f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
                      f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
                      f"<p>{_inline_code(md[2])}</p>\n" + "\n".join(body_html) + "\n</body></html>\n")
    return [md_path, html_path] + written
