"""``pathfm data preview``: a PNG contact sheet that shows what the tissue filter and HED do on a slide.

Panels: the thumbnail with its tissue mask and where the shown tiles came from; accepted and rejected
tiles (drawn uniformly over the whole slide, so background shows up too) with their tissue fractions;
one accepted tile under increasing HED strength (same random direction, growing sigma).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pathfm.data.hed import hed_augment, sample_hed_params
from pathfm.data.hsv import HSVFilter
from pathfm.data.patching import usable_mpps
from pathfm.data.readers import ReaderOptions
from pathfm.data.slides import SlideGeometry, metadata_mpp, open_slide, read_tile, resolve_mpp
from pathfm.data.tissue import TissueMask

HED_STRENGTHS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)


def collect_tiles(slide, geometry: SlideGeometry, mpp: float, target_mpp: float, tile_size: int, hsv: HSVFilter,
                  n_each: int, rng: np.random.Generator, max_draws: int = 400):
    """Draw tiles uniformly over the slide until ``n_each`` accepted and rejected ones (or max_draws)."""
    extent = tile_size * target_mpp / mpp
    acc, rej = [], []
    for _ in range(max_draws):
        x0 = rng.uniform(0, max(geometry.width - extent, 0))
        y0 = rng.uniform(0, max(geometry.height - extent, 0))
        px = read_tile(slide, geometry, int(x0), int(y0), extent, tile_size)
        ok, frac = hsv.accepts(px)
        (acc if ok else rej).append((px, frac, x0, y0, extent))
        if len(acc) >= n_each and len(rej) >= n_each:
            break
    return acc[:n_each], rej[:n_each]


def make_preview(slide_path: str | Path, out: str | Path, data_cfg=None, target_mpp: float | None = None,
                 mpp: float | None = None, n_each: int = 8, seed: int = 0) -> dict:
    """Write the contact sheet; returns {"accepted": n, "rejected": n, "out": path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from pathfm.config import DataConfig
    from pathfm.io import atomic_path

    d = data_cfg or DataConfig()
    hsv = HSVFilter.from_config(d.tissue)
    slide = open_slide(slide_path, ReaderOptions.from_config(d))
    try:
        level0_mpp, _ = resolve_mpp(slide_path, metadata_mpp(slide), mpp, d.assume_mpp)
        target = target_mpp or min((d.mpps[i] for i in usable_mpps(level0_mpp, d.mpps, d.max_upsample)), default=level0_mpp)
        geometry = SlideGeometry.of(slide)
        mask = TissueMask.from_slide(slide, hsv, d.tissue.thumbnail_size)
        thumb = np.asarray(slide.get_thumbnail((512, 512)).convert("RGB"))
        rng = np.random.default_rng(seed)
        acc, rej = collect_tiles(slide, geometry, level0_mpp, target, d.tile_size, hsv, n_each, rng)
    finally:
        slide.close()

    ncol = max(n_each, len(HED_STRENGTHS))
    fig = plt.figure(figsize=(1.7 * ncol, 12.5))
    top, acc_fig, rej_fig, hed_fig = fig.subfigures(4, 1, height_ratios=[4.2, 2.0, 2.0, 2.0])
    ax = top.subplots()
    ax.imshow(thumb)
    sx, sy = thumb.shape[1] / geometry.width, thumb.shape[0] / geometry.height
    my, mx = mask.mask.shape
    ax.contour(np.linspace(0, thumb.shape[1], mx), np.linspace(0, thumb.shape[0], my), mask.mask.astype(float),
               levels=[0.5], colors="tab:blue", linewidths=0.8)
    for tiles, color in ((acc, "lime"), (rej, "red")):
        for _, _, x0, y0, ext in tiles:
            ax.add_patch(Rectangle((x0 * sx, y0 * sy), ext * sx, ext * sy, fill=False, ec=color, lw=1.5))
    ax.axis("off")
    top.suptitle(f"{Path(slide_path).name}: {geometry.width}x{geometry.height} px at {level0_mpp:.3g} um/px; "
                 f"tissue mask {mask.fraction:.0%} of the slide (blue outline)\n"
                 f"tiles {d.tile_size} px at {target:g} um/px drawn uniformly over the slide "
                 f"(lime: accepted, red: rejected)", fontsize=10)
    t = d.tissue
    rule = (f"H {t.h_min}-{t.h_max}, S {t.s_min}-{t.s_max}, V {t.v_min}-{t.v_max} (OpenCV units); "
            f"keep if tissue fraction >= {t.min_tissue_fraction:g}")
    for sub, tiles, name, color in ((acc_fig, acc, "accepted", "green"), (rej_fig, rej, "rejected", "red")):
        axes = sub.subplots(1, ncol)
        for j, a in enumerate(np.atleast_1d(axes)):
            a.set_xticks([]); a.set_yticks([])
            if j < len(tiles):
                a.imshow(tiles[j][0])
                a.set_title(f"{tiles[j][1]:.2f}", fontsize=9, color=color)
                for spine in a.spines.values():
                    spine.set_edgecolor(color); spine.set_linewidth(2)
            else:
                a.axis("off")
        sub.suptitle(f"{name} ({len(tiles)} shown; tissue fraction above each tile) - {rule}", fontsize=10, color=color)
    base = acc[0][0] if acc else (rej[0][0] if rej else None)
    axes = np.atleast_1d(hed_fig.subplots(1, ncol))
    for j, a in enumerate(axes):
        a.axis("off")
        if base is not None and j < len(HED_STRENGTHS):
            sigma = HED_STRENGTHS[j]
            a.imshow(hed_augment(base, sample_hed_params(np.random.default_rng(seed + 1), sigma)))
            a.set_title(f"sigma = {sigma:g}", fontsize=9)
    hed_fig.suptitle("HED stain augmentation (Tellez): one tile under increasing strength, same random direction",
                     fontsize=10)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return {"accepted": len(acc), "rejected": len(rej), "out": str(out)}
