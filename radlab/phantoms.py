"""Synthetic patients whose generating process is known: CT, MRI and PET phantoms.

Every patient is a miniature torso (a 32 mm field of view frames it; think of the
millimetres as "toy millimetres") with an elliptic body, a fat layer, liver,
spleen, aorta, spine with discs, lung bases, and one liver lesion. Because we
draw the lesion's properties ourselves, lessons can measure against the truth:
the true class probability ``p_true``, the true log-hazard ``risk``, the exact
lesion mask and the scanner (site) of every patient.

**Lesion properties** (``ph.lesion``), drawn independently per patient:

====================  ==========================================  =======================
property              distribution                                standardised score
====================  ==========================================  =======================
``radius_mm``         log-uniform on [2.5, 5.5] mm                 ``z_size``
``contrast``          uniform, relative to the liver (CT HU       ``z_contrast``
                      [-70, 30]; MRI a.u. [-250, 150]; PET SUV
                      [0.8, 6] above liver)
``spiculation``       uniform on [0, 0.6]: 6 spikes on the margin ``z_spic``
``necrosis``          uniform on [-1, 1]: the internal pattern    ``S = sqrt(3)*necrosis``
``lobulation``        uniform on [0, 0.25]: smooth deformation    nuisance (no effect)
``heterogeneity``     uniform: internal texture amplitude         nuisance (no effect)
====================  ==========================================  =======================

Each ``z`` is the property minus its mean divided by its standard deviation under
the distribution above, so each has mean 0 and variance 1.

**The internal pattern only a CNN sees.** With ``rho`` the lesion's normalised
radius (0 at the centre, 1 on the margin, following spikes and lobes) and
``u = min(rho / 0.75, 1)**3`` (uniform on [0, 1] over the inner 0.75 of the radius),
the lesion's intensity is::

    lesion = liver + contrast + heterogeneity * texture - amplitude * necrosis * sin(2 pi u)

with ``amplitude`` 60 HU (CT) or 220 a.u. (MRI); for PET the last term is relative,
``0.6 * necrosis * sin(2 pi u)`` times the lesion mean. ``texture`` is a smooth random
field of unit variance (2-4 mm wavelengths); ``heterogeneity`` scales it up to 8 HU,
35 a.u. or 15 % (PET). ``necrosis > 0`` gives a dark (necrotic) core inside a bright
ring, ``necrosis < 0`` a bright core inside a dark ring, and the outer rim
(rho > 0.75) stays at the lesion mean. ``sin(2 pi U)`` is symmetric about 0 and the
two signs are mirror images (``x - mean -> -(x - mean)``), so the histogram's mean,
std, kurtosis and percentile spread, the mask (volume, sphericity) and gradient
magnitudes do not depend on the sign: first-order, shape and sign-symmetric texture
features cannot see it, while a CNN sees a centre-surround contrast. Two choices keep
it that way: the rim at the lesion mean makes blurring at the margin the same for
both signs, and the pattern is added after the scanner's blur and partial volume
(sampled at voxel centres), because blur flattens the thin ring more than the thick
core and would turn the sign into skewness (a deliberate simplification; with it
the correlation of skewness with necrosis is about 0, checked in the tests).

**Classification** (``task="classification"``)::

    H      = (z_size + 0.8 z_contrast + 0.5 z_spic) / sqrt(1.89)       # var 1: features see it
    S      = sqrt(3) * necrosis                                          # var 1: the pattern
    logit  = 2.7 * (sqrt(1 - pattern_share) * H + sqrt(pattern_share) * S)
             + 3.0 * confounding * b_site
    p_true = sigmoid(logit);  label ~ Bernoulli(p_true)

``pattern_share`` is the pattern's share of the variance of the lesion logit.
``b_site`` is spread evenly over [-1, 1] across sites (0 with one site), so at
``confounding=1`` with two sites the prevalence is about 0.18 at one site and 0.81
at the other (0.33 / 0.68 at 0.5); at 0 the site and the label are independent.
Since the scanner is visible in the image, ``p_true`` (which includes the site term)
is still P(label = 1 | image). The Bayes AUC of ``p_true`` is 0.9-0.95 for any
``pattern_share``. ``ph.lesion["logit"]`` and ``["logit_site"]`` hold the two parts.

**Survival** (``task="survival"``; times in months)::

    stage  = 1 + number of thresholds (-0.8, 0.2, 1.0) below 0.8 z_size + 0.6 N(0, 1)
    risk   = 0.9 (sqrt(1 - pattern_share) H + sqrt(pattern_share) S)
             + 0.025 (age - 63) + 0.3 (stage - 2.5)                        # true log-hazard
    T      = 30 * (E / exp(risk)) ** (1 / 1.3),  E ~ Exp(1)                 # Weibull, shape 1.3
    C      ~ Exp(rate), independent of T;  time = min(T, C), event = T <= C

``rate`` is calibrated once (Monte Carlo on 20,000 reference patients with a fixed
seed) so that P(C < T) equals ``censoring``; it does not depend on ``n``.

**Modalities.** Tissue values live in :data:`TISSUES`. CT is in Hounsfield units
with compound Poisson-Gaussian noise: a quantum part (12 HU at water) whose variance
grows as fewer photons pass denser tissue and falls with slice thickness, plus
electronic Gaussian noise (4 HU); photon counts per voxel are far above 20, so the
quantum part is drawn in its normal limit. MRI is in arbitrary units, times a smooth multiplicative bias
field, with Rician noise (the magnitude of complex Gaussian noise). PET is activity
in Bq/mL = SUV * injected_dose_bq / (weight_kg * 1000) (decay ignored: the dose is
taken as already decay-corrected to scan time), blurred by the scanner's point
spread function, with Poisson counting noise; ``rl.preprocess.suv`` recovers SUV
(about 1 in soft tissue, 2.2 in liver, 3-9 in lesions).

**Sites** (scanners) each apply an intensity scale and shift, a noise level and a
resolution (Gaussian point spread, in mm); site 0 is the reference scanner and the
others are drawn once from a fixed seed, so site 2 is the same scanner in every data set.

**Spacing.** Anatomy is defined in millimetres, centred on the field of view; the
default spacing is 32 mm / size (1 mm at size 32), so every size frames the same
torso. Each voxel is the average over sub-samples along any axis much coarser than
the finest one (partial volume), so thick slices look thick, and the same seed gives
the same patient (anatomy, lesion, labels) at any spacing, size or modality. Noise
is set for the in-plane voxel size (the protocol's dose): thicker slices are quieter.
``center="lesion"`` centres the field of view on each lesion instead (default 16 mm,
the usual radiomics crop): a small CNN learns from it with far fewer patients than
from the whole torso, where it must first find a lesion that fills 1-2 % of the volume.

Taught in ``notebooks/00_welcome.ipynb`` and used by every later notebook.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .io import check_spacing

__all__ = ["make_phantoms", "PhantomSet", "PhantomDataset", "TISSUES", "MODALITIES", "TASKS", "CENTERS"]

MODALITIES = ("ct", "mri", "pet")
TASKS = ("classification", "segmentation", "survival")
FOV_MM = 32.0            # the default field of view: 32 voxels of 1 mm frame the torso
LESION_FOV_MM = 16.0     # center="lesion": the default field of view around the lesion
CENTERS = ("body", "lesion")

# Tissue values per modality: CT in HU, MRI in arbitrary units, PET in SUV (turned into Bq/mL).
TISSUES = {
    "ct":  dict(air=-1000.0, lung=-850.0, fat=-100.0, soft=40.0, liver=60.0, spleen=50.0,
                blood=40.0, bone=700.0, disc=80.0),
    "mri": dict(air=0.0, lung=40.0, fat=900.0, soft=350.0, liver=500.0, spleen=420.0,
                blood=80.0, bone=300.0, disc=450.0),
    "pet": dict(air=0.0, lung=0.35, fat=0.3, soft=0.8, liver=2.2, spleen=1.9,
                blood=1.7, bone=1.3, disc=0.6),
}
# Lesion contrast relative to the liver (uniform range), pattern amplitude, heterogeneity.
_LESION = {
    "ct":  dict(contrast=(-50.0, 50.0), pattern=60.0, hetero=8.0, texture=5.0),
    "mri": dict(contrast=(-200.0, 200.0), pattern=220.0, hetero=35.0, texture=20.0),
    "pet": dict(contrast=(0.8, 6.0), pattern=0.6, hetero=0.15, texture=0.08),   # PET: relative
}
_RADIUS_MM = (2.5, 5.5)
_SPICULATION = (0.0, 0.6)
_N_SPIKES = 6
_CORE = 0.75            # the internal pattern lives inside rho < 0.75
_LOGIT_SCALE = 2.7
_SITE_LOGIT = 3.0
_H_WEIGHTS = (1.0, 0.8, 0.5)          # size, contrast, spiculation
_CHUNK_VOXELS = 2 ** 19               # fine voxels rendered at once (fits CPU caches)


# ----------------------------------------------------------------------------- validation
def _check_args(n, size, modality, task, sites, confounding, spacing, seed, device,
                pattern_share, censoring, lesion_fraction, center="body"):
    """Validate make_phantoms' arguments; returns (shape (D,H,W), spacing (z,y,x), device)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n: expected an int >= 1, got {n!r}")
    shape = _check_size(size)
    if modality not in MODALITIES:
        raise ValueError(f"modality: expected one of {MODALITIES}, got {modality!r}")
    if task not in TASKS:
        raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
    if isinstance(sites, bool) or not isinstance(sites, (int, np.integer)) or sites < 1:
        raise ValueError(f"sites: expected an int >= 1, got {sites!r}")
    for name, value, lo, hi, hi_open in [("confounding", confounding, 0, 1, False),
                                         ("pattern_share", pattern_share, 0, 1, False),
                                         ("censoring", censoring, 0, 1, True)]:
        _check_fraction(name, value, lo, hi, hi_open)
    if lesion_fraction is not None:
        _check_fraction("lesion_fraction", lesion_fraction, 0, 0.5, False)
        if lesion_fraction <= 0:
            raise ValueError(f"lesion_fraction: expected a float in (0, 0.5], got {lesion_fraction!r}")
    if center not in CENTERS:
        raise ValueError(f"center: expected one of {CENTERS}, got {center!r}")
    if spacing is None:
        fov = FOV_MM if center == "body" else LESION_FOV_MM
        spacing = (fov / shape[0], fov / shape[1], fov / shape[2])
    spacing = check_spacing(spacing, "spacing")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: CUDA is not available here, got {str(device)!r}")
    return shape, spacing, device


def _check_size(size) -> tuple[int, int, int]:
    sizes = (size, size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    ok = (isinstance(sizes, (tuple, list)) and len(sizes) == 3
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in sizes))
    if not ok:
        raise ValueError(f"size: expected an int >= 8 or three ints (D, H, W), got {size!r}")
    if isinstance(size, (int, np.integer)) and size < 8:
        raise ValueError(f"size: expected an int >= 8, got {size!r}")
    if any(s < 1 for s in sizes) or max(sizes) < 8:
        raise ValueError(f"size: expected positive sizes with an in-plane size >= 8, got {size!r}")
    return tuple(int(s) for s in sizes)


def _check_fraction(name, value, lo, hi, hi_open):
    interval = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a float in {interval}, got {type(value).__name__}")
    if not (math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)):
        raise ValueError(f"{name}: expected a float in {interval}, got {value!r}")


# ----------------------------------------------------------------------------- patients
def _uniform(gen, n, lo, hi, k=None):
    shape = (n,) if k is None else (n, k)
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _zscore_uniform(v, lo, hi):
    """Standardise a value drawn uniformly on [lo, hi]: mean 0, variance 1."""
    return (v - (lo + hi) / 2) / ((hi - lo) / math.sqrt(12))


def _draw_patients(n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Every per-patient random quantity, on the CPU in float64, in a fixed order.

    Nothing here depends on the grid, the modality or the task, so the same seed is
    the same patient at any size, spacing or modality.
    """
    p = {}
    p["body_scale"] = _uniform(gen, n, 0.92, 1.04)
    p["body_y"] = _uniform(gen, n, -0.8, 0.8)
    p["organ_shift"] = _uniform(gen, n, -0.8, 0.8, 3)           # (n, 3) z, y, x mm
    p["organ_scale"] = _uniform(gen, n, 0.9, 1.1)
    p["liver_offset"] = _uniform(gen, n, -1.0, 1.0)             # in units of texture amplitude
    p["vertebra_phase"] = _uniform(gen, n, 0.0, 7.0)
    p["texture_freq"] = _uniform(gen, n, 2 * math.pi / 9, 2 * math.pi / 4, 9)   # (n, 3 terms * 3 axes)
    p["texture_phase"] = _uniform(gen, n, 0, 2 * math.pi, 9)
    p["lesion_freq"] = _uniform(gen, n, 2 * math.pi / 4, 2 * math.pi / 2, 9)
    p["lesion_phase"] = _uniform(gen, n, 0, 2 * math.pi, 9)
    p["center"] = torch.stack([_uniform(gen, n, -1.5, 1.5), _uniform(gen, n, -1.0, 1.0),
                               _uniform(gen, n, -1.5, 1.5)], 1)  # (n, 3) relative to the liver
    p["radius_mm"] = torch.exp(_uniform(gen, n, *map(math.log, _RADIUS_MM)))
    p["contrast_u"] = _uniform(gen, n, 0.0, 1.0)                 # mapped to each modality's range
    p["spiculation"] = _uniform(gen, n, *_SPICULATION)
    p["necrosis"] = _uniform(gen, n, -1.0, 1.0)
    p["lobulation"] = _uniform(gen, n, 0.0, 0.25)
    p["heterogeneity"] = _uniform(gen, n, 0.0, 1.0)
    spikes = torch.randn(n, _N_SPIKES, 3, generator=gen, dtype=torch.float64)
    p["spikes"] = spikes / spikes.norm(dim=2, keepdim=True)       # (n, K, 3) unit vectors
    q = torch.randn(n, 3, 3, generator=gen, dtype=torch.float64)
    q = (q + q.transpose(1, 2)) / 2                               # symmetric
    q = q - torch.eye(3, dtype=torch.float64) * q.diagonal(0, 1, 2).mean(1)[:, None, None]   # traceless
    p["lobes"] = q / torch.linalg.eigvalsh(q).abs().amax(1)[:, None, None]   # traceless, |dir'Q dir| <= 1
    p["site_u"] = torch.rand(n, generator=gen, dtype=torch.float64)
    p["label_u"] = torch.rand(n, generator=gen, dtype=torch.float64)
    p["age"] = (63 + 10 * torch.randn(n, generator=gen, dtype=torch.float64)).clamp(30, 90)
    p["stage_noise"] = torch.randn(n, generator=gen, dtype=torch.float64)
    p["event_e"] = -torch.log1p(-torch.rand(n, generator=gen, dtype=torch.float64))      # Exp(1)
    p["censor_e"] = -torch.log1p(-torch.rand(n, generator=gen, dtype=torch.float64))     # Exp(1)
    p["weight_kg"] = _uniform(gen, n, 50.0, 100.0)
    p["dose_per_kg"] = _uniform(gen, n, 3.0e6, 4.0e6)            # Bq per kg (about 3.7 MBq/kg)
    p["bias"] = _uniform(gen, n, -1.0, 1.0, 5)                   # MRI bias field coefficients
    return p


def _scores(p: dict, pattern_share: float) -> dict[str, torch.Tensor]:
    """Standardised lesion scores and the two parts of the lesion signal (see module doc)."""
    z_size = _zscore_uniform(torch.log(p["radius_mm"]), *map(math.log, _RADIUS_MM))
    z_contrast = _zscore_uniform(p["contrast_u"], 0.0, 1.0)
    z_spic = _zscore_uniform(p["spiculation"], *_SPICULATION)
    w = _H_WEIGHTS
    handcrafted = (w[0] * z_size + w[1] * z_contrast + w[2] * z_spic) / math.sqrt(sum(x * x for x in w))
    pattern = math.sqrt(3.0) * p["necrosis"]
    signal = math.sqrt(1 - pattern_share) * handcrafted + math.sqrt(pattern_share) * pattern
    return dict(z_size=z_size, z_contrast=z_contrast, z_spic=z_spic,
                handcrafted=handcrafted, pattern=pattern, signal=signal)


def _site_offsets(sites: int) -> torch.Tensor:
    """b_site spread evenly over [-1, 1] (zero with one site)."""
    if sites == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.linspace(-1.0, 1.0, sites, dtype=torch.float64)


def _assign_sites(p, sites):
    return (p["site_u"] * sites).long().clamp(max=sites - 1)


def _survival(p: dict, s: dict, censoring: float, pattern_share: float):
    """True log-hazard, stage, event and censoring times (module doc, "Survival")."""
    stage = 1 + ((0.8 * s["z_size"] + 0.6 * p["stage_noise"])[:, None]
                 > torch.tensor([-0.8, 0.2, 1.0], dtype=torch.float64)).sum(1)
    risk = 0.9 * s["signal"] + 0.025 * (p["age"] - 63) + 0.3 * (stage - 2.5)
    t_event = 30.0 * (p["event_e"] / torch.exp(risk)) ** (1 / 1.3)
    rate = _censoring_rate(censoring, pattern_share)
    t_censor = p["censor_e"] / rate if rate > 0 else torch.full_like(t_event, math.inf)
    return risk, stage, torch.minimum(t_event, t_censor), t_event <= t_censor


@functools.lru_cache(maxsize=64)
def _censoring_rate(censoring: float, pattern_share: float) -> float:
    """Rate of exponential censoring with P(C < T) = censoring, on 20,000 reference patients."""
    if censoring == 0:
        return 0.0
    ref = _draw_patients(20_000, torch.Generator().manual_seed(20261123))
    s = _scores(ref, pattern_share)
    stage = 1 + ((0.8 * s["z_size"] + 0.6 * ref["stage_noise"])[:, None]
                 > torch.tensor([-0.8, 0.2, 1.0], dtype=torch.float64)).sum(1)
    risk = 0.9 * s["signal"] + 0.025 * (ref["age"] - 63) + 0.3 * (stage - 2.5)
    t_event = 30.0 * (ref["event_e"] / torch.exp(risk)) ** (1 / 1.3)
    lo, hi = -12.0, 8.0                       # bisection on log(rate)
    for _ in range(60):
        mid = (lo + hi) / 2
        # P(C < T | T) = 1 - exp(-rate T): average it instead of drawing C (smoother)
        frac = float((1 - torch.exp(-math.exp(mid) * t_event)).mean())
        lo, hi = (mid, hi) if frac < censoring else (lo, mid)
    return math.exp((lo + hi) / 2)


# ----------------------------------------------------------------------------- scanners
@functools.lru_cache(maxsize=256)
def _site_params(modality: str, site: int) -> tuple[float, float, float, float]:
    """(scale, shift, noise multiplier, PSF sigma in mm) of one scanner; site 0 is the reference."""
    ref_psf = {"ct": 0.45, "mri": 0.35, "pet": 1.1}[modality]
    if site == 0:
        return 1.0, 0.0, 1.0, ref_psf
    g = torch.Generator().manual_seed(7919 + 31 * site)
    u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
    if modality == "ct":
        return 0.98 + 0.04 * u[0], -15 + 30 * u[1], 0.7 + 0.9 * u[2], 0.3 + 0.7 * u[3]
    if modality == "mri":
        return 0.6 + 1.0 * u[0], 0.0, 0.7 + 0.9 * u[2], 0.25 + 0.55 * u[3]
    return 0.9 + 0.22 * u[0], 0.0, 0.7 + 0.8 * u[2], 0.8 + 0.8 * u[3]


# ----------------------------------------------------------------------------- rendering
@dataclasses.dataclass(frozen=True)
class _Grid:
    shape: tuple[int, int, int]          # output voxels (D, H, W)
    spacing: tuple[float, float, float]  # output mm (z, y, x)
    sub: tuple[int, int, int]            # sub-samples per voxel along each axis (partial volume)

    @staticmethod
    def make(shape, spacing):
        finest = min(spacing)
        sub = tuple(int(min(8, max(1, round(s / finest)))) for s in spacing)
        return _Grid(tuple(shape), tuple(spacing), sub)

    def axes(self, origin, fine: bool = True):
        """Per-patient sample positions in mm along z, y, x, (n, D), (n, H), (n, W), of the fine
        grid (or the voxel centres), centred on each patient's `origin` (n, 3)."""
        out = []
        for axis, (n, s, k) in enumerate(zip(self.shape, self.spacing, self.sub)):
            k = k if fine else 1
            m = n * k
            pos = (torch.arange(m, device=origin.device, dtype=torch.float32) - (m - 1) / 2) * (s / k)
            out.append(pos[None] + origin[:, axis, None])
        return out


def _ellipse(cz, cy, cx, az, ay, ax, z, y, x):
    """Inside-ellipsoid test, broadcast from per-patient (n,) centres/axes to (n, D, H, W).

    With ``az=None`` the ellipsoid is a cylinder along z and the result is (n, 1, H, W).
    """
    dy = ((y - cy[:, None]) / ay[:, None]) ** 2                   # (n, H)
    dx = ((x - cx[:, None]) / ax[:, None]) ** 2                   # (n, W)
    inplane = (dy[:, :, None] + dx[:, None, :])[:, None]          # (n, 1, H, W)
    if az is None:
        return inplane < 1
    dz = ((z - cz[:, None]) / az[:, None]) ** 2                   # (n, D)
    return inplane + dz[:, :, None, None] < 1                     # (n, D, H, W)


def _separable_texture(freq, phase, z, y, x):
    """Smooth random field (n, D, H, W), variance ~1: a sum of 3 products of 1-D sines in mm."""
    n = freq.shape[0]
    f, ph = freq.view(n, 3, 3), phase.view(n, 3, 3)               # (n, term, axis)
    sz = torch.sin(f[:, :, 0, None] * z[:, None] + ph[:, :, 0, None])   # (n, 3, D)
    sy = torch.sin(f[:, :, 1, None] * y[:, None] + ph[:, :, 1, None])   # (n, 3, H)
    sx = torch.sin(f[:, :, 2, None] * x[:, None] + ph[:, :, 2, None])   # (n, 3, W)
    zy = (sz[:, :, :, None] * sy[:, :, None, :]).flatten(2)       # (n, 3, D*H)
    field = torch.bmm(zy.transpose(1, 2), sx)                     # (n, D*H, W)
    return field.view(n, z.shape[1], y.shape[1], x.shape[1]) * math.sqrt(8 / 3)


def _liver_center(p):
    """(n, 3) z, y, x mm: the liver sits on the image left (the patient's right)."""
    base = torch.stack([torch.full_like(p["body_y"], 2.0), p["body_y"] - 1.5, -3.5 * p["body_scale"]], 1)
    return base + p["organ_shift"]


def _anatomy(p, tissue, z, y, x, texture_amp):
    """Tissue values of the torso without the lesion, (n, D, H, W), and the body mask."""
    n, dev = p["body_scale"].shape[0], z.device
    one, zero = torch.ones(n, device=dev), torch.zeros(n, device=dev)
    s, by = p["body_scale"], p["body_y"]
    sh, osc = p["organ_shift"], p["organ_scale"]                  # (n, 3), (n,)
    body = _ellipse(None, by, zero, None, 11.5 * s, 14.8 * s, z, y, x)          # (n, 1, H, W)
    inner = _ellipse(None, by, zero, None, 11.5 * s - 1.3, 14.8 * s - 1.3, z, y, x)
    slab = torch.where(inner, tissue["soft"], torch.where(body, tissue["fat"], tissue["air"]))
    aorta = _ellipse(None, by + 4.2 * s, 1.8 * s, None, 1.4 * one, 1.4 * one, z, y, x)
    slab = torch.where(aorta, tissue["blood"], slab)
    spine = _ellipse(None, by + 7.8 * s, zero, None, 2.3 * one, 2.3 * one, z, y, x)
    disc = ((z - p["vertebra_phase"][:, None]) % 7.0 < 1.5)[:, :, None, None]   # (n, D, 1, 1)
    bone = torch.where(disc, tissue["disc"], tissue["bone"])                       # (n, D, 1, 1)
    img = torch.where(spine, bone, slab)                                           # (n, D, H, W)
    cz, cy, cx = _liver_center(p).unbind(1)
    liver = _ellipse(cz, cy, cx, 22 * osc, 8.0 * osc, 9.5 * osc, z, y, x)
    texture = _separable_texture(p["texture_freq"], p["texture_phase"], z, y, x)
    liver_value = tissue["liver"] + texture_amp * (p["liver_offset"][:, None, None, None] + texture)
    img = torch.where(liver, liver_value, img)
    spleen = _ellipse(3 + sh[:, 0], by + 3.0 + sh[:, 1], 9.5 * s, 9 * osc, 4.5 * osc, 3.2 * osc, z, y, x)
    img = torch.where(spleen, tissue["spleen"], img)
    for side in (-1, 1):
        lung = _ellipse(9 + sh[:, 0], 5.6 * s + by, side * 9.0 * s, 12 * one, 2.6 * osc, 3.5 * osc, z, y, x)
        img = torch.where(lung, tissue["lung"], img)
    return img, body.expand_as(img)


def _lesion_rho(p, z, y, x):
    """Normalised lesion radius rho (n, D, H, W): 0 at the centre, 1 on the (spiky, lobed) margin."""
    c = p["lesion_center"]                                         # (n, 3) absolute mm
    dz = z - c[:, 0, None]                                         # (n, D)
    dy = y - c[:, 1, None]                                         # (n, H)
    dx = x - c[:, 2, None]                                         # (n, W)
    dz4, dy4, dx4 = dz[:, :, None, None], dy[:, None, :, None], dx[:, None, None, :]
    r2 = (dy4 ** 2 + dx4 ** 2) + dz4 ** 2                          # (n, D, H, W)
    inv_r2 = 1.0 / r2.clamp_min(1e-6)
    # lobulation: a traceless quadratic form of the direction, in [-1, 1]
    q = p["lobes"][:, :, :, None, None, None]                     # (n, 3, 3, 1, 1, 1)
    quad = q[:, 1, 1] * dy4 ** 2 + q[:, 2, 2] * dx4 ** 2 + 2 * q[:, 1, 2] * dy4 * dx4      # (n, 1, H, W)
    quad = quad + (q[:, 0, 0] * dz4 ** 2 + 2 * dz4 * (q[:, 0, 1] * dy4 + q[:, 0, 2] * dx4))  # (n, D, H, W)
    radius = 1.0 + p["lobulation"][:, None, None, None] * quad * inv_r2
    # spiculation: narrow spikes, cos(angle to spike)^32 for each spike direction
    inv_r = inv_r2.sqrt_()
    spikes = torch.zeros_like(r2)
    for k in range(p["spikes"].shape[1]):
        u = p["spikes"][:, k, :, None, None, None]                 # (n, 3, 1, 1, 1) unit vector
        cos = (u[:, 1] * dy4 + u[:, 2] * dx4) + u[:, 0] * dz4      # (n, 1, H, W) + (n, D, 1, 1)
        cos = cos.mul_(inv_r).clamp_(min=0)
        for _ in range(5):
            cos = cos.square_()
        spikes += cos
    radius = radius * (1 + p["spiculation"][:, None, None, None] * spikes)
    return r2.sqrt_().div_(radius * p["radius_mm"][:, None, None, None])


def _render(p, modality, grid: _Grid, lesion_fraction, device):
    """Clean values on the output grid, the lesion mask and the body mask, (n, D, H, W) each.

    Anatomy, lesion mean and texture go through the scanner's blur and partial volume.
    The mirror-symmetric necrosis pattern is added afterwards, sampled at voxel centres:
    blurring would flatten its thin ring more than its thick core and so leak the
    pattern's sign into skewness, a first-order feature (a deliberate simplification).
    """
    z, y, x = grid.axes(p["origin"])
    img, body = _anatomy(p, TISSUES[modality], z, y, x, _LESION[modality]["texture"])
    rho = _lesion_rho(p, z, y, x)
    if lesion_fraction is not None:
        rho = _fit_lesion_fraction(rho, p, lesion_fraction)
    inside = rho < 1
    img = torch.where(inside, _lesion_values(p, modality, z, y, x), img)
    img = _pool(_blur(img, p["psf_mm"], grid), grid)
    if grid.sub != (1, 1, 1):                                      # rho at the output voxel centres
        rho = _lesion_rho(p, *grid.axes(p["origin"], fine=False))
    img = img + _necrosis_pattern(p, modality, rho)
    return img, _pool(inside.float(), grid) >= 0.5, _pool(body.float(), grid) >= 0.5


def _fit_lesion_fraction(rho, p, fraction):
    """Rescale each lesion so that round(fraction * samples) fine-grid samples lie inside it."""
    flat = rho.flatten(1)                                          # (n, samples)
    k = max(1, round(fraction * flat.shape[1]))
    kth = flat.kthvalue(k, dim=1).values
    nxt = flat.kthvalue(min(k + 1, flat.shape[1]), dim=1).values
    scale = (kth + nxt) / 2                                        # between the k-th and (k+1)-th
    p["radius_mm"] = p["radius_mm"] * scale
    return rho / scale[:, None, None, None]


def _col(t):
    return t[:, None, None, None]                                  # (n,) -> (n, 1, 1, 1)


def _lesion_values(p, modality, z, y, x):
    """Lesion intensities before the pattern (n, D, H, W): mean + heterogeneity texture."""
    les = _LESION[modality]
    mean = _col(p["host"] + p["contrast"])
    texture = _separable_texture(p["lesion_freq"], p["lesion_phase"], z, y, x)
    if modality == "pet":   # PET: relative texture keeps the activity positive
        return mean * (1 + les["hetero"] * _col(p["heterogeneity"]) * texture).clamp(min=0.05)
    return mean + les["hetero"] * _col(p["heterogeneity"]) * texture


def _necrosis_pattern(p, modality, rho):
    """-amplitude * necrosis * sin(2 pi u), u = (rho / _CORE)**3: zero outside the core."""
    u = (rho / _CORE).clamp(max=1) ** 3                           # uniform over the core's volume
    pattern = _LESION[modality]["pattern"] * _col(p["necrosis"]) * torch.sin(u * (2 * math.pi))
    if modality == "pet":   # relative to the lesion mean, at most 60 %
        pattern = pattern * _col(p["host"] + p["contrast"])
    return -pattern


def _blur(img, psf_mm, grid: _Grid):
    """Gaussian point spread per patient (sigma in mm), separable, on the fine grid."""
    out = img.clone()
    for sigma in torch.unique(psf_mm).tolist():
        idx = (psf_mm == sigma).nonzero()[:, 0]
        vol = img[idx]                                            # (m, D, H, W)
        for axis, (s, k) in enumerate(zip(grid.spacing, grid.sub)):
            vol = _blur_axis(vol, sigma / (s / k), axis + 1)
        out[idx] = vol
    return out


def _blur_axis(vol, sigma_vox: float, dim: int):
    """1-D Gaussian blur along `dim` as a weighted sum of shifted copies (edges replicated)."""
    if sigma_vox < 0.2 or vol.shape[dim] == 1:
        return vol
    radius = min(int(math.ceil(3 * sigma_vox)), vol.shape[dim] - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma_vox) ** 2)
    w = (w / w.sum()).tolist()
    n = vol.shape[dim]
    edge = list(vol.shape)
    edge[dim] = radius
    padded = torch.cat([vol.narrow(dim, 0, 1).expand(edge), vol,
                        vol.narrow(dim, n - 1, 1).expand(edge)], dim)
    out = vol * w[radius]
    for j, wj in enumerate(w):
        if j != radius:
            out.add_(padded.narrow(dim, j, n), alpha=wj)
    return out


def _pool(vol, grid: _Grid):
    if grid.sub == (1, 1, 1):
        return vol
    return F.avg_pool3d(vol[:, None], grid.sub)[:, 0]             # (n, D, H, W)


def _add_noise(img, p, modality, grid: _Grid, gen):
    """Scanner noise on the output grid.

    The protocol (dose, averages) is set for the in-plane matrix: the reference noise
    holds for a cubic voxel of the in-plane size, and thicker slices collect more
    photons / spins, so their noise std falls as 1 / sqrt(thickness / in-plane size).
    """
    rel_volume = grid.spacing[0] / math.sqrt(grid.spacing[1] * grid.spacing[2])   # vs the cubic voxel
    noise = p["noise_mult"][:, None, None, None]
    if modality == "ct":
        # compound Poisson-Gaussian: quantum variance ~ 1 / photons, photons ~ exp(-attenuation)
        photons = torch.exp(-0.5 * (img.clamp(min=-1000) + 1000) / 1000)
        var = (12.0 * noise) ** 2 / rel_volume * torch.exp(torch.tensor(-0.5)) / photons + 4.0 ** 2
        return img + var.sqrt_() * torch.randn(img.shape, generator=gen, device=img.device)
    if modality == "mri":   # Rician: magnitude of complex Gaussian noise
        sigma = 18.0 * noise / math.sqrt(rel_volume)
        re = img + sigma * torch.randn(img.shape, generator=gen, device=img.device)
        im = sigma * torch.randn(img.shape, generator=gen, device=img.device)
        return torch.sqrt(re * re + im * im)
    # PET: Poisson counts; 5 counts per (Bq/mL * mL) at the reference scanner
    per_bq = 5.0 / noise ** 2 * rel_volume * 1e-3                  # counts per Bq/mL in one voxel
    counts = torch.poisson(img.clamp(min=0) * per_bq, generator=gen)
    return counts / per_bq


def _bias_field(p, grid: _Grid, device):
    """Smooth multiplicative MRI bias field exp(linear + quadratic in mm), about +-30 %."""
    z, y, x = [((torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2) * s) / (FOV_MM / 2)
               for n, s in zip(grid.shape, grid.spacing)]
    b = p["bias"]
    fz = torch.exp(0.1 * b[:, 0, None] * z)                       # (n, D)
    fy = torch.exp(0.15 * b[:, 1, None] * y + 0.08 * b[:, 3, None] * y ** 2)
    fx = torch.exp(0.15 * b[:, 2, None] * x + 0.08 * b[:, 4, None] * x ** 2)
    return fz[:, :, None, None] * fy[:, None, :, None] * fx[:, None, None, :]


# ----------------------------------------------------------------------------- the set
@dataclasses.dataclass
class PhantomSet:
    """A batch of synthetic patients with their ground truth (see the module doc).

    Tensors are indexed by patient along dim 0; ``ph[idx]`` subsets all of them
    (int array, slice or bool mask), ``ph.to(device)`` moves them. ``inputs`` and
    ``targets`` are what a network trains on.
    """

    images: torch.Tensor          # (N, 1, D, H, W) float32, physical units
    masks: torch.Tensor           # (N, 1, D, H, W) bool lesion mask
    body: torch.Tensor            # (N, 1, D, H, W) bool body mask
    labels: torch.Tensor          # (N,) long
    p_true: torch.Tensor          # (N,) float32 true P(label = 1 | image)
    risk: torch.Tensor            # (N,) float32 true log-hazard
    time: torch.Tensor            # (N,) float32 months
    event: torch.Tensor           # (N,) bool
    sites: torch.Tensor           # (N,) long
    weight_kg: torch.Tensor       # (N,) float32
    injected_dose_bq: torch.Tensor  # (N,) float32
    lesion: dict                  # name -> (N,) tensor of true generating properties
    clinical: pd.DataFrame        # N rows: age, stage, weight_kg
    spacing: tuple
    modality: str
    task: str
    _inputs: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __repr__(self) -> str:
        return (f"PhantomSet(n={len(self)}, modality={self.modality!r}, task={self.task!r}, "
                f"shape={tuple(self.images.shape[2:])}, spacing={self.spacing}, "
                f"sites={int(self.sites.max()) + 1}, device={self.images.device})")

    @property
    def inputs(self) -> torch.Tensor:
        """Network-ready (N, 1, D, H, W): CT window -100..250 HU -> [0, 1]; MRI z-score in the
        body; PET log(1 + SUV). Computed once with ``rl.preprocess`` and cached."""
        if self._inputs is None:
            from . import preprocess
            if self.modality == "ct":
                x = preprocess.ct_window(self.images, -100.0, 250.0)
            elif self.modality == "mri":
                x = preprocess.zscore(self.images, self.body)
            else:
                x = torch.log1p(preprocess.suv(self.images, weight_kg=self.weight_kg,
                                               injected_dose_bq=self.injected_dose_bq))
            self._inputs = x.float()
        return self._inputs

    @property
    def targets(self) -> torch.Tensor:
        """Classification: labels (N,) float; segmentation: masks (N,1,D,H,W) float;
        survival: (N, 2) float [time, event]."""
        if self.task == "classification":
            return self.labels.float()
        if self.task == "segmentation":
            return self.masks.float()
        return torch.stack([self.time, self.event.float()], 1)

    def __getitem__(self, idx) -> "PhantomSet":
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        if isinstance(idx, torch.Tensor):
            idx = idx.to(self.images.device) if idx.dtype == torch.bool else idx.cpu()
        elif not isinstance(idx, slice):
            idx = torch.as_tensor(np.asarray(idx))
        rows = np.arange(len(self))[idx.cpu().numpy() if isinstance(idx, torch.Tensor) else idx]
        sub = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in sub.items():
            if isinstance(value, torch.Tensor):
                sub[name] = value[idx]
        sub["lesion"] = {k: v[idx] for k, v in self.lesion.items()}
        sub["clinical"] = self.clinical.iloc[np.atleast_1d(rows)].reset_index(drop=True)
        return PhantomSet(**sub)

    def to(self, device) -> "PhantomSet":
        sub = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name, value in sub.items():
            if isinstance(value, torch.Tensor):
                sub[name] = value.to(device)
        sub["lesion"] = {k: v.to(device) for k, v in self.lesion.items()}
        return PhantomSet(**sub)


# ----------------------------------------------------------------------------- main entry
def make_phantoms(n: int, *, size=32, modality: str = "ct", task: str = "classification",
                  sites: int = 1, confounding: float = 0.0, spacing=None, seed: int = 0,
                  device="cpu", pattern_share: float = 0.5, censoring: float = 0.3,
                  lesion_fraction: float | None = None, noise: bool = True, center: str = "body") -> PhantomSet:
    """`n` synthetic patients as a :class:`PhantomSet` (generating process: module doc).

    size: int edge (or (D, H, W)); spacing: (z, y, x) mm, default isotropic 32 mm / size
    (1 mm at size 32), so any size frames the same torso; anatomy is in mm, so the
    same seed is the same patient at any spacing. modality: "ct" (HU), "mri" (a.u.),
    "pet" (Bq/mL). task: "classification" | "segmentation" | "survival" (sets
    ``targets``; all truths are always filled in). sites: number of scanners;
    confounding in [0, 1]: how strongly the site sets the label prevalence.
    pattern_share in [0, 1]: the internal pattern's share of the label's log-odds
    variance. censoring in [0, 1): target censored fraction. lesion_fraction in
    (0, 0.5]: rescale each lesion to this fraction of the volume (None: natural size).
    noise=False renders the noiseless image. center="lesion" centres the field of view on
    each lesion (the usual radiomics crop; default spacing 16 mm / size), which makes the
    lesion far easier for a small CNN to learn than in the whole torso (center="body").
    Deterministic per seed and device.

    >>> ph = make_phantoms(8, size=32, modality="ct")
    >>> ph.images.shape, ph.inputs.shape, ph.targets.shape
    (torch.Size([8, 1, 32, 32, 32]), torch.Size([8, 1, 32, 32, 32]), torch.Size([8]))
    """
    shape, spacing, device = _check_args(n, size, modality, task, sites, confounding, spacing, seed,
                                         device, pattern_share, censoring, lesion_fraction, center)
    if not isinstance(noise, bool):
        raise TypeError(f"noise: expected True or False, got {noise!r}")
    p = _draw_patients(int(n), torch.Generator().manual_seed(int(seed)))
    site = _assign_sites(p, sites)
    lo, hi = _LESION[modality]["contrast"]
    p["contrast"] = lo + (hi - lo) * p["contrast_u"]
    p["host"] = TISSUES[modality]["liver"] + _LESION[modality]["texture"] * p["liver_offset"]
    grid = _Grid.make(shape, spacing)
    with _one_cpu_thread(device):
        images, masks, body = _render_all(p, site, modality, grid, lesion_fraction, device, seed, noise, center)
    truth = _truth(p, site, sites, confounding, pattern_share, censoring)   # after lesion_fraction rescaling
    lesion = {k: truth.pop(k) for k in list(truth) if k.startswith("lesion:")}
    lesion = {k[len("lesion:"):]: v for k, v in lesion.items()}
    lesion["radius_mm"] = p["radius_mm"].float().to(device)       # rescaled by lesion_fraction
    lesion["volume_mm3"] = masks.flatten(1).float().sum(1) * float(np.prod(spacing))
    clinical = pd.DataFrame({"age": p["age"].numpy().round(1), "stage": truth.pop("stage").numpy(),
                             "weight_kg": p["weight_kg"].numpy().round(1)})
    return PhantomSet(images=images, masks=masks, body=body, sites=site.to(device),
                      lesion=lesion, clinical=clinical, spacing=spacing, modality=modality, task=task,
                      **{k: v.to(device) for k, v in truth.items()})


def _truth(p, site, sites, confounding, pattern_share, censoring):
    """Labels, true probabilities, survival and the lesion properties, from the patients `p`."""
    s = _scores(p, pattern_share)
    logit_lesion = _LOGIT_SCALE * s["signal"]
    logit_site = _SITE_LOGIT * confounding * _site_offsets(sites)[site]
    p_true = torch.sigmoid(logit_lesion + logit_site)
    risk, stage, time, event = _survival(p, s, censoring, pattern_share)
    truth = dict(labels=(p["label_u"] < p_true).long(), p_true=p_true.float(), risk=risk.float(),
                 time=time.float(), event=event, stage=stage,
                 weight_kg=p["weight_kg"].float(),
                 injected_dose_bq=(p["dose_per_kg"] * p["weight_kg"]).float())
    for name in ("contrast", "spiculation", "necrosis", "lobulation", "heterogeneity"):
        truth["lesion:" + name] = p[name].float()
    for name in ("z_size", "z_contrast", "z_spic", "handcrafted", "pattern"):
        truth["lesion:" + name] = s[name].float()
    truth["lesion:logit"] = logit_lesion.float()
    truth["lesion:logit_site"] = logit_site.float()
    return truth


def _render_all(p, site, modality, grid: _Grid, lesion_fraction, device, seed, noise, center):
    """Render in chunks of about 2**19 fine voxels (fast on CPU caches, bounded memory)."""
    n = site.shape[0]
    d, h, w = grid.shape
    images = torch.empty(n, 1, d, h, w, device=device)
    masks = torch.empty(n, 1, d, h, w, device=device, dtype=torch.bool)
    body = torch.empty_like(masks)
    scanner = torch.tensor([_site_params(modality, s) for s in range(int(site.max()) + 1)],
                           dtype=torch.float64)[site]             # (n, 4)
    lesion_center = _liver_center(p) + p["center"]
    origin = lesion_center if center == "lesion" else torch.zeros_like(lesion_center)
    p = dict(p, lesion_center=lesion_center, origin=origin, scale=scanner[:, 0], shift=scanner[:, 1],
             noise_mult=scanner[:, 2], psf_mm=scanner[:, 3])
    p["activity_per_suv"] = p["dose_per_kg"] / 1000.0              # PET: SUV -> Bq/mL
    fine = int(np.prod(grid.shape) * np.prod(grid.sub))
    chunk = max(1, _CHUNK_VOXELS // fine)
    for i, start in enumerate(range(0, n, chunk)):
        part = {k: v[start:start + chunk].to(device, torch.float32) for k, v in p.items()}
        img, m, b = _render(part, modality, grid, lesion_fraction, device)
        if lesion_fraction is not None:
            p["radius_mm"][start:start + chunk] = part["radius_mm"].double().cpu()
        if modality == "pet":
            img = img * _col(part["activity_per_suv"])
        if modality == "mri":
            img = img * _bias_field(part, grid, device)
        img = img * _col(part["scale"]) + _col(part["shift"])     # scanner calibration
        if noise:
            gen = torch.Generator(device=device).manual_seed((int(seed) * 1_000_003 + i) % 2 ** 63)
            img = _add_noise(img, part, modality, grid, gen)
        rows = slice(start, start + chunk)
        images[rows, 0], masks[rows, 0], body[rows, 0] = img, m, b
    return images, masks, body


@contextlib.contextmanager
def _one_cpu_thread(device):
    """Render with one torch thread on CPU, then restore the setting.

    Rendering is many small memory-bound steps: on a quiet 2-core CPU two threads save
    about a third, but on a shared one they stall waiting for a busy core (measured here:
    1000 CT volumes at 32^3 took 3 s with one thread and 35 s with two under load).
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- on the fly
class PhantomDataset(torch.utils.data.Dataset):
    """`n` phantoms generated on the fly in blocks, for data sets larger than memory.

    Item i is ``(x, y)`` = (``inputs[j]`` (1, D, H, W), ``targets[j]``) of block
    ``i // block`` made by ``make_phantoms(block, seed=seed * 100003 + b, **kwargs)``,
    so every item is deterministic whatever the access order. One block stays cached.
    Taught in ``notebooks/01_end_to_end_vs_classical.ipynb``.
    """

    def __init__(self, n: int, *, seed: int = 0, block: int = 64, **kwargs: Any):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n: expected an int >= 1, got {n!r}")
        if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
            raise ValueError(f"block: expected an int >= 1, got {block!r}")
        _check_args(1, kwargs.get("size", 32), kwargs.get("modality", "ct"),
                    kwargs.get("task", "classification"), kwargs.get("sites", 1),
                    kwargs.get("confounding", 0.0), kwargs.get("spacing"), seed,
                    kwargs.get("device", "cpu"), kwargs.get("pattern_share", 0.5),
                    kwargs.get("censoring", 0.3), kwargs.get("lesion_fraction"), kwargs.get("center", "body"))
        self.n, self.seed, self.block, self.kwargs = int(n), int(seed), int(block), kwargs
        self._cached: tuple[int, PhantomSet] | None = None

    def __len__(self) -> int:
        return self.n

    def block_set(self, b: int) -> PhantomSet:
        """The PhantomSet of block `b` (cached)."""
        if self._cached is None or self._cached[0] != b:
            size = min(self.block, self.n - b * self.block)
            ph = make_phantoms(size, seed=self.seed * 100003 + b, **self.kwargs)
            self._cached = (b, ph)
        return self._cached[1]

    def __getitem__(self, i: int):
        if isinstance(i, torch.Tensor):
            i = int(i)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"i: expected an int index, got {type(i).__name__}")
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"i: expected an index in [0, {self.n}), got {i}")
        ph = self.block_set(i // self.block)
        j = i % self.block
        return ph.inputs[j], ph.targets[j]
