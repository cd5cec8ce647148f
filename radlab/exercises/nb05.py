"""Exercises of ``notebooks/05_gradient_flow.ipynb``: residual blocks, vanishing gradients, degradation.

    from radlab.exercises import nb05 as ex
    ex.q1.check(residual_block)     # write y = x + conv2(relu(conv1(x)))
    ex.q2.check(0.41)               # gradient factor per plain layer at PyTorch's default init
    ex.q3.check(-19)                # log10 of the gradient's shrinkage over a 50-layer plain net
    ex.q4.check("b")                # why the BatchNorm plain net still trains worse
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ChoiceExercise, FunctionExercise, NumberExercise

__all__ = ["q1", "q2", "q3", "q4"]


# ---------------------------------------------------------------- q1: a residual block
def _residual_block(x, conv1, conv2):
    return x + conv2(F.relu(conv1(x)))        # y = x + F(x): the identity path adds I to the Jacobian


def _block_inputs():
    gen = torch.Generator().manual_seed(505)
    cases = []
    for channels, size in ((2, 4), (3, 5), (4, 3)):
        torch.manual_seed(channels)          # hidden, reproducible weights
        conv1, conv2 = (nn.Conv3d(channels, channels, 3, padding=1) for _ in range(2))
        x = torch.randn(2, channels, size, size, size, generator=gen)   # (N, C, S, S, S)
        cases.append((x, conv1.requires_grad_(False), conv2.requires_grad_(False)))
    return cases


q1 = FunctionExercise(
    "q1",
    """Write `residual_block(x, conv1, conv2)` returning y = x + F(x) with F(x) = conv2(relu(conv1(x))).
    `x` is (N, C, D, H, W); the convolutions keep the shape. (The chapter's y = F(x) + x.)""",
    reference=_residual_block, inputs=_block_inputs,
    wrong=[(lambda x, c1, c2: c2(F.relu(c1(x))), "you return F(x) only: where is the identity path (the + x)?"),
           (lambda x, c1, c2: F.relu(x + c2(F.relu(c1(x)))),
            "you apply a ReLU after the sum; this block (like the chapter's y = F(x) + x) has none"),
           (lambda x, c1, c2: x + c2(c1(x)), "F(x) needs the ReLU between the two convolutions"),
           (lambda x, c1, c2: c2(F.relu(c1(x) + x)),
            "the skip is added after conv1; it should skip both convolutions")],
    hints=["F(x) is conv2 applied to relu(conv1(x)); torch.nn.functional.relu or torch.relu",
           "then add the input itself: y = x + F(x)"])


# ---------------------------------------------------------------- q2: the factor per layer
q2 = NumberExercise(
    "q2",
    """PyTorch's default Conv initialisation draws weights with variance 1 / (3 · fan_in). In a plain
    network of equal-width conv + ReLU layers (no norm), by what factor does one layer multiply the
    *norm* of the gradient flowing backwards, on average? (ReLU passes about half the gradient's energy.)""",
    answer=math.sqrt(1 / 6), rtol=0.03,
    wrong=[(1 / 6, "1/6 is the factor on the gradient's variance (squared norm); the norm scales as its square root"),
           (math.sqrt(1 / 3), "you left out the ReLU: it zeroes the gradient where the unit was off, half the time"),
           (1.0, "a factor of 1 is what He (Kaiming) initialisation, variance 2 / fan_in, is designed to give; "
                 "PyTorch's default is smaller"),
           (1 / 3, "that is the weight variance times fan_in; include the ReLU, then take the square root")],
    hints=["Var(grad in) = fan_out · Var(w) · (1/2) · Var(grad out) for equal widths (fan_out = fan_in)",
           "fan_in · 1/(3 fan_in) · 1/2 = 1/6 for the variance; the norm takes the square root"],
    solution="Var factor = fan · 1/(3 fan) · 1/2 = 1/6 per layer, so the norm shrinks by sqrt(1/6) ≈ 0.41 per "
             "layer. He initialisation (variance 2/fan_in) makes this factor 1.")


# ---------------------------------------------------------------- q3: a 50-layer plain net
q3 = NumberExercise(
    "q3",
    """A 50-layer plain CNN (no normalisation, PyTorch's default init) has 48 conv + ReLU layers between its
    first and its last layer. With your factor from q2, predict log10 of how much smaller the gradient
    norm is when it reaches the first layer than where it started (e.g. -3 means 1000 times smaller).""",
    answer=48 * math.log10(math.sqrt(1 / 6)), rtol=0.02,
    wrong=[(48 * math.log10(1 / 6), "you used the variance factor 1/6 per layer; the norm shrinks by its square root"),
           (50 * math.log10(math.sqrt(1 / 6)), "you counted 50 layers; 48 lie between the first and the last"),
           (0.0, "0 would mean no vanishing: true for a ResNet's identity path, not for a plain net at this init")],
    hints=["each layer multiplies the gradient norm by about sqrt(1/6)",
           "log10(sqrt(1/6) ** 48) = 48 · log10(sqrt(1/6))"],
    solution="48 · log10(sqrt(1/6)) ≈ -18.7: the first layer gets about 1e-19 of the gradient, far below the "
             "float32 round-off of its weights (about 1e-7 relative), so it does not learn. The notebook's depth "
             "sweep measures even less: zero padding on small volumes and dying ReLUs remove more signal.")


# ---------------------------------------------------------------- q4: degradation
q4 = ChoiceExercise(
    "q4",
    """With BatchNorm the 20-layer plain net's first-layer gradient does not vanish (it even grows towards
    the input), yet it reaches a higher training loss than the ResNet in the same steps. Which explanation
    fits what the notebook measured?""",
    options={"a": "its gradients still vanish, just less visibly",
             "b": "optimisation: a stack of non-linear layers struggles to learn near-identity mappings and its "
                  "gradients are large but poorly conditioned; residual blocks start close to the identity",
             "c": "it overfits: the plain net has many more parameters",
             "d": "BatchNorm is switched off during training"},
    answer="b",
    why={"a": "the measured first-layer gradient with BatchNorm is as large as the ResNet's, or larger",
         "c": "plain and residual nets here have exactly the same layers and parameter count; and this is "
              "*training* loss, which overfitting would lower, not raise",
         "d": "fit() trains in train mode, where BatchNorm normalises with each batch's statistics"},
    hints=["compare the parameter counts, and look at which curve the first-layer gradient follows",
           "He et al. (2016) call it the degradation problem: deeper plain nets have higher *training* error"],
    solution="(b): the degradation problem is about optimisation, not only vanishing gradients.")
