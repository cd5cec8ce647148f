"""Loss functions for regression, classification and segmentation, written to be read.

Every loss takes the network's raw output (``logits``, before any sigmoid) and a
target of the same shape, and returns a scalar (or per-element / per-sample
values with ``reduction="none"``). Each body mirrors the formula in its
docstring; the chapter's "Choosing the Right Objective" section is the text.

    logits (N, C, D, H, W) or (N,) for classification     target: same shape, values in [0, 1]

Numerical care, the same in every loss:

* Probabilities never appear inside a ``log``. We use ``log p = logsigmoid(x)``
  and ``log(1 - p) = logsigmoid(-x)``, which stay finite for any finite logit;
  ``torch.log(torch.sigmoid(100.0))`` is fine but ``torch.log(1 - torch.sigmoid(100.0))``
  is ``-inf``.
* Half-precision inputs (float16 / bfloat16, e.g. under mixed-precision training)
  are cast to float32 first: a sum over a 64³ volume overflows float16
  (max 65504) and bfloat16 keeps only ~3 significant digits, so Dice's global
  sums would be wrong. The returned loss is then float32; gradients flow back to the
  half-precision logits through the cast. ``torch.autocast`` does the same for
  its own losses.

Taught in ``notebooks/07_losses.ipynb``; cross-checked against MONAI and
``torch.nn.functional`` in ``tests/test_losses.py``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mse_loss", "bce_loss", "dice_loss", "focal_loss", "dice_bce_loss", "LOSSES"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_pair(logits, target, *, min_ndim: int = 1, unit_target: bool = True):
    """Validate ``logits`` and ``target``; return both in the dtype to compute in.

    That is float32 for half precision (see the module note), else the logits' own
    dtype. ``unit_target=False`` allows any finite target (regression)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target: expected a torch.Tensor, got {type(target).__name__}")
    if not logits.is_floating_point():  # also catches integer class indices passed as logits
        raise TypeError(f"logits: expected a floating-point tensor (raw network output), got dtype {logits.dtype}")
    if target.is_complex():
        raise TypeError(f"target: expected a real tensor (bool, int or float), got dtype {target.dtype}")
    if logits.shape != target.shape:
        raise ValueError(f"logits and target: expected the same shape, got logits {tuple(logits.shape)} "
                         f"and target {tuple(target.shape)}")
    if logits.ndim < min_ndim:
        raise ValueError(f"logits: expected at least {min_ndim} dimensions (N, C, *spatial), "
                         f"got shape {tuple(logits.shape)}")
    if logits.numel() == 0:
        raise ValueError(f"logits: expected a non-empty tensor, got shape {tuple(logits.shape)}")
    if not torch.isfinite(logits).all():
        raise ValueError("logits: expected finite values, got NaN or inf")
    # Half precision -> float32 (module note); float32/float64 stay as they are.
    compute_dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
    target = target.to(compute_dtype)
    if not torch.isfinite(target).all():
        raise ValueError("target: expected finite values, got NaN or inf")
    if unit_target and (target.min() < 0 or target.max() > 1):
        raise ValueError(f"target: expected values in [0, 1], got min {target.min().item()} "
                         f"and max {target.max().item()}")
    return logits.to(compute_dtype), target


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def mse_loss(pred, target, *, sigmoid: bool = False, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error  L = 1/M Σ_j (ẑ_j − z_j)²  (the chapter's regression loss).

    ``sigmoid=True`` first squashes the logits, ẑ = σ(x), to use MSE as a
    (poor) classification loss: ∂L/∂x = 2 (p − y) p (1 − p) vanishes when a
    confident prediction is wrong (p → 0 while y = 1) — notebook 07 shows why.
    For ``sigmoid=False`` ``target`` may be any finite value (regression).
    """
    z_hat, z = _check_pair(pred, target, unit_target=sigmoid)
    if sigmoid:
        z_hat = torch.sigmoid(z_hat)
    return _reduce((z_hat - z) ** 2, reduction)


def bce_loss(logits, target, *, pos_weight: float | None = None, reduction: str = "mean") -> torch.Tensor:
    """Binary cross-entropy  L = −[w y log p + (1 − y) log(1 − p)],  p = σ(x)  (the chapter's BCE).

    The negative log-likelihood of a Bernoulli label. ``pos_weight`` = w > 1
    up-weights the rare positive class ("weighted BCE"; w = n_neg / n_pos is
    the usual choice). Written with log p = logsigmoid(x), log(1 − p) =
    logsigmoid(−x): finite at any logit, equal to
    ``F.binary_cross_entropy_with_logits``.
    """
    x, y = _check_pair(logits, target)
    w = 1.0 if pos_weight is None else _positive(pos_weight, "pos_weight")
    loss = -(w * y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x))
    return _reduce(loss, reduction)


def dice_loss(logits, target, *, smooth: float = 1.0, squared: bool = False,
              reduction: str = "mean") -> torch.Tensor:
    """Soft Dice loss  L = 1 − (2 Σ_i p_i y_i + s) / (Σ_i p_i^k + Σ_i y_i^k + s),  p = σ(x)

    (Milletari et al. 2016, V-Net, eq. 1; the chapter's Dice loss with smoothing s).
    The sums run over the voxels i of one sample and one channel; the loss is the
    mean over samples and channels (``reduction="none"`` gives the (N, C) values).
    k = 1 by default, k = 2 with ``squared=True`` (Milletari's form). The
    smoothing s keeps 0/0 away when a sample has no lesion and no prediction.
    Because numerator and denominator are sums over the whole volume, the
    gradient of one voxel depends on all the others: background voxels cannot
    dominate the loss however many there are.
    """
    x, y = _check_pair(logits, target, min_ndim=3)
    s = _non_negative(smooth, "smooth")
    k = 2 if squared else 1
    p = torch.sigmoid(x)
    voxels = tuple(range(2, x.ndim))                    # reduce space only, keep (N, C)
    overlap = (p * y).sum(voxels)                       # (N, C)
    total = (p ** k).sum(voxels) + (y ** k).sum(voxels)  # (N, C)
    loss = 1 - (2 * overlap + s) / (total + s)
    return _reduce(loss, reduction)


def focal_loss(logits, target, gamma: float = 2.0, alpha: float | None = 0.25, *,
               reduction: str = "mean") -> torch.Tensor:
    """Focal loss  FL = −α_t (1 − p_t)^γ log p_t  (Lin et al. 2017, eq. 5; the chapter's focal loss).

    p_t = p for a positive voxel and 1 − p for a negative one; α_t = α for
    positives and 1 − α for negatives (``alpha=None``: no weighting). γ = 0 and
    α = None give BCE. The factor (1 − p_t)^γ shrinks the loss of easy,
    well-classified voxels. Note Lin's default α = 0.25 *down*-weights the rare
    positives: with γ = 2 the easy negatives are already suppressed. Same
    convention as ``monai.losses.FocalLoss(alpha=α, use_softmax=False)``.
    """
    x, y = _check_pair(logits, target)
    gamma = _non_negative(gamma, "gamma")
    log_pt = y * F.logsigmoid(x) + (1 - y) * F.logsigmoid(-x)  # log p_t, = −BCE
    z = (2 * y - 1) * x                                  # logit of p_t for a hard label
    modulating = torch.exp(gamma * F.logsigmoid(-z))     # (1 − p_t)^γ; exp(γ log …) has a finite gradient at γ < 1
    loss = -modulating * log_pt
    if alpha is not None:
        a = _unit_interval(alpha, "alpha")
        loss = (a * y + (1 - a) * (1 - y)) * loss       # α_t
    return _reduce(loss, reduction)


def dice_bce_loss(logits, target, *, smooth: float = 1.0, dice_weight: float = 1.0,
                  bce_weight: float = 1.0) -> torch.Tensor:
    """Dice + BCE  L = w_D · L_Dice + w_B · L_BCE  (the nnU-Net default combination).

    Dice supplies the region-level, imbalance-proof signal; BCE supplies a
    well-behaved per-voxel gradient from the first step and calibrated
    probabilities.
    """
    w_dice = _non_negative(dice_weight, "dice_weight")
    w_bce = _non_negative(bce_weight, "bce_weight")
    return w_dice * dice_loss(logits, target, smooth=smooth) + w_bce * bce_loss(logits, target)


# Name -> loss, for ``rl.train.fit(loss="dice")`` and the experiments.
LOSSES = {"mse": lambda x, y: mse_loss(x, y, sigmoid=True), "bce": bce_loss, "dice": dice_loss,
          "focal": focal_loss, "dice_bce": dice_bce_loss}


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not (
            isinstance(value, torch.Tensor) and value.numel() == 1):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name}: expected a finite number, got {value}")
    return value


def _non_negative(value, name: str) -> float:
    value = _number(value, name)
    if value < 0:
        raise ValueError(f"{name}: expected a number >= 0, got {value}")
    return value


def _positive(value, name: str) -> float:
    value = _number(value, name)
    if value <= 0:
        raise ValueError(f"{name}: expected a number > 0, got {value}")
    return value


def _unit_interval(value, name: str) -> float:
    value = _number(value, name)
    if not 0 <= value <= 1:
        raise ValueError(f"{name}: expected a float in [0, 1], got {value}")
    return value
