"""pathfm's training step stays what was checked against facebookresearch/dinov2's step.

``benchmarks/dinov2_step_parity.py`` ran DINOv2's own ``SSLMetaArch`` step, parameter groups, schedules and
AdamW next to pathfm's on identical weights, crops and masks (docs/training-health.md has the numbers) and
stored pathfm's trace of that run in tests/data/dinov2_step_parity.json. This test recomputes the trace
(no DINOv2 code needed) and fails when any loss part, gradient norm, teacher target entropy or parameter
update moves further from it than float32 rounding can explain.

Tolerance: per family and step, ``max(REL_FLOOR, FACTOR x noise envelope)``, where the envelope is the
largest relative deviation so far between the stored run and the same run on crops one float32 ulp away
(stored with the fixture). The planted change shows that the tolerance still catches the smallest change
that was tried when the fixture was made (a weight-decay schedule ending at 0.3 instead of 0.4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pathfm.ssl import step_trace

FIXTURE = Path(__file__).parent / "data" / "dinov2_step_parity.json"
FACTOR = 20.0
REL_FLOOR = 1e-5


@pytest.fixture(scope="module")
def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def violations(got: dict, reference: dict, envelope: dict[str, list[float]]) -> list[str]:
    deviations = step_trace.trace_deviations(got, reference)
    out = []
    for family, values in deviations.items():
        for i, (dev, noise) in enumerate(zip(values, envelope[family])):
            tol = max(REL_FLOOR, FACTOR * noise)
            if dev > tol:
                where = f"step {i + 1}" if family not in ("student_update", "teacher_update") else "end"
                out.append(f"{family} at {where}: relative deviation {dev:.2e} > tolerance {tol:.2e}")
    return out


@pytest.mark.parametrize("case", sorted(step_trace.PARITY_CASES))
def test_trace_matches_the_dinov2_checked_fixture(fixture, case):
    got = step_trace.trace(case, fixture["steps"])
    bad = violations(got, fixture["traces"][case], fixture["noise_envelope"][case])
    assert not bad, f"{case}: pathfm's step moved away from the DINOv2-checked trace:\n" + "\n".join(bad)


def test_planted_step_change_is_caught(fixture, monkeypatch):
    """The subtlest change measured (deviation / noise envelope 363 on the teacher updates; an ignored
    patch-embed lr multiplier: 111,748): a weight-decay schedule ending at 0.3 instead of 0.4."""
    case = "dinov2_default"
    monkeypatch.setitem(step_trace.PARITY_CASES, case, {**step_trace.PARITY_CASES[case], "optim.weight_decay_end": 0.3})
    got = step_trace.trace(case, fixture["steps"])
    assert violations(got, fixture["traces"][case], fixture["noise_envelope"][case])


def test_fixture_records_agreement_with_dinov2(fixture):
    """The stored comparison itself: DINOv2's parameter groups were identical and step 1 agreed to float32."""
    for case, s in fixture["dinov2_agreement"].items():
        assert s["param_groups"]["same_set"] and not s["param_groups"]["mismatched"], case
        assert s["step1"]["sched"]["max_abs"] == 0.0, case
        assert s["step1"]["loss_rel"]["max_rel"] < 1e-5, case
        assert s["step1"]["grads"]["max_rel"] < 1e-3, case


def test_trace_deviations_names_the_family_that_moved():
    ref = {"steps": [{"losses": {"a": 1.0}, "grad_norms": {"b": 2.0}, "dino_target_entropy": 3.0,
                      "ibot_target_entropy": 4.0}],
           "student_update_norms": {"w": 1.0}, "teacher_update_norms": {"w": 0.5}}  # fmt: skip
    got = json.loads(json.dumps(ref))
    got["steps"][0]["grad_norms"]["b"] = 2.2
    got["teacher_update_norms"]["w"] = 0.25
    dev = step_trace.trace_deviations(got, ref)
    assert dev["loss"] == [0.0] and dev["target_entropy"] == [0.0] and dev["student_update"] == [0.0]
    assert dev["grad_norm"] == [pytest.approx(0.1)] and dev["teacher_update"] == [pytest.approx(0.5)]
    assert step_trace.running_max([1.0, 0.5, 2.0]) == [1.0, 1.0, 2.0]
