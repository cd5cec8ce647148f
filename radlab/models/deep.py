"""Deep plain and residual 3D CNNs with a depth knob (4…64) and the same parameters.

Both have the same layers: a stem convolution, ``depth - 2`` convolutions of
constant ``width`` in three stages separated by (parameter-free) max-pooling, global
average pooling and a linear head, so ``depth`` counts weighted layers as in
"ResNet-18". The residual net adds an identity skip around every pair of
convolutions — nothing else differs, not even the parameter count. Both keep
PyTorch's default initialisation, the setting notebook 05 measures.

Taught in ``notebooks/05_gradient_flow.ipynb``.
"""
from __future__ import annotations

from torch import nn

from ._layers import Classifier, ConvNormAct, check_norm, check_positive_int, global_pool
from .resnet import BasicBlock


def split_into_stages(n_units: int, n_stages: int = 3) -> list[int]:
    """Near-equal stage lengths, earlier stages longer: 7 units -> [3, 2, 2]."""
    n_stages = min(n_stages, n_units)
    return [n_units // n_stages + (i < n_units % n_stages) for i in range(n_stages)]


def stage_starts(n_units: int) -> set[int]:
    """Indices of the units that open a new stage (a 2× max-pool goes before them)."""
    sizes = split_into_stages(n_units)
    return {sum(sizes[:i]) for i in range(1, len(sizes))}


class _DeepCNN(Classifier):
    """Shared forward of the plain and residual nets: stem, units with pools between stages, pool."""

    def encode(self, x):
        x = self.stem(x)                        # (N, width, S, S, S)
        starts = stage_starts(len(self.blocks))
        for i, block in enumerate(self.blocks):
            if i in starts:
                x = self.downsample(x)          # next stage: (N, width, S/2, S/2, S/2)
            x = block(x)
        return self.pool(x)                     # (N, width)


class PlainCNN3D(_DeepCNN):
    """``depth`` weighted layers, no skips: stem conv, ``depth - 2`` conv-norm-ReLU, linear.

    ``norm=None`` (default) or ``"batch"``. ``.blocks`` lists the ``depth - 2`` body layers in order.

    Parameters at default settings: 125,169.  (depth 20, width 16, no norm, 1 logit)
    """

    def __init__(self, depth: int = 20, *, width: int = 16, norm=None, in_channels: int = 1,
                 num_classes: int = 1):
        super().__init__("3d", in_channels)
        check_positive_int(depth, "depth", minimum=3), check_positive_int(width, "width"), check_norm(norm)
        self.stem = ConvNormAct("3d", in_channels, width, norm=norm)
        self.blocks = nn.ModuleList(ConvNormAct("3d", width, width, norm=norm) for _ in range(depth - 2))
        self.downsample, self.pool = nn.MaxPool3d(2), global_pool("3d")
        self.head = nn.Linear(width, num_classes)
        self.num_features = width


class ResidualCNN3D(_DeepCNN):
    """:class:`PlainCNN3D` with an identity skip around every pair of body convolutions.

    ``depth`` must be even (``depth - 2`` convolutions form ``(depth - 2) / 2`` basic
    blocks). Same layers and parameter count as ``PlainCNN3D(depth)``.

    Parameters at default settings: 125,169.  (depth 20, width 16, no norm, 1 logit)
    """

    def __init__(self, depth: int = 20, *, width: int = 16, norm=None, in_channels: int = 1,
                 num_classes: int = 1):
        super().__init__("3d", in_channels)
        check_positive_int(depth, "depth", minimum=4), check_positive_int(width, "width"), check_norm(norm)
        if depth % 2:
            raise ValueError(f"depth: a residual net pairs its convolutions, expected an even int, got {depth}")
        self.stem = ConvNormAct("3d", in_channels, width, norm=norm)
        self.blocks = nn.ModuleList(BasicBlock("3d", width, width, 1, norm) for _ in range((depth - 2) // 2))
        self.downsample, self.pool = nn.MaxPool3d(2), global_pool("3d")
        self.head = nn.Linear(width, num_classes)
        self.num_features = width
