"""Intensity normalisation and resampling: from physical units to network input.

Scanners measure different things, so each modality has its own first step:

* CT is calibrated in Hounsfield units (HU): clip to a *window* and scale to [0, 1]
  (:func:`ct_window`).
* MRI intensities are arbitrary scanner units: standardise each volume on its own,
  using only voxels inside the body (:func:`zscore`).
* PET measures activity in Bq/mL: divide by the injected dose per gram of patient to
  get the standardised uptake value (:func:`suv`).

Spacing differs between scanners too: :func:`resample` puts a volume on a new voxel
grid with torch, on the volume's device. :func:`crop_around` cuts the region of
interest around each lesion, the input most radiomics CNNs read.

Every function takes a torch tensor or a NumPy array and returns the same kind.
Taught in ``notebooks/00_welcome.ipynb`` ("From scanner units to network input").
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .io import Volume, check_spacing

__all__ = ["ct_window", "zscore", "suv", "resample", "crop_around"]


# --------------------------------------------------------------------------- checks
def _as_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """``x`` as a floating tensor (no copy for float tensors) and whether it came as NumPy."""
    is_numpy = isinstance(x, np.ndarray)
    if not (is_numpy or isinstance(x, torch.Tensor)):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if is_numpy and x.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected real numbers (float or int), got dtype {x.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(x)) if is_numpy else x
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected real numbers (float or int), got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.float()                     # int16 HU, uint8 images -> float32
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(t.shape)}")
    if not _all_finite(t):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return t, is_numpy


def _all_finite(t: torch.Tensor) -> bool:
    # A NaN or inf makes the sum non-finite, so a finite sum proves all values finite
    # (one fast reduction); only a non-finite sum (maybe overflow) needs the voxel-wise test.
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _back(t: torch.Tensor, is_numpy: bool):
    return t.cpu().numpy() if is_numpy else t


def _finite_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return float(value)


# --------------------------------------------------------------------------- CT
def ct_window(x, lo: float = -100.0, hi: float = 250.0):
    """Clip Hounsfield units to the window [`lo`, `hi`] and scale it to [0, 1].

    The default -100..250 HU is a soft-tissue window: fat, muscle, organs and
    contrast-enhanced lesions spread over the whole [0, 1] range, while air (-1000)
    and bone (+1000) saturate at 0 and 1. Taught in ``00_welcome``.
    """
    t, is_numpy = _as_tensor(x, "x")
    lo, hi = _finite_number(lo, "lo"), _finite_number(hi, "hi")
    if not lo < hi:
        raise ValueError(f"lo, hi: expected lo < hi, got lo={lo}, hi={hi}")
    return _back(t.clamp(lo, hi).sub_(lo).div_(hi - lo), is_numpy)     # in place on clamp's copy


# --------------------------------------------------------------------------- MRI
def zscore(x, mask=None):
    """Standardise each volume to mean 0, std 1 over the voxels inside `mask`.

    `x` is one volume, (D,H,W) or (C,D,H,W), or a batch (N,C,D,H,W) whose samples
    are standardised separately (MRI units differ from scan to scan). `mask` (bool,
    same shape) picks the voxels the statistics come from, e.g. the body: air would
    otherwise dominate. Voxels outside the mask become 0; a constant volume becomes 0.
    Taught in ``00_welcome``.
    """
    t, is_numpy = _as_tensor(x, "x")
    if mask is None:
        m = torch.ones_like(t, dtype=torch.bool)
    else:
        m = _as_mask(mask, t)
    batch = t.shape[0] if t.ndim == 5 else 1
    v, mv = t.reshape(batch, -1), m.reshape(batch, -1).to(t.dtype)   # (N, voxels)
    count = mv.sum(1, keepdim=True)
    if (count == 0).any():
        empty = int((count[:, 0] == 0).nonzero()[0])
        raise ValueError(f"mask: expected at least one True voxel per volume, volume {empty} has none")
    mean = (v * mv).sum(1, keepdim=True) / count
    centred = (v - mean).mul_(mv)                              # 0 outside the mask
    drift = centred.sum(1, keepdim=True) / count              # float32 rounding left in `mean`
    std = (centred.square().sum(1, keepdim=True) / count - drift ** 2).clamp_min(0).sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))     # constant volume: avoid 0/0
    out = centred.sub_(drift * mv).div_(std)
    return _back(out.reshape(t.shape), is_numpy)


def _as_mask(mask: Any, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(mask, (np.ndarray, torch.Tensor)):
        raise TypeError(f"mask: expected a bool torch.Tensor or numpy.ndarray, got {type(mask).__name__}")
    m = torch.from_numpy(np.asarray(mask)) if isinstance(mask, np.ndarray) else mask
    if m.dtype != torch.bool:
        raise TypeError(f"mask: expected dtype bool, got {m.dtype}")
    if tuple(m.shape) != tuple(t.shape):
        raise ValueError(f"mask: expected the shape of x {tuple(t.shape)}, got {tuple(m.shape)}")
    return m.to(t.device)


# --------------------------------------------------------------------------- PET
def suv(x, *, weight_kg, injected_dose_bq):
    """Standardised uptake value: ``SUV = activity [Bq/mL] * weight [g] / dose [Bq]``.

    An SUV of 1 everywhere would mean the tracer spread evenly through the body
    (1 g of tissue ~ 1 mL). `weight_kg` and `injected_dose_bq` are numbers, or one
    per sample (shape (N,)) for a batch (N, ...). The dose must already be
    decay-corrected to the scan time (as scanners report it). Taught in ``00_welcome``.
    """
    t, is_numpy = _as_tensor(x, "x")
    weight = _per_sample(weight_kg, "weight_kg", t)
    dose = _per_sample(injected_dose_bq, "injected_dose_bq", t)
    return _back(t * (weight * 1000.0 / dose), is_numpy)            # g per Bq, then one multiply


def _per_sample(value: Any, name: str, t: torch.Tensor) -> torch.Tensor:
    """A positive scalar, or one value per sample reshaped to broadcast as (N, 1, 1, ...)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        v = torch.as_tensor(value, device=t.device).to(t.dtype)
        if v.ndim > 0:
            if v.ndim != 1 or v.shape[0] != t.shape[0]:
                raise ValueError(f"{name}: expected a number or shape ({t.shape[0]},) for x of shape "
                                 f"{tuple(t.shape)}, got shape {tuple(v.shape)}")
            v = v.reshape(-1, *([1] * (t.ndim - 1)))               # (N, 1, ..., 1)
    else:
        v = torch.tensor(_finite_number(value, name), dtype=t.dtype, device=t.device)
    if not (torch.isfinite(v).all() and (v > 0).all()):
        raise ValueError(f"{name}: expected positive finite values, got {value}")
    return v


# --------------------------------------------------------------------------- resampling
def resample(volume, spacing: Sequence[float], order: int = 1, *, from_spacing=None):
    """Put a volume on a voxel grid of `spacing` (z, y, x) mm, keeping its physical extent.

    The field of view ``shape * spacing`` is kept: the new shape is
    ``round(shape * old / new)`` and the returned spacing is adjusted so that the
    grid tiles the same extent exactly (it equals `spacing` whenever that divides
    it). `order` 1 is trilinear, 0 nearest neighbour (for masks and labels). Values
    beyond the outermost voxel centres repeat the edge voxel. Runs in torch on the
    volume's device.

    `volume` is a :class:`radlab.io.Volume` (returns a Volume with the affine
    updated), or a tensor (D,H,W), (C,D,H,W) or (N,C,D,H,W) with `from_spacing`
    (returns a tensor). Taught in ``00_welcome``.
    """
    if isinstance(volume, Volume):
        if from_spacing is not None:
            raise ValueError("from_spacing: a Volume carries its own spacing; pass from_spacing only with a tensor")
        data, new_spacing = _resample_array(volume.data, check_spacing(spacing, "spacing"),
                                            volume.spacing, order)
        return Volume(data, new_spacing, _resampled_affine(volume, new_spacing))
    if from_spacing is None:
        raise ValueError("from_spacing: required when volume is a tensor (or pass a radlab.io.Volume)")
    data, _ = _resample_array(volume, check_spacing(spacing, "spacing"),
                              check_spacing(from_spacing, "from_spacing"), order)
    return data


def _resample_array(volume, spacing, from_spacing, order):
    if order not in (0, 1) or isinstance(order, bool):
        raise ValueError(f"order: expected 0 (nearest) or 1 (trilinear), got {order!r}")
    is_numpy = isinstance(volume, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(volume)) if is_numpy else volume
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"volume: expected a Volume, torch.Tensor or numpy.ndarray, got {type(volume).__name__}")
    if t.ndim not in (3, 4, 5) or t.numel() == 0:
        raise ValueError(f"volume: expected shape (D,H,W), (C,D,H,W) or (N,C,D,H,W), got {tuple(t.shape)}")
    if t.is_floating_point() and not _all_finite(t):
        raise ValueError("volume: expected finite values, got NaN or inf")
    if order == 1 and not t.is_floating_point():
        raise TypeError(f"volume: order=1 interpolates and needs a float dtype, got {t.dtype}; "
                        "use order=0 for masks and labels")
    old = t.shape[-3:]
    shape = [max(1, round(n * a / b)) for n, a, b in zip(old, from_spacing, spacing)]
    x = t.reshape(-1, 1, *old)                                           # (N*C, 1, D, H, W)
    x = x if x.is_floating_point() else x.float()     # nearest on ints/bools: exact below 2**24
    if order == 1:
        y = F.interpolate(x, size=shape, mode="trilinear", align_corners=False)
    else:
        y = F.interpolate(x, size=shape, mode="nearest-exact")
    y = y.to(t.dtype).reshape(*t.shape[:-3], *shape)                     # back to (..., D', H', W')
    new_spacing = tuple(n * s / m for n, s, m in zip(old, from_spacing, shape))
    return (y.cpu().numpy() if is_numpy else y), new_spacing


def _resampled_affine(volume: Volume, new_spacing) -> np.ndarray:
    """Affine of the new grid: new voxel k sits at old voxel (k + 0.5) * r - 0.5, r = new/old."""
    r = np.array([n / o for n, o in zip(new_spacing, volume.spacing)])[::-1]   # (x, y, z) like the affine
    scale = np.eye(4)
    scale[:3, :3] = np.diag(r)
    scale[:3, 3] = (r - 1) / 2
    return volume.affine @ scale


def crop_around(x: torch.Tensor, mask: torch.Tensor, edge: int, *, with_mask: bool = False) -> torch.Tensor:
    """An ``edge``-voxel cube of ``x`` centred on each sample's mask (its centre of mass).

    ``x`` is ``(N, C, D, H, W)`` and ``mask`` ``(N, 1, D, H, W)``; returns ``(N, C, e, e, e)``,
    or ``(N, C + 1, e, e, e)`` with the cropped mask as the last channel when ``with_mask``.
    A cube that would cross the border is shifted inside the volume, so every crop is
    whole. The classical pipeline reads the lesion through its mask; a CNN given this
    crop sees the same region of interest at a fraction of the voxels.
    Taught in ``notebooks/01_end_to_end_vs_classical.ipynb``.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(mask, torch.Tensor):
        raise TypeError(f"x, mask: expected torch tensors, got {type(x).__name__} and {type(mask).__name__}")
    if x.ndim != 5 or mask.shape != (x.shape[0], 1, *x.shape[2:]):
        raise ValueError(f"mask: expected shape {(x.shape[0], 1, *x.shape[2:])} for x of shape "
                         f"{tuple(x.shape)} (N, C, D, H, W), got {tuple(mask.shape)}")
    if isinstance(edge, bool) or not isinstance(edge, int) or not 2 <= edge <= min(x.shape[2:]):
        raise ValueError(f"edge: expected an int in [2, {min(x.shape[2:])}], got {edge!r}")
    m = mask[:, 0].to(torch.float32)                                          # (N, D, H, W)
    if with_mask:
        x = torch.cat([x, mask.to(x.dtype)], 1)                               # (N, C + 1, D, H, W)
    voxels = m.sum((1, 2, 3))
    if (voxels == 0).any():
        raise ValueError(f"mask: sample {int((voxels == 0).nonzero()[0])} is empty; there is nothing to centre on")
    grid = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float32, device=m.device)
                                        for n in x.shape[2:]], indexing="ij"))   # (3, D, H, W)
    centre = (m[:, None] * grid).sum((2, 3, 4)) / voxels[:, None]              # (N, 3) in voxels
    upper = torch.tensor(x.shape[2:], device=m.device) - edge
    start = (centre.round().long() - edge // 2).clamp(min=0).minimum(upper)   # (N, 3) corner inside
    return torch.stack([xi[:, z:z + edge, y:y + edge, w:w + edge] for xi, (z, y, w) in zip(x, start.tolist())])
