"""Counting the places a training step makes the host wait for the device, on any device.

On a GPU every such wait stalls the CPU until the queued kernels finish; ``torch.cuda.set_sync_debug_mode``
reports them there. :class:`HostSyncCounter` is the stand-in that runs anywhere, CPU included: it counts
the operations that synchronise when their tensor is on a GPU, by the torch operation (a
``TorchDispatchMode``: a read of a scalar: ``.item()``, ``bool()``, ``float()``; ``nonzero``,
``masked_select``, boolean-mask indexing and the other ops whose output size depends on the data) and by
the tensor method (a ``TorchFunctionMode``: ``.tolist()``, ``.cpu()``). On a CPU test these ops do not wait,
but they are the same calls, so a test that counts them catches a new sync before a GPU run does. Not
counted: torch.optim's reads of its host-side step counters (no device wait on a GPU either).

What remains in one optimizer step (tests/test_ssl_host_syncs.py; docs/large-backbones.md):

- one ``.tolist()`` of the loss parts (and, on logged steps, the diagnostics) per micro-batch: every rank
  checks the loss is finite before ``backward`` (pathfm.ssl.finite_agreement), which needs the values;
- one ``.tolist()`` of the pre-clip gradient norms per step: a non-finite gradient is refused before the
  optimizer step;
- in a distributed run, per step: the finite-loss agreement's flags (one per micro-batch), the tile counters'
  sum (pathfm.ssl.distributed.all_reduce_sum_dict) and the SIGTERM agreement (pathfm.ssl.termination).

The masked patches are found on the host (pathfm.ssl.step.masked_rows), not by boolean-mask indexing on the
device; host-to-device copies (not counted here) go through pinned memory without blocking.
"""

from __future__ import annotations

import traceback
from collections import Counter
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

# aten ops that read data back to the host (scalar reads) or whose output size depends on the data
SYNC_OPS = ("aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten.unique", "aten._unique",
            "aten.equal", "aten.is_nonzero", "aten.repeat_interleave.Tensor")
SYNC_METHODS = ("tolist", "cpu")  # tensor methods that copy to the host (``.cpu()`` of a CPU tensor: none on a GPU run)


def is_sync_op(name: str, args: tuple) -> bool:
    """Whether the aten op ``name`` (``str(func)``, e.g. ``aten.nonzero.default``) with ``args`` synchronises
    when its tensors are on a GPU: the :data:`SYNC_OPS`, and indexing with a boolean mask."""
    if name.startswith(SYNC_OPS):
        return True
    if name.startswith(("aten.index.Tensor", "aten.index_put")):
        indices = args[1] if len(args) > 1 else ()
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    return False


def _optimizer_step_count() -> bool:
    """Whether the current op is torch.optim reading its step counter: AdamW keeps ``state["step"]`` on the host
    (unless capturable or fused), so on a GPU that ``.item()`` does not wait for the device."""
    return any("/torch/optim/" in f.filename for f in traceback.extract_stack()[-12:])


def _caller() -> str:
    """The innermost pathfm frame (file:line), for reports."""
    for frame in reversed(traceback.extract_stack()):
        if "/pathfm/" in frame.filename and not frame.filename.endswith("host_syncs.py"):
            return f"{frame.filename.split('/pathfm/')[-1]}:{frame.lineno}"
    return "?"


class _Ops(TorchDispatchMode):
    def __init__(self, counter: "HostSyncCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        name = str(func)
        if is_sync_op(name, args) and not (name.startswith("aten._local_scalar_dense") and _optimizer_step_count()):
            self.counter.seen[(name.removesuffix(".default"), _caller())] += 1
        return func(*args, **(kwargs or {}))


class _Methods(TorchFunctionMode):
    def __init__(self, counter: "HostSyncCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__name__", "") in SYNC_METHODS:
            self.counter.seen[(f"Tensor.{func.__name__}", _caller())] += 1
        return func(*args, **(kwargs or {}))


class HostSyncCounter:
    """``with HostSyncCounter() as c: ...``; then ``c.total`` and ``c.seen`` ((operation, pathfm file:line) ->
    count). Counts the calls made on this thread, wherever the tensors are."""

    def __init__(self) -> None:
        self.seen: Counter = Counter()
        self._modes: list = []

    @property
    def total(self) -> int:
        return sum(self.seen.values())

    def by_operation(self) -> Counter:
        out: Counter = Counter()
        for (op, _), n in self.seen.items():
            out[op] += n
        return out

    def __enter__(self) -> "HostSyncCounter":
        self._modes = [_Methods(self), _Ops(self)]
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
