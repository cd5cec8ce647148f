"""A small plain CNN in 2D, 2.5D and 3D with the same depth and width, so costs compare fairly.

Taught in ``notebooks/03_volumetric_costs.ipynb`` (2D vs 2.5D vs 3D, anisotropic
spacing) and used as "the 3D CNN" in notebooks 01 and 02.
"""
from __future__ import annotations

from torch import nn

from ._layers import Classifier, ConvNormAct, check_norm, check_positive_int, global_pool, kernel, max_pool


def n_inplane_blocks(anisotropic, depth: int) -> int:
    """How many leading blocks use in-plane-only kernels: True -> half the depth (at least 1)."""
    if isinstance(anisotropic, bool):
        return max(1, depth // 2) if anisotropic else 0
    if not isinstance(anisotropic, int) or not 0 <= anisotropic <= depth:
        raise ValueError(f"anisotropic: expected a bool or an int in [0, {depth}], got {anisotropic!r}")
    return anisotropic


class SimpleCNN(Classifier):
    """``depth`` blocks of conv3 -> norm -> ReLU (-> max-pool 2), global average pool, linear.

    Block ``i`` has ``width * 2**i`` channels; every block but the last halves the
    resolution. ``dims`` picks 3×3×3 kernels on volumes, 3×3 on slices, or 3×3 on
    ``slices`` adjacent slices stacked as channels (2.5D). With ``anisotropic=True``
    (3D only) the first ``depth // 2`` blocks use 1×3×3 kernels (z, y, x) and pool
    only in-plane, for thick-slice data such as (5, 0.7, 0.7) mm.

    Parameters at default settings: 17,641.  (3D, width 8, depth 3, BatchNorm, 1 logit)

    >>> SimpleCNN("3d")(torch.zeros(2, 1, 32, 32, 32)).shape    # (N, num_classes)
    torch.Size([2, 1])
    """

    def __init__(self, dims: str = "3d", *, in_channels: int = 1, num_classes: int = 1, width: int = 8,
                 depth: int = 3, norm="batch", anisotropic=False, slices: int = 5):
        super().__init__(dims, in_channels, slices)
        check_positive_int(width, "width"), check_positive_int(depth, "depth")
        check_positive_int(num_classes, "num_classes"), check_norm(norm)
        inplane = n_inplane_blocks(anisotropic, depth) if dims == "3d" else 0
        self.blocks = nn.ModuleList()
        c_in = self.conv_in_channels
        for i in range(depth):
            c_out = width * 2 ** i
            block = ConvNormAct(dims, c_in, c_out, kernel(dims, 3, i < inplane), norm=norm)
            if i < depth - 1:   # (N, C, D, H, W) -> (N, C, D/2, H/2, W/2); in-plane only if anisotropic
                block.add_module("pool", max_pool(dims, kernel(dims, 2, i < inplane)))
            self.blocks.append(block)
            c_in = c_out
        self.pool = global_pool(dims)
        self.head = nn.Linear(c_in, num_classes)
        self.num_features = c_in

    def encode(self, x):
        for block in self.blocks:   # (N, C, D, H, W) -> (N, 2C, D/2, H/2, W/2) -> ...
            x = block(x)
        return self.pool(x)         # (N, width·2**(depth-1))


def CNN3D(**kwargs) -> SimpleCNN:
    """``SimpleCNN("3d", ...)``: 3×3×3 kernels on (N, C, D, H, W) volumes.

    Parameters at default settings: 17,641."""
    return SimpleCNN("3d", **kwargs)


def CNN2D(**kwargs) -> SimpleCNN:
    """``SimpleCNN("2d", ...)``: 3×3 kernels on (N, C, H, W) slices (volumes: slice by slice).

    Parameters at default settings: 5,977."""
    return SimpleCNN("2d", **kwargs)


def CNN25D(**kwargs) -> SimpleCNN:
    """``SimpleCNN("2.5d", ...)``: 3×3 kernels on ``slices`` (default 5) adjacent slices as channels.

    Parameters at default settings: 6,265."""
    return SimpleCNN("2.5d", **kwargs)
