"""Exercises for ``notebooks/02_bias_variance.ipynb``.

    from radlab.exercises import nb02 as ex
    ex.q1.check(variance_term); ex.q1.hint(); ex.q1.solution()
"""
from __future__ import annotations

import numpy as np

from ..experiments.bias_variance import decompose
from . import ChoiceExercise, FunctionExercise, NumberExercise

# ---------------------------------------------------------------- q1: the variance term from stacked predictions


def _variance(p_hat):
    return decompose(p_hat, np.full(np.shape(p_hat)[1], 0.5))["variance"]


def _stacked_inputs():
    rng = np.random.default_rng(2)
    out = []
    for R, M in ((2, 7), (5, 40), (12, 300)):
        centre = rng.uniform(0.05, 0.95, M)
        out.append((np.clip(centre + rng.normal(0, rng.uniform(0.02, 0.2, M), (R, M)), 0, 1),))
    return out


q1 = FunctionExercise(
    "q1",
    """Write `variance_term(p_hat)`: `p_hat` is a numpy array (R, M), row r the predicted probabilities of
    the model trained on training set r for the same M test patients. Return the variance term: for each
    patient the (unbiased, R - 1 in the denominator) variance of its R predictions, averaged over patients.""",
    reference=_variance, inputs=_stacked_inputs, rtol=1e-8, atol=1e-12,
    wrong=[(lambda p: float(np.mean(p.var(axis=0))),
            "divide by R - 1, not R: with few training sets the mean over models is itself estimated "
            "(np.var(..., ddof=1))"),
           (lambda p: float(np.mean(p.var(axis=1, ddof=1))),
            "that is the spread across patients; the variance term is the spread across training sets "
            "(axis 0) for one patient"),
           (lambda p: float(np.mean(p.std(axis=0, ddof=1))),
            "that is a standard deviation; the decomposition adds variances (squared units)"),
           (lambda p: float(np.var(p.mean(axis=0), ddof=1)),
            "average the models first and you measure how patients differ, not how models disagree")],
    hints=["Axis 0 runs over the R training sets, axis 1 over the M patients.",
           "np.var(p_hat, axis=0, ddof=1) gives one number per patient; then take the mean."],
    solution="""
    def variance_term(p_hat):
        return float(np.var(p_hat, axis=0, ddof=1).mean())
    # rl.experiments.bias_variance.decompose(p_hat, p_true)["variance"] computes the same""",
)

# ---------------------------------------------------------------- q2: the noise floor

q2 = NumberExercise(
    "q2",
    """A test patient has true probability p = 0.8 of a malignant label. What is the smallest expected
    Brier score E[(p_hat - y)^2] that any model can reach on this patient?""",
    answer=0.16, rtol=1e-3,
    wrong=[(0.04, "(1 - p)^2 is the error when y = 1 only; y is 0 one time in five"),
           (0.2, "1 - p is the chance of y = 0, not the expected squared error"),
           (0.64, "p^2 is the error of predicting 0 when y = 1; the best prediction is p itself"),
           (0.0, "even a perfect model cannot foresee a coin flip: y varies for the same image")],
    hints=["The best prediction is p_hat = p. Average (p - y)^2 over y = 1 (probability p) and y = 0."],
    solution="p (1 - p)^2 + (1 - p) p^2 = p (1 - p) = 0.8 * 0.2 = 0.16: the noise term.",
)

# ---------------------------------------------------------------- q3: what bagging changes

q3 = ChoiceExercise(
    "q3",
    """Bagging averages B models, each trained on a bootstrap resample of the same training set.
    Which term of the decomposition does it aim at?""",
    options={"a": "the noise p(1-p): more models see more labels",
             "b": "the variance: the average of B partly independent fits wobbles less across training sets",
             "c": "the bias: each bootstrap model is more flexible",
             "d": "none: the bootstrap models see no new patients, so nothing changes"},
    answer="b",
    why={"a": "noise belongs to the labels, not to any model; nothing can lower it",
         "c": "a bootstrap model sees about 63 % distinct patients: alone it is a little worse, not more flexible",
         "d": "no new patients, but the resampling and the random initialisation decorrelate the B fits; "
              "averaging decorrelated fits cancels part of their disagreement"},
    hints=["Var of a mean of B equally correlated terms = rho * var + (1 - rho) * var / B."],
    solution="(b): variance. The average keeps the shared part (rho * var) and divides the rest by B; "
             "the bias is that of one bootstrap model, which is slightly worse than a model on all patients.",
)

# ---------------------------------------------------------------- q4: doubling the capacity

q4 = ChoiceExercise(
    "q4",
    """You double the width of the CNN (4x the weights in the inner layers) and keep n = 40 patients.
    Which term is the textbook answer for what grows, and what did the notebook measure?""",
    options={"a": "the bias grows; the measurement agrees",
             "b": "the variance grows (more parameters fit more of the training set's accidents); "
                  "measure it: the bias need not fall at small n",
             "c": "the noise grows",
             "d": "nothing changes: capacity only matters for the training error"},
    answer="b",
    why={"a": "more capacity can only widen the set of functions the model can represent",
         "c": "the noise p(1-p) belongs to the patients, not to the model",
         "d": "the test error's variance term is exactly where extra capacity shows up"},
    hints=["Which term depends on how much the fit changes from one training set to the next?"],
    solution="(b): the variance. Bias falls only when the extra capacity can be trained: with 40 patients "
             "and a fixed budget of steps, the wider net's average fit is not closer to p_true.",
)
