"""Batched augmentations on the batch's own device.

Taught where the experiments use them (notebooks 01 and 09); the modality-specific
transforms of the augmentation lesson will live here too.
"""
from __future__ import annotations

import torch

__all__ = ["random_flips"]


def random_flips(x: torch.Tensor) -> torch.Tensor:
    """Mirror a ``(N, C, D, H, W)`` batch along each spatial axis with probability 1/2.

    A lesion's label has no handedness, so a mirrored patient is another plausible patient.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 5:
        raise ValueError(f"x: expected a (N, C, D, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    for axis in (2, 3, 4):
        if torch.rand(()) < 0.5:
            x = x.flip(axis)
    return x
