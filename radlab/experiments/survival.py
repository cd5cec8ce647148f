"""Survival pipelines on phantoms whose true log-hazard is known (``notebooks/09_survival.ipynb``).

:func:`run_pipelines` trains and scores, on the same patients and the same held-out set:

* ``clinical``        — linear Cox on age and stage (what the clinic already knows);
* ``features``        — hand-crafted radiomic features -> ridge Cox (the classical pipeline);
* ``deep features``   — a 3D CNN trained on the *diagnosis* label, frozen, its pooled
  features -> ridge Cox (METRICS condition #5: "No", the Cox model is a separate stage);
* ``end-to-end CNN``  — the same 3D CNN trained directly with ``rl.survival.cox_loss``;
* ``fused``           — linear Cox on the CNN's risk score plus age and stage;
* ``oracle``          — the phantoms' true log-hazard: the ceiling no model can pass.

**Mini-batches and the Cox loss.** The partial likelihood of an event compares it with
its *risk set*, everyone still followed at its time. In a mini-batch the risk set is cut
down to the batch: a batch of 8 with 2 events scores each against a handful of
neighbours, a noisy, biased estimate of the full loss (and a batch without events gives
no gradient at all). So the CNN is trained with batches large enough to hold many
events (``batch_size`` 32: about 22 events at 30% censoring), which keeps the batch
risk sets representative of the cohort; larger batches estimate the loss better but
take fewer optimiser steps per epoch, and on a CPU cost the same per epoch.

**What the CNNs see.** A cube of half the volume's edge around the lesion (from its
mask), with two channels: the image and the mask, the same help the hand-crafted
features get from the mask; random flips augment the training batches.

Every pipeline is scored on the held-out patients with Harrell's C, Uno's C (IPCW,
up to ``tau`` = the 80th percentile of test times), the integrated Brier score of the
Breslow survival curves, the mean time-dependent AUC, and the log-rank p-value
between the predicted high- and low-risk halves (median split).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .. import augment, preprocess
from .. import survival as S

PIPELINES = ("clinical", "features", "deep features", "end-to-end CNN", "fused")
CLINICAL = ("age", "stage")
COLORS = {"clinical": "tab:gray", "features": "tab:blue", "deep features": "tab:cyan",
          "end-to-end CNN": "tab:orange", "fused": "tab:red", "oracle": "black"}


# ---------------------------------------------------------------- scoring one risk score
def score_risk(risk_train, risk_test, train: tuple, test: tuple) -> dict[str, float]:
    """Harrell C, Uno C, integrated Brier score, mean AUC(t) and log-rank p of one risk score.

    ``train``/``test``: (time, event). Survival curves for the Brier score come from
    Breslow's baseline hazard fitted on the training risks.
    """
    (t_train, e_train), (t_test, e_test) = train, test
    tau = float(np.quantile(t_test, 0.8))
    grid = np.quantile(t_test[e_test], np.linspace(0.1, 0.8, 15))      # times inside follow-up
    baseline = S.breslow_baseline(risk_train, t_train, e_train)
    survival = S.predict_survival(risk_test, baseline, grid)          # (N_test, T)
    high = risk_test > np.median(risk_test)
    return {
        "harrell_c": S.concordance_index(t_test, risk_test, e_test),
        "uno_c": S.uno_c(t_train, e_train, t_test, risk_test, e_test, tau=tau),
        "ibs": S.integrated_brier_score(t_train, e_train, t_test, e_test, survival, grid),
        "mean_auc": S.cumulative_dynamic_auc(t_train, e_train, t_test, e_test, risk_test, grid)[1],
        "logrank_p": S.logrank_test(t_test, e_test, high).p_value,
    }


# ---------------------------------------------------------------- the pipelines
def _ridge_cox(X_train, X_test, train, l2, ties):
    """Impute with training medians, fit a ridge Cox, return (risk_train, risk_test)."""
    X_train, X_test = np.asarray(X_train, float), np.asarray(X_test, float)
    fill = np.nanmedian(X_train, axis=0)
    X_train = np.where(np.isfinite(X_train), X_train, fill)
    X_test = np.where(np.isfinite(X_test), X_test, fill)
    model = S.fit_cox(X_train, *train, ties=ties, l2=l2)
    return model.predict_risk(X_train), model.predict_risk(X_test)


def cnn_inputs(ph, edge: int) -> torch.Tensor:
    """Two channels per patient, cropped around the lesion: the image and its mask (N,2,e,e,e)."""
    # The classical pipeline reads the lesion through its mask, so the CNNs get the same help.
    return preprocess.crop_around(ph.inputs, ph.masks, edge, with_mask=True)


def _train_cnn(X, y, loss, *, epochs, batch_size, lr, seed, device):
    from .. import models, train as T
    torch.manual_seed(seed)
    cnn = models.CNN3D(in_channels=X.shape[1], num_classes=1).to(device)
    T.fit(cnn, (X, y), loss=loss, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
          augment=augment.random_flips, progress=False, device=device)
    return cnn


def _cox_batch_loss(ties: str) -> Callable:
    def loss(risk, target):                      # target (B, 2) = [time, event]
        return S.cox_loss(risk, target[:, 0], target[:, 1] > 0.5, ties=ties)
    return loss


@dataclasses.dataclass
class SurvivalResult:
    """Held-out scores of every pipeline, with the test risks to draw the risk groups."""

    metrics: pd.DataFrame                 # one row per pipeline (and the oracle)
    risks: dict[str, np.ndarray]          # pipeline -> held-out risk score
    time: np.ndarray                      # held-out follow-up
    event: np.ndarray
    settings: dict

    def table(self) -> pd.DataFrame:
        return self.metrics.round(4)

    def risk_groups(self, pipeline: str):
        """(KM of the low-risk half, KM of the high-risk half, log-rank result)."""
        high = self.risks[pipeline] > np.median(self.risks[pipeline])
        return (S.kaplan_meier(self.time[~high], self.event[~high]),
                S.kaplan_meier(self.time[high], self.event[high]),
                S.logrank_test(self.time, self.event, high))

    def plot(self, pipelines: Sequence[str] | None = None):
        """Kaplan-Meier curves of the predicted low/high-risk halves, one panel per pipeline."""
        import matplotlib.pyplot as plt
        names = list(pipelines or self.risks)
        cols = min(3, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), sharey=True,
                                 squeeze=False)
        for ax, name in zip(axes.flat, names):
            low, high, test = self.risk_groups(name)
            plot_km(low, ax=ax, label="predicted low risk", color="tab:blue")
            plot_km(high, ax=ax, label="predicted high risk", color="tab:red")
            ax.set_title(f"{name}: C={self.metrics.loc[name, 'harrell_c']:.2f}, p={test.p_value:.1g}", fontsize=9)
            ax.set_xlim(0, np.quantile(self.time, 0.95))         # the long, thin tail says little
            ax.set_xlabel("")
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        for row in axes:
            row[0].set_ylabel("survival")
        for ax in axes[-1]:
            ax.set_xlabel("months")
        axes.flat[0].legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        return fig


def _check_pipelines(pipelines) -> tuple[str, ...]:
    if pipelines in (None, "all"):
        return PIPELINES
    chosen = (pipelines,) if isinstance(pipelines, str) else tuple(pipelines)
    unknown = [p for p in chosen if p not in PIPELINES]
    if unknown:
        raise ValueError(f"pipelines: expected names from {PIPELINES} or 'all', got {unknown}")
    return chosen


def fit_pipelines(tr, te, chosen: Sequence[str], *, ties: str, l2: float, tick: Callable = lambda: None,
                  **cnn_kw) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fit each chosen pipeline on PhantomSet ``tr``; {name: (risk on tr, risk on te)}."""
    from .. import classical, train as T
    train = (tr.time.numpy().astype(float), tr.event.numpy())
    clinical = [p.clinical[list(CLINICAL)].to_numpy(float) for p in (tr, te)]
    fits = {}
    if "clinical" in chosen:
        fits["clinical"] = _ridge_cox(*clinical, train, l2, ties)
        tick()
    if "features" in chosen:
        phi = [classical.extract_features(p.images, p.masks, p.spacing) for p in (tr, te)]
        fits["features"] = _ridge_cox(*phi, train, l2, ties)
        tick()
    if {"deep features", "end-to-end CNN", "fused"} & set(chosen):
        edge = tr.images.shape[-1] // 2
        x = [cnn_inputs(p, edge) for p in (tr, te)]                           # (N, 2, e, e, e)
    if "deep features" in chosen:
        # A CNN trained for the diagnosis (benign/malignant) label, then frozen: deep features.
        cnn = _train_cnn(x[0], tr.labels.float(), "bce", **cnn_kw)
        fits["deep features"] = _ridge_cox(*[classical.deep_features(cnn, xi) for xi in x], train, l2, ties)
        tick()
    if {"end-to-end CNN", "fused"} & set(chosen):
        cnn = _train_cnn(x[0], tr.targets, _cox_batch_loss(ties), **cnn_kw)    # trained on the outcome
        cnn_risk = [T.predict(cnn, xi).double().numpy() for xi in x]
        if "end-to-end CNN" in chosen:
            fits["end-to-end CNN"] = tuple(cnn_risk)
            tick()
        if "fused" in chosen:
            fused = [np.column_stack([r, c]) for r, c in zip(cnn_risk, clinical)]  # (N, 1 + 2)
            fits["fused"] = _ridge_cox(*fused, train, l2, ties)
            tick()
    return fits


def run_pipelines(n_train: int = 200, n_test: int = 200, *, size: int = 32, censoring: float = 0.3,
                  pattern_share: float = 0.5, pipelines="all", ties: str = "efron", epochs: int = 12,
                  batch_size: int = 32, lr: float = 1e-2, l2: float = 0.1, seed: int = 0,
                  device=None, progress: Callable | None = None) -> SurvivalResult:
    """Train every pipeline on ``n_train`` survival phantoms, score it on ``n_test`` others.

    ``pipelines``: "all", one name or a list from :data:`PIPELINES` ("fused" needs the CNN).
    ``ties``: how the Cox loss and the Cox fits treat tied times. ``l2``: ridge penalty of
    the Cox fits on standardised columns. Notebook 09, "Three pipelines".
    """
    from .. import phantoms
    chosen = _check_pipelines(pipelines)
    if ties not in S.TIES:
        raise ValueError(f"ties: expected one of {S.TIES}, got {ties!r}")
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 20:
            raise ValueError(f"{name}: expected an int >= 20, got {value!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    done = [0]

    def tick():
        done[0] += 1
        if progress:
            progress(done[0], len(chosen) + 1)

    ph = phantoms.make_phantoms(n_train + n_test, size=size, task="survival", censoring=censoring,
                                pattern_share=pattern_share, seed=seed, device=device).to("cpu")
    tr, te = ph[np.arange(n_train)], ph[np.arange(n_train, n_train + n_test)]
    tick()
    fits = fit_pipelines(tr, te, chosen, ties=ties, l2=l2, tick=tick, epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=seed, device=device)
    fits["oracle"] = (tr.risk.double().numpy(), te.risk.double().numpy())   # the truth: the ceiling

    train, test = [(p.time.numpy().astype(float), p.event.numpy()) for p in (tr, te)]
    metrics = pd.DataFrame({name: score_risk(*risks, train, test) for name, risks in fits.items()}).T
    metrics.index.name = "pipeline"
    settings = dict(n_train=n_train, n_test=n_test, size=size, censoring=censoring, pattern_share=pattern_share,
                    ties=ties, epochs=epochs, batch_size=batch_size, lr=lr, l2=l2, seed=seed,
                    censored_test=float(1 - test[1].mean()))
    return SurvivalResult(metrics, {k: v[1] for k, v in fits.items()}, *test, settings)


# ---------------------------------------------------------------- pictures for the notebook
def plot_km(km: S.KaplanMeier, ax=None, *, label: str | None = None, color=None, ci: bool = True,
            censor_marks: bool = True):
    """Draw a Kaplan-Meier step curve (with a Greenwood ±1.96 SE band and censoring ticks)."""
    import matplotlib.pyplot as plt
    ax = ax if ax is not None else plt.subplots(figsize=(4, 3))[1]
    t = np.r_[0.0, km.times]
    s = np.r_[1.0, km.survival]
    line, = ax.step(t, s, where="post", label=label, color=color)
    if ci:
        se = np.r_[0.0, km.std_error]
        ax.fill_between(t, np.clip(s - 1.96 * se, 0, 1), np.clip(s + 1.96 * se, 0, 1), step="post",
                        color=line.get_color(), alpha=0.15, linewidth=0)
    if censor_marks:
        cens = km.censored > 0
        ax.plot(km.times[cens], km.survival[cens], "|", color=line.get_color(), markersize=6)
    ax.set_xlabel("time")
    ax.set_ylim(0, 1.02)
    return ax


def plot_timeline(time, event, *, n: int = 12, ax=None, entry=None):
    """Follow-up of ``n`` patients as bars: a dot where the event was seen, an open end if censored."""
    import matplotlib.pyplot as plt
    time, event = S._check_survival_data(time, event)
    time, event = time[:n], event[:n]
    entry = np.zeros(len(time)) if entry is None else np.asarray(entry, float)[:n]
    ax = ax if ax is not None else plt.subplots(figsize=(6, 0.3 * len(time) + 1))[1]
    for i, (t0, t, e) in enumerate(zip(entry, time, event)):
        ax.plot([t0, t0 + t], [i, i], color="tab:red" if e else "tab:gray", linewidth=2)
        ax.plot(t0 + t, i, "o" if e else ">", color="tab:red" if e else "tab:gray",
                markerfacecolor="tab:red" if e else "white")
    ax.set_yticks(range(len(time)), [f"patient {i}" for i in range(len(time))], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("time since entry")
    ax.plot([], [], "o", color="tab:red", label="event observed")
    ax.plot([], [], ">", color="tab:gray", markerfacecolor="white", label="censored: event-free when last seen")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return ax


def load_lung() -> pd.DataFrame:
    """The NCCTG advanced lung cancer data (228 patients; source in ``radlab/data/README.md``).

    Columns as in R's ``survival::lung``; ``status`` 1 = death, 0 = censored; ``time`` in days.
    """
    from importlib import resources
    with resources.files("radlab").joinpath("data/lung.csv").open("r") as f:
        return pd.read_csv(f)
