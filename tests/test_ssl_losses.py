"""DINO / iBOT losses, Sinkhorn-Knopp, centering, KoLeo and KDE against independent float64 loop-style
re-implementations of the formulas (DINOv2's ``dino_clstoken_loss.py`` / ``ibot_patch_loss.py`` in
facebookresearch/dinov2, and the Midnight paper's KDE regulariser)."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
from ports import free_port

from pathfm.errors import ConfigError
from pathfm.ssl.centering import Center, sinkhorn_knopp, softmax_center
from pathfm.ssl.losses import dino_loss, ibot_loss
from pathfm.ssl.regularizers import kde, koleo


def _log_softmax64(row: torch.Tensor, temp: float) -> list[float]:
    vals = [float(v) / temp for v in row.double()]
    m = max(vals)
    lse = m + math.log(sum(math.exp(v - m) for v in vals))
    return [v - lse for v in vals]


def _cross_entropy64(p: torch.Tensor, s: torch.Tensor, temp: float) -> float:
    logq = _log_softmax64(s, temp)
    return -sum(float(p[k]) * logq[k] for k in range(len(logq)))


# ------------------------------------------------------------------------------------------ DINO
def _dino_reference(s_glob, s_loc, t_probs, n_g, temp):
    """Loop over (student view, teacher view) pairs of different views, per image, float64."""
    b = t_probs.shape[0] // n_g
    n_l = s_loc.shape[0] // b
    pairs = n_g * (n_g - 1) + n_g * n_l
    local = glob = 0.0
    for g in range(n_g):  # teacher view
        for l in range(n_l):  # student local view
            local += sum(_cross_entropy64(t_probs[g * b + i], s_loc[l * b + i], temp) for i in range(b)) / b
        for g_s in range(n_g):  # student global view
            if g_s != g:
                glob += sum(_cross_entropy64(t_probs[g * b + i], s_glob[g_s * b + i], temp) for i in range(b)) / b
    return local / pairs, glob / pairs


@pytest.mark.parametrize("n_g,n_l", [(2, 3), (2, 0), (3, 2)])
def test_dino_loss_matches_float64_pair_loop(n_g: int, n_l: int) -> None:
    g = torch.Generator().manual_seed(n_g * 10 + n_l)
    b, k = 3, 11
    s_glob = torch.randn(n_g * b, k, generator=g)
    s_loc = torch.randn(n_l * b, k, generator=g)
    t_probs = torch.softmax(torch.randn(n_g * b, k, generator=g) / 0.3, dim=-1)
    local, glob = dino_loss(s_glob, s_loc, t_probs, student_temp=0.1, n_global=n_g)
    ref_local, ref_glob = _dino_reference(s_glob, s_loc, t_probs, n_g, 0.1)
    assert local.dtype == glob.dtype == torch.float32
    assert float(local) == pytest.approx(ref_local, rel=1e-5, abs=1e-6)
    assert float(glob) == pytest.approx(ref_glob, rel=1e-5)


def test_dino_global_term_pairs_student_crop_with_the_other_teacher_crop() -> None:
    """Targets for crop 0 that only student crop 1 can match: the loss is low only with the swap."""
    k, b = 5, 2
    onehot = torch.eye(k)
    t_probs = torch.cat([onehot[[0, 1]], onehot[[2, 3]]])  # crop 0 -> classes 0,1; crop 1 -> classes 2,3
    s_glob = torch.cat([onehot[[2, 3]], onehot[[0, 1]]]) * 100  # student crop 0 predicts crop 1's targets
    _, glob = dino_loss(s_glob, torch.zeros(0, k), t_probs)
    _, glob_wrong = dino_loss(torch.cat([s_glob[b:], s_glob[:b]]), torch.zeros(0, k), t_probs)
    assert float(glob) < 1e-3 < float(glob_wrong)


def test_dino_loss_at_init_reads_16_18_and_2_18_ln_k() -> None:
    k, b = 4096, 4
    uniform = torch.full((2 * b, k), 1.0 / k)
    local, glob = dino_loss(torch.zeros(2 * b, k), torch.zeros(8 * b, k), uniform)
    assert float(local) == pytest.approx(16 / 18 * math.log(k), rel=1e-5)
    assert float(glob) == pytest.approx(2 / 18 * math.log(k), rel=1e-5)


def test_dino_loss_runs_in_float32_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(1)
    s_glob, s_loc = torch.randn(4, 64, generator=g), torch.randn(8, 64, generator=g)
    t = torch.softmax(torch.randn(4, 64, generator=g), -1)
    ref = dino_loss(s_glob, s_loc, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dino_loss(s_glob, s_loc, t)
    assert out[0].dtype == torch.float32
    assert torch.allclose(torch.stack(out), torch.stack(ref))


def test_dino_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        dino_loss(torch.zeros(4, 8), torch.zeros(8, 8), torch.zeros(6, 8))
    with pytest.raises(ValueError, match="n_local"):
        dino_loss(torch.zeros(4, 8), torch.zeros(5, 8), torch.zeros(4, 8))


# ------------------------------------------------------------------------------------------ iBOT
def test_ibot_loss_matches_float64_per_image_loop() -> None:
    g = torch.Generator().manual_seed(2)
    k, n_crops = 9, 6
    masked_counts = [3, 0, 5, 1, 0, 2]  # two crops without a mask still count in the normaliser
    rows = sum(masked_counts)
    s = torch.randn(rows, k, generator=g)
    t = torch.softmax(torch.randn(rows, k, generator=g) / 0.2, -1)
    weights = torch.cat([torch.full((m,), 1.0 / m) for m in masked_counts if m])
    loss = ibot_loss(s, t, weights, n_crops=n_crops, student_temp=0.1)
    ref, row = 0.0, 0
    for m in masked_counts:
        per_image = sum(_cross_entropy64(t[row + j], s[row + j], 0.1) for j in range(m))
        ref += per_image / max(m, 1)
        row += m
    assert float(loss) == pytest.approx(ref / n_crops, rel=1e-5)


def test_ibot_loss_zero_weight_drops_padding_rows() -> None:
    s, t = torch.randn(4, 7), torch.softmax(torch.randn(4, 7), -1)
    w = torch.tensor([0.5, 0.5, 0.0, 0.0])
    padded = ibot_loss(torch.cat([s[:2], 1e4 * torch.ones(2, 7)]), t, w, n_crops=2)
    assert float(padded) == pytest.approx(float(ibot_loss(s[:2], t[:2], w[:2], n_crops=2)), rel=1e-6)


# ------------------------------------------------------------------------------------ Sinkhorn-Knopp
def _sinkhorn_reference(logits: torch.Tensor, temp: float, n_iters: int) -> torch.Tensor:
    """A.3 verbatim (no max subtraction) in float64: prototypes x samples."""
    q = torch.exp(logits.double() / temp).t()
    k, r = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / r
    return (q * r).t()


def test_sinkhorn_matches_float64_reference() -> None:
    logits = torch.randn(12, 30, generator=torch.Generator().manual_seed(3))
    out = sinkhorn_knopp(logits, temp=0.1, n_iters=3)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), _sinkhorn_reference(logits, 0.1, 3), rtol=1e-4, atol=1e-7)


def test_sinkhorn_rows_sum_to_one_columns_equal_mass_shift_invariant() -> None:
    logits = torch.randn(16, 8, generator=torch.Generator().manual_seed(4))
    p = sinkhorn_knopp(logits, temp=0.5, n_iters=3)
    assert torch.allclose(p.sum(dim=1), torch.ones(16), atol=1e-5)
    converged = sinkhorn_knopp(logits, temp=0.5, n_iters=200)
    assert torch.allclose(converged.sum(dim=0), torch.full((8,), 16 / 8), rtol=1e-4)
    assert torch.allclose(sinkhorn_knopp(logits + 123.0, temp=0.5), p, atol=1e-5)


def test_sinkhorn_no_overflow_or_underflow_with_large_logits() -> None:
    logits = 1e4 * torch.randn(10, 20, generator=torch.Generator().manual_seed(5))
    p = sinkhorn_knopp(logits, temp=0.04)
    assert torch.isfinite(p).all()
    assert torch.allclose(p.sum(dim=1), torch.ones(10), atol=1e-5)
    # the naive formula overflows here
    assert not torch.isfinite(torch.exp(logits / 0.04)).all()


def test_sinkhorn_under_autocast_is_float32_and_empty_input_is_fine() -> None:
    logits = torch.randn(6, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        p = sinkhorn_knopp(logits.bfloat16(), temp=0.1)
    assert p.dtype == torch.float32
    assert sinkhorn_knopp(torch.zeros(0, 10), temp=0.1).shape == (0, 10)


# ---------------------------------------------------------------------------------------- centering
def test_center_one_step_delay_and_state_dict() -> None:
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    center = Center(5, momentum=0.9)
    p1 = center.targets(z1, temp=0.07)
    assert torch.allclose(p1, torch.softmax(z1 / 0.07, -1))  # c_0 = 0
    c1 = 0.1 * z1.double().mean(0)
    p2 = center.targets(z2, temp=0.07)
    ref = torch.softmax((z2.double() - c1) / 0.07, -1)
    assert torch.allclose(p2.double(), ref, atol=1e-6)
    c2 = 0.9 * c1 + 0.1 * z2.double().mean(0)
    assert torch.allclose(center.center.double()[0], c2, atol=1e-7)
    restored = Center(5, momentum=0.9)
    restored.load_state_dict(center.state_dict())
    assert torch.equal(restored.center, center.center)
    assert torch.allclose(softmax_center(z1, center.center, 0.1), torch.softmax((z1 - center.center) / 0.1, -1))


def test_center_ignores_empty_batch() -> None:
    center = Center(3)
    center.update(torch.ones(2, 3))
    before = center.center.clone()
    center.update(torch.zeros(0, 3))
    assert torch.equal(center.center, before)


# -------------------------------------------------------------------- two real processes (gloo)
def _distributed_worker(rank: int, port: int, logits: torch.Tensor, rows: list[int], out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        start = sum(rows[:rank])
        mine = logits[start : start + rows[rank]]
        p = sinkhorn_knopp(mine, temp=0.1, n_iters=3, all_reduce=dist.all_reduce)
        center = Center(logits.shape[1], momentum=0.5)
        center.update(mine, all_reduce=dist.all_reduce)
        # an iBOT step where rank 0 has no masked patch: no deadlock, rank 1 gets the one-process result
        empty_split = logits[:0] if rank == 0 else logits
        p_empty = sinkhorn_knopp(empty_split, temp=0.1, n_iters=3, all_reduce=dist.all_reduce)
        torch.save((p, center.center.clone(), p_empty), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_sinkhorn_and_center_across_two_gloo_processes_equal_one_process(tmp_path) -> None:
    """Rank 0 has 3 rows (of 8), rank 1 has 5: SK over ranks equals SK over all rows in one process."""
    logits = 3 * torch.randn(8, 6, generator=torch.Generator().manual_seed(7))
    rows = [3, 5]
    # spawned, not forked: forking the pytest process after other tests started threads can hang
    mp.spawn(_distributed_worker, args=(free_port(), logits, rows, str(tmp_path)), nprocs=2, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    p = torch.cat([results[0][0], results[1][0]])
    centers = [results[0][1], results[1][1]]
    assert torch.allclose(p, sinkhorn_knopp(logits, temp=0.1, n_iters=3), atol=1e-6)
    mean_of_means = 0.5 * (logits[:3].mean(0) + logits[3:].mean(0))
    for c in centers:
        assert torch.allclose(c[0], 0.5 * mean_of_means, atol=1e-6)
    assert results[0][2].shape == (0, 6)
    assert torch.allclose(results[1][2], sinkhorn_knopp(logits, temp=0.1, n_iters=3), atol=1e-6)


# ------------------------------------------------------------------------------------ regularisers
def _koleo_reference(x: torch.Tensor, eps: float = 1e-8) -> float:
    xs = [row.double() / max(float(row.double().norm()), eps) for row in x]
    total = 0.0
    for i, xi in enumerate(xs):
        j = max((j for j in range(len(xs)) if j != i), key=lambda j: float(xi @ xs[j]))
        d = math.sqrt(sum((float(a - b) + eps) ** 2 for a, b in zip(xi, xs[j])))
        total += -math.log(d + eps)
    return total / len(xs)


def _kde_reference(x: torch.Tensor, kappa: float) -> float:
    zs = [row.double() / float(row.double().norm()) for row in x]
    n = len(zs)
    total = 0.0
    for i in range(n):
        dens = sum(math.exp(kappa * (float(zs[i] @ zs[j]) - 1.0)) for j in range(n) if j != i) / (n - 1)
        total += math.log(dens)
    return total / n


def test_koleo_and_kde_match_float64_references() -> None:
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(8))
    assert float(koleo(x)) == pytest.approx(_koleo_reference(x), rel=1e-5)
    for kappa in (0.5, 5.0, 20.0):
        assert float(kde(x, kappa)) == pytest.approx(_kde_reference(x, kappa), rel=1e-5, abs=1e-6)


def test_regularisers_are_float32_from_bf16_inputs() -> None:
    x = torch.randn(6, 16).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kde(x, 5.0).dtype == torch.float32
        assert koleo(x).dtype == torch.float32


def test_kde_gradient_pushes_near_duplicates_apart() -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(8, 16, generator=g)
    x[1] = x[0] + 1e-3 * torch.randn(16, generator=g)
    x.requires_grad_(True)
    kde(x, kappa=5.0).backward()
    with torch.no_grad():
        moved = x - 0.5 * x.grad
        before = torch.nn.functional.normalize(x[:2], dim=-1)
        after = torch.nn.functional.normalize(moved[:2], dim=-1)
        assert (after[0] - after[1]).norm() > (before[0] - before[1]).norm()
        assert float(kde(moved, 5.0)) < float(kde(x, 5.0))


def test_kde_finite_and_bounded_on_exact_duplicates_where_koleo_blows_up() -> None:
    g = torch.Generator().manual_seed(10)
    base = torch.randn(6, 32, generator=g)
    x = torch.cat([base, base[:2]]).requires_grad_(True)  # two exact duplicate pairs
    value = kde(x, kappa=5.0)
    value.backward()
    assert -10.0 <= value.item() <= 0.0  # each term lies in [-2 kappa, 0]
    assert torch.isfinite(x.grad).all() and x.grad.norm().item() < 10.0
    # KoLeo: -log(eps * sqrt(D)) ~ 15 for each duplicate, whatever the rest of the batch
    assert koleo(x).item() > 5.0


def test_kde_gradient_small_on_near_duplicates_where_koleo_gradient_explodes() -> None:
    g = torch.Generator().manual_seed(11)
    base = torch.randn(6, 32, generator=g)
    near = torch.cat([base, base[:1] + 1e-5 * torch.randn(1, 32, generator=g)])
    grads = {}
    for name, fn in (("kde", lambda t: kde(t, 5.0)), ("koleo", koleo)):
        x = near.clone().requires_grad_(True)
        fn(x).backward()
        assert torch.isfinite(x.grad).all()
        grads[name] = x.grad.norm().item()
    assert grads["kde"] < 10.0
    assert grads["koleo"] > 1e3 * grads["kde"]


def test_regularisers_need_two_embeddings() -> None:
    with pytest.raises(ConfigError, match="data.batch_size"):
        kde(torch.randn(1, 4), 5.0)
    with pytest.raises(ConfigError, match="koleo_weight"):
        koleo(torch.randn(1, 4))
