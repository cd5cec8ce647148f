"""Rotation-equivariant group convolutions on p4 (the four 90-degree rotations), in 2D and 3D.

A plain convolution is translation-equivariant only: rotate the input and the
feature maps change in ways the network has to learn from (augmented) data. A
*group* convolution applies every filter in all four orientations and shares the
weights between them (the chapter, "Building in Geometric Symmetries"), so

    layer(rot90(x)) == rotate_p4(layer(x))       # exactly, up to float round-off

where ``rotate_p4`` turns each map by 90 degrees *and* cycles the four rotation
channels. Pooling over the rotations (:func:`p4_pool`) then gives a map that only
turns with the input; global average pooling on top gives rotation invariance.

Layout: a p4 feature map is an ordinary tensor whose channels come in groups of
four, ``(N, C * 4, H, W)`` or ``(N, C * 4, D, H, W)`` with channel ``c * 4 + r``
for orientation ``r``, so ReLU, max-pooling and ``nn.Sequential`` work unchanged.

``P4Conv3d`` rotates about the z axis, in the (y, x) plane: on axial CT or MRI
the patient lies along z, so in-plane rotation is the plausible symmetry
(positioning, lesion orientation), and thick slices make rotations that tilt z
neither exact on the voxel grid nor plausible anatomically.

Taught in ``notebooks/04_symmetry.ipynb``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["P4Conv2d", "P4Conv3d", "P4BatchNorm", "P4CNN", "rotate_p4", "p4_pool"]

ROTATIONS = 4
_PLANE = (-2, -1)   # rotations act on the last two axes: (y, x)


def rotate_p4(y: torch.Tensor, k: int = 1) -> torch.Tensor:
    """How a p4 feature map transforms when the input turns by ``k`` x 90 degrees:
    every map turns and orientation r moves to r + k."""
    n, c4 = y.shape[:2]
    if c4 % ROTATIONS:
        raise ValueError(f"y: expected channels in groups of {ROTATIONS}, got shape {tuple(y.shape)}")
    g = y.reshape(n, c4 // ROTATIONS, ROTATIONS, *y.shape[2:])      # (N, C, 4, ..., H, W)
    g = torch.roll(g, shifts=k, dims=2)
    return torch.rot90(g, k, dims=_PLANE).reshape(y.shape)


def p4_pool(y: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """Pool over the four orientations: (N, C * 4, ...) -> (N, C, ...), which only turns with the input."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"reduce: expected 'max' or 'mean', got {reduce!r}")
    g = y.reshape(y.shape[0], -1, ROTATIONS, *y.shape[2:])          # (N, C, 4, ..., H, W)
    return g.amax(2) if reduce == "max" else g.mean(2)


class _P4Conv(nn.Module):
    """Shared code of P4Conv2d / P4Conv3d; ``dims`` is 2 or 3."""

    dims = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, lifting: bool = False,
                 padding: int | None = None, bias: bool = True):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("kernel_size", kernel_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        self.in_channels, self.out_channels, self.lifting = in_channels, out_channels, lifting
        self.kernel_size = (kernel_size,) * self.dims
        self.padding = kernel_size // 2 if padding is None else padding
        # lifting: one filter per (out, in) on the image; group conv: one per (out, in, orientation)
        in_orient = 1 if lifting else ROTATIONS
        shape = (out_channels, in_channels, in_orient, *self.kernel_size)
        fan_in = in_channels * in_orient * math.prod(self.kernel_size)
        self.weight = nn.Parameter(torch.randn(shape) * math.sqrt(2.0 / fan_in))   # He init
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def rotated_filters(self) -> torch.Tensor:
        """The four turned copies of every filter, as one ordinary conv weight (C_out*4, C_in*s, k...)."""
        copies = []
        for r in range(ROTATIONS):   # orientation r: turn the filter by r and, on p4 inputs, cycle s -> s + r
            w = self.weight if self.lifting else torch.roll(self.weight, shifts=r, dims=2)
            copies.append(torch.rot90(w, r, dims=_PLANE))
        w = torch.stack(copies, dim=1)                               # (C_out, 4, C_in, s, k...)
        return w.reshape(self.out_channels * ROTATIONS, -1, *self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.in_channels * (1 if self.lifting else ROTATIONS)
        if x.dim() != self.dims + 2 or x.shape[1] != expected:
            raise ValueError(f"x: expected (N, {expected}, {'D, ' if self.dims == 3 else ''}H, W), "
                             f"got shape {tuple(x.shape)}")
        bias = None if self.bias is None else self.bias.repeat_interleave(ROTATIONS)
        conv = F.conv2d if self.dims == 2 else F.conv3d
        return conv(x, self.rotated_filters(), bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"lifting={self.lifting}, padding={self.padding}")


class P4Conv2d(_P4Conv):
    """p4 group convolution on slices. ``lifting=True`` for the first layer (image in, (N, C_out*4, H, W) out);
    later layers take and return p4 maps (N, C*4, H, W). Same weights as a plain conv with C_out filters
    (times 4 on p4 inputs), four times the MACs of a plain conv with C_out output channels."""

    dims = 2


class P4Conv3d(_P4Conv):
    """p4 group convolution on volumes, rotating about z in the (y, x) plane (see module docstring).
    ``lifting=True`` for the first layer; maps are (N, C*4, D, H, W)."""

    dims = 3


class P4BatchNorm(nn.Module):
    """BatchNorm with one mean/variance/scale per channel *shared by its four orientations*
    (per-orientation statistics would break equivariance)."""

    def __init__(self, channels: int, dims: int = 3):
        super().__init__()
        self.norm = (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        n, c4, *space = y.shape
        g = y.reshape(n, c4 // ROTATIONS, ROTATIONS * space[0], *space[1:])   # fold orientation into an axis
        return self.norm(g).reshape(y.shape)


class P4CNN(nn.Module):
    """A small rotation-invariant classifier: ``depth`` blocks of p4 conv -> p4 BatchNorm -> ReLU
    (-> 2x pooling), orientation pooling, global average pooling, linear.

    ``dims=3`` takes volumes (N, C, D, H, W) and is invariant to 90-degree turns in the (y, x) plane;
    ``dims=2`` takes slices. Logits (N, num_classes); ``.features(x)`` the pooled vector.
    Taught in ``notebooks/04_symmetry.ipynb``.
    """

    def __init__(self, dims: int = 3, *, in_channels: int = 1, num_classes: int = 1, width: int = 4,
                 depth: int = 3):
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims: expected 2 or 3, got {dims!r}")
        Conv = P4Conv3d if dims == 3 else P4Conv2d
        Pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        layers, c_in = [], in_channels
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [Conv(c_in, c_out, 3, lifting=(i == 0), bias=False), P4BatchNorm(c_out, dims), nn.ReLU()]
            if i < depth - 1:
                layers.append(Pool(2))   # 2x pooling commutes with 90-degree turns on even sizes
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.dims, self.num_features = dims, c_in
        self.head = nn.Linear(c_in, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = p4_pool(self.body(x))                         # (N, C, ..., H, W), turns with the input
        return y.flatten(2).mean(2)                       # (N, C): global average -> invariant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
