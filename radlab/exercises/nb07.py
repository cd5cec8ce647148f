"""Exercises for ``notebooks/07_losses.ipynb``: soft Dice by hand, choosing a loss, and two gradients.

    from radlab.exercises import nb07 as ex
    ex.q1.check(my_soft_dice)   # calls your function on hidden logits and masks
"""
from __future__ import annotations

import torch

from .. import losses as L
from . import ChoiceExercise, FunctionExercise, NumberExercise, ThoughtExercise

__all__ = ["q1", "q2", "q3", "q4", "q5"]


def _dice_inputs() -> list[tuple]:
    """Hidden test cases: several batches and channels, a sample with no lesion, extreme logits."""
    g = torch.Generator().manual_seed(7)
    cases = []
    for shape in [(2, 1, 6, 6, 6), (3, 2, 4, 5, 6), (1, 1, 8, 8, 8)]:
        logits = 4 * torch.randn(shape, generator=g)
        target = (torch.rand(shape, generator=g) < 0.1).float()
        cases.append((logits, target))
    empty = torch.zeros(2, 1, 4, 4, 4)
    empty[0, 0, 1:3, 1:3, 1:3] = 1                                       # sample 1 has no lesion
    cases.append((30 * (2 * empty - 1) + torch.linspace(-5, 5, 128).reshape(2, 1, 4, 4, 4), empty))
    return cases


def _reference_dice(logits, target):
    return L.dice_loss(logits, target, smooth=1.0)


def _wrong_no_sigmoid(logits, target):
    p = logits                                                           # forgot the sigmoid
    voxels = tuple(range(2, logits.ndim))
    return (1 - (2 * (p * target).sum(voxels) + 1) / (p.sum(voxels) + target.sum(voxels) + 1)).mean()


def _wrong_global_sum(logits, target):
    p = torch.sigmoid(logits)                                            # one Dice over the whole batch
    return 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)


def _wrong_no_smooth(logits, target):
    p = torch.sigmoid(logits)
    voxels = tuple(range(2, logits.ndim))
    return (1 - 2 * (p * target).sum(voxels) / (p.sum(voxels) + target.sum(voxels)).clamp(min=1e-12)).mean()


def _wrong_dice_not_loss(logits, target):
    return 1 - _reference_dice(logits, target)                           # the Dice score, not the loss


def _solution_dice(logits, target, smooth=1.0):
    p = torch.sigmoid(logits)                            # probabilities, (N, C, D, H, W)
    voxels = tuple(range(2, logits.ndim))                # sum over space only: one Dice per sample and channel
    overlap = (p * target).sum(voxels)                   # (N, C)
    total = p.sum(voxels) + target.sum(voxels)           # (N, C)
    return (1 - (2 * overlap + smooth) / (total + smooth)).mean()


q1 = FunctionExercise(
    "q1",
    """Write `soft_dice_loss(logits, target)`: the soft Dice loss with smoothing s = 1,
    L = 1 − (2 Σ p·y + s) / (Σ p + Σ y + s) with p = sigmoid(logits), the sums over the
    voxels of one sample and one channel, then the mean over samples and channels.
    Inputs are (N, C, D, H, W) tensors; return a 0-d tensor.""",
    reference=_reference_dice, inputs=_dice_inputs, rtol=1e-5, atol=1e-6,
    wrong=[(_wrong_no_sigmoid, "the network gives logits: turn them into probabilities first"),
           (_wrong_global_sum, "you computed one Dice for the whole batch; sum over the spatial axes only "
                               "(dims 2, 3, 4) so each sample and channel gets its own Dice, then average"),
           (_wrong_no_smooth, "close, but a sample without a lesion needs the smoothing term s = 1 "
                              "in both the numerator and the denominator"),
           (_wrong_dice_not_loss, "that is the Dice *score*; the loss is 1 minus it")],
    hints=["p = torch.sigmoid(logits); the sums run over dims (2, 3, 4)",
           "overlap = (p * target).sum(dims) has shape (N, C); so does p.sum(dims) + target.sum(dims)",
           "return (1 - (2 * overlap + 1) / (total + 1)).mean()"],
    solution=_solution_dice,
)

q2 = ChoiceExercise(
    "q2",
    """A lesion fills 0.5 % of each 64³ volume and you have a short training budget.
    Which loss do you start with, judging by this notebook's sweep?""",
    options={"a": "plain BCE: it is the maximum-likelihood loss, so it is always the right choice",
             "b": "Dice loss: its normalisation by the lesion size keeps the rare voxels "
                  "from being drowned by the background",
             "c": "MSE on the sigmoid output: it is bounded, so it is robust",
             "d": "focal loss with α = 0.25: it was designed for imbalance, so its default weights fit"},
    answer="b",
    why={"a": "BCE is a good likelihood, but each voxel counts 1/n: with 0.5 % lesion the background's "
              "gradient dominates and the sweep's BCE models predicted no lesion at all at small fractions",
         "c": "look at the gradient curves: MSE on a sigmoid has a vanishing gradient exactly when the network "
              "is confidently wrong about a lesion voxel",
         "d": "α = 0.25 *down*-weights the positives (Lin et al. pair it with γ = 2 and a prior "
              "initialisation); in the sweep focal loss with these defaults missed the small lesions"},
    hints=["Compare the sweep's Dice and sensitivity at the smallest fractions."],
    solution="(b). Dice's numerator and denominator are sums over the volume, so a lesion voxel's gradient scales "
             "with 1/(lesion size), not 1/(volume size). Check the false-positive volume and calibration, which Dice "
             "alone does not control; Dice + BCE adds a per-voxel term, but on a short budget its BCE half can "
             "hold it at 'no lesion' as well (compare the sweep's dice_bce row in the standard profile).",
)

q3 = NumberExercise(
    "q3",
    """A lesion voxel (y = 1) gets p = 0.01 from the network. What is ∂ℓ/∂x, the derivative of
    the per-voxel MSE loss ℓ = (σ(x) − y)² with respect to the logit x? (A negative number.)""",
    answer=lambda: 2 * (0.01 - 1) * 0.01 * (1 - 0.01), rtol=1e-3,
    wrong=[(0.01 - 1, "that is BCE's gradient p − y; MSE on a sigmoid picks up the factor σ'(x) = p(1 − p)"),
           (2 * (0.01 - 1), "that is the derivative with respect to p; the network moves the logit x, "
                            "so multiply by dp/dx = p(1 − p)")],
    hints=["Chain rule: ∂ℓ/∂x = ∂ℓ/∂p · dp/dx with dp/dx = p(1 − p)."],
    solution="∂ℓ/∂x = 2(p − y)·p(1 − p) = 2·(−0.99)·0.01·0.99 ≈ −0.0196, fifty times smaller than BCE's −0.99: "
             "the confidently wrong voxel barely pushes back.",
)

q4 = NumberExercise(
    "q4",
    """Weighted BCE with pos_weight w = 9 is trained on patients whose true probability of
    being positive is q = 0.1. Which predicted probability p minimises the expected loss
    q·(−w log p) + (1 − q)·(−log(1 − p))?""",
    answer=lambda: 9 * 0.1 / (9 * 0.1 + 1 - 0.1), rtol=1e-3,
    wrong=[(0.1, "that is what plain BCE asks for; the weight w multiplies the positive term"),
           (0.9, "that is w·q; set the derivative to zero and solve for p")],
    hints=["Differentiate with respect to p: −w·q/p + (1 − q)/(1 − p) = 0.",
           "p = w·q / (w·q + 1 − q)"],
    solution="p* = w·q / (w·q + 1 − q) = 0.9 / 1.8 = 0.5: weighted BCE asks for 0.5 where the truth is 0.1, "
             "which is why its ECE in the classification experiment is large. Divide the odds by w to undo it.",
)

q5 = ThoughtExercise(
    "q5",
    """In the sweep, BCE from the usual initialisation (p ≈ 0.5 everywhere) never found the smallest
    lesions. Run `E.imbalance_sweep(..., prior_init=True)`, which starts the network at
    p = lesion prevalence (Lin et al. 2017, §3.3). What changes for BCE, and for Dice, and why?""",
    solution="With the prior initialisation BCE no longer spends its short budget learning that almost every voxel "
             "is background, so its gradient is no longer dominated by the background and it starts to find lesions "
             "(try the 1 % fraction). Dice loss gets worse: at p ≈ 0.001 the sigmoid's derivative "
             "p(1 − p) is tiny, so the Dice gradient of every voxel vanishes and at 0.1 % the network can stay at "
             "'no lesion'. Much of BCE's 'imbalance problem' is an optimisation problem.",
)
