"""Exercises for ``notebooks/03_volumetric_costs.ipynb``.

    from radlab.exercises import nb03 as ex
    ex.q1.check(answer); ex.q1.hint(); ex.q1.solution()
"""
from __future__ import annotations

from . import ChoiceExercise, FunctionExercise, NumberExercise

# ---------------------------------------------------------------- q1: MACs of one layer by hand

q1 = NumberExercise(
    "q1",
    """A `nn.Conv3d(16, 32, kernel_size=3, padding=1)` runs on a batch of one 16-channel 32×32×32 feature
    map. How many multiply-accumulates (MACs) does it do? (Bias additions are not counted.)
    Check yourself afterwards with `rl.cost.profile(layer, (1, 16, 32, 32, 32)).macs`.""",
    answer=32 ** 3 * 32 * 16 * 27, rtol=1e-9,
    wrong=[(32 ** 3 * 32 * 27, "each output value sums over all 16 input channels, not one"),
           (2 * 32 ** 3 * 32 * 16 * 27, "that counts FLOPs (a multiply and an add); a MAC is the pair"),
           (32 ** 3 * 16 * 27, "count every output channel: each of the 32 filters makes its own map")],
    hints=["MACs = (output positions) × (output channels) × (input channels) × (kernel volume).",
           "'same' padding keeps 32³ output positions."],
    solution="32³ positions × 32 output channels × 16 input channels × 27 = 452,984,832 MACs.",
)

# ---------------------------------------------------------------- q2: receptive field in mm


def _rf_mm(n_layers, spacing):
    return tuple((2 * n_layers + 1) * s for s in spacing)


def _rf_mm_voxels(n_layers, spacing):
    return tuple(float(2 * n_layers + 1) for _ in spacing)


def _rf_mm_times_three(n_layers, spacing):
    return tuple(3 * n_layers * s for s in spacing)


def _rf_inputs():
    return [(1, (5.0, 0.7, 0.7)), (3, (5.0, 0.7, 0.7)), (4, (1.0, 1.0, 1.0)), (2, (3.0, 0.8, 0.8))]


q2 = FunctionExercise(
    "q2",
    """Write `rf_mm(n_layers, spacing)`: the receptive field in mm, a (z, y, x) tuple, of `n_layers`
    stacked 3×3×3 convolutions (stride 1, no pooling) on voxels of `spacing` (z, y, x) mm.
    The notebook's table gives two values to test against: (15, 2.1, 2.1) and (35, 4.9, 4.9).""",
    reference=_rf_mm, inputs=_rf_inputs,
    wrong=[(_rf_mm_voxels, "that is the field in voxels; multiply by the spacing of each axis"),
           (_rf_mm_times_three, "stacked layers overlap: each extra 3×3×3 layer adds 2 voxels, not 3")],
    hints=["One 3×3×3 layer sees 3 voxels per axis; each further layer adds 1 voxel on each side.",
           "In voxels: 2·n_layers + 1. Then multiply by each axis's spacing."],
)

# ---------------------------------------------------------------- q3: the memory rule

q3 = NumberExercise(
    "q3",
    """One 3×3×3 conv layer with 8 output channels runs on a 48×128×128 volume; the matching 3×3 layer
    runs on ONE 128×128 slice. How many times more activation memory does the 3D layer's output take?""",
    answer=48.0, rtol=1e-9,
    wrong=[(27 / 9, "that is the ratio of kernel sizes (MACs per output), not of feature-map sizes"),
           (48 * 3.0, "the kernel size does not change the output map's size")],
    hints=["Both layers keep 8 maps; compare the number of positions in one map."],
    solution="8·48·128·128 / (8·128·128) = 48 = D: the chapter's '≈ D times' rule, exact for one layer.",
)

# ---------------------------------------------------------------- q4: a spacing fix under a memory budget

q4 = ChoiceExercise(
    "q4",
    """Your CT has 60 slices of 512×512 at (5, 0.7, 0.7) mm. A 3D CNN on the native grid trains at
    batch 2 using about 6 GB of your 16 GB T4. You want receptive fields that are not 7× longer in z
    than in-plane. Which fix keeps you on the T4 at batch 2?""",
    options={"a": "resample to 0.7 mm isotropic and keep the same network",
             "b": "keep the native grid; make the first layers 1×3×3 with in-plane-only pooling until the "
                  "in-plane step reaches about 5 mm",
             "c": "resample to 5 mm isotropic",
             "d": "switch to 3×3×3 kernels with dilation 2"},
    answer="b",
    why={"a": "5 / 0.7 ≈ 7 times more slices: about 7× the activations, far beyond the T4",
         "c": "fits, but throws away the in-plane detail (0.7 → 5 mm) that lesions live in",
         "d": "dilation widens the field on every axis alike, so z stays 7× longer in mm"},
    hints=["Compare the number of voxels each option creates; memory grows with it.",
           "Use rl.experiments.volumetric.receptive_fields to see the fields in mm."],
    solution="(b): in-plane-first layers keep z unpooled a little longer (about 1.5× the activations in "
             "the notebook's table, so roughly 9 GB) and make the receptive field nearly isotropic in mm; "
             "resampling to 0.7 mm multiplies the voxels (and memory) by about 7.",
)
