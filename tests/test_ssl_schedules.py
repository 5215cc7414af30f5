"""Schedules as plain functions of the step (DINOv2 CosineScheduler semantics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pathfm.config import Config
from pathfm.ssl.schedules import linear_then_constant, schedule_values, warmup_cosine


def _dinov2_array(base: float, final: float, total: int, warmup: int, start: float = 0.0) -> np.ndarray:
    """Independent re-statement of DINOv2's precomputed schedule array (A.4)."""
    warm = np.linspace(start, base, warmup)
    i = np.arange(total - warmup)
    cos = final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / len(i)))
    return np.concatenate([warm, cos])


@pytest.mark.parametrize("total,warmup", [(50, 10), (20, 0), (7, 1), (30, 29)])
def test_warmup_cosine_matches_the_reference_array(total: int, warmup: int) -> None:
    ref = _dinov2_array(4e-3, 1e-6, total, warmup)
    ours = [warmup_cosine(s, total, 4e-3, 1e-6, warmup) for s in range(total)]
    assert np.allclose(ours, ref, rtol=1e-12, atol=0)
    assert warmup_cosine(total, total, 4e-3, 1e-6, warmup) == 1e-6
    assert warmup_cosine(10 * total, total, 4e-3, 1e-6, warmup) == 1e-6


def test_warmup_starts_at_exactly_zero_and_reaches_base() -> None:
    assert warmup_cosine(0, 100, 1e-3, 1e-6, warmup_steps=10) == 0.0
    assert warmup_cosine(9, 100, 1e-3, 1e-6, warmup_steps=10) == pytest.approx(1e-3, rel=1e-12)
    assert warmup_cosine(10, 100, 1e-3, 1e-6, warmup_steps=10) == pytest.approx(1e-3, rel=1e-12)
    mid = warmup_cosine(55, 100, 1.0, 0.0, warmup_steps=10)
    assert mid == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_linear_then_constant_endpoints() -> None:
    assert linear_then_constant(0, 0.04, 0.07, 30) == 0.04
    assert linear_then_constant(29, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert linear_then_constant(30, 0.04, 0.07, 30) == 0.07
    assert linear_then_constant(15, 0.04, 0.07, 31) == pytest.approx(0.055)
    assert linear_then_constant(0, 0.04, 0.07, 0) == 0.07
    with pytest.raises(ValueError):
        linear_then_constant(-1, 0.04, 0.07, 3)


def test_schedule_values_from_config() -> None:
    cfg = Config.model_validate({"optim": {"steps": 100, "warmup_steps": 10, "freeze_last_layer_steps": 5,
                                           "teacher_temp_warmup_steps": 30}})
    first = schedule_values(cfg, 0, base_lr=2e-3)
    assert set(first) == {"lr", "last_layer_lr", "wd", "momentum", "teacher_temp"}
    assert first["lr"] == 0.0 and first["last_layer_lr"] == 0.0
    assert first["wd"] == pytest.approx(0.04) and first["momentum"] == pytest.approx(0.992)
    assert first["teacher_temp"] == pytest.approx(0.04)
    s4, s5 = schedule_values(cfg, 4, 2e-3), schedule_values(cfg, 5, 2e-3)
    assert s4["lr"] > 0 and s4["last_layer_lr"] == 0.0
    assert s5["last_layer_lr"] == s5["lr"] > 0
    last = schedule_values(cfg, 99, 2e-3)
    assert last["lr"] == pytest.approx(1e-6, abs=1e-6) and last["wd"] == pytest.approx(0.4, abs=1e-3)
    assert last["momentum"] == pytest.approx(1.0, abs=1e-5) and last["teacher_temp"] == 0.07
    moms = [schedule_values(cfg, s, 2e-3)["momentum"] for s in range(100)]
    assert all(a <= b for a, b in zip(moms, moms[1:]))
