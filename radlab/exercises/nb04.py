"""Exercises for ``notebooks/04_symmetry.ipynb``.

    from radlab.exercises import nb04 as ex
    ex.q1.check(my_function); ex.q1.hint(); ex.q1.solution()
"""
from __future__ import annotations

import torch
from torch import nn

from . import ChoiceExercise, FunctionExercise, NumberExercise

# ---------------------------------------------------------------- q1: measure an equivariance error


def _equivariance_error(h, x, dy, dx):
    shifted_then_h = h(torch.roll(x, (dy, dx), dims=(-2, -1)))
    h_then_shifted = torch.roll(h(x), (dy, dx), dims=(-2, -1))
    return float((shifted_then_h - h_then_shifted).abs().max() / h_then_shifted.abs().max())


def _invariance_error(h, x, dy, dx):   # compares h(Tx) with h(x): invariance, not equivariance
    return float((h(torch.roll(x, (dy, dx), dims=(-2, -1))) - h(x)).abs().max() / h(x).abs().max())


def _equivariance_inputs():
    torch.manual_seed(4)
    with torch.no_grad():
        circular = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                                 nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular")).requires_grad_(False)
        zeros = nn.Conv2d(1, 2, 5, padding=2).requires_grad_(False)
    x = torch.randn(2, 1, 16, 16)
    return [(circular, x, 3, 5), (zeros, x, 2, -4), (zeros, x, 0, 1)]


q1 = FunctionExercise(
    "q1",
    """Write `equivariance_error(h, x, dy, dx)`: with T the shift `torch.roll(·, (dy, dx), dims=(-2, -1))`,
    return max|h(T x) − T h(x)| / max|T h(x)| as a float. (0 means h commutes with the shift.)""",
    reference=_equivariance_error, inputs=_equivariance_inputs, rtol=1e-4, atol=1e-6,
    wrong=[(_invariance_error, "you compared h(T x) with h(x): that tests invariance; shift h(x) too")],
    hints=["Compute both orders: shift then apply h, and apply h then shift.",
           "float((a - b).abs().max() / b.abs().max())"],
)

# ---------------------------------------------------------------- q2: what breaks translation equivariance

q2 = ChoiceExercise(
    "q2",
    """Which single change turns an exactly translation-equivariant stack of circular-padded 3×3 convs
    into one whose output can no longer follow a 1-pixel shift at all?""",
    options={"a": "adding BatchNorm after each conv (in eval mode)",
             "b": "making the second conv stride 2",
             "c": "adding ReLU after each conv",
             "d": "using 5×5 instead of 3×3 kernels"},
    answer="b",
    why={"a": "in eval mode BatchNorm is the same affine map at every position: it commutes with shifts",
         "c": "ReLU acts on each value alone, so shifting before or after gives the same result",
         "d": "a bigger kernel is still slid over every position with the same weights"},
    hints=["Look at the table: which row has a large error even with circular padding?"],
    solution="(b). After a stride-2 layer the output grid has half the positions: a 1-pixel input shift "
             "would need a half-pixel output shift, which no grid has.",
)

# ---------------------------------------------------------------- q3: what weight sharing over rotations costs

q3 = NumberExercise(
    "q3",
    """`rl.models.P4Conv2d(8, 16, 3, lifting=True)` has exactly as many weights as `nn.Conv2d(8, 16, 3)`.
    How many times the plain layer's MACs does it cost on the same input? (Check with `rl.cost.profile`.)""",
    answer=4.0, rtol=1e-9,
    wrong=[(1.0, "the weights are shared, but each filter is applied in four orientations"),
           (16.0, "count the orientations once: a lifting layer makes four maps per filter")],
    hints=["The lifting layer returns (N, 16 × 4, H, W): how many maps does the plain layer return?"],
    solution="4: the same 16 filters, each applied in 4 orientations, give 64 maps instead of 16.",
)

# ---------------------------------------------------------------- q4: building in invariance

q4 = ChoiceExercise(
    "q4",
    """You want a classifier whose prediction is exactly the same for an axial slice and the slice turned by
    90°, 180° or 270°, with no augmentation. Which design guarantees it?""",
    options={"a": "a plain CNN with global average pooling",
             "b": "p4 group convolutions, then pooling over the four orientations, then global average pooling",
             "c": "p4 group convolutions followed by a flatten and a linear layer",
             "d": "a plain CNN trained with random 90° rotations"},
    answer="b",
    why={"a": "global pooling gives invariance to shifts only; plain filters are not rotation-symmetric",
         "c": "flattening keeps where and in which orientation each value sits: the output turns, it is "
              "not invariant",
         "d": "augmentation makes the network approximately invariant on data like its training data, "
              "not exactly"},
    hints=["Equivariant layers, then a pooling over every transformed copy, give invariance."],
    solution="(b): the group convs are rotation-equivariant; pooling over orientations leaves maps that only "
             "turn, and averaging over all positions removes the turn.",
)
