"""The eva YAML config of an offline linear-probe evaluation (eva's ``predict_fit``) for a pathfm-loadable
backbone: eva's pathology patch tasks (data the user has on disk) and pathfm's own tile tasks.

The hyperparameters are those of eva's published offline classification configs
(``configs/vision/pathology/offline/classification/<task>.yaml`` of kaiko-ai/eva 0.4): a linear head on
frozen embeddings, SGD (momentum 0.9, no weight decay) with a cosine schedule over ``max_steps`` (12,500),
early stopping on the validation accuracy, ``n_runs`` (5) heads with different seeds. The backbone is
:func:`pathfm.eva.backbone.eva_backbone` through ``eva.models.ModelFromFunction``; images are resized and
normalised by eva's ``ResizeAndCrop`` with the backbone's own mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pathfm.errors import ConfigError

PATHFM_PREFIX = "pathfm:"


@dataclass(frozen=True)
class EvaTask:
    """One of eva's classification tasks: its dataset class, the files its data root must hold, the splits
    eva's embeddings writer produces (in dataloader order) and the head's training settings."""

    name: str
    dataset: str
    expected: tuple[str, ...]  # paths relative to the data root
    splits: tuple[str, ...]  # dataset splits written, in order; the first is the head's training split
    num_classes: int  # 2 -> a single logit with BCE (eva's binary configs)
    lr: float
    batch_size: int
    patience: int
    size: int = 224


EVA_TASKS: dict[str, EvaTask] = {
    t.name: t
    for t in (
        EvaTask("bach", "eva.vision.datasets.BACH", ("ICIAR2018_BACH_Challenge/Photos",), ("train", "val"), 4,
                0.000625, 256, 400),
        EvaTask("crc", "eva.vision.datasets.CRC", ("NCT-CRC-HE-100K", "CRC-VAL-HE-7K"), ("train", "val"), 9,
                0.01, 4096, 24),
        EvaTask("mhist", "eva.vision.datasets.MHIST", ("annotations.csv", "images"), ("train", "test"), 2,
                0.000625, 256, 51),
        EvaTask("patch_camelyon", "eva.vision.datasets.PatchCamelyon",
                tuple(f"camelyonpatch_level_2_split_{s}_{xy}.h5" for s in ("train", "valid", "test") for xy in "xy"),
                ("train", "val", "test"), 2, 0.01, 4096, 9),
    )
}


def check_data_root(task: EvaTask, data_root: str | Path) -> Path:
    """The data root, after checking it holds every file ``task`` reads (else a ConfigError naming them)."""
    root = Path(data_root).expanduser().resolve()
    missing = [p for p in task.expected if not (root / p).exists()]
    if missing:
        raise ConfigError(
            f"eva task '{task.name}': data root {root} lacks {', '.join(missing)}; point --data-root at the "
            f"folder holding the unpacked dataset (eva's {task.dataset.rsplit('.', 1)[-1]} layout)"
        )
    return root


def _head(in_features: int, n_classes: int, binary: bool, lr: float, max_steps: int) -> dict[str, Any]:
    metrics = ({"class_path": "eva.metrics.BinaryClassificationMetrics"} if binary else
               {"class_path": "eva.metrics.MulticlassClassificationMetrics", "init_args": {"num_classes": n_classes}})  # fmt: skip
    return {
        "class_path": "eva.HeadModule",
        "init_args": {
            "head": {"class_path": "torch.nn.Linear",
                     "init_args": {"in_features": in_features, "out_features": 1 if binary else n_classes}},
            "criterion": ("torch.nn.functional.binary_cross_entropy_with_logits" if binary
                          else "torch.nn.functional.cross_entropy"),  # a function path: jsonargparse 4.5x
            # rejects a loss class for `Callable[..., Tensor]` (eva's own configs name the class)
            "optimizer": {"class_path": "torch.optim.SGD",
                          "init_args": {"lr": lr, "momentum": 0.9, "weight_decay": 0.0}},
            "lr_scheduler": {"class_path": "torch.optim.lr_scheduler.CosineAnnealingLR",
                             "init_args": {"T_max": max_steps, "eta_min": 0.0}},
            "metrics": {"common": [{"class_path": "eva.metrics.AverageLoss"}, metrics]},
        },
    }


def absolute_source(source: str) -> str:
    """``source`` with its path made absolute (``hf:<dir>``, ``timm:<name>:<file>``, a run dir or file), so the
    config runs from any directory like every other path in it; ``timm:<name>`` and missing paths as given."""
    def absolute(path: str) -> str:
        p = Path(path).expanduser()
        return str(p.resolve()) if p.exists() else path

    s = str(source)
    if s.startswith("hf:"):
        return "hf:" + absolute(s.removeprefix("hf:"))
    if s.startswith("timm:"):
        name, sep, file = s.removeprefix("timm:").partition(":")
        return f"timm:{name}:{absolute(file)}" if sep else s
    return absolute(s)


def eva_config(source: str, task: str, *, out_dir: str | Path, data_root: str | Path | None = None,
               pooling: str = "cls+mean", random_init_seed: int | None = None, n_runs: int = 5,
               max_steps: int = 12500, fold: int = 0, seed: int = 0, batch_size: int | None = None,
               num_workers: int = 0) -> dict[str, Any]:
    """The eva config (a dict to dump as YAML) evaluating ``source`` on ``task``: one of :data:`EVA_TASKS`
    (needs ``data_root``) or ``pathfm:<task>`` (a pathfm tile task, fold ``fold`` of pathfm's folds made with
    ``seed``). eva writes embeddings to ``out_dir/embeddings`` and its logs and ``results.json`` under
    ``out_dir/logs``. Fails before any compute when the source does not load or the data root is incomplete."""
    from pathfm.eval.sources import load_source

    bb = load_source(source)  # fails here, with pathfm's message, for a bad source
    width = int(bb.model.embed_dim) * (2 if pooling == "cls+mean" else 1)
    out = Path(out_dir).expanduser().resolve()
    transforms = {"class_path": "eva.vision.data.transforms.common.ResizeAndCrop",
                  "init_args": {"mean": list(bb.mean), "std": list(bb.std)}}
    if task.startswith(PATHFM_PREFIX):
        from pathfm.eval.tasks import get_task

        t = get_task(task.removeprefix(PATHFM_PREFIX))
        transforms["init_args"]["size"] = t.spec.input_size
        spec = EvaTask(task, "pathfm.eva.tile_dataset.PathfmTaskTiles", (), ("train", "val"), t.n_classes,
                       0.01, 4096, 24, t.spec.input_size)
        n_classes = t.n_classes
        predict = [{"class_path": spec.dataset, "init_args": {"task": t.name, "split": s, "fold": fold, "seed": seed,
                                                               "transforms": transforms}} for s in spec.splits]  # fmt: skip
    elif task in EVA_TASKS:
        spec = EVA_TASKS[task]
        if data_root is None:
            raise ConfigError(f"eva task '{task}' reads its data from disk: give --data-root")
        root = check_data_root(spec, data_root)
        transforms["init_args"]["size"] = spec.size
        n_classes = spec.num_classes
        predict = [{"class_path": spec.dataset, "init_args": {"root": str(root), "split": s, "download": False,
                                                               "transforms": transforms}} for s in spec.splits]  # fmt: skip
    else:
        raise ConfigError(f"eva task '{task}' is not one of {', '.join(EVA_TASKS)} or pathfm:<task> "
                          "(a pathfm tile task such as pathfm:crc)")
    binary = n_classes == 2 and not task.startswith(PATHFM_PREFIX)
    monitor = "val/BinaryAccuracy" if binary else "val/MulticlassAccuracy"
    emb_root = str(out / "embeddings")
    arguments: dict[str, Any] = {"source": absolute_source(str(bb.source)), "pooling": pooling}
    if random_init_seed is not None:
        arguments["random_init_seed"] = int(random_init_seed)
    bs = batch_size or spec.batch_size
    embed_args = {"root": emb_root, "manifest_file": "manifest.csv"}
    if binary:
        embed_args["target_transforms"] = {"class_path": "torchvision.transforms.v2.ToDtype",
                                           "init_args": {"dtype": "torch.float32"}}
    datasets: dict[str, Any] = {
        "train": {"class_path": "eva.datasets.EmbeddingsClassificationDataset",
                  "init_args": {**embed_args, "split": spec.splits[0]}},
        "val": {"class_path": "eva.datasets.EmbeddingsClassificationDataset",
                "init_args": {**embed_args, "split": spec.splits[1]}},
        "predict": predict,
    }
    # torch refuses eva's defaults (prefetch 2, persistent workers) without worker processes
    loader = {"num_workers": num_workers, "prefetch_factor": 2 if num_workers else None,
              "persistent_workers": bool(num_workers)}
    dataloaders: dict[str, Any] = {"train": {"batch_size": bs, "shuffle": True, **loader},
                                   "val": {"batch_size": bs, **loader}, "predict": {"batch_size": 64, **loader}}
    if len(spec.splits) > 2:
        datasets["test"] = {"class_path": "eva.datasets.EmbeddingsClassificationDataset",
                            "init_args": {**embed_args, "split": spec.splits[2]}}
        dataloaders["test"] = {"batch_size": bs, **loader}
    return {
        "trainer": {
            "class_path": "eva.Trainer",
            "init_args": {
                "n_runs": n_runs,
                "default_root_dir": str(out / "logs"),
                "max_steps": max_steps,
                "callbacks": [
                    {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                     "init_args": {"filename": "best", "save_last": True, "save_top_k": 1, "monitor": monitor,
                                   "mode": "max"}},
                    {"class_path": "lightning.pytorch.callbacks.EarlyStopping",
                     "init_args": {"min_delta": 0, "patience": spec.patience, "monitor": monitor, "mode": "max"}},
                    {"class_path": "eva.callbacks.ClassificationEmbeddingsWriter",
                     "init_args": {"output_dir": emb_root, "dataloader_idx_map": dict(enumerate(spec.splits)),
                                   "backbone": {"class_path": "eva.models.ModelFromFunction",
                                                "init_args": {"path": "pathfm.eva.backbone.eva_backbone",
                                                              "arguments": arguments}},
                                   "overwrite": False}},
                ],
                "logger": False,
            },
        },
        "model": _head(width, n_classes, binary, spec.lr, max_steps),
        "data": {"class_path": "eva.DataModule", "init_args": {"datasets": datasets, "dataloaders": dataloaders}},
    }


def write_eva_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write ``config`` as YAML to ``path`` (parents created)."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
