"""Profiles, device choice, seeding and checked claims.

A *profile* fixes every size a notebook reads (volume edge, number of patients,
epochs, repeats), so the same notebook runs as a 2-minute smoke test on a
laptop (``quick``), a 10-minute lesson on a Colab CPU (``standard``) or the real
experiment on a GPU (``full``). Notebooks never hard-code a size: they read it
from the :class:`Profile` that :func:`setup` returns.

Taught in ``notebooks/00_welcome.ipynb`` ("Profiles and devices").
"""
from __future__ import annotations

import dataclasses
import os
import random
import types
from typing import Any

import numpy as np
import torch

PROFILES = ("quick", "standard", "full")

# Sizes shared by most notebooks, one column per profile.
_COMMON: dict[str, dict[str, Any]] = {
    #               quick   standard  full
    "size":        {"quick": 32, "standard": 32, "full": 64},     # volume edge in voxels
    "n_train":     {"quick": 200, "standard": 600, "full": 2000},  # training patients
    "n_test":      {"quick": 200, "standard": 500, "full": 2000},  # held-out patients
    "epochs":      {"quick": 5, "standard": 15, "full": 40},
    "repeats":     {"quick": 2, "standard": 3, "full": 10},        # seeds per experiment
    "batch_size":  {"quick": 32, "standard": 32, "full": 64},
}

# Sizes that belong to one notebook's experiments. Each notebook owns its entry:
# ``P.nb02.n_sizes`` reads ``SECTIONS["nb02"]["n_sizes"][P.name]``.
SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "nb00": {"n_show": {"quick": 3, "standard": 4, "full": 8}},   # patients per modality in the tour
    "nb01": {   # training-set sizes of the learning curve, CNN optimiser steps per fit, lesion crop edge
        "sizes": {"quick": (50, 400), "standard": (50, 100, 200, 400, 800),
                  "full": (50, 100, 200, 400, 800, 1600, 3200)},
        "steps": {"quick": 200, "standard": 400, "full": 1500},
        "crop": {"quick": 16, "standard": 16, "full": 32},      # voxels: 16 mm at 1 mm, 0.5 mm (full)
    },
    "nb02": {   # bias-variance: training-set sizes, R training sets each, optimiser steps per CNN (any n)
        "n_sizes": {"quick": (40, 120, 360), "standard": (40, 120, 360, 1080), "full": (50, 200, 800, 3200)},
        "R": {"quick": 3, "standard": 5, "full": 10},
        "steps": {"quick": 120, "standard": 300, "full": 1500},  # of 32 patients: a small set is seen often
        "bags": {"quick": 3, "standard": 4, "full": 8},            # bootstrap models per bagged CNN
        "wide": {"quick": 16, "standard": 16, "full": 16},         # first-block width of the larger CNN (base 8)
        "test_size": {"quick": 200, "standard": 400, "full": 1000},
        "size": {"quick": 32, "standard": 32, "full": 32},         # phantom edge (1 mm voxels) ...
        "crop": {"quick": 16, "standard": 16, "full": 16},         # ... and the lesion-centred crop the CNN reads
    },
    "nb03": {   # 2D / 2.5D / 3D costs; anisotropic voxels (training part: smoke test under quick)
        "sizes": {"quick": (32, 64, 128, 256), "standard": (32, 64, 128, 256), "full": (32, 64, 128, 256)},
        "measure_up_to": {"quick": 32, "standard": 64, "full": 256},      # sizes whose step is timed
        "aniso_spacing": {"quick": (5.0, 1.0, 1.0), "standard": (5.0, 0.7, 0.7), "full": (5.0, 0.7, 0.7)},
        "aniso_shape": {"quick": (6, 32, 32), "standard": (6, 46, 46), "full": (6, 46, 46)},
        "aniso_n": {"quick": 48, "standard": 400, "full": 1500},           # train = test patients
        "aniso_epochs": {"quick": 2, "standard": 10, "full": 25},
        "aniso_seeds": {"quick": (0,), "standard": (0, 1), "full": (0, 1, 2)},
    },
    "nb04": {   # rotated test phantoms: plain CNN, + augmentation, p4 group CNN
        "n": {"quick": 200, "standard": 300, "full": 1000},                # train = test patients
        "epochs": {"quick": 8, "standard": 10, "full": 20},
        "seeds": {"quick": (0,), "standard": (0, 1, 2), "full": (0, 1, 2, 3, 4)},
    },
    "nb05": {   # gradient flow: init gradients, depth sweep, BatchNorm training, U-Net skips
        "depth": {"quick": 20, "standard": 20, "full": 20},                 # weighted layers
        "size": {"quick": 16, "standard": 16, "full": 16},                  # volume edge at init
        "batch": {"quick": 8, "standard": 8, "full": 16},                   # patients per measured batch
        "seeds": {"quick": (0, 1), "standard": (0, 1, 2), "full": (0, 1, 2, 3, 4)},
        "sweep_depths": {"quick": (4, 8, 16, 32, 64), "standard": (4, 8, 16, 32, 64), "full": (4, 8, 16, 32, 64)},
        "sweep_size": {"quick": 12, "standard": 12, "full": 16},
        "train_archs": {"quick": ("plain", "resnet"), "standard": ("plain", "resnet", "densenet"),
                        "full": ("plain", "resnet", "densenet")},
        "train_size": {"quick": 12, "standard": 16, "full": 16},
        "train_n": {"quick": 32, "standard": 64, "full": 256},
        "train_epochs": {"quick": 10, "standard": 10, "full": 20},
        "train_batch": {"quick": 8, "standard": 16, "full": 16},
        "unet_size": {"quick": 16, "standard": 16, "full": 32},
        "unet_n": {"quick": 32, "standard": 64, "full": 200},
        "unet_epochs": {"quick": 24, "standard": 24, "full": 40},
        "unet_width": {"quick": 4, "standard": 4, "full": 8},
    },
    "nb07": {"size": {"quick": 16, "standard": 24, "full": 32},        # segmentation volume edge (voxels)
             "fractions": {"quick": (0.001, 0.01, 0.1), "standard": (0.001, 0.003, 0.01, 0.03, 0.1),
                           "full": (0.001, 0.003, 0.01, 0.03, 0.1)},
             "losses": {"quick": ("bce", "focal", "dice"), "standard": ("bce", "focal", "dice", "dice_bce"),
                        "full": ("mse", "bce", "focal", "dice", "dice_bce")},
             "n_train": {"quick": 24, "standard": 48, "full": 96},        # segmentation training patients
             "n_test": {"quick": 16, "standard": 24, "full": 64},
             "epochs": {"quick": 10, "standard": 10, "full": 10},         # same steps per patient: see nb07
             "seeds": {"quick": (0,), "standard": (0, 1, 2), "full": (0, 1, 2, 3, 4)},
             "cls_pool": {"quick": 400, "standard": 1200, "full": 4000},  # classification patients before thinning
             "cls_epochs": {"quick": 8, "standard": 10, "full": 15}},
    "nb09": {"n_train": {"quick": 200, "standard": 500, "full": 2000},     # survival phantoms to train on
             "n_test": {"quick": 200, "standard": 400, "full": 1000},      # held-out patients
             "epochs": {"quick": 12, "standard": 20, "full": 40},          # CNN epochs (crops are 1/8 volume)
             "batch_size": {"quick": 32, "standard": 32, "full": 64}},     # ~22+ events per Cox batch
}


@dataclasses.dataclass(frozen=True)
class Profile:
    """Every size a notebook reads, for one profile, and where to compute.

    ``P.size`` and friends are shared sizes; ``P.nb02.n_sizes`` reaches the
    sizes that one notebook owns (see ``SECTIONS``).
    """

    name: str                 # "quick" | "standard" | "full"
    device: torch.device      # CUDA, else MPS, else CPU
    seed: int
    threads: int              # torch intra-op threads
    size: int
    n_train: int
    n_test: int
    epochs: int
    repeats: int
    batch_size: int

    def __getattr__(self, section: str) -> types.SimpleNamespace:
        # Only called for names that are not fields: the per-notebook sections.
        if section in SECTIONS:
            return types.SimpleNamespace(**{k: v[self.name] for k, v in SECTIONS[section].items()})
        raise AttributeError(f"Profile has no field or section {section!r}; sections: {sorted(SECTIONS)}")

    @property
    def is_quick(self) -> bool:
        return self.name == "quick"

    def __str__(self) -> str:
        return (f"radlab profile={self.name} device={self.device} torch={torch.__version__} "
                f"threads={self.threads} seed={self.seed}")


def pick_device() -> torch.device:
    """CUDA first, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) with one number."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


_current: Profile | None = None


def _profile_name(profile: str | None, device: torch.device) -> str:
    name = profile or os.environ.get("RADLAB_PROFILE") or ("full" if device.type == "cuda" else "standard")
    if name not in PROFILES:
        raise ValueError(f"profile: expected one of {PROFILES}, got {name!r}")
    return name


def make_profile(name: str, *, device: torch.device | str = "cpu", seed: int = 0) -> Profile:
    """Build the Profile called ``name`` without touching global state (for tests and panels)."""
    if name not in PROFILES:
        raise ValueError(f"name: expected one of {PROFILES}, got {name!r}")
    sizes = {key: column[name] for key, column in _COMMON.items()}
    return Profile(name=name, device=torch.device(device), seed=seed,
                   threads=torch.get_num_threads(), **sizes)


def setup(seed: int = 0, profile: str | None = None, *, quiet: bool = False) -> Profile:
    """Choose profile and device, seed everything, print one line, return the Profile.

    The profile comes from ``profile``, else the ``RADLAB_PROFILE`` environment
    variable, else ``full`` on a CUDA GPU and ``standard`` elsewhere.
    """
    global _current
    seed_everything(seed)
    device = pick_device()
    _current = make_profile(_profile_name(profile, device), device=device, seed=seed)
    if not quiet:
        print(_current)
    return _current


def current() -> Profile | None:
    """The Profile of the last :func:`setup` call, or None."""
    return _current


class ClaimFailed(AssertionError):
    """A teaching claim did not hold on the numbers the notebook just measured."""


def _strict() -> bool:
    name = _current.name if _current is not None else os.environ.get("RADLAB_PROFILE")
    return name == "quick" or os.environ.get("RADLAB_STRICT") == "1"


def claim(condition: Any, text: str) -> bool:
    """Print ``✓ text`` or ``✗ text`` for a claim checked on measured numbers.

    Under the ``quick`` profile (the tests) or with ``RADLAB_STRICT=1`` a false
    claim raises :class:`ClaimFailed`, so a change that breaks a lesson breaks CI.
    Returns the truth value so a notebook can branch on it.
    """
    if not isinstance(text, str) or not text.strip():
        raise TypeError(f"text: expected a non-empty str describing the claim, got {text!r}")
    if isinstance(condition, torch.Tensor):
        if condition.numel() != 1:
            raise ValueError(f"condition: expected one truth value, got a tensor of shape {tuple(condition.shape)}")
        condition = condition.item()
    if isinstance(condition, np.ndarray):
        if condition.size != 1:
            raise ValueError(f"condition: expected one truth value, got an array of shape {condition.shape}")
        condition = condition.item()
    ok = bool(condition)
    print(f"{'✓' if ok else '✗'} {text}")
    if not ok and _strict():
        raise ClaimFailed(text)
    return ok
