"""``data.max_upsample``: which configured resolutions a slide serves (Midnight's high-res stage asks for
0.125 um/px, which a 0.25 um/px slide serves only if 2x upsampling is allowed)."""

from __future__ import annotations

import pytest

from pathfm.config import load_config
from pathfm.data.patching import MAX_UPSAMPLE, usable_mpps
from pathfm.errors import ConfigError


def test_default_limit_never_upsamples_a_025_slide_to_0125():
    highres_mpps = [0.125, 0.25, 0.5, 1.0]
    assert MAX_UPSAMPLE == 1.1 == load_config("smoke").data.max_upsample
    assert usable_mpps(0.25, highres_mpps) == (1, 2, 3)
    assert usable_mpps(0.26, highres_mpps) == (1, 2, 3)  # 4 % upsampling is tolerated
    assert usable_mpps(0.25, highres_mpps, max_upsample=2.0) == (0, 1, 2, 3)
    assert usable_mpps(0.5, highres_mpps, max_upsample=1.0) == (2, 3)


def test_limit_below_one_is_refused_with_the_field_name():
    with pytest.raises(ConfigError, match="data.max_upsample"):
        load_config("smoke", ["data.max_upsample=0.5"])
