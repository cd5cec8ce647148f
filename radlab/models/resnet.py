"""ResNet with basic blocks (He et al. 2016) in 3D, 2D or 2.5D: depth 10, 18 or 34.

The residual block computes ``y = relu(F(x) + x)``, so the gradient through it is
``dL/dx = dL/dy (I + dF/dx)`` (the chapter's "gradient highway"). Taught in
``notebooks/05_gradient_flow.ipynb``; benchmarked in ``benchmarks/bench_train_cpu.py``.
"""
from __future__ import annotations

from torch import nn

from ._layers import Classifier, check_norm, check_positive_int, conv, global_pool, kernel, norm_layer
from .cnn import n_inplane_blocks

BLOCKS_PER_STAGE = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STEMS = ("lean", "classic")


class BasicBlock(nn.Module):
    """``relu(F(x) + shortcut(x))`` with F = conv3 -> norm -> ReLU -> conv3 -> norm.

    The shortcut is the identity unless the block changes resolution or width;
    then it is a strided 1×1 convolution and a norm (He et al.'s option B).
    """

    def __init__(self, dims: str, c_in: int, c_out: int, stride=1, norm="batch", k=3):
        super().__init__()
        bias = norm is None
        self.conv1 = conv(dims, c_in, c_out, k, stride, bias=bias)
        self.norm1 = norm_layer(dims, norm, c_out)
        self.act1 = nn.ReLU()
        self.conv2 = conv(dims, c_out, c_out, k, bias=bias)
        self.norm2 = norm_layer(dims, norm, c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(conv(dims, c_in, c_out, 1, stride, bias=bias),
                                          norm_layer(dims, norm, c_out))
        self.act2 = nn.ReLU()

    def forward(self, x):
        residual = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))   # F(x)
        return self.act2(residual + self.shortcut(x))


class ResNet3D(Classifier):
    """ResNet-10/18/34 of basic blocks: stem, four stages of width ``width·(1, 2, 4, 8)``, pool, linear.

    Stages 2-4 halve the resolution. ``stem="lean"`` is one 3×3×3 stride-2 convolution
    (cheap, suits 32³ phantoms); ``stem="classic"`` is the 7×7×7 stride-1 convolution
    then 3×3×3 stride-2 max-pool of 3D ResNets (Hara et al. 2018; MONAI's default).
    ``anisotropic=True`` (3D only) gives the stem and stage 1 kernels 1×3×3 (z, y, x)
    and in-plane strides. Convolutions use Kaiming (fan-out) initialisation as
    torchvision and MONAI do.

    Parameters at default settings: 2,073,489.  (ResNet-18, 3D, width 16, 1 logit)
    With ``width=64, stem="classic"`` it is MONAI's ``resnet18`` (33.2 M) up to the
    shortcut convolutions' biases.
    """

    def __init__(self, depth: int = 18, *, width: int = 16, in_channels: int = 1, num_classes: int = 1,
                 dims: str = "3d", norm="batch", anisotropic=False, stem: str = "lean", slices: int = 5):
        super().__init__(dims, in_channels, slices)
        if depth not in BLOCKS_PER_STAGE:
            raise ValueError(f"depth: expected one of {tuple(BLOCKS_PER_STAGE)}, got {depth!r}")
        if stem not in STEMS:
            raise ValueError(f"stem: expected one of {STEMS}, got {stem!r}")
        check_positive_int(width, "width"), check_positive_int(num_classes, "num_classes"), check_norm(norm)
        flat = n_inplane_blocks(anisotropic, 2) > 0 and dims == "3d"   # stem and stage 1 in-plane only
        self.stem = self._stem(stem, width, norm, flat)
        stages, c_in = [], width
        for i, n_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
            c_out = width * 2 ** i
            stride = 1 if i == 0 else 2
            k = kernel(dims, 3, flat and i == 0)
            stage = [BasicBlock(dims, c_in if b == 0 else c_out, c_out, stride if b == 0 else 1, norm, k)
                     for b in range(n_blocks)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.pool = global_pool(dims)
        self.head = nn.Linear(c_in, num_classes)
        self.num_features = c_in
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def blocks(self) -> list[BasicBlock]:
        """All basic blocks in forward order (for hooks)."""
        return [block for stage in self.stages for block in stage]

    def encode(self, x):
        x = self.stem(x)             # (N, width, S/2, S/2, S/2)
        for stage in self.stages:    # stages 2-4 halve the size and double the width
            x = stage(x)
        return self.pool(x)          # (N, 8·width)

    def _stem(self, stem: str, width: int, norm, flat: bool) -> nn.Sequential:
        d, c_in = self.dims, self.conv_in_channels
        if stem == "lean":    # (N, C, S, S, S) -> (N, width, S/2, S/2, S/2)
            return nn.Sequential(conv(d, c_in, width, kernel(d, 3, flat), kernel(d, 2, flat), bias=norm is None),
                                 norm_layer(d, norm, width), nn.ReLU())
        pool = (nn.MaxPool3d if d == "3d" else nn.MaxPool2d)(kernel(d, 3, flat), kernel(d, 2, flat),
                                                             padding=(0, 1, 1) if flat else 1)
        return nn.Sequential(conv(d, c_in, width, kernel(d, 7, flat), 1, bias=norm is None),
                             norm_layer(d, norm, width), nn.ReLU(), pool)
