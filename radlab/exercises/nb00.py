"""Exercises of ``notebooks/00_welcome.ipynb``: windows, voxel volumes, z-scores, SUV, ground truth.

In the notebook: ``from radlab.exercises import nb00 as ex``, then ``ex.q1.check(answer)``.
"""
from __future__ import annotations

import torch

from . import ChoiceExercise, FunctionExercise, NumberExercise, ThoughtExercise

q1 = NumberExercise(
    "q1", """A CT voxel reads 150 HU. What value does the soft-tissue window -100..250 HU
    (rl.preprocess.ct_window) give it? Answer with a number in [0, 1].""",
    answer=(150 - -100) / (250 - -100), rtol=0.005,
    wrong=[(150 / 350, "you divided by the window width but did not subtract the lower end (-100 HU) first"),
           (150 / 250, "divide by the window's width (hi - lo), not by its upper end"),
           (1.0, "150 HU lies inside the window, so it is not clipped to 1")],
    hints=["The window maps lo to 0 and hi to 1, linearly in between.", "(HU - lo) / (hi - lo)"],
    solution="(150 - (-100)) / (250 - (-100)) = 250 / 350 ≈ 0.714; "
             "check with rl.preprocess.ct_window(torch.tensor(150.0))")

q2 = NumberExercise(
    "q2", """A lesion mask covers 12 voxels in a scan with spacing (z, y, x) = (5, 0.8, 0.8) mm.
    What is the lesion's volume in millilitres (1 mL = 1000 mm³)?""",
    answer=12 * 5 * 0.8 * 0.8 / 1000, rtol=0.005,
    wrong=[(12 * 0.8 * 0.8 / 1000, "you left out the slice thickness: the z spacing is part of the voxel volume"),
           (12 * 5 * 0.8 / 1000, "the voxel volume is the product of all three spacings (z, y and x)"),
           (12 / 1000, "the voxels are not 1 mm³: multiply by the voxel volume from the spacing")],
    hints=["Voxel volume = z spacing × y spacing × x spacing, in mm³.", "Then divide mm³ by 1000 for mL."],
    solution="voxel volume = 5 × 0.8 × 0.8 = 3.2 mm³; 12 voxels = 38.4 mm³ = 0.0384 mL")


def _zscore_in_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Standardise `x` with the mean and standard deviation of the voxels inside `mask`."""
    inside = x[mask]
    return (x - inside.mean()) / inside.std(unbiased=False)


def _zscore_inputs():
    g = torch.Generator().manual_seed(2026)
    cases = []
    for shape, scale in (((12, 16, 16), 300.0), ((10, 20, 14), 40.0)):
        z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, n) for n in shape), indexing="ij")
        body = (y ** 2 + x ** 2) < 0.6                                # a cylinder of "body" in air
        image = torch.where(body, scale + 0.3 * scale * torch.randn(shape, generator=g), torch.zeros(shape))
        cases.append((image, body))
    return cases


q3 = FunctionExercise(
    "q3", """Write zscore_in_mask(x, mask): standardise the MRI volume x (a float tensor (D, H, W))
    using the mean and standard deviation of the voxels inside the boolean body mask only,
    and return the whole standardised volume (same shape as x).""",
    reference=_zscore_in_mask, inputs=_zscore_inputs, rtol=5e-3, atol=5e-3,
    wrong=[(lambda x, mask: (x - x.mean()) / x.std(),
            "you used the statistics of the whole volume, air included: take them from x[mask] only"),
           (lambda x, mask: x - x[mask].mean(), "you centred the values but did not divide by the standard deviation"),
           (lambda x, mask: (x[mask] - x[mask].mean()) / x[mask].std(),
            "return the whole volume (same shape as x), not only the voxels inside the mask")],
    hints=["x[mask] is a 1-D tensor of the voxels inside the mask.",
           "mean and std of x[mask], then apply them to all of x."],
    solution=_zscore_in_mask)


def _suv(activity_bq_ml: torch.Tensor, weight_kg: float, dose_bq: float) -> torch.Tensor:
    """SUV = activity [Bq/mL] x body weight [g] / injected dose [Bq]."""
    return activity_bq_ml * (weight_kg * 1000.0) / dose_bq


q4 = FunctionExercise(
    "q4", """Write suv(activity_bq_ml, weight_kg, dose_bq) that turns a PET volume in Bq/mL into
    standardised uptake values, for a patient of weight_kg kilograms injected with dose_bq becquerels.""",
    reference=_suv, rtol=1e-4,
    inputs=lambda: [(torch.linspace(0, 30_000, 60).reshape(3, 4, 5), 70.0, 2.5e8),
                    (torch.full((2, 3, 3), 4_000.0), 52.5, 1.9e8)],
    wrong=[(lambda a, w, d: a * w / d, "weight must be in grams (1 kg = 1000 g): 1 g of tissue is about 1 mL"),
           (lambda a, w, d: a * d / (w * 1000.0), "dose and weight are swapped: SUV = activity × weight / dose"),
           (lambda a, w, d: a / d, "SUV also scales with body weight: a heavier patient dilutes the dose more")],
    hints=["SUV would be 1 everywhere if the dose spread evenly through the body.",
           "activity × weight in grams / dose"],
    solution=_suv)

q5 = ChoiceExercise(
    "q5", """Later notebooks train classifiers on phantoms. Which ground truth tells you how well a
    model's predicted probabilities are calibrated, beyond what the labels can show?""",
    options={"a": "ph.labels", "b": "ph.p_true", "c": "ph.risk", "d": "ph.masks"}, answer="b",
    why={"a": "labels are 0/1 draws from p_true: a single label cannot tell whether 0.7 was the right probability",
         "c": "risk is the true log-hazard: it is the truth for survival models, not for class probabilities",
         "d": "the mask says where the lesion is: it is the truth for segmentation and for attribution maps"},
    hints=["Which quantity is itself a probability, known exactly for every patient?"],
    solution="(b) ph.p_true, the true P(label = 1 | image): compare predicted probabilities with it directly "
             "(e.g. mean squared difference), which no real data set allows.")

q6 = ThoughtExercise(
    "q6", """The 5 mm volume resampled back to 1 mm has the same grid as the isotropic one.
    Why does it still not show the lesion's shape along z, and what would you ask the radiographer for?""",
    hints=["Compare how many slices contain the lesion on each grid."],
    solution="Each 5 mm slice averages everything within its thickness (partial volume): detail along z "
             "that is smaller than the slice is gone before any software sees it. Interpolation can only "
             "guess smooth values between slice centres; it cannot restore the lost edges. Ask for thin "
             "slices (reconstructions at ~1 mm) when shape along z matters, and record the spacing of "
             "every scan: models trained on one spacing may fail on another.")
