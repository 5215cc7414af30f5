"""The host waits for the device only where a step needs a value: counted with the stand-in counter
(benchmarks/host_syncs.py's HostSyncCounter, which sees the operations that synchronise on a GPU) on a real
training step on CPU. A new ``.item()``, ``.tolist()``, boolean-mask index or ``nonzero`` in the step fails here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from pathfm.config import load_config
from pathfm.ssl.param_groups import param_groups
from pathfm.ssl.step import build_student_teacher, masked_rows, select_masked
from pathfm.ssl.training_step import StepModels, StepPosition, training_step

_SPEC = importlib.util.spec_from_file_location(
    "host_syncs", Path(__file__).resolve().parents[1] / "benchmarks" / "host_syncs.py")
host_syncs = importlib.util.module_from_spec(_SPEC)
sys.modules["host_syncs"] = host_syncs
_SPEC.loader.exec_module(host_syncs)
HostSyncCounter, is_sync_op = host_syncs.HostSyncCounter, host_syncs.is_sync_op


def test_the_counter_sees_what_would_synchronise_on_a_gpu():
    x, m = torch.randn(3, 4, 2), torch.rand(3, 4) > 0.5
    with HostSyncCounter() as c:
        x.sum().item()
        x.sum(0).tolist()
        bool(x.sum() > 0)
        x[m]
        x.nonzero()
        torch.masked_select(x, m[..., None])
    assert c.by_operation() == {"aten._local_scalar_dense": 2, "Tensor.tolist": 1, "aten.index.Tensor": 1,
                                "aten.nonzero": 1, "aten.masked_select": 1}
    with HostSyncCounter() as none:
        x.flatten(0, 1).index_select(0, torch.tensor([0, 5]))
        x[:, 1] * 2 + x.mean()
    assert none.total == 0
    assert is_sync_op("aten.index.Tensor", (x, [m])) and not is_sync_op("aten.index.Tensor", (x, [torch.tensor([0])]))


def test_host_computed_mask_rows_select_what_boolean_indexing_selects_without_a_sync():
    masks = torch.rand(4, 9, generator=torch.Generator().manual_seed(0)) > 0.6
    weights = torch.tensor([0.5, 1.0, 2.0, 0.25])
    x = torch.randn(4, 9, 3)
    where = masked_rows(masks, weights, torch.device("cpu"))
    with HostSyncCounter() as c:
        picked = select_masked(x, masks, where.rows)
    assert c.total == 0
    assert torch.equal(picked, x[masks])
    assert torch.equal(where.weights, weights[:, None].expand_as(masks)[masks])
    with HostSyncCounter() as old:
        select_masked(x, masks, None)  # boolean indexing, as before: the counter sees it
    assert old.by_operation() == {"aten.index.Tensor": 1}


def _step(cfg, diagnose: bool) -> HostSyncCounter:
    torch.manual_seed(0)
    student, teacher = build_student_teacher(cfg)
    opt = torch.optim.AdamW(param_groups(list(student.named_parameters()), student.backbone.depth, cfg.optim))
    c, b = cfg.data.crops, cfg.data.batch_size
    crops = [(torch.randn(c.n_global * b, 3, c.global_size, c.global_size),
              torch.randn(c.n_local * b, 3, c.local_size, c.local_size)) for _ in range(cfg.optim.grad_accum)]
    with HostSyncCounter() as counter:
        training_step(StepModels(student, teacher, opt), cfg, 1e-4, StepPosition(0, 0, 0), crops, diagnose=diagnose,
                      check_finite=lambda parts: None)
    return counter


def test_a_training_step_syncs_once_per_micro_batch_and_once_for_the_gradient_norms():
    cfg = load_config("smoke", ["optim.grad_accum=2", "data.batch_size=2", "data.crops.n_local=2",
                                "loss.koleo_weight=0.1", "loss.kde_weight=0.05"])
    for diagnose in (False, True):
        counter = _step(cfg, diagnose)
        # the loss parts (+ diagnostics) of each micro-batch, read before its backward (finite check), and the
        # pre-clip gradient norms, read before the optimizer step: nothing else
        # on logged steps also the teacher CLS rows of each micro-batch, copied once for RankMe's SVD on the host
        expected = {"Tensor.tolist": 3, **({"Tensor.cpu": 2} if diagnose else {})}
        assert counter.by_operation() == expected, (diagnose, dict(counter.seen))
        where = {"ssl/training_step.py", "ssl/step.py", *(["ssl/diagnostics.py"] if diagnose else [])}
        assert {w.split(":")[0] for _, w in counter.seen} == where
