"""Benchmark of the evaluation part: feature-extraction throughput, the linear probe, and a whole evaluation.

    .venv/bin/python benchmarks/eval_features.py [--run RUN_DIR] [--arch vit_small] [--tiles 64]

1. Extraction throughput (tiles/s) of ``pathfm.eval.features.extract_features`` (batch 64) against the loop
   a competent user writes: the same tiles in batches of 64 under ``torch.no_grad()``, model in eval mode,
   same normalisation and cls+mean pooling; same model, same real CRC tiles, measured interleaved in the
   same run. Both do the same arithmetic, so the honest ratio is ~1x: what pathfm adds is not speed per
   forward pass but the feature cache (row 3: a second evaluation reuses the features), resize to the
   training resolution, device handling, bf16 autocast on CUDA, and a check for non-finite features.
2. Linear probe: our fit in the training rows' span (exact, see pathfm.eval.probes._row_space) against
   the same scikit-learn fit on the full features, on ViT-g-sized CLS+mean features (3072-d), with the
   deviation of each from a tightly converged reference (tol 1e-10).
3. A whole `evaluate` of a smoke (pico ViT) checkpoint on both bundled tasks with both baselines,
   cold (no feature cache) and warm (cached), against the one-minute target of the issue.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_extraction(arch: str, n_tiles: int, repeats: int = 3) -> list[tuple]:
    from pathfm.backbone.vit import build_backbone
    from pathfm.eval.features import extract_features, pool_tokens
    from pathfm.eval.tasks import get_task
    from pathfm.eval.tiles import load_samples

    images = load_samples(get_task("crc")).images[:n_tiles]
    torch.manual_seed(0)
    model = build_backbone({"arch": arch, "patch_size": 14}, drop_path=0.0).eval()

    def ours():
        return extract_features(model, images, batch_size=64, device="cpu")

    def batched_no_grad():  # the loop a competent user writes
        out = []
        with torch.no_grad():
            for i in range(0, len(images), 64):
                x = torch.from_numpy(images[i:i + 64]).permute(0, 3, 1, 2).float().div(255)
                x = (x - 0.5) / 0.5
                out.append(pool_tokens(model.forward_features(x), "cls+mean"))
        return torch.cat(out).numpy()

    assert np.allclose(ours(), batched_no_grad(), atol=1e-4)  # same features (and warm-up)
    best = {"ours": float("inf"), "base": float("inf")}
    for _ in range(repeats):  # interleaved, best of
        for name, fn in (("base", batched_no_grad), ("ours", ours)):
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    a, b = len(images) / best["ours"], len(images) / best["base"]
    return [(f"extract {arch} 224px, {len(images)} tiles, tiles/s", a, b, a / b)]


def bench_probe(d: int = 3072) -> list[tuple]:
    """Logistic regression over the C grid on ViT-g-sized CLS+mean features (d=3072) of 108 tiles."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from pathfm.eval.probes import DEFAULT_CS, _fit_logreg, _row_space, _standardise

    rng = np.random.default_rng(0)
    n, k = 108, 8
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + 0.3 * np.eye(k)[y] @ rng.normal(size=(k, d))
    tr, te = np.arange(0, 86), np.arange(86, n)
    xtr, xte = _standardise(x[tr], x[te])
    _fit_logreg(xtr[:, :8], y[tr], 1.0, 0)  # warm-up (lazy imports)
    t_ours = t_full = err_ours = err_full = 0.0
    with threadpool_limits(limits=1, user_api="blas"):
        for c in DEFAULT_CS:
            a, b = _row_space(xtr, xte)
            ref = LogisticRegression(C=c, tol=1e-10, max_iter=20000).fit(a, y[tr]).predict_proba(b)
            t = time.perf_counter()
            a, b = _row_space(xtr, xte)
            p_ours = _fit_logreg(a, y[tr], c, 0).predict_proba(b)
            t_ours += time.perf_counter() - t
            t = time.perf_counter()
            p_full = _fit_logreg(xtr, y[tr], c, 0).predict_proba(xte)
            t_full += time.perf_counter() - t
            err_ours = max(err_ours, float(np.abs(p_ours - ref).max()))
            err_full = max(err_full, float(np.abs(p_full - ref).max()))
    n_c = len(DEFAULT_CS)
    return [(f"logreg 86x{d}, {n_c} C values, fits/s (max |p - p*|: ours {err_ours:.0e}, full {err_full:.0e})",
             n_c / t_ours, n_c / t_full, t_full / t_ours)]


def bench_evaluate(run: Path | None) -> list[tuple]:
    from pathfm.eval import evaluate

    with tempfile.TemporaryDirectory() as tmp:
        if run is None:
            from pathfm.backbone.backbone_file import export_backbone
            from pathfm.backbone.vit import build_backbone
            from pathfm.config import load_config

            cfg = load_config("smoke")
            run = Path(tmp) / "smoke_run"
            run.mkdir()
            torch.manual_seed(0)
            export_backbone(build_backbone(cfg.model), run / "teacher_backbone.pt", step=0, model_cfg=cfg.model)
            (run / "config.yaml").write_text(cfg.to_yaml())
        cache = Path(tmp) / "cache"
        kw = dict(tasks=["crc", "osteo"], probes=["linear", "knn"], cache_dir=cache, output=None, progress=False,
                  verbose=False)
        t = time.perf_counter()
        evaluate(run, **kw)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        evaluate(run, **kw)
        warm = time.perf_counter() - t
    return [("evaluate smoke ckpt, crc+osteo, linear+knn, 2 baselines: s (cold)", cold, 60.0, 60.0 / cold),
            ("same, features cached: s (warm)", warm, 60.0, 60.0 / warm)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=None, help="a smoke run dir (default: a fresh pico export)")
    ap.add_argument("--arch", default="vit_small")
    ap.add_argument("--tiles", type=int, default=64, help="CRC tiles for the pico extraction (a quarter for --arch)")
    args = ap.parse_args(argv)
    rows = bench_extraction("vit_pico", args.tiles) + bench_extraction(args.arch, max(4, args.tiles // 4))
    rows += bench_probe() + bench_evaluate(args.run)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {sys.platform}")
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':{w}s}  {'ours':>9s}  {'baseline':>9s}  ratio")
    for name, ours, base, ratio in rows:
        print(f"{name:{w}s}  {ours:9.2f}  {base:9.2f}  {ratio:5.2f}x")
    print("baselines: batched (64) torch.no_grad() extraction loop; scikit-learn logreg on all dims; the 60 s "
          "target. Extraction is the same arithmetic as the baseline (ratio ~1x expected); pathfm's gain is the "
          "feature cache (warm vs cold evaluate)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
