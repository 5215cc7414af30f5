"""The model card (``README.md``) every ``pathfm export`` writes: Hugging Face front matter (license, tags,
library_name), then what a reader of a paper needs: the training config, the data the run saw, the recipe
knobs, the evaluation table with its baselines, and how to load the export.

Pure functions of what is on disk (``config.yaml``, ``metrics.jsonl``, ``training_slides.csv``,
``eval.parquet`` of the run); each section says so when its file is absent.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pathfm.records import RunFolder

LIBRARY = {"timm": "timm", "hf": "transformers", "dinov2": "pytorch", "pathfm": "pytorch"}
# the knobs that make the Midnight recipe what it is (dotted config paths)
RECIPE_KNOBS = (
    "model.arch", "model.patch_size", "model.n_registers", "model.ffn", "model.layerscale", "model.init_from",
    "data.mpps", "data.tile_size", "data.crops.global_size", "data.crops.local_size", "data.crops.n_local",
    "data.tissue.min_tissue_fraction", "data.stain_aug.method", "data.hed.strength", "data.normalize_mean", "data.normalize_std",
    "loss.dino_weight", "loss.ibot_weight", "loss.kde_weight", "loss.koleo_weight", "loss.centering",
    "optim.steps", "optim.base_lr", "optim.batch_size", "data.batch_size", "optim.grad_accum",
    "highres.enabled", "highres.steps", "highres.global_size",
)  # fmt: skip


@dataclass
class CardInputs:
    """What the card describes: the export and the run it came from."""

    fmt: str
    source: str
    img_size: int
    mean: float
    std: float
    step: int
    arch: str
    license_id: str
    load_snippet: str
    pos_embed_note: str
    run_dir: Path | None = None
    extra_tags: list[str] = field(default_factory=list)


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def front_matter(inp: CardInputs) -> str:
    tags = ["pathology", "histopathology", "self-supervised", "dinov2", "pathfm", "vision-transformer"]
    tags += [t for t in inp.extra_tags if t not in tags]
    lines = ["---", f"license: {inp.license_id}", f"library_name: {LIBRARY[inp.fmt]}", "tags:"]
    lines += [f"- {t}" for t in tags]
    lines.append("pipeline_tag: image-feature-extraction")
    return "\n".join(lines + ["---"])


def _read_config(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not RunFolder(run_dir).config.is_file():
        return None
    from pathfm.config import read_yaml

    return read_yaml(RunFolder(run_dir).config)


def _last_metrics(run_dir: Path | None) -> dict[str, Any]:
    from pathfm.io import read_jsonl

    records = read_jsonl(RunFolder(run_dir).metrics) if run_dir is not None else []
    return records[-1] if records else {}


def data_section(run_dir: Path | None, cfg: Mapping[str, Any] | None) -> str:
    """Slides (``training_slides.csv`` if the run wrote one, else the manifest named in the config), mpp
    levels, tiles seen and the tissue filter's acceptance rate (last ``metrics.jsonl`` record)."""
    lines = ["## Training data", ""]
    slides_csv = RunFolder(run_dir).training_slides if run_dir is not None else None
    if slides_csv is not None and slides_csv.is_file():
        with slides_csv.open(newline="") as f:
            rows = [r for r in csv.DictReader(line for line in f if not line.startswith("#"))]
        lines.append(f"- slides: {len(rows)} (from `training_slides.csv`)")
        for col in ("cohort", "patient_id"):
            values = sorted({r.get(col) or "" for r in rows} - {""})
            if values:
                lines.append(f"- {col} values: {len(values)} ({', '.join(values[:10])}{' ...' if len(values) > 10 else ''})")
    elif cfg is not None:
        lines.append(f"- slides: manifest `{_get(cfg, 'data.slides')}` (the run wrote no training_slides.csv)")
    else:
        lines.append("- no run directory: the data the weights were trained on is not recorded here")
    if cfg is not None:
        cohorts = _get(cfg, "data.cohorts")
        if cohorts:
            lines.append(f"- cohorts: {', '.join(map(str, cohorts))}")
        lines.append(f"- magnifications (mpp): {_get(cfg, 'data.mpps')}, tiles of {_get(cfg, 'data.tile_size')} px")
    last = _last_metrics(run_dir)
    if "tiles_seen" in last:
        lines.append(f"- tiles seen: {int(last['tiles_seen'])} (step {last.get('step')})")
    if "acceptance_rate" in last:
        lines.append(f"- tissue-filter acceptance rate: {float(last['acceptance_rate']):.3f}")
    return "\n".join(lines)


def recipe_section(cfg: Mapping[str, Any] | None) -> str:
    if cfg is None:
        return "## Recipe\n\nNo `config.yaml` beside the weights: the training recipe is not recorded."
    rows = [f"| `{k}` | `{json.dumps(_get(cfg, k))}` |" for k in RECIPE_KNOBS if _get(cfg, k) is not None]
    return "\n".join(["## Recipe", "", "| knob | value |", "| --- | --- |", *rows])


def eval_section(run_dir: Path | None) -> str:
    """Balanced accuracy per task and probe (mean ± sd over folds) of the trained backbone beside the
    random-init and colour-histogram baselines, from the run's ``eval.parquet``."""
    path = RunFolder(run_dir).eval if run_dir is not None else None
    if path is None or not path.is_file():
        return "## Evaluation\n\nNot evaluated yet (no `eval.parquet` in the run): `pathfm eval RUN --task crc`."
    import polars as pl

    from pathfm.eval.results import BACKBONE_ORDER, summary_stats

    stats = summary_stats(pl.read_parquet(path)).filter(pl.col("metric") == "balanced_accuracy")
    present = [b for b in BACKBONE_ORDER if b in set(stats["backbone"].to_list())]
    cell = {(r["task"], r["probe"], r["backbone"]): r for r in stats.iter_rows(named=True)}
    lines = ["## Evaluation", "", "Balanced accuracy, mean ± sd over folds (`pathfm eval`, frozen features).", "",
             "| task | probe | folds | " + " | ".join(present) + " |", "| --- | --- | --- |" + " --- |" * len(present)]
    for task, probe in dict.fromkeys((r["task"], r["probe"]) for r in stats.iter_rows(named=True)):
        n = max(cell[(task, probe, b)]["n"] for b in present if (task, probe, b) in cell)
        vals = [f"{cell[(task, probe, b)]['mean']:.3f} ± {cell[(task, probe, b)]['std']:.3f}"
                if (task, probe, b) in cell else "-" for b in present]  # fmt: skip
        lines.append(f"| {task} | {probe} | {n} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def config_section(cfg: Mapping[str, Any] | None) -> str:
    if cfg is None:
        return ""
    import yaml

    return "## Full training config\n\n```yaml\n" + yaml.safe_dump(dict(cfg), sort_keys=False).rstrip() + "\n```"


def render_card(inp: CardInputs) -> str:
    cfg = _read_config(inp.run_dir)
    intro = (
        f"# {inp.arch} trained with pathfm\n\n"
        f"A {inp.arch} backbone (teacher EMA, step {inp.step}) trained with pathfm's DINOv2 / Midnight recipe "
        f"and exported as `{inp.fmt}` from `{inp.source}`. Input: RGB scaled to [0, 1], normalised with mean "
        f"{inp.mean} and std {inp.std} per channel, {inp.img_size} x {inp.img_size} px."
    )
    usage = f"## How to load\n\n```python\n{inp.load_snippet.strip()}\n```\n\n{inp.pos_embed_note}"
    parts = [front_matter(inp), intro, usage, data_section(inp.run_dir, cfg), recipe_section(cfg),
             eval_section(inp.run_dir), config_section(cfg)]  # fmt: skip
    return "\n\n".join(p for p in parts if p) + "\n"
