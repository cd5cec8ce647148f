"""Building blocks shared by every radlab network.

One switch, ``dims``, picks the geometry of a whole network:

* ``"3d"``  : volumes ``(N, C, D, H, W)``, 3×3×3 kernels.
* ``"2d"``  : slices ``(N, C, H, W)``, 3×3 kernels.
* ``"2.5d"``: ``k`` adjacent slices stacked as channels ``(N, C·k, H, W)``, 3×3 kernels.

2D and 2.5D classifiers also accept whole volumes ``(N, C, D, H, W)``: they run on
every slice (or every window of ``k`` slices) as one big batch and average the
pooled features over slices, which is what a 3D network's global average pooling
does too. Taught in ``notebooks/03_volumetric_costs.ipynb``.
"""
from __future__ import annotations

import abc

import re

import torch
import torch.nn.functional as F
from torch import nn

DIMS = ("2d", "2.5d", "3d")
NORMS = (None, "batch", "instance")


def check_dims(dims) -> str:
    if dims not in DIMS:
        raise ValueError(f"dims: expected one of {DIMS}, got {dims!r}")
    return dims


def check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"norm: expected one of {NORMS}, got {norm!r}")
    return norm


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def kernel(dims: str, size: int, inplane_only: bool = False):
    """Kernel (or stride) size: ``size`` in 2D; ``(1, size, size)`` for in-plane-only 3D layers."""
    if dims != "3d":
        return size
    return (1, size, size) if inplane_only else size


def conv(dims: str, c_in: int, c_out: int, k=3, stride=1, bias: bool = False) -> nn.Module:
    """A 'same'-padded convolution of the right dimensionality; ``k`` an int or a (z, y, x) tuple."""
    cls = nn.Conv3d if dims == "3d" else nn.Conv2d
    padding = tuple(s // 2 for s in k) if isinstance(k, tuple) else k // 2
    return cls(c_in, c_out, k, stride=stride, padding=padding, bias=bias)


def norm_layer(dims: str, norm, channels: int) -> nn.Module:
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return (nn.BatchNorm3d if dims == "3d" else nn.BatchNorm2d)(channels)
    return (nn.InstanceNorm3d if dims == "3d" else nn.InstanceNorm2d)(channels, affine=True)


def max_pool(dims: str, k=2) -> nn.Module:
    return (nn.MaxPool3d if dims == "3d" else nn.MaxPool2d)(k)


def global_pool(dims: str) -> nn.Module:
    """Global average pooling then flatten: (N, C, ...) -> (N, C)."""
    pool = nn.AdaptiveAvgPool3d(1) if dims == "3d" else nn.AdaptiveAvgPool2d(1)
    return nn.Sequential(pool, nn.Flatten(1))


class ConvNormAct(nn.Sequential):
    """conv -> norm -> ReLU, the unit every plain network stacks. Bias only without a norm."""

    def __init__(self, dims: str, c_in: int, c_out: int, k=3, stride=1, norm="batch"):
        super().__init__()
        self.conv = conv(dims, c_in, c_out, k, stride, bias=norm is None)
        self.norm = norm_layer(dims, norm, c_out)
        self.act = nn.ReLU()   # not in-place: full backward hooks (notebook 05) need that


def volume_to_slices(x: torch.Tensor, dims: str, slices: int) -> torch.Tensor:
    """(N, C, D, H, W) -> one 2D image per slice: (N·D, C, H, W) for 2D, (N·D, C·k, H, W) for 2.5D."""
    n, c, d, h, w = x.shape
    if dims == "2d":
        return x.transpose(1, 2).reshape(n * d, c, h, w)            # (N·D, C, H, W)
    half = slices // 2
    padded = F.pad(x, (0, 0, 0, 0, half, half), mode="replicate")   # repeat edge slices
    windows = padded.unfold(2, slices, 1)                           # (N, C, D, H, W, k)
    return windows.permute(0, 2, 1, 5, 3, 4).reshape(n * d, c * slices, h, w)  # (N·D, C·k, H, W)


class Classifier(nn.Module, abc.ABC):
    """Base of the classifiers: ``forward(x) = head(features(x))``, logits (N, num_classes).

    Subclasses define ``encode(x)`` (input -> pooled features (N, F)) and ``self.head``.
    """

    def __init__(self, dims: str, in_channels: int, slices: int = 5):
        super().__init__()
        self.dims = check_dims(dims)
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.slices = check_positive_int(slices, "slices")
        if dims == "2.5d" and slices % 2 == 0:
            raise ValueError(f"slices: expected an odd number of adjacent slices, got {slices}")
        # channels the first convolution sees: 2.5D stacks k slices per input channel
        self.conv_in_channels = in_channels * slices if dims == "2.5d" else in_channels

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        ok_ndim = (5,) if self.dims == "3d" else (4, 5)
        if x.ndim not in ok_ndim:
            want = "(N, C, D, H, W)" if self.dims == "3d" else "(N, C, H, W) or (N, C, D, H, W)"
            raise ValueError(f"x: a {self.dims} network expects {want}, got shape {tuple(x.shape)}")
        channels = self.conv_in_channels if x.ndim == 4 else self.in_channels
        if x.shape[1] != channels:
            raise ValueError(f"x: expected {channels} channels in dim 1, got shape {tuple(x.shape)}")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled feature vector (N, F), the input of the final linear layer."""
        self._check_input(x)
        if self.dims != "3d" and x.ndim == 5:
            n = x.shape[0]
            per_slice = self.encode(volume_to_slices(x, self.dims, self.slices))  # (N·D, F)
            return per_slice.reshape(n, -1, per_slice.shape[1]).mean(1)        # (N, F)
        return self.encode(x)

    @abc.abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Input -> pooled features (N, F); each architecture defines its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def documented_param_count(cls) -> int:
    """The number in a class docstring's line 'Parameters at default settings: 12,345.'"""
    match = re.search(r"Parameters at default settings: ([\d,]+)", cls.__doc__ or "")
    if match is None:
        raise ValueError(f"{cls.__name__}: docstring states no 'Parameters at default settings'")
    return int(match.group(1).replace(",", ""))
