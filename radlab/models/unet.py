"""U-Net (Ronneberger et al. 2015) in 3D with switchable long skip connections.

The encoder halves the resolution at each level; the decoder doubles it back. With
``skips=True`` each decoder level concatenates the encoder maps of the same
resolution, handing the fine detail (edges) past the bottleneck; with
``skips=False`` the decoder has only the upsampled coarse maps. Taught in
``notebooks/05_gradient_flow.ipynb``.
"""
from __future__ import annotations

import torch
from torch import nn

from ._layers import ConvNormAct, check_norm, check_positive_int, kernel
from .cnn import n_inplane_blocks


class DoubleConv(nn.Sequential):
    """Two conv3 -> norm -> ReLU units: (N, C_in, ...) -> (N, C_out, ...)."""

    def __init__(self, c_in: int, c_out: int, norm="batch", k=3):
        super().__init__(ConvNormAct("3d", c_in, c_out, k, norm=norm), ConvNormAct("3d", c_out, c_out, k, norm=norm))


class UNet3D(nn.Module):
    """3D U-Net: ``levels`` resolutions of width ``width·2**level``; logits (N, out_channels, D, H, W).

    Up-sampling is a 2× transposed convolution. Inputs need sizes divisible by
    ``2**(levels - 1)``. ``anisotropic=True`` makes the first ``levels // 2`` levels
    in-plane only (1×3×3 kernels, no pooling along z).

    Parameters at default settings: 85,177.  (width 8, 3 levels, skips, BatchNorm)
    Without skips: 76,537.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1, *, width: int = 8, levels: int = 3,
                 skips: bool = True, norm="batch", anisotropic=False):
        super().__init__()
        check_positive_int(in_channels, "in_channels"), check_positive_int(out_channels, "out_channels")
        check_positive_int(width, "width"), check_positive_int(levels, "levels"), check_norm(norm)
        if not isinstance(skips, bool):
            raise TypeError(f"skips: expected a bool, got {skips!r}")
        self.in_channels, self.skips, self.levels = in_channels, skips, levels
        flat = n_inplane_blocks(anisotropic, levels)           # levels that stay in-plane
        widths = [width * 2 ** i for i in range(levels)]
        self.pool_sizes = [kernel("3d", 2, i < flat) for i in range(levels - 1)]
        self.encoder = nn.ModuleList(DoubleConv(c_in, c, norm, kernel("3d", 3, i < flat))
                                     for i, (c_in, c) in enumerate(zip([in_channels] + widths, widths)))
        self.pools = nn.ModuleList(nn.MaxPool3d(p) for p in self.pool_sizes)
        self.ups = nn.ModuleList(nn.ConvTranspose3d(widths[i + 1], widths[i], p, stride=p)
                                 for i, p in enumerate(self.pool_sizes))
        self.decoder = nn.ModuleList(DoubleConv(2 * c if skips else c, c, norm, kernel("3d", 3, i < flat))
                                     for i, c in enumerate(widths[:-1]))
        self.head = nn.Conv3d(width, out_channels, 1)          # per-voxel logits

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected (N, {self.in_channels}, D, H, W), got {got}")
        factor = torch.tensor([1, 1, 1])
        for p in self.pool_sizes:
            factor *= torch.tensor(p if isinstance(p, tuple) else (p, p, p))
        if any(s % int(f) for s, f in zip(x.shape[2:], factor)):
            raise ValueError(f"x: spatial sizes must be divisible by {tuple(factor.tolist())}, "
                             f"got {tuple(x.shape[2:])}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        saved = []
        for i, block in enumerate(self.encoder):
            x = block(x)                               # (N, width·2**i, D_i, H_i, W_i)
            if i < self.levels - 1:
                saved.append(x)
                x = self.pools[i](x)                   # halve the resolution
        for i in reversed(range(self.levels - 1)):
            x = self.ups[i](x)                         # back to level i: (N, width·2**i, D_i, H_i, W_i)
            if self.skips:
                x = torch.cat([saved[i], x], dim=1)    # long skip: (N, 2·width·2**i, ...)
            x = self.decoder[i](x)
        return self.head(x)                            # (N, out_channels, D, H, W)
