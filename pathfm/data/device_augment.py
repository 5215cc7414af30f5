"""Multi-crop augmentation batched on the training device (``data.augment_on: device``).

The CPU workers read and filter tiles and draw every crop's parameters
(:func:`pathfm.data.crop_params.draw_crop_params`, the same draws as the CPU path); a batch arrives as
``tiles`` uint8 (B, T, T, 3) and ``crop_params`` float32 (B, n_crops, N_PARAM). :class:`DeviceAugment`
turns it into ``global_crops`` / ``local_crops`` with a few batched kernels per crop size (all n * B crops
of a size at once):

1. resized crop + flips: one weight matrix per axis and crop, ``out = Wy @ tile @ Wx^T`` (two batched
   matmuls for all crops of a size). The weights are PIL's antialiased bicubic (a = -0.5, support scaled
   by the downscale factor, sampling the box in tile coordinates, pixels outside the box included as PIL
   does); a flip reverses the rows of a weight matrix;
2. HED in optical-density space: the collapsed map ``ln I' = ln I @ M + b`` of :mod:`pathfm.data.hed`
   with one (M, b) per crop;
3. colour jitter (brightness, contrast, saturation, hue) in each crop's drawn order, on the crops whose
   op sits at that position (brightness: x * f; contrast: blend with the mean luma; saturation: blend with
   the luma image; hue: rotation in float HSV);
4. grayscale (ITU-R 601-2 luma, as PIL's "L"), Gaussian blur (PIL's: three extended box passes per axis,
   edges replicated, :mod:`pathfm.data.blur`; depthwise convolutions with one kernel per crop), solarize
   (values >= 128/255 in 8-bit units inverted), normalisation (x - mean) / std.

Everything runs in float32 without the intermediate 8-bit rounding of the PIL path; the parity tests
(tests/test_data_device_augment.py) state and check the differences per op. No random numbers are drawn
here, so a run with ``augment_on: device`` resumes exactly like one with ``cpu``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from pathfm.data.blur import PASSES
from pathfm.data.crop_params import COLUMN, N_PARAM
from pathfm.data.hed import HED_FROM_RGB, LAMBDA, RGB_FROM_HED
from pathfm.errors import PathfmError

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, PIL's RGB -> "L"
HED_EPS = 1e-6


def resolve_augment_on(setting: str, device: torch.device | str | None, cpu_only: bool = False) -> str:
    """``auto`` -> ``device`` when training on CUDA, else ``cpu``; ``cpu`` / ``device`` unchanged.
    ``device=None`` (a loader used outside training) resolves ``auto`` to ``cpu``; so does ``cpu_only``
    (a stain method the device path lacks, :data:`pathfm.data.stain_aug.CPU_ONLY_METHODS`)."""
    if setting not in ("auto", "cpu", "device"):
        raise PathfmError(f"data.augment_on={setting!r}: expected auto, cpu or device")
    if setting != "auto":
        return setting
    if cpu_only:
        return "cpu"
    return "device" if device is not None and torch.device(device).type == "cuda" else "cpu"


# ------------------------------------------------------------------------------------ resampling
def bicubic_weights(start: torch.Tensor, length: torch.Tensor, out_size: int, in_size: int) -> torch.Tensor:
    """(N, out_size, in_size) row-normalised weights resampling ``[start, start + length)`` of an axis of
    ``in_size`` pixels to ``out_size`` pixels with PIL's antialiased bicubic filter (PIL's
    ``precompute_coeffs``: centre = start + (i + 0.5) * scale, filter evaluated at (j + 0.5 - centre) / max(scale, 1)).

    The filter is evaluated only on the taps it can reach (|x| < 2, at most 4 max(in / out, 1) + 2 of
    them) and scattered into the dense matrix the matmuls use."""
    dev = start.device
    scale = (length.float() / out_size)[:, None, None]
    support = scale.clamp(min=1.0)
    i = torch.arange(out_size, device=dev, dtype=torch.float32)[None, :, None]
    centre = start.float()[:, None, None] + (i + 0.5) * scale
    taps = int(math.ceil(4.0 * max(in_size / out_size, 1.0))) + 2  # a box is never longer than the axis
    j = torch.floor(centre - 2.0 * support) + torch.arange(taps, device=dev, dtype=torch.float32)[None, None, :]
    x = ((j + 0.5 - centre) / support).abs_()
    a = -0.5  # PIL's bicubic: (a + 2)|x|^3 - (a + 3)|x|^2 + 1 on [0, 1), a(|x|^3 - 5|x|^2 + 8|x| - 4) on [1, 2)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    w = torch.where(x < 1.0, near, far.masked_fill_(x >= 2.0, 0.0))
    w.masked_fill_((j < 0) | (j >= in_size), 0.0)  # pixels outside the axis do not exist (PIL clips the window)
    w /= w.sum(-1, keepdim=True)
    dense = torch.zeros(start.shape[0], out_size, in_size, device=dev)
    return dense.scatter_add_(2, j.long().clamp_(0, in_size - 1), w)


def resized_crops(tiles: torch.Tensor, boxes: torch.Tensor, hflip: torch.Tensor, vflip: torch.Tensor,
                  size: int) -> torch.Tensor:
    """All crops of one size from ``tiles`` (B, T, T, 3) float in [0, 1] (channels last): ``boxes``
    (n * B, 4: left, top, w, h) crop-major (row c * B + i is crop c of image i), resized to ``size`` (PIL
    bicubic, antialiased), the crops indexed by ``hflip`` / ``vflip`` flipped; returns (n * B, 3, size,
    size) in [0, 1], crop-major.

    Two batched matmuls: the row pass stacks the n crops of an image (one (n * S, T) @ (T, 3T) product per
    image, the tile is never copied), the column pass is one (S, T) @ (T, 3S) product per crop."""
    b, t_h, t_w, _ = tiles.shape
    n = boxes.shape[0] // b
    wx = bicubic_weights(boxes[:, 0], boxes[:, 2], size, t_w)
    wy = bicubic_weights(boxes[:, 1], boxes[:, 3], size, t_h)
    wx[hflip] = wx[hflip].flip(1)  # a flip reverses the output order
    wy[vflip] = wy[vflip].flip(1)
    wy_per_image = wy.view(n, b, size, t_h).transpose(0, 1).reshape(b, n * size, t_h)
    rows = torch.bmm(wy_per_image, tiles.reshape(b, t_h, t_w * 3))  # (B, n * S, T * 3): [i, (c, y), (x, ch)]
    rows = rows.view(b, n, size, t_w, 3).permute(1, 0, 3, 2, 4).reshape(n * b, t_w, size * 3)  # [(c, i), x, (y, ch)]
    out = torch.bmm(wx, rows).view(n * b, size, size, 3)  # [(c, i), x', y, ch]
    return out.permute(0, 3, 2, 1).clamp(0.0, 1.0)  # (n * B, 3, y, x'), a fresh contiguous tensor


# ------------------------------------------------------------------------------------ photometric
def hed_jitter(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """HED stain jitter (:mod:`pathfm.data.hed`) of ``x`` (N, 3, H, W) in [0, 1], per crop alpha, beta (N, 3)."""
    from_rgb = torch.as_tensor(HED_FROM_RGB, dtype=torch.float64, device=x.device)
    to_rgb = torch.as_tensor(RGB_FROM_HED, dtype=torch.float64, device=x.device)
    m = (from_rgb[None] * alpha.double()[:, None, :]) @ to_rgb  # HED_FROM_RGB @ diag(alpha) @ RGB_FROM_HED
    b = -LAMBDA * (beta.double() @ to_rgb)
    log_i = x.clamp(min=HED_EPS).log()
    out = torch.einsum("nchw,ncd->ndhw", log_i, m.float()) + b.float()[:, :, None, None]
    return out.exp_().clamp_(max=1.0)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) luma of RGB ``x`` (N, 3, H, W)."""
    r, g, b = x.unbind(1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.to(x.dtype)[:, None, None, None]
    return (other + f * (x - other)).clamp_(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * factor.to(x.dtype)[:, None, None, None]).clamp_(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, luma(x).mean((-1, -2), keepdim=True), factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(x, luma(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    d = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6.0) % 1.0)
    return torch.stack([h, s, maxc], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: channel n in (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1),
    k = (m + 6 h) mod 6 with m = 5, 3, 1."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    m = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype)[None, :, None, None]
    k = (m + 6.0 * h) % 6.0
    return v - v * s * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of ``x`` by ``shift`` turns per crop."""
    hsv = rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + shift.to(x.dtype)[:, None, None]) % 1.0
    return hsv_to_rgb(hsv)


JITTER_FUNCTIONS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)  # op ids 0-3


def grayscale(x: torch.Tensor) -> torch.Tensor:
    return luma(x).expand(-1, 3, -1, -1).contiguous()


def box_kernels(sigma: torch.Tensor, max_sigma: float = 2.0) -> torch.Tensor:
    """(N, 2 R + 1) float32: one extended box pass of PIL's GaussianBlur(radius=sigma) per crop
    (:mod:`pathfm.data.blur`, vectorised), zero-padded to the reach R of ``max_sigma`` >= every sigma."""
    s2 = sigma.double() ** 2 / PASSES
    low = torch.floor((torch.sqrt(12.0 * s2 + 1.0) - 1.0) / 2.0)
    r = low + (2 * low + 1) * (low * (low + 1) - 3 * s2) / (6 * (s2 - (low + 1) ** 2))
    reach = int(np.floor((np.sqrt(12.0 * max_sigma**2 / PASSES + 1.0) - 1.0) / 2.0)) + 1  # no device sync
    dist = torch.arange(-reach, reach + 1, device=sigma.device, dtype=torch.float64).abs()[None]
    inner, edge = 1.0 / (2 * r + 1), (r - low) / (2 * r + 1)
    k = torch.where(dist <= low[:, None], inner[:, None], torch.where(dist == low[:, None] + 1, edge[:, None], 0.0))
    return k.float()


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float = 2.0) -> torch.Tensor:
    """PIL's GaussianBlur(radius=sigma) per crop of ``x`` (N, 3, H, W): three box passes along x, then three
    along y, edges replicated before each pass (as PIL), as depthwise convolutions, in float."""
    n, c, h, w = x.shape
    k = box_kernels(sigma, max_sigma).repeat_interleave(c, 0)  # (N * 3, 2R + 1), symmetric
    reach = k.shape[1] // 2
    y = x.reshape(1, n * c, h, w)
    # full fp32 on a GPU too: cuDNN's default TF32 convolutions (10-bit mantissa) would move the blur away from
    # the CPU path (and PIL) that tests/test_data_device_augment.py holds it to
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        for weight, pad in ((k[:, None, None, :], (reach, reach, 0, 0)), (k[:, None, :, None], (0, 0, reach, reach))):
            for _ in range(PASSES):
                y = torch.nn.functional.conv2d(torch.nn.functional.pad(y, pad, mode="replicate"), weight, groups=n * c)
    return y.view(n, c, h, w)


def solarize(x: torch.Tensor) -> torch.Tensor:
    """Invert values >= 128 in 8-bit units (values that round to 128 or more: x >= 127.5 / 255)."""
    return torch.where(x >= 127.5 / 255.0, 1.0 - x, x)


def augment_crops(tiles: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    """Every step of one crop size: ``tiles`` (B, T, T, 3) float in [0, 1] on the device, ``params``
    (n * B, N_PARAM) on the host, crop-major (row c * B + i: crop c of image i) -> (n * B, 3, size, size) in
    [0, 1] (before normalisation), crop-major.

    Which crops get which op is decided on the host and sent as index tensors, so nothing here waits for
    the device (no ``nonzero`` on device tensors)."""
    dev = tiles.device
    params = params.cpu()
    col = COLUMN

    def rows(mask: torch.Tensor) -> torch.Tensor:
        idx = torch.nonzero(mask).squeeze(1)
        return idx.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else idx

    values = params.to(dev, non_blocking=True)
    x = resized_crops(tiles, values[:, col["left"]:col["height"] + 1], rows(params[:, col["hflip"]] > 0.5),
                      rows(params[:, col["vflip"]] > 0.5), size)
    if (params[:, col["hed_on"]] > 0.5).any():
        idx = rows(params[:, col["hed_on"]] > 0.5)
        x[idx] = hed_jitter(x[idx], values[idx, col["hed_alpha_h"]:col["hed_alpha_d"] + 1],
                            values[idx, col["hed_beta_h"]:col["hed_beta_d"] + 1])
    jitter_on = params[:, col["jitter_on"]] > 0.5
    order = params[:, col["order_0"]:col["order_3"] + 1].round().long()
    for position in range(4):
        for op, fn in enumerate(JITTER_FUNCTIONS):
            chosen = jitter_on & (order[:, position] == op)
            if chosen.any():
                idx = rows(chosen)
                x[idx] = fn(x[idx], values[idx, col["brightness"] + op])
    for name, fn in (("grayscale", grayscale), ("blur_sigma", None), ("solarize", solarize)):
        chosen = params[:, col[name]] > (0 if name == "blur_sigma" else 0.5)
        if chosen.any():
            idx = rows(chosen)
            if fn is None:
                sigma = values[idx, col["blur_sigma"]]
                x[idx] = gaussian_blur(x[idx], sigma, float(params[:, col["blur_sigma"]].max()))
            else:
                x[idx] = fn(x[idx])
    return x


class DeviceAugment:
    """``DeviceAugment(data_cfg, device)(batch)``: a worker batch of tiles + crop parameters -> the same
    batch with ``global_crops`` / ``local_crops`` (crop-major, normalised float32) on ``device``."""

    def __init__(self, data_cfg, device: torch.device | str):
        c = data_cfg.crops
        self.device = torch.device(device)
        self.groups = (("global", c.global_size, 0, 2), ("local", c.local_size, 2, 2 + c.n_local))
        self.mean, self.std = float(data_cfg.normalize_mean), float(data_cfg.normalize_std)

    def __call__(self, batch: dict) -> dict:
        tiles_u8 = batch["tiles"]
        params = batch["crop_params"]
        b = tiles_u8.shape[0]
        if tiles_u8.ndim != 4 or tiles_u8.shape[3] != 3 or tiles_u8.dtype != torch.uint8:
            raise PathfmError(f"device augmentation: tiles are {tiles_u8.dtype} {tuple(tiles_u8.shape)}, expected "
                              "uint8 (B, T, T, 3); the batch was not made by an augment_on=device loader")
        if params.ndim != 3 or params.shape[0] != b or params.shape[2] != N_PARAM:
            raise PathfmError(f"device augmentation: crop_params has shape {tuple(params.shape)}, expected "
                              f"({b}, n_crops, {N_PARAM}); the batch was not made by an augment_on=device loader")
        tiles_u8 = tiles_u8.to(self.device, non_blocking=True)  # params stay on the host (augment_crops)
        out = {k: v for k, v in batch.items() if k not in ("tiles", "crop_params")}
        for name, size, first, last in self.groups:
            try:
                out[f"{name}_crops"] = self.crop_group(tiles_u8, params[:, first:last], size)
            except (torch.OutOfMemoryError, RuntimeError) as e:
                raise PathfmError(
                    f"device augmentation of the {name} crops ({last - first} x {b} crops of {size} px from "
                    f"{tuple(tiles_u8.shape[1:3])} px tiles, batch {b}) failed on {self.device}: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}; lower data.batch_size or set "
                    "data.augment_on=cpu to augment in the CPU workers"
                ) from e
        return out

    def crop_group(self, tiles_u8: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
        """(n * B, 3, size, size) crop-major: row c * B + i is crop c of image i."""
        b, n = params.shape[:2]
        if n == 0:
            return torch.zeros(0, 3, size, size, device=self.device)
        tiles = tiles_u8.float().div_(255.0)
        x = augment_crops(tiles, params.transpose(0, 1).reshape(n * b, N_PARAM), size)  # all n * B crops at once
        return x.sub_(self.mean).div_(self.std)
