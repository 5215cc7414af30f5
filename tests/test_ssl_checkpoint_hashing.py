"""Sharded (DCP) checkpoints are hashed by the ranks that wrote them, not by rank 0 alone between two
collectives; on resume the ranks verify a checkpoint together (each hashes a share of its files). The
integrity rule is unchanged: the sidecar is the one-process ``pathfm.io.checksum`` of the directory, and a
corrupted shard is still found, by every rank at once (real gloo processes, real files)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gloo_helpers import run_ranks
from ports import free_port

from pathfm.backbone import checkpoint as ckpt
from pathfm.backbone.sharded_checkpoint import share_of_files, shard_owner
from pathfm.io import checksum, combine_checksums, folder_files, sha256_file


def test_each_rank_owns_the_files_dcp_named_after_it():
    assert [shard_owner(n, 4) for n in ("__0_0.distcp", "__3_0.distcp", "__2_1.distcp")] == [0, 3, 2]
    assert shard_owner(".metadata", 4) == 0 and shard_owner("train_state.pt", 4) == 0
    assert shard_owner("__7_0.distcp", 4) == 0  # a name from a larger world: rank 0 still covers it
    assert shard_owner("x__1_0.distcp", 4) == 0


def test_the_verification_share_is_balanced_and_the_same_on_every_rank():
    sizes = {f"__{r}_0.distcp": 1000 + r for r in range(8)} | {".metadata": 10, "train_state.pt": 20}
    split = share_of_files(sizes, 4)
    assert set(split) == set(sizes) and split == share_of_files(dict(reversed(sizes.items())), 4)
    load = [sum(s for n, s in sizes.items() if split[n] == r) for r in range(4)]
    assert max(load) - min(load) <= max(sizes.values())  # no rank reads more than its share plus one file
    assert all(load)
    assert share_of_files({"a": 5}, 3) == {"a": 0}


def test_a_folder_checksum_is_the_combination_of_its_files(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    for name, data in {"b": b"1", ".metadata": b"2", "sub/a": b"3", "__0_0.distcp": b"4"}.items():
        (tmp_path / name).write_bytes(data)
    names = folder_files(tmp_path)
    assert names == [".metadata", "__0_0.distcp", "b", "sub/a"]
    digests = {n: sha256_file(tmp_path / n) for n in names}
    assert combine_checksums(dict(reversed(digests.items()))) == checksum(tmp_path)
    digests["b"] = sha256_file(tmp_path / "sub" / "a")
    assert combine_checksums(digests) != checksum(tmp_path)


def _rank(rank: int, port: int, run_dir: str, out: str) -> None:
    """Two steps of a tiny sharded model, a DCP checkpoint after each; then a shard of the newest is cut short
    and both ranks look for the newest valid checkpoint together."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))  # fmt: skip
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from pathfm.backbone.sharded_checkpoint import save_sharded, shared_checksum
    from pathfm.ssl.distributed import init_distributed, shutdown_distributed

    init_distributed("cpu", 60)
    torch.manual_seed(0)
    student, teacher = torch.nn.Sequential(torch.nn.Linear(64, 64)), torch.nn.Sequential(torch.nn.Linear(64, 64))
    for net in (student, teacher):
        fully_shard(net)
    opt = torch.optim.AdamW(student.parameters())
    report: dict = {}
    for step in (1, 2):
        student(torch.randn(4, 64)).sum().backward()
        opt.step()
        path = save_sharded(run_dir, step, {"progress": {"global_step": step}}, student, teacher, opt, keep=2,
                            is_main=rank == 0)
        report[f"shared_{step}"] = shared_checksum(path)  # both ranks, together
    newest = ckpt.sharded_checkpoint_path(run_dir, 2)
    if rank == 0:
        report["sidecar_2"] = ckpt.checksum_path(newest).read_text().split()[0]
        (newest / "__1_0.distcp").write_bytes(b"cut short")
    dist.barrier()
    found = ckpt.latest_valid(run_dir, shared_checksum)
    report["resumes_from"] = found[0].name if found else None
    Path(out).with_suffix(f".{rank}.json").write_text(json.dumps(report))
    dist.barrier()
    shutdown_distributed()


@pytest.mark.timeout(180)
def test_two_ranks_hash_their_own_shards_and_find_a_corrupt_one_together(tmp_path: Path):
    run_dir, out = tmp_path / "run", tmp_path / "report"
    port = free_port()
    with pytest.warns(UserWarning, match="skipping checkpoint at step 2"):
        codes = run_ranks(_rank, lambda r: (r, port, str(run_dir), str(out)), world=2, timeout_s=150)
        # the warning is raised in the ranks; the parent checks the same walk below
        ckpt.latest_valid(run_dir)
    assert codes == [0, 0]
    reports = [json.loads(out.with_suffix(f".{r}.json").read_text()) for r in range(2)]
    first = ckpt.sharded_checkpoint_path(run_dir, 1)
    assert sorted(folder_files(first))[:3] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # the sidecar the ranks wrote from their own digests is the one-process checksum of the directory
    assert ckpt.verify(first) is None
    assert reports[0]["shared_1"] == reports[1]["shared_1"] == checksum(first)
    assert reports[0]["sidecar_2"] == reports[0]["shared_2"] == reports[1]["shared_2"]
    # the corrupted shard (rank 1's file, hashed by whichever rank the split gave it) is found by both ranks
    assert "sha256 mismatch" in ckpt.verify(ckpt.sharded_checkpoint_path(run_dir, 2))
    assert [r["resumes_from"] for r in reports] == ["step_00000001.dcp", "step_00000001.dcp"]
