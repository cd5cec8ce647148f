"""A small DenseNet (Huang et al. 2017): every layer sees the maps of all layers before it.

Inside a dense block layer ``k+1`` receives ``[h_0, h_1, ..., h_k]`` concatenated, so
channels grow by ``growth_rate`` per layer and early features are reused rather
than recomputed. Taught in ``notebooks/05_gradient_flow.ipynb``.
"""
from __future__ import annotations

import torch
from torch import nn

from ._layers import Classifier, check_norm, check_positive_int, conv, global_pool, kernel, norm_layer
from .cnn import n_inplane_blocks
from .deep import split_into_stages


class DenseLayer(nn.Module):
    """norm -> ReLU -> conv3 making ``growth_rate`` new maps, appended: (N, C, ...) -> (N, C + g, ...)."""

    def __init__(self, dims: str, c_in: int, growth_rate: int, norm="batch", k=3):
        super().__init__()
        self.in_channels, self.growth_rate = c_in, growth_rate
        self.norm = norm_layer(dims, norm, c_in)
        self.act = nn.ReLU()
        self.conv = conv(dims, c_in, growth_rate, k, bias=norm is None)

    def forward(self, x):
        return torch.cat([x, self.conv(self.act(self.norm(x)))], dim=1)   # feature reuse: keep x


class Transition(nn.Sequential):
    """Between dense blocks: norm -> ReLU -> 1×1 conv (compress channels) -> 2× average pool."""

    def __init__(self, dims: str, c_in: int, c_out: int, norm="batch", pool=2):
        super().__init__(norm_layer(dims, norm, c_in), nn.ReLU(), conv(dims, c_in, c_out, 1, bias=norm is None),
                         (nn.AvgPool3d if dims == "3d" else nn.AvgPool2d)(pool))


class DenseNet3D(Classifier):
    """Stem conv, dense blocks with transitions, norm -> ReLU -> global pool -> linear.

    ``depth`` counts the stem, the ``depth - 2`` dense layers (split over up to three
    blocks) and the linear head, as ResNet names count; the 1×1 transition
    convolutions are not counted. ``compression`` scales channels at each transition.
    ``.blocks`` lists every :class:`DenseLayer` in order; ``.dense_blocks`` the blocks.

    Parameters at default settings: 94,229.  (3D, depth 14, growth 8, width 16, 1 logit)
    """

    def __init__(self, depth: int = 14, *, growth_rate: int = 8, width: int = 16, compression: float = 0.5,
                 norm="batch", dims: str = "3d", in_channels: int = 1, num_classes: int = 1,
                 anisotropic=False, slices: int = 5):
        super().__init__(dims, in_channels, slices)
        check_positive_int(depth, "depth", minimum=3), check_positive_int(growth_rate, "growth_rate")
        check_positive_int(width, "width"), check_norm(norm)
        if not 0 < compression <= 1:
            raise ValueError(f"compression: expected a float in (0, 1], got {compression!r}")
        flat = n_inplane_blocks(anisotropic, 2) > 0 and dims == "3d"   # stem and block 1 in-plane only
        self.stem = conv(dims, self.conv_in_channels, width, kernel(dims, 3, flat), bias=norm is None)
        self.dense_blocks, self.transitions, c = nn.ModuleList(), nn.ModuleList(), width
        sizes = split_into_stages(depth - 2)
        for b, n_layers in enumerate(sizes):
            k = kernel(dims, 3, flat and b == 0)
            self.dense_blocks.append(nn.Sequential(
                *[DenseLayer(dims, c + i * growth_rate, growth_rate, norm, k) for i in range(n_layers)]))
            c += n_layers * growth_rate                      # concatenation grows the channels
            if b < len(sizes) - 1:
                c_out = max(1, int(c * compression))
                self.transitions.append(Transition(dims, c, c_out, norm, kernel(dims, 2, flat and b == 0)))
                c = c_out
        self.final = nn.Sequential(norm_layer(dims, norm, c), nn.ReLU(), global_pool(dims))
        self.head = nn.Linear(c, num_classes)
        self.num_features = c

    @property
    def blocks(self) -> list[DenseLayer]:
        """Every dense layer in forward order (for hooks)."""
        return [layer for block in self.dense_blocks for layer in block]

    def encode(self, x):
        x = self.stem(x)                                 # (N, width, S, S, S)
        for b, block in enumerate(self.dense_blocks):
            x = block(x)                                 # (N, C + n_layers·growth, ...)
            if b < len(self.transitions):
                x = self.transitions[b](x)               # (N, C·compression, S/2, ...)
        return self.final(x)                             # (N, num_features)
