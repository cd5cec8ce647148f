"""Bias, variance and noise of a predicted probability, measured against the truth.

For a test patient with true probability p = P(y=1 | x) and a model trained on a
random training set D, the expected squared error of the predicted probability
splits exactly (the chapter's decomposition with f* = p and σ² = p(1-p)):

    E_{D,y}[(p̂_D − y)²] = p(1−p)  +  (E_D[p̂_D] − p)²  +  Var_D(p̂_D)
                           noise       bias²              variance

We estimate E_D by training R models on R independent training sets of fresh
phantom patients (not re-splits of one set) and average over a fixed test set.

Taught in ``notebooks/02_bias_variance.ipynb``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import preprocess
from ..models.stacked import StackedCNN3D, fit_stacked, independent_flips, predict_stacked

FAMILIES = ("logreg", "cnn", "cnn+aug", "bagged")


def decompose(p_hat, p_true) -> dict[str, float]:
    """Split the expected Brier score of ``p_hat`` (R models × M patients) into its three parts.

    Also returns ``brier``, E_y[(p̂ − y)²] computed directly from its definition
    with y ~ Bernoulli(p_true), averaged over models and patients: the three
    parts add up to it exactly (up to rounding).

    With only R models the plain mean over models wobbles, and that wobble inflates the
    plug-in bias² by variance / R on average. We use the unbiased estimates instead:
    variance with R − 1 in the denominator, bias² minus variance / R. Their sum is the
    same, so the parts still add up to the Brier score.
    """
    p_hat, p_true = np.asarray(p_hat, dtype=np.float64), np.asarray(p_true, dtype=np.float64)
    if p_hat.ndim != 2 or p_hat.shape[0] < 2 or p_true.shape != p_hat.shape[1:]:
        raise ValueError(f"p_hat: expected shape (R, M) with R >= 2 models and M = len(p_true), "
                         f"got {p_hat.shape} for p_true of shape {p_true.shape}")
    for name, p in (("p_hat", p_hat), ("p_true", p_true)):
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            raise ValueError(f"{name}: expected finite probabilities in [0, 1]")
    R = p_hat.shape[0]
    mean_p = p_hat.mean(axis=0)                                   # E_D[p̂] per patient, estimated
    noise = np.mean(p_true * (1 - p_true))                        # Var(y | x): no model can remove it
    variance = np.mean(p_hat.var(axis=0, ddof=1))                 # Var_D(p̂), averaged over patients
    bias2 = np.mean((mean_p - p_true) ** 2) - variance / R        # (E_D[p̂] − p)², wobble removed
    brier = np.mean(p_true * (1 - p_hat) ** 2 + (1 - p_true) * p_hat ** 2)
    return dict(noise=float(noise), bias2=float(bias2), variance=float(variance), brier=float(brier))


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    return float(np.mean([roc_auc_score(labels, s) for s in scores]))


@dataclasses.dataclass
class BiasVarianceResult:
    """One row per (family, n, capacity): the decomposition, Brier and AUC on the test set."""

    rows: pd.DataFrame
    predictions: dict = dataclasses.field(default_factory=dict, repr=False)  # key -> (R, M) p̂

    def table(self) -> pd.DataFrame:
        return self.rows.copy()

    def get(self, family: str, n: int, **where) -> pd.Series:
        """The row for one family and training-set size (``width=``/``bags=`` to pick a variant)."""
        mask = (self.rows.family == family) & (self.rows.n == n)
        for key, value in where.items():
            mask &= self.rows[key] == value
        if mask.sum() != 1:
            raise KeyError(f"expected one row for family={family!r}, n={n}, {where}; found {int(mask.sum())}")
        return self.rows[mask].iloc[0]

    def plot(self):
        """Left: stacked noise + bias² + variance bars per family and n. Right: Brier score against n."""
        import matplotlib.pyplot as plt
        rows = self.rows.assign(label=lambda d: d.family + np.where(d.width > 0, " w" + d.width.astype(str), ""))
        labels = list(dict.fromkeys(rows.label))
        sizes = sorted(rows.n.unique())
        fig, (ax_bars, ax_curve) = plt.subplots(1, 2, figsize=(12, 4.2))
        width = 0.8 / len(labels)
        for j, label in enumerate(labels):
            part = rows[rows.label == label].set_index("n").reindex(sizes)
            pos = np.arange(len(sizes)) + (j - (len(labels) - 1) / 2) * width
            bottom = np.zeros(len(sizes))
            for term, colour in (("noise", "0.8"), ("bias2", f"C{j}"), ("variance", f"C{j}")):
                ax_bars.bar(pos, part[term], width * 0.95, bottom=bottom, color=colour,
                            hatch="//" if term == "variance" else None, edgecolor="white",
                            label=f"{label}: {term}" if term != "noise" else None)
                bottom += part[term].fillna(0).to_numpy()
            ax_curve.plot(part.index, part.brier, "o-", color=f"C{j}", label=label)
        ax_bars.set_xticks(np.arange(len(sizes)), [f"n={n}" for n in sizes])
        ax_bars.set(ylabel="expected Brier score", title="noise (grey) + bias² (solid) + variance (hatched)")
        ax_bars.legend(fontsize=7, ncol=2, loc="lower right")
        ax_curve.axhline(rows.noise.iloc[0], color="0.5", ls="--", label="noise floor p(1-p)")
        ax_curve.set(xscale="log", xlabel="training-set size n", ylabel="expected Brier score",
                     title="total error against n (lower is better)")
        ax_curve.set_xticks(sizes, [str(n) for n in sizes])
        ax_curve.minorticks_off()
        ax_curve.legend(fontsize=8)
        fig.tight_layout()
        return fig


@dataclasses.dataclass
class _Data:
    """A pool of R disjoint blocks of fresh training patients and one fixed test set."""

    x: torch.Tensor        # (R, n_max, 2, c, c, c) lesion crops: image, mask
    y: torch.Tensor        # (R, n_max) labels
    features: np.ndarray   # (R, n_max, F) hand-crafted features
    truth: np.ndarray      # (R, n_max, 2) the generating scores H (hand-crafted part) and S (pattern)
    x_test: torch.Tensor   # (M, 2, c, c, c)
    y_test: np.ndarray
    p_test: np.ndarray
    f_test: np.ndarray
    truth_test: np.ndarray


@functools.lru_cache(maxsize=4)
def make_data(R: int, n_max: int, *, test_size: int, size: int, crop: int, seed: int,
              pattern_share: float) -> _Data:
    """Draw R·n_max training patients and a test set: crops, hand-crafted features, truth.

    Cached: the notebook's later cells and the panel reuse the same patients.
    """
    from .. import classical, phantoms
    kw = dict(size=size, modality="ct", task="classification", pattern_share=pattern_share)
    sets = [phantoms.make_phantoms(R * n_max, seed=seed, **kw),
            phantoms.make_phantoms(test_size, seed=seed + 1_000_003, **kw)]
    crops = [preprocess.crop_around(ph.inputs, ph.masks, crop, with_mask=True)   # (N, 2, c, c, c)
             for ph in sets]
    feats = [classical.extract_features(ph.images, ph.masks, ph.spacing).to_numpy(np.float64) for ph in sets]
    truth = [torch.stack([ph.lesion["handcrafted"], ph.lesion["pattern"]], 1).numpy() for ph in sets]
    return _Data(x=crops[0].reshape(R, n_max, *crops[0].shape[1:]), y=sets[0].labels.reshape(R, n_max),
                 features=feats[0].reshape(R, n_max, -1), truth=truth[0].reshape(R, n_max, 2),
                 x_test=crops[1], y_test=sets[1].labels.numpy(),
                 p_test=sets[1].p_true.numpy().astype(np.float64), f_test=feats[1], truth_test=truth[1])


def explained_by_features(data: _Data) -> dict[str, float]:
    """Test R² of a linear fit of each generating score on the hand-crafted features.

    ``H`` (size, contrast, spiculation) should be largely explained; ``S`` (the sign of the
    internal core/rim pattern) should not: that gap is the classical model's bias floor.
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    f_train = data.features.reshape(-1, data.features.shape[-1])
    t_train = data.truth.reshape(-1, 2)
    out = {}
    for j, name in enumerate(("H", "S")):
        fit = make_pipeline(StandardScaler(), LinearRegression()).fit(f_train, t_train[:, j])
        out[name] = float(fit.score(data.f_test, data.truth_test[:, j]))         # R² on the test set
    return out


def _fit_logreg(data: _Data, n: int) -> np.ndarray:
    from .. import classical
    preds = []
    for r in range(data.y.shape[0]):
        model = classical.classical_model("logreg").fit(data.features[r, :n], data.y[r, :n].numpy())
        preds.append(model.predict_proba(data.f_test)[:, 1])
    return np.stack(preds)                                          # (R, M)


def _fit_cnn(data: _Data, n: int, *, width: int, depth: int, epochs: int, bags: int, augment: bool,
             seed: int) -> np.ndarray:
    R = data.y.shape[0]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)                                          # the initial weights
    # Bagging: B bootstrap resamples of each training set, as R·B stacked models.
    idx = torch.randint(0, n, (R, bags, n), generator=gen) if bags > 1 else torch.arange(n).expand(R, 1, n)
    rows = torch.arange(R)[:, None, None]
    x = data.x[rows, idx].flatten(0, 1)                              # (R·B, n, C, c, c, c)
    y = data.y[rows, idx].flatten(0, 1)                              # (R·B, n)
    model = StackedCNN3D(R * bags, width=width, depth=depth, in_channels=x.shape[2])
    flips = (lambda batch: independent_flips(batch, gen)) if augment else None
    fit_stacked(model, x, y, epochs=epochs, seed=seed, augment=flips)
    p = predict_stacked(model, data.x_test)                          # (R·B, M)
    return p.reshape(R, bags, -1).mean(dim=1).numpy().astype(np.float64)   # bag average per training set


def run(families: Sequence[str] = ("logreg", "cnn"), n_sizes: Sequence[int] = (50, 200), *, R: int = 4,
        test_size: int = 300, size: int = 32, crop: int = 16, epochs: int = 20, widths: Sequence[int] = (8,),
        steps: int | None = None, depth: int = 3, bags: int = 5, pattern_share: float = 0.5,
        pool: int | None = None, seed: int = 0,
        progress: Callable[[int, int], None] | None = None) -> BiasVarianceResult:
    """Measure noise, bias² and variance for each family and training-set size ``n``.

    The CNNs read a ``crop``³ lesion-centred cube with two channels (image, mask), as in
    notebook 01. ``widths`` is the capacity knob (channels of the first block); ``bags``
    the number of bootstrap models in the ``bagged`` family. ``epochs`` is for the
    largest size (``pool``); smaller sets get ``epochs · √(pool / n)`` so they are not starved of
    optimiser steps. ``steps`` (if given) overrides this: every model gets about ``steps``
    optimiser steps of 32 patients, whatever n, so small sets are seen many times. ``pool`` (default ``max(n_sizes)``) patients per training block:
    pass the same value to several calls to share one cached data set.
    """
    unknown = set(families) - set(FAMILIES)
    if unknown or not families:
        raise ValueError(f"families: expected names from {FAMILIES}, got {list(families)}")
    if not n_sizes or min(n_sizes) < 10:
        raise ValueError(f"n_sizes: expected training-set sizes >= 10, got {list(n_sizes)}")
    pool = max(n_sizes) if pool is None else pool
    if pool < max(n_sizes):
        raise ValueError(f"pool: expected at least the largest n ({max(n_sizes)}), got {pool}")
    if not isinstance(R, int) or R < 2:
        raise ValueError(f"R: expected an int >= 2 training sets to measure a variance, got {R!r}")
    if not 0 <= pattern_share <= 1:
        raise ValueError(f"pattern_share: expected a float in [0, 1], got {pattern_share}")
    data = make_data(R, pool, test_size=test_size, size=size, crop=crop, seed=seed, pattern_share=pattern_share)
    jobs = [(f, n, w) for n in n_sizes for f in families for w in (widths if f != "logreg" else (0,))]
    rows, predictions = [], {}
    for k, (family, n, width) in enumerate(jobs):
        if family == "logreg":
            p_hat = _fit_logreg(data, n)
        else:
            n_epochs = (math.ceil(steps / math.ceil(n / 32)) if steps else
                        max(2, round(epochs * math.sqrt(pool / n))))
            p_hat = _fit_cnn(data, n, width=width, depth=depth, epochs=n_epochs, augment=family == "cnn+aug",
                             bags=bags if family == "bagged" else 1, seed=seed + 7919 * n + width)
        parts = decompose(p_hat, data.p_test)
        rows.append(dict(family=family, n=n, width=width, bags=bags if family == "bagged" else 1, **parts,
                         auc=_auc(data.y_test, p_hat)))
        predictions[(family, n, width)] = p_hat
        if progress is not None:
            progress(k + 1, len(jobs))
    return BiasVarianceResult(pd.DataFrame(rows), predictions)


def explore(n: int = 120, width: int = 8, augment: bool = False, bags: int = 1, R: int = 3, steps: int = 120,
            pool: int = 360, seed: int = 0, progress: Callable[[int, int], None] | None = None
            ) -> BiasVarianceResult:
    """One training-set size, logistic regression against one CNN variant: the panel of notebook 02.

    ``bags > 1`` bags the CNN (``augment`` then does not apply); the patients are those of
    the notebook's experiment when ``R``, ``pool`` and ``seed`` match (cached).
    """
    if not 10 <= n <= pool:
        raise ValueError(f"n: expected an int in [10, pool={pool}], got {n!r}")
    family = "bagged" if bags > 1 else ("cnn+aug" if augment else "cnn")
    return run(["logreg", family], [n], R=R, widths=(width,), bags=bags, steps=steps, pool=pool, seed=seed,
               test_size=200, progress=progress)
