"""Losses compared: what each one asks of a voxel, and what it does to a segmentation.

Three experiments, all taught in ``notebooks/07_losses.ipynb``:

* :func:`loss_curves` — pure arithmetic: the loss and its gradient as a function
  of the predicted probability p of one positive and one negative voxel. The
  gradient is taken with respect to the voxel's *logit* (what the network
  actually moves) and multiplied by the number of voxels n, so that a per-voxel
  loss (MSE, BCE, focal) reads as its own dℓ/dx while Dice, a ratio of sums
  over the whole volume, shows its global normalisation: about 1/(2·lesion
  fraction) times larger for a small lesion.
* :func:`optimal_probability` — the probability each loss asks the network to
  output for a voxel whose true probability is q: where it sits off the
  diagonal, the trained model is miscalibrated by design.
* :func:`imbalance_sweep` and :func:`classification_imbalance` — training runs
  (a small U-Net per loss and lesion fraction; a small CNN per loss on
  imbalanced labels) scored against the phantoms' known truth.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import losses as L
from .. import preprocess

CURVE_LOSSES = ("mse", "bce", "focal", "dice")
COLORS = {"mse": "tab:gray", "bce": "tab:blue", "weighted_bce": "tab:cyan", "focal": "tab:orange",
          "dice": "tab:green", "dice_bce": "tab:olive"}


def _check_unit(value, name: str, *, open_interval: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    ok = 0 < value < 1 if open_interval else 0 <= value <= 1
    if not ok:
        raise ValueError(f"{name}: expected a float in {'(0, 1)' if open_interval else '[0, 1]'}, got {value}")
    return float(value)


def _logit(p: torch.Tensor) -> torch.Tensor:
    return torch.log(p) - torch.log1p(-p)


# --------------------------------------------------------------------------- (a) loss and gradient curves

@dataclasses.dataclass
class LossCurves:
    """Loss and per-voxel-equivalent gradient n·∂L/∂x for one voxel, per loss and voxel label."""

    p: np.ndarray                              # predicted probability of the scanned voxel
    loss: dict[tuple[str, int], np.ndarray]    # (loss name, label y) -> loss (per-voxel equivalent)
    grad: dict[tuple[str, int], np.ndarray]    # (loss name, label y) -> n · ∂L/∂x
    settings: dict

    def table(self, at: Sequence[float] = (0.01, 0.1, 0.5, 0.9, 0.99)) -> pd.DataFrame:
        """Gradient n·∂L/∂x per loss (rows) and voxel label, at a few probabilities p (columns)."""
        rows = {f"{name}, y={y}": {f"p={p:g}": self.at(name, y, p)[1] for p in at} for name, y in self.loss}
        return pd.DataFrame.from_dict(rows, orient="index")

    def curves(self) -> pd.DataFrame:
        """Long format: one row per loss, label and probability, with the loss and the gradient."""
        return pd.DataFrame([dict(loss=name, y=y, p=p, value=v, grad=g)
                             for (name, y), values in self.loss.items()
                             for p, v, g in zip(self.p, values, self.grad[(name, y)])])

    def at(self, name: str, y: int, p: float) -> tuple[float, float]:
        """(loss, gradient) of ``name`` for a voxel with label ``y`` at the grid point closest to ``p``."""
        i = int(np.argmin(np.abs(self.p - p)))
        return float(self.loss[(name, y)][i]), float(self.grad[(name, y)][i])

    def plot(self, axes=None):
        """2×2: loss (top) and |gradient| on a log scale (bottom), for a lesion voxel (left) and background (right)."""
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex=True) if axes is None else (axes.flat[0].figure, axes)
        for col, y in enumerate((1, 0)):
            for name in dict.fromkeys(n for n, _ in self.loss):
                style = dict(color=COLORS.get(name), label=name)
                axes[0, col].semilogy(self.p, self.loss[(name, y)], **style)
                axes[1, col].semilogy(self.p, np.abs(self.grad[(name, y)]), **style)
            axes[0, col].set_title(f"{'lesion voxel, y = 1' if y else 'background voxel, y = 0'}")
            axes[1, col].set_xlabel("predicted probability p of this voxel")
            axes[0, col].set_ylim(1e-4, 1e3)
            axes[1, col].set_ylim(1e-4, 1e3)
        axes[0, 0].set_ylabel("loss (per-voxel equivalent)")
        axes[1, 0].set_ylabel("|n · ∂L/∂logit|")
        axes[0, 1].legend(loc="lower right", fontsize=8)
        s = self.settings
        fig.suptitle(f"γ={s['gamma']}, α={s['alpha']}, smooth={s['smooth']}, lesion fraction="
                     f"{s['lesion_fraction']:.2%} of {s['n_voxels']} voxels\n"
                     f"Dice: every other voxel of the volume right with p_t={s['context']}", fontsize=10)
        fig.tight_layout()
        return fig


def _pointwise_curve(name: str, p: torch.Tensor, y: int, gamma: float, alpha: float | None):
    """Per-voxel loss ℓ(p) and dℓ/dx for MSE, BCE or focal (all in float64)."""
    x = _logit(p).requires_grad_(True)
    target = torch.full_like(x, float(y))
    fn = {"mse": lambda: L.mse_loss(x, target, sigmoid=True, reduction="none"),
          "bce": lambda: L.bce_loss(x, target, reduction="none"),
          "focal": lambda: L.focal_loss(x, target, gamma=gamma, alpha=alpha, reduction="none")}[name]
    loss = fn()
    (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().numpy(), grad.numpy()


def _dice_curve(p: torch.Tensor, y: int, *, n: int, n_lesion: int, smooth: float, context: float):
    """Dice loss of a volume of ``n`` voxels as voxel 0 (label ``y``) moves through ``p``; the rest at p_t=``context``.

    Returns n·(L(p) − L(p = y)) and n·∂L/∂x_0, the per-voxel equivalents (a per-voxel loss
    averaged over n voxels has exactly n·∂L/∂x_i = dℓ/dx_i).
    """
    target = torch.zeros(1, 1, n, dtype=torch.float64)   # (N=1, C=1, voxels)
    target[..., 1:n_lesion + (1 - y)] = 1                  # the other lesion voxels
    target[..., 0] = y                                      # the scanned voxel
    sure = math.log(context / (1 - context)) if context < 1 else 30.0   # logit of p_t = context
    rest = sure * (2 * target - 1)                          # every other voxel right with p_t = context
    values, grads = [], []
    for x0 in [*_logit(p).tolist(), 30.0 * (2 * y - 1)]:   # the grid, then the voxel (almost) right
        x = rest.clone()
        x[..., 0] = x0
        x.requires_grad_(True)
        loss = L.dice_loss(x, target, smooth=smooth)
        (grad,) = torch.autograd.grad(loss, x)
        values.append(loss.item())
        grads.append(grad[..., 0].item())
    values = np.array(values)
    return n * (values[:-1] - values[-1]), n * np.array(grads[:-1])


def loss_curves(*, gamma: float = 2.0, alpha: float | None = 0.25, smooth: float = 1.0,
                lesion_fraction: float = 0.01, size: int = 32, context: float = 0.99,
                losses: Sequence[str] = CURVE_LOSSES, n_points: int = 99) -> LossCurves:
    """Loss and gradient of each loss for one voxel with label 1 and one with label 0, against p.

    Dice needs the whole volume: ``size``³ voxels of which ``lesion_fraction`` are lesion;
    every voxel but the scanned one is predicted right with probability ``context``.
    """
    fraction = _check_unit(lesion_fraction, "lesion_fraction", open_interval=True)
    _check_unit(context, "context")
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size: expected an int >= 2 (volume edge in voxels), got {size!r}")
    unknown = [name for name in losses if name not in CURVE_LOSSES]
    if unknown:
        raise ValueError(f"losses: expected names from {CURVE_LOSSES}, got {unknown}")
    n = size ** 3
    n_lesion = max(1, round(fraction * n))
    p = torch.linspace(0.0, 1.0, n_points + 2, dtype=torch.float64)[1:-1]   # open interval (0, 1)
    loss, grad = {}, {}
    for name in losses:
        for y in (1, 0):
            if name == "dice":
                loss[(name, y)], grad[(name, y)] = _dice_curve(p, y, n=n, n_lesion=n_lesion, smooth=smooth,
                                                               context=context)
            else:
                loss[(name, y)], grad[(name, y)] = _pointwise_curve(name, p, y, gamma, alpha)
    settings = dict(gamma=gamma, alpha=alpha, smooth=smooth, lesion_fraction=n_lesion / n, n_voxels=n,
                    context=context)
    return LossCurves(p=p.numpy(), loss=loss, grad=grad, settings=settings)


# --------------------------------------------------------------------------- (a') which probability each loss asks for

@dataclasses.dataclass
class OptimalProbability:
    """For a voxel or patient with true probability q: the p that minimises each loss's expected value."""

    q: np.ndarray
    p_star: dict[str, np.ndarray]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"q": self.q, **self.p_star})

    def plot(self, ax=None):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4.5, 4.2)) if ax is None else (ax.figure, ax)
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls=":", label="calibrated (p = q)")
        for name, p_star in self.p_star.items():
            dashed = name == "mse" or "α=None" not in name and name.startswith("focal")
            ax.plot(self.q, p_star, label=name, color=COLORS.get(name.split(" ")[0]), ls="--" if dashed else "-")
        ax.set_xlabel("true probability q")
        ax.set_ylabel("probability the loss asks for, p*")
        ax.legend(fontsize=8)
        ax.set_title("minimiser of q·ℓ(p, 1) + (1 − q)·ℓ(p, 0)")
        fig.tight_layout()
        return fig


def optimal_probability(*, gamma: float = 2.0, alpha: float | None = 0.25, pos_weight: float = 9.0,
                        n_points: int = 49, grid: int = 4001) -> OptimalProbability:
    """argmin_p  q·ℓ(p, 1) + (1 − q)·ℓ(p, 0)  for BCE, weighted BCE, focal (with and without α) and MSE.

    A *proper* loss (BCE, MSE = Brier) is minimised at p = q; weighted BCE at
    w·q / (w·q + 1 − q); focal loss is not proper and pulls p towards 0.5 (γ)
    and towards 0 when α < 0.5. Found by brute force over a fine grid of p.
    """
    q = torch.linspace(0.0, 1.0, n_points + 2, dtype=torch.float64)[1:-1]
    p = torch.linspace(0.0, 1.0, grid + 2, dtype=torch.float64)[1:-1]
    x = _logit(p)
    ones, zeros = torch.ones_like(x), torch.zeros_like(x)
    per_label = {   # name -> (ℓ(p, 1), ℓ(p, 0)) on the grid
        "bce": lambda y: L.bce_loss(x, y, reduction="none"),
        f"weighted_bce (w={pos_weight:g})": lambda y: L.bce_loss(x, y, pos_weight=pos_weight, reduction="none"),
        f"focal (γ={gamma:g}, α=None)": lambda y: L.focal_loss(x, y, gamma=gamma, alpha=None, reduction="none"),
        "mse": lambda y: L.mse_loss(x, y, sigmoid=True, reduction="none"),
    }
    if alpha is not None:
        per_label[f"focal (γ={gamma:g}, α={alpha:g})"] = lambda y: L.focal_loss(x, y, gamma=gamma, alpha=alpha,
                                                                                  reduction="none")
    p_star = {}
    for name, loss in per_label.items():
        expected = q[:, None] * loss(ones)[None, :] + (1 - q[:, None]) * loss(zeros)[None, :]  # (Q, grid)
        p_star[name] = p[expected.argmin(dim=1)].numpy()
    return OptimalProbability(q=q.numpy(), p_star=p_star)


# --------------------------------------------------------------------------- metrics against the truth

def expected_calibration_error(prob, y, bins: int = 10) -> float:
    """ECE = Σ_b (n_b / n) · |mean(y in b) − mean(p in b)| over ``bins`` equal-width probability bins.

    (Naeini et al. 2015; Guo et al. 2017.) 0 for a calibrated model; weighted by how
    many voxels or patients fall in each bin.
    """
    prob = torch.as_tensor(prob, dtype=torch.float64).reshape(-1)
    y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
    if prob.shape != y.shape:
        raise ValueError(f"prob and y: expected the same number of values, got {prob.numel()} and {y.numel()}")
    which = (prob * bins).long().clamp(max=bins - 1)              # bin index of each prediction
    count = torch.bincount(which, minlength=bins).double()
    gap = torch.bincount(which, weights=y, minlength=bins) - torch.bincount(which, weights=prob, minlength=bins)
    return float(gap.abs().sum() / count.sum())                   # Σ_b n_b |ȳ_b − p̄_b| / n


def segmentation_scores(prob: torch.Tensor, mask: torch.Tensor, spacing, threshold: float = 0.5) -> dict:
    """Dice (mean over patients), voxel sensitivity, false-positive volume (mm³ per patient), voxel ECE."""
    pred, truth = (prob > threshold).flatten(1), mask.bool().flatten(1)          # (N, voxels)
    overlap = (pred & truth).sum(1).double()
    size = pred.sum(1) + truth.sum(1)
    dice = torch.where(size > 0, 2 * overlap / size.clamp(min=1), torch.ones_like(overlap))
    voxel_mm3 = float(np.prod(spacing))
    return dict(dice=dice.mean().item(),
                sensitivity=(overlap.sum() / truth.sum().clamp(min=1)).item(),
                fp_volume_mm3=(pred & ~truth).sum(1).double().mean().item() * voxel_mm3,
                ece=expected_calibration_error(prob, truth))


# --------------------------------------------------------------------------- (b) class-imbalance sweep

SEGMENTATION_LOSSES = {
    "mse": lambda x, y: L.mse_loss(x, y, sigmoid=True),
    "bce": L.bce_loss,
    "focal": L.focal_loss,                      # Lin's defaults γ = 2, α = 0.25
    "dice": L.dice_loss,
    "dice_bce": L.dice_bce_loss,
}


@dataclasses.dataclass
class ImbalanceSweep:
    """One row per loss, lesion fraction and seed: Dice, sensitivity, FP volume, ECE on held-out patients."""

    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Mean over seeds, one row per (fraction, loss)."""
        metrics = ["dice", "sensitivity", "fp_volume_mm3", "ece"]
        return self.rows.groupby(["fraction", "loss"], sort=False)[metrics].mean().reset_index()

    def get(self, fraction: float, loss: str, metric: str) -> np.ndarray:
        """The per-seed values of ``metric`` for one loss and fraction."""
        rows = self.rows[(self.rows.fraction == fraction) & (self.rows.loss == loss)]
        if rows.empty:
            raise KeyError(f"no rows for fraction={fraction}, loss={loss!r}")
        return rows[metric].to_numpy()

    def plot(self):
        import matplotlib.pyplot as plt
        table = self.table()
        metrics = [("dice", "Dice"), ("sensitivity", "sensitivity"), ("fp_volume_mm3", "FP volume (mm³)"),
                   ("ece", "voxel ECE")]
        fig, axes = plt.subplots(1, 4, figsize=(14, 3.4))
        for ax, (metric, label) in zip(axes, metrics):
            for name, group in table.groupby("loss", sort=False):
                ax.plot(group.fraction, group[metric], marker="o", label=name, color=COLORS.get(name))
            ax.set_xscale("log")
            ax.set_xlabel("lesion volume fraction")
            ax.set_title(label)
            if metric == "fp_volume_mm3":
                ax.set_yscale("symlog", linthresh=1.0)             # 0 (no false positive) stays on the axis
                ax.set_ylim(bottom=0)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        return fig


def imbalance_sweep(fractions: Sequence[float] = (0.001, 0.01, 0.1),
                    losses: Sequence[str] = ("bce", "focal", "dice", "dice_bce"), *, size: int = 16,
                    n_train: int = 24, n_test: int = 16, epochs: int = 10, batch_size: int = 4,
                    lr: float = 3e-2, width: int = 4, modality: str = "pet", seeds: Sequence[int] = (0,),
                    prior_init: bool = False, device="cpu", progress=None) -> ImbalanceSweep:
    """Train a small U-Net with each loss on PET phantoms whose lesions fill ``fractions`` of the volume.

    PET because every lesion is hotter than the liver, so only the lesion's size (the
    imbalance) changes along the sweep. For each seed and fraction, a fresh training set
    and the same held-out set; every loss starts from the same initial weights.
    """
    from .. import models, phantoms, train
    unknown = [name for name in losses if name not in SEGMENTATION_LOSSES]
    if unknown:
        raise ValueError(f"losses: expected names from {tuple(SEGMENTATION_LOSSES)}, got {unknown}")
    for f in fractions:
        _check_unit(f, "fractions", open_interval=True)
    rows, total = [], len(seeds) * len(fractions) * len(losses)
    for seed in seeds:
        for fraction in fractions:
            kw = dict(size=size, modality=modality, task="segmentation", lesion_fraction=fraction, device=device)
            train_set = phantoms.make_phantoms(n_train, seed=1 + seed, **kw)
            test_set = phantoms.make_phantoms(n_test, seed=10_000, **kw)
            for name in losses:
                torch.manual_seed(seed)                            # same initial weights for every loss
                net = models.UNet3D(width=width, levels=2).to(device)
                if prior_init:   # Lin et al. 2017 §3.3: start at p = prevalence everywhere
                    prevalence = train_set.masks.float().mean().item()
                    torch.nn.init.constant_(net.head.bias, math.log(prevalence / (1 - prevalence)))
                train.fit(net, train_set, loss=SEGMENTATION_LOSSES[name], epochs=epochs, lr=lr,
                          batch_size=batch_size, progress=False, seed=seed)
                prob = train.predict(net, test_set.inputs, proba=True, batch_size=n_test)   # (N, 1, D, H, W)
                scores = segmentation_scores(prob, test_set.masks.cpu(), test_set.spacing)
                rows.append(dict(seed=seed, fraction=fraction, loss=name, **scores))
                if progress is not None:
                    progress(len(rows), total)
    return ImbalanceSweep(pd.DataFrame(rows))


# --------------------------------------------------------------------------- (c) classification with rare positives

@dataclasses.dataclass
class ClassificationImbalance:
    """One row per loss and seed: AUC, ECE, Brier, mean prediction, and error against the true probability."""

    rows: pd.DataFrame
    curves: dict = dataclasses.field(default_factory=dict, repr=False)   # loss -> (p_hat, q_true) of seed 0

    def table(self) -> pd.DataFrame:
        """Mean over seeds, one row per loss."""
        return self.rows.drop(columns="seed").groupby("loss", sort=False).mean().reset_index()

    def get(self, loss: str, metric: str) -> np.ndarray:
        rows = self.rows[self.rows.loss == loss]
        if rows.empty:
            raise KeyError(f"no rows for loss={loss!r}")
        return rows[metric].to_numpy()

    def plot(self):
        """Left: predicted against true probability per test patient. Right: AUC and ECE per loss."""
        import matplotlib.pyplot as plt
        fig, (ax, bar) = plt.subplots(1, 2, figsize=(10, 3.8))
        ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls=":")
        for name, (p_hat, q) in self.curves.items():
            ax.scatter(q, p_hat, s=6, alpha=0.6, label=name, color=COLORS.get(name))
        ax.set(xlabel="true probability q (known for phantoms)", ylabel="predicted probability",
               title="calibration against the truth")
        ax.legend(fontsize=8)
        table = self.table()
        x = np.arange(len(table))
        bar.bar(x - 0.2, table.auc, 0.4, label="AUC")
        bar.bar(x + 0.2, table.ece, 0.4, label="ECE")
        bar.set_xticks(x, table.loss)
        bar.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _rare_positives(ph, prevalence: float, generator: torch.Generator):
    """Keep every negative and each positive with probability r, so that about ``prevalence`` are positive.

    Returns the subset and its true probability q' = r·q / (r·q + 1 − q) (Bayes' rule:
    the selection depends on the label only).
    """
    base = ph.labels.float().mean().item()
    r = min(1.0, prevalence / (1 - prevalence) * (1 - base) / base)   # keep rate of positives
    keep = (ph.labels == 0) | (torch.rand(len(ph), generator=generator) < r)
    q = ph.p_true[keep].double()
    return ph[keep], (r * q / (r * q + 1 - q)).float()


def lesion_patches(ph, edge: int) -> torch.Tensor:
    """(N, 1, edge, edge, edge) crops of ``ph.inputs`` centred on each lesion's centroid (its ROI, as in radiomics)."""
    return preprocess.crop_around(ph.inputs, ph.masks, edge)


def classification_imbalance(losses: Sequence[str] = ("bce", "weighted_bce", "focal"), *,
                             prevalence: float = 0.1, n_pool: int = 500, n_test_pool: int = 500,
                             size: int = 24, patch: int = 12, epochs: int = 8, batch_size: int = 32, lr: float = 1e-2,
                             modality: str = "ct", pattern_share: float = 0.0, seeds: Sequence[int] = (0,), device="cpu",
                             progress=None) -> ClassificationImbalance:
    """Train a small 3D CNN with BCE, weighted BCE (w = n_neg / n_pos) and focal loss on rare positives.

    The CNN sees a ``patch``³ crop centred on the lesion (its region of interest).
    From ``n_pool`` phantom patients (about half positive) we keep all negatives and
    enough positives for ``prevalence``; the test set is thinned the same way, so its
    true probabilities q' are known exactly and calibration is measured against them.
    """
    from sklearn.metrics import roc_auc_score

    from .. import models, phantoms, train
    prevalence = _check_unit(prevalence, "prevalence", open_interval=True)
    unknown = [name for name in losses if name not in ("bce", "weighted_bce", "focal")]
    if unknown:
        raise ValueError(f"losses: expected names from ('bce', 'weighted_bce', 'focal'), got {unknown}")
    rows, curves, total = [], {}, len(seeds) * len(losses)
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        kw = dict(size=size, modality=modality, task="classification", pattern_share=pattern_share, device=device)
        train_set, _ = _rare_positives(phantoms.make_phantoms(n_pool, seed=100 + seed, **kw), prevalence, g)
        test_set, q_test = _rare_positives(phantoms.make_phantoms(n_test_pool, seed=20_000, **kw), prevalence, g)
        x_train, x_test = lesion_patches(train_set, patch), lesion_patches(test_set, patch)   # (N, 1, p, p, p)
        y, n_pos = test_set.labels.float().cpu(), train_set.labels.sum().item()
        loss_fns = {"bce": L.bce_loss, "focal": L.focal_loss,
                    "weighted_bce": lambda x, t, w=(len(train_set) - n_pos) / n_pos: L.bce_loss(x, t, pos_weight=w)}
        for name in losses:
            torch.manual_seed(seed)                                  # same initial weights for every loss
            net = models.CNN3D().to(device)
            train.fit(net, (x_train, train_set.labels.float()), loss=loss_fns[name], epochs=epochs, lr=lr,
                      batch_size=batch_size, progress=False, seed=seed)
            p_hat = train.predict(net, x_test, proba=True).double()   # (N,)
            rows.append(dict(seed=seed, loss=name, auc=roc_auc_score(y.numpy(), p_hat.numpy()),
                             ece=expected_calibration_error(p_hat, y), brier=((p_hat - y) ** 2).mean().item(),
                             mean_p=p_hat.mean().item(), prevalence=y.mean().item(),
                             error_vs_truth=(p_hat - q_test.cpu()).abs().mean().item()))
            if seed == seeds[0]:
                curves[name] = (p_hat.numpy(), q_test.cpu().numpy())
            if progress is not None:
                progress(len(rows), total)
    return ClassificationImbalance(pd.DataFrame(rows), curves)
