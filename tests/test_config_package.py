"""pathfm.config is a package of small modules; what users import and what pickles name stays ``pathfm.config``."""

from __future__ import annotations

import pickle
import typing

from pydantic import BaseModel

import pathfm.config
from pathfm.config import Config, load_config


def sections(model: type[BaseModel]) -> set[type[BaseModel]]:
    """``model`` and every section class below it (optional sections included)."""
    found = {model}
    for field in model.model_fields.values():
        for t in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(t, type) and issubclass(t, BaseModel) and t not in found:
                found |= sections(t)
    return found


def test_every_section_class_is_importable_from_pathfm_config():
    """A pickle written when the tree lived in pathfm/config.py (Ray's saved experiment state of a sweep started
    then) names each class as pathfm.config.<Name>: every one must still resolve there, to the same class."""
    classes = sections(Config)
    assert len(classes) >= 18
    for cls in classes:
        assert getattr(pathfm.config, cls.__name__) is cls, cls.__name__


def test_a_config_pickles_and_loads_back_equal():
    cfg = load_config("smoke", ["kde_weight=0.1", "run.guards={}"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_the_package_exports_what_it_lists():
    assert all(hasattr(pathfm.config, name) for name in pathfm.config.__all__)
    assert pathfm.config.PRESET_DIR.is_dir() and (pathfm.config.PRESET_DIR / "smoke.yaml").is_file()
    assert (pathfm.config.REPO_ROOT / "pathfm" / "config" / "__init__.py").is_file()
    assert pathfm.config.SAMPLES_DIR == pathfm.config.REPO_ROOT / "samples"
