"""R independent small 3D CNNs trained side by side as one grouped network.

Measuring variance needs many models trained on many independent training sets.
Training them one after another wastes the machine on small networks; instead we
stack them: model r owns channel group r of every layer (``groups=R`` convolutions,
BatchNorm, which normalises each channel on its own and so never mixes models, and a
per-model linear head), so one forward pass runs all R models and no weight is shared
between them. Adam(W) is element-wise, so one
optimiser over the stacked weights is exactly R independent optimisers.

Channel layout: a batch for R models with C input channels each is
``(N, R·C, D, H, W)``; channels ``r·C … r·C + C − 1`` are model r's patient.

Taught in ``notebooks/02_bias_variance.ipynb`` ("Training R models at once").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class StackedCNN3D(nn.Module):
    """``models`` independent CNNs: ``depth`` blocks of conv3×3×3 → BatchNorm → ReLU.

    The first block's convolution has stride 2 (it halves the resolution at an eighth of
    the cost of conv + pool: on a CPU the first full-resolution layer dominates), blocks
    2, 3, … start with a 2× max-pool, then global average pooling and a linear
    head. Input ``(N, R·C, D, H, W)`` with C = ``in_channels``: channel group r is model
    r's own patient. Output ``(N, R)`` logits, one per model. Width doubles per block up
    to ``4 * width``. With R=1, C=2, width=8, depth=3 one model has 17,913 parameters.
    """

    def __init__(self, models: int = 1, width: int = 8, depth: int = 3, in_channels: int = 1):
        super().__init__()
        for name, value in (("models", models), ("width", width), ("depth", depth), ("in_channels", in_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        self.models, self.in_channels, layers, c_in = models, in_channels, [], in_channels
        for i in range(depth):
            c_out = width * min(2 ** i, 4)
            if i >= 2:                                  # stride-2 stem, then pool before blocks 2, 3, ...
                layers.append(nn.MaxPool3d(2))
            layers += [nn.Conv3d(models * c_in, models * c_out, 3, stride=2 if i == 0 else 1, padding=1,
                                 groups=models),
                       # Per-channel statistics: no mixing between models. (GroupNorm with one
                       # group per model, i.e. LayerNorm, learned no pattern here: test AUC 0.76
                       # against 0.85 with BatchNorm at n=360.)
                       nn.BatchNorm3d(models * c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.width_out = c_in
        # One linear head per model: weight (R, C), bias (R,).
        self.head_weight = nn.Parameter(torch.randn(models, c_in) / math.sqrt(c_in))
        self.head_bias = nn.Parameter(torch.zeros(models))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = self.models * self.in_channels
        if x.ndim != 5 or x.shape[1] != expected:
            raise ValueError(f"x: expected shape (N, {expected}, D, H, W) = (N, models·in_channels, ...), "
                             f"got {tuple(x.shape)}")
        h = self.body(x).mean(dim=(2, 3, 4))                 # (N, R·C_out) global average pool
        h = h.view(len(x), self.models, self.width_out)      # (N, R, C_out)
        return torch.einsum("nrc,rc->nr", h, self.head_weight) + self.head_bias


def independent_flips(batch: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Augment ``(B, R, C, D, H, W)``: each patient of each model is mirrored along each axis
    with probability 1/2, drawn independently (a lesion's label has no handedness)."""
    for axis in (3, 4, 5):
        flip = torch.rand(batch.shape[:2], generator=generator) < 0.5            # (B, R)
        batch = torch.where(flip[:, :, None, None, None, None], batch.flip(axis), batch)
    return batch


def fit_stacked(model: StackedCNN3D, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 3e-3,
                batch_size: int = 32, weight_decay: float = 1e-4,
                augment: Callable[[torch.Tensor], torch.Tensor] | None = None, seed: int = 0) -> list[float]:
    """Train the R stacked models, model r on its own training set ``x[r], y[r]``.

    ``x`` is ``(R, n, C, D, H, W)`` network-ready inputs, ``y`` is ``(R, n)`` 0/1
    labels. Each model draws its own shuffled mini-batches. The loss is the sum
    over models of each model's mean BCE, so each model's gradient is its own.
    ``augment`` (optional) maps a ``(B, R, C, D, H, W)`` batch to an augmented one.
    Returns the mean training loss per epoch.
    """
    if y.ndim != 2:
        raise ValueError(f"y: expected shape (R, n), got {tuple(y.shape)}")
    R, n = y.shape
    if x.ndim != 6 or x.shape[:3] != (R, n, model.in_channels):
        raise ValueError(f"x: expected shape ({R}, {n}, {model.in_channels}, D, H, W) to match y "
                         f"{tuple(y.shape)} and the model's in_channels, got {tuple(x.shape)}")
    if model.models != R:
        raise ValueError(f"model: has {model.models} stacked models but x holds {R} training sets")
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)
    rows = torch.arange(R)[:, None]
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.argsort(torch.rand(R, n, generator=gen), dim=1)   # (R, n): one shuffle per model
        total = torch.zeros(())
        for s in range(steps_per_epoch):
            idx = order[:, s * batch_size:(s + 1) * batch_size]           # (R, B)
            xb = x[rows, idx].transpose(0, 1)                            # (B, R, C, D, H, W)
            if augment is not None:
                xb = augment(xb)
            logits = model(xb.flatten(1, 2))                             # (B, R·C, D, H, W) -> (B, R)
            yb = y[rows, idx].transpose(0, 1).to(logits.dtype)           # (B, R)
            loss = F.binary_cross_entropy_with_logits(logits, yb, reduction="none").mean(0).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() / R
        losses.append(total.item() / steps_per_epoch)
    model.eval()
    return losses


@torch.no_grad()
def predict_stacked(model: StackedCNN3D, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Probabilities ``(R, M)`` of every stacked model on the same test set ``x`` ``(M, C, D, H, W)``."""
    if x.ndim != 5 or x.shape[1] != model.in_channels:
        raise ValueError(f"x: expected shape (M, {model.in_channels}, D, H, W), got {tuple(x.shape)}")
    model.eval()
    out = []
    for xb in x.split(batch_size):
        xb = xb.repeat(1, model.models, 1, 1, 1)   # (B, R·C, D, H, W): the same patients for all models
        out.append(torch.sigmoid(model(xb)))
    return torch.cat(out).T.contiguous()
