"""The one config tree of pathfm, validated in one place.

Everything a training run needs is a field of :class:`Config`. Presets live in ``pathfm/configs/*.yaml``
(also reachable as ``configs/`` at the repository root); a run is ``preset + dotted overrides``::

    cfg = load_config("smoke", ["loss.kde_weight=0.1", "data.hed.strength=0"])

Named recipe knobs (what sweeps and ablations vary) have short aliases, see :data:`KNOB_ALIASES`, so a
sweep may say ``kde_weight`` instead of ``loss.kde_weight``.

Validation errors name the field (``data.tissue.min_tissue_fraction``) and the allowed range.

The parts: the sections (``data_sections``, ``model_sections``, ``run_sections``, ``tracking_sections`` on the
``strict`` base) and their root ``tree.Config``; ``keys`` (knob aliases, dotted keys, overrides); ``loading``
(presets -> Config); ``paths`` (repository root, samples, user paths); ``renames`` (renamed keys still accepted).
Import from ``pathfm.config``: every name below is re-exported here, and pickles (Ray ships Configs between
processes) that name a class as ``pathfm.config.<Name>`` still load.
"""

from __future__ import annotations

from pathfm.config.data_sections import (BLUR_INTENDED, BLUR_RELEASED, CropsConfig, DataConfig, HEDConfig,
                                         MacenkoAugConfig, RandStainNAConfig, StainAugConfig, TissueFilterConfig)
from pathfm.config.keys import KNOB_ALIASES, get_dotted, parse_overrides, resolve_key, set_dotted
from pathfm.config.loading import MAX_LISTED_ERRORS, config_from_dict, find_preset, load_config, merge, read_yaml
from pathfm.config.model_sections import (ARCHS, EXECUTION_ONLY_MODEL_FIELDS, HeadConfig, HighResConfig, LossConfig,
                                          ModelConfig, OptimConfig)
from pathfm.config.paths import PRESET_DIR, REPO_ROOT, SAMPLES_DIR, resolve_path
from pathfm.config.run_sections import GuardsConfig, ProbeConfig, RunConfig
from pathfm.config.strict import StrictModel
from pathfm.config.tracking_sections import (MlflowTrackingConfig, TensorboardTrackingConfig, TrackingConfig,
                                             WandbTrackingConfig, file_store_uri)
from pathfm.config.tree import Config, lr_scaled

__all__ = [
    "ARCHS", "BLUR_INTENDED", "BLUR_RELEASED", "EXECUTION_ONLY_MODEL_FIELDS", "KNOB_ALIASES", "MAX_LISTED_ERRORS",
    "PRESET_DIR", "REPO_ROOT", "SAMPLES_DIR",
    "Config", "CropsConfig", "DataConfig", "GuardsConfig", "HEDConfig", "HeadConfig", "HighResConfig", "LossConfig",
    "MacenkoAugConfig", "MlflowTrackingConfig", "ModelConfig", "OptimConfig", "ProbeConfig", "RandStainNAConfig",
    "RunConfig", "StainAugConfig", "StrictModel", "TensorboardTrackingConfig", "TissueFilterConfig", "TrackingConfig",
    "WandbTrackingConfig",
    "config_from_dict", "file_store_uri", "find_preset", "get_dotted", "load_config", "lr_scaled", "merge",
    "parse_overrides", "read_yaml", "resolve_key", "resolve_path", "set_dotted",
]
