"""Exercises for ``notebooks/01_end_to_end_vs_classical.ipynb``.

    from radlab.exercises import nb01 as ex
    ex.q1.check(my_entropy); ex.q1.hint(); ex.q1.solution()
"""
from __future__ import annotations

import numpy as np

from . import ChoiceExercise, FunctionExercise, NumberExercise

# ---------------------------------------------------------------- q1: a first-order feature


def _entropy(values, bin_count):
    counts = np.histogram(values, bins=bin_count)[0]   # equal bins from min to max
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def _entropy_nats(values, bin_count):
    counts = np.histogram(values, bins=bin_count)[0]
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _entropy_counts(values, bin_count):
    counts = np.histogram(values, bins=bin_count)[0].astype(float)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts)).sum())


def _entropy_inputs():
    rng = np.random.default_rng(1)
    return [(rng.normal(40, 20, 300), 32), (rng.uniform(-100, 100, 500), 8), (rng.exponential(3, 50), 16)]


q1 = FunctionExercise(
    "q1",
    """Write `entropy(values, bin_count)`: the first-order entropy of a lesion's voxel values, the
    way `rl.classical` computes `firstorder_entropy`. Bin the values into `bin_count` equal bins
    from their minimum to their maximum, turn the counts into probabilities p, and return
    -Σ p·log2(p) over the non-empty bins, as a float.""",
    reference=_entropy, inputs=_entropy_inputs,
    wrong=[(_entropy_nats, "you used the natural logarithm; radiomic entropy is in bits (log base 2)"),
           (_entropy_counts, "use probabilities p = counts / total, not the raw counts")],
    hints=["`np.histogram(values, bins=bin_count)` gives the counts of equal bins from min to max.",
           "Drop the empty bins before taking the log: 0·log 0 counts as 0."],
)

# ---------------------------------------------------------------- q2: the Brier score


def _brier(labels, proba):
    return float(np.mean((np.asarray(proba, float) - np.asarray(labels, float)) ** 2))


def _brier_root(labels, proba):
    return float(np.sqrt(_brier(labels, proba)))


def _brier_flipped(labels, proba):
    return _brier(labels, 1 - np.asarray(proba, float))


def _brier_inputs():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, 200)
    return [((rng.uniform(size=200) < p).astype(int), p), (np.array([0, 1, 1, 0]), np.array([0.1, 0.8, 0.6, 0.5]))]


q2 = FunctionExercise(
    "q2",
    """Write `brier(labels, proba)`: the Brier score of predicted probabilities `proba` of the
    event `labels == 1`, the calibration-sensitive score of the learning curve (lower is better).""",
    reference=_brier, inputs=_brier_inputs,
    wrong=[(_brier_root, "that is the root of the score; the Brier score is the mean squared error itself"),
           (_brier_flipped, "compare the probability of label 1 with the label: proba is P(label = 1)")],
    hints=["It is a mean squared error between the probability and the 0/1 label."],
)

# ---------------------------------------------------------------- q3: a reference number

q3 = NumberExercise(
    "q3",
    """A "model" that ignores the image and predicts 0.5 for every patient: what is its Brier
    score, whatever the labels? (Compare it with the curves: a Brier score above it is worse than
    knowing nothing.)""",
    answer=0.25, rtol=1e-6,
    wrong=[(0.5, "0.5 is the absolute error |p - y|; the Brier score squares it")],
    hints=["Each patient contributes (0.5 - y)², with y either 0 or 1."],
    solution="(0.5 - 0)² = (0.5 - 1)² = 0.25 for every patient, so the mean is 0.25.",
)

# ---------------------------------------------------------------- q4: METRICS #5

q4 = ChoiceExercise(
    "q4",
    """A study fine-tunes an ImageNet-pretrained DenseNet on CT: all blocks but the last stay frozen,
    the last block and a new classification head are trained on the labels, and the network's output
    is the reported prediction. What does METRICS condition #5 say?""",
    options={"a": "No: frozen layers mean the features were extracted, not learned",
             "b": "Yes: one network goes from image to prediction in one training process; frozen layers "
                  "do not change that",
             "c": "No: the network learned its filters on ImageNet, not on these images",
             "d": "Yes, but only if the frozen layers are unfrozen later"},
    answer="b",
    why={"a": "extracting features means exporting them to another model; here the network itself predicts",
         "c": "pretraining is allowed; look at what happens between the input and the output in this study",
         "d": "the rule does not ask for every layer to be trained"},
    hints=["Try it: describe the network as an rl.e2e.Stage (frozen='some') and call rl.e2e.assess."],
    solution="(b). METRICS Example #4: 'Even with frozen layers or transfer learning, the system remains "
             "end-to-end because it connects input to output in one unified training process.'",
)

# ---------------------------------------------------------------- q5: deep features

q5 = ChoiceExercise(
    "q5",
    """In the learning curve, the deep-features pipeline (frozen CNN trained on MRI phantoms, then
    logistic regression) trails the CNN trained end to end at the largest n. The best explanation?""",
    options={"a": "Logistic regression is too weak a model for any feature table",
             "b": "The frozen features were learned for another task and never saw these labels, so they "
                  "keep only what the source task needed",
             "c": "Deep features are always worse than hand-crafted features",
             "d": "The frozen CNN is deeper than the end-to-end CNN"},
    answer="b",
    why={"a": "logistic regression on the right features reaches the ceiling; the question is what the "
              "features contain",
         "c": "no law says so; it depends on the source task",
         "d": "both pipelines use the same architecture in this notebook"},
    hints=["What did the frozen CNN's weights optimise? What did the end-to-end CNN's weights optimise?"],
    solution="(b). φ is fixed in both classical variants: only f_w sees the labels. End to end, the "
             "labels shape the features themselves.",
)
