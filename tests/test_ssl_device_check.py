"""A GPU that nvidia-smi lists but torch cannot use (e.g. torch 2.14.1+cu130 on an NVIDIA driver older than
580) is an error naming the driver and the fix, not a silent CPU run (``run.device=auto``).

No GPU exists on the machines these tests run on, so the GPU side is a stand-in: the decision is a pure
function of (what nvidia-smi reports, ``torch.cuda.is_available()``), tested directly; and the real call path
(``pick_device`` -> ``nvidia_smi_gpus`` -> subprocess) runs against a stub ``nvidia-smi`` script put first on
PATH, which prints what nvidia-smi prints for one H100 on driver 550. A stub of the external binary is the
only way to exercise that path without a GPU.
"""

from __future__ import annotations

import os
import stat

import pytest
import torch

from pathfm.errors import ConfigError
from pathfm.ssl.distributed import SmiGpus, init_distributed, nvidia_smi_gpus, pick_device, unusable_gpu_message

H100_550 = SmiGpus((("NVIDIA H100 80GB HBM3", "550.54.15"),))


def test_the_decision_is_a_pure_function_of_nvidia_smi_and_torch():
    old = unusable_gpu_message(H100_550, False, None, torch_version="2.14.1+cu130", torch_cuda="13.0")
    assert old is not None and "driver >= 580" in old and "550.54.15" in old and "NVIDIA H100 80GB HBM3" in old
    assert "Update the driver" in old and "run.device=cpu" in old
    assert unusable_gpu_message(H100_550, True, None, torch_cuda="13.0") is None  # torch uses it
    assert unusable_gpu_message(None, False, None, torch_cuda="13.0") is None  # no GPU: the CPU is right
    assert unusable_gpu_message(SmiGpus(()), False, None, torch_cuda="13.0") is None
    assert unusable_gpu_message(H100_550, False, "", torch_cuda="13.0") is None  # hidden on purpose
    assert unusable_gpu_message(H100_550, False, "-1", torch_cuda="13.0") is None
    # the same driver suits a CUDA 12 build: then something else is wrong, and the message says what to check
    other = unusable_gpu_message(H100_550, False, None, torch_version="2.14.1+cu126", torch_cuda="12.6")
    assert other is not None and "cannot use it" in other and "CUDA_VISIBLE_DEVICES" in other
    cpu_build = unusable_gpu_message(H100_550, False, None, torch_version="2.14.1+cpu", torch_cuda=None)
    assert cpu_build is not None and "CPU-only build" in cpu_build


def _stub(tmp_path, monkeypatch, body: str) -> None:
    exe = tmp_path / "bin" / "nvidia-smi"
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/sh\n" + body + "\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.mark.skipif(torch.cuda.is_available() or torch.version.cuda is None,
                    reason="needs a CUDA build of torch that sees no GPU (the stand-in for an old driver)")
def test_auto_refuses_a_gpu_that_nvidia_smi_lists_and_torch_cannot_use(tmp_path, monkeypatch):
    _stub(tmp_path, monkeypatch, 'echo "NVIDIA H100 80GB HBM3, 550.54.15"')
    assert nvidia_smi_gpus() == H100_550
    for requested in ("auto", "cuda"):
        with pytest.raises(ConfigError, match=rf"run.device={requested}: nvidia-smi lists 1 GPU\(s\) .*driver 550"):
            pick_device(requested)
    with pytest.raises(ConfigError, match="NVIDIA driver >= 580"):
        init_distributed("auto")  # what train() calls first
    assert pick_device("cpu") == torch.device("cpu")  # on purpose
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert pick_device("auto") == torch.device("cpu")


def test_auto_stays_on_the_cpu_where_nvidia_smi_finds_no_gpu(tmp_path, monkeypatch):
    _stub(tmp_path, monkeypatch, 'echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."; exit 9')
    assert nvidia_smi_gpus() is None
    if not torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cpu")
