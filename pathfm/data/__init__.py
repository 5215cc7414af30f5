"""Whole-slide-image data pipeline: slides and manifests, tissue masks, online patching with the HSV
filter, HED stain augmentation, DINOv2 multi-crop, nested data-size subsets (labelled tile folders are evaluation tasks: :mod:`pathfm.eval.tasks`).

Heavy modules (torch, openslide) are imported lazily, so ``import pathfm.data`` is cheap.
"""

from __future__ import annotations

from pathfm._lazy import lazy_exports

_EXPORTS = {
    "build_train_loader": "pathfm.data.loader",
    "OnlinePatchDataset": "pathfm.data.dataset",
    "load_manifest": "pathfm.data.manifest",
    "SlideEntry": "pathfm.data.manifest",
    "nested_subset": "pathfm.data.subsets",
    "HSVFilter": "pathfm.data.hsv",
    "HSVBox": "pathfm.data.hsv",
    "hed_augment": "pathfm.data.hed",
    "MultiCrop": "pathfm.data.multicrop",
    "open_slide": "pathfm.data.slides",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
