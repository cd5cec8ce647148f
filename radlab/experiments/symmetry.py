"""Symmetries built into a network: translation equivariance, invariance by pooling, p4 rotations, scale.

* :func:`translation_equivariance`: h(Tx) = T h(x), measured for circular and zero
  padding and with a stride.
* :func:`pooling_invariance`: global average pooling turns equivariance into invariance.
* :func:`rotation_equivariance`: a p4 group CNN vs a plain CNN under 90-degree turns.
* :func:`plot_feature_maps`: what the feature maps do under a shift and a rotation.
* :func:`rotation_experiment`: rotated test phantoms, plain CNN vs + augmentation vs group CNN.
* :func:`scale_demo`: a single-scale vs multi-scale (image pyramid) blob detector.

Taught in ``notebooks/04_symmetry.ipynb``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..models import CNN2D
from ..models.group import P4CNN, P4Conv2d, p4_pool, rotate_p4


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: 0 for an exact symmetry, order 1 for none."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def conv_stack(padding_mode: str = "zeros", stride: int = 1, width: int = 8, seed: int = 0) -> nn.Sequential:
    """Three random 3x3 conv + ReLU layers; ``stride`` on the second layer."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1, padding_mode=padding_mode), nn.ReLU(),
                         nn.Conv2d(width, width, 3, stride=stride, padding=1, padding_mode=padding_mode), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1, padding_mode=padding_mode))


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """The translation T: move the image by (dy, dx) pixels, wrapping around the edges."""
    return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


# ----------------------------------------------------------------------------- translations
def translation_equivariance(x: torch.Tensor, shifts: Sequence[tuple[int, int]] = ((3, 5), (2, 4)),
                             seed: int = 0) -> pd.DataFrame:
    """Relative error of h(Tx) vs T h(x) for four conv stacks, over the whole map and away from its border.

    "Away from border" keeps only outputs whose receptive field (3 layers: radius 3)
    touches neither the image edge nor the seam where the shift wrapped the image
    around. With a stride s the output can only shift by (dy/s, dx/s): an odd shift
    has no exact counterpart, so equivariance breaks.
    """
    if x.dim() != 4:
        raise ValueError(f"x: expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    rows = []
    nets = {"circular padding": conv_stack("circular", seed=seed), "zero padding": conv_stack("zeros", seed=seed),
            "zero padding, stride 2": conv_stack("zeros", stride=2, seed=seed),
            "circular padding, stride 2": conv_stack("circular", stride=2, seed=seed)}
    with torch.no_grad():
        for name, h in nets.items():
            s = 2 if "stride" in name else 1
            for dy, dx in shifts:
                out, out_shifted = h(x), h(shift(x, dy, dx))
                expected = shift(out, dy // s, dx // s)     # the best the output can do
                b = -(-(max(abs(dy), abs(dx)) + 3) // s)      # shift + receptive-field radius, in output pixels
                inner = (slice(None), slice(None), slice(b, -b), slice(b, -b))
                rows.append({"network": name, "shift": f"({dy}, {dx})",
                             "error": relative_error(out_shifted, expected),
                             "error away from border": relative_error(out_shifted[inner], expected[inner])})
    return pd.DataFrame(rows)


def pooling_invariance(x: torch.Tensor, dy: int = 3, dx: int = 5, seed: int = 0) -> pd.DataFrame:
    """Global average pooling after the conv stack: the pooled vector ignores the shift
    exactly with circular padding and nearly with zero padding."""
    rows = []
    with torch.no_grad():
        for mode in ("circular", "zeros"):
            h = conv_stack(mode, seed=seed)
            pooled, pooled_shifted = h(x).mean((2, 3)), h(shift(x, dy, dx)).mean((2, 3))   # (N, C)
            rows.append({"padding": mode, "feature maps error": relative_error(h(shift(x, dy, dx)), h(x)),
                         "pooled error": relative_error(pooled_shifted, pooled)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- rotations
def p4_stack(width: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(P4Conv2d(1, width, 3, lifting=True), nn.ReLU(), P4Conv2d(width, width, 3), nn.ReLU(),
                         P4Conv2d(width, width, 3))


def rotation_equivariance(x: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """Relative error of h(rot x) vs rot h(x) for 1, 2, 3 quarter turns: plain vs p4 group convs.

    A plain conv's maps should merely turn (``rot90``); a p4 map turns and cycles its
    orientations (``rotate_p4``); after pooling over orientations it merely turns.
    """
    plain, group = conv_stack("zeros", width=16, seed=seed), p4_stack(width=4, seed=seed)   # 16 maps each
    rows = []
    with torch.no_grad():
        for k in (1, 2, 3):
            xr = torch.rot90(x, k, dims=(-2, -1))
            rows.append({"quarter turns": k,
                         "plain CNN": relative_error(plain(xr), torch.rot90(plain(x), k, dims=(-2, -1))),
                         "p4 group CNN": relative_error(group(xr), rotate_p4(group(x), k)),
                         "p4, orientation-pooled": relative_error(p4_pool(group(xr)),
                                                                  torch.rot90(p4_pool(group(x)), k, dims=(-2, -1)))})
    return pd.DataFrame(rows)


def plot_feature_maps(image: torch.Tensor, dy: int = 4, dx: int = 6, seed: int = 0):
    """Top: a shift moves a plain conv's map along. Bottom: a 90° turn turns the p4 map but not the plain one."""
    x = image.reshape(1, 1, *image.shape[-2:]).float()
    plain, group = conv_stack("zeros", seed=seed), p4_stack(seed=seed)
    xs, xr = shift(x, dy, dx), torch.rot90(x, 1, dims=(-2, -1))

    def turn(t):
        return torch.rot90(t, 1, dims=(-2, -1))
    with torch.no_grad():
        first = lambda t: plain(t)[:, :1]             # noqa: E731  first plain feature map
        pooled = lambda t: p4_pool(group(t))[:, :1]   # noqa: E731  first orientation-pooled p4 map
        panels = [[("x", x, True), (f"T x (shift {dy},{dx})", xs, True), ("plain: h(x)", first(x), False),
                   ("plain: T h(x)", shift(first(x), dy, dx), False), ("plain: h(T x)", first(xs), False)],
                  [("rot x (90°)", xr, True), ("plain: rot h(x)", turn(first(x)), False),
                   ("plain: h(rot x)", first(xr), False), ("p4: rot h(x)", turn(pooled(x)), False),
                   ("p4: h(rot x)", pooled(xr), False)]]
    fig, axes = _fig(2, 5, figsize=(13, 5.6))
    for row, ax_row in zip(panels, axes):
        for (title, t, is_image), ax in zip(row, ax_row):
            ax.imshow(t[0, 0].numpy(), cmap="gray" if is_image else "viridis")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("equivariance: the 4th and 5th panels of a row should match (plain conv: shifts only; p4: turns too)")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- rotated test phantoms
def lesion_crops(ph, size: int = 16) -> torch.Tensor:
    """(N, 1, size, size) axial patches of ``ph.inputs`` centred on each lesion, on its largest slice."""
    masks = ph.masks[:, 0].float()                                  # (N, D, H, W)
    n, d, h, w = masks.shape
    z = masks.sum((2, 3)).argmax(1)                                 # slice with the most lesion
    idx = torch.arange(n)
    sl, ml = ph.inputs[idx, 0, z], masks[idx, z]                    # (N, H, W) each
    area = ml.sum((1, 2)).clamp_min(1)
    half = size // 2
    cy = ((ml.sum(2) * torch.arange(h)).sum(1) / area).round().long().clamp(half, h - size + half)
    cx = ((ml.sum(1) * torch.arange(w)).sum(1) / area).round().long().clamp(half, w - size + half)
    return torch.stack([sl[i, cy[i] - half:cy[i] - half + size, cx[i] - half:cx[i] - half + size]
                        for i in range(n)])[:, None]               # (N, 1, size, size)


def random_rot90(x: torch.Tensor) -> torch.Tensor:
    """Augmentation: turn each image of the batch by a random multiple of 90 degrees."""
    k = torch.randint(0, 4, (x.shape[0],), device=x.device)
    out = x.clone()
    for turns in (1, 2, 3):
        chosen = k == turns
        out[chosen] = torch.rot90(x[chosen], turns, dims=(-2, -1))
    return out


def _models(width: int) -> dict[str, tuple[nn.Module, object]]:
    """name -> (fresh model, augmentation); the plain and group CNN have about the same parameter count."""
    return {"plain CNN": (CNN2D(width=2 * width), None),
            "plain CNN + rot90 augmentation": (CNN2D(width=2 * width), random_rot90),
            "p4 group CNN": (P4CNN(2, width=width), None)}


@dataclasses.dataclass
class RotationResult:
    """One row per (model, seed): AUC on upright and on rotated test patches, prediction change."""

    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        g = self.rows.groupby("model", sort=False)
        return g.agg(params=("params", "first"), auc_upright=("auc upright", "mean"),
                     auc_rotated=("auc rotated", "mean"), auc_drop=("auc drop", "mean"),
                     mean_abs_dp=("mean |Δp| under rotation", "mean"), seeds=("seed", "count")).reset_index()

    def plot(self):
        t = self.table()
        fig, axes = _fig(1, 2, figsize=(11, 3.2))
        y = np.arange(len(t))
        axes[0].barh(y + 0.2, t["auc_upright"], 0.4, label="upright test")
        axes[0].barh(y - 0.2, t["auc_rotated"], 0.4, label="rotated test (90/180/270°)")
        axes[0].axvline(0.5, color="k", lw=0.8, ls=":")
        axes[0].set(yticks=y, yticklabels=t["model"], xlim=(0.4, 1), xlabel="test AUC (mean over seeds)")
        axes[0].legend(fontsize=8, loc="lower right")
        dp = t["mean_abs_dp"].clip(lower=1e-10)            # log axis: show exact zeros at 1e-10
        axes[1].barh(y, dp, color="tab:red", left=1e-10)
        for yi, v in zip(y, t["mean_abs_dp"]):
            axes[1].text(max(v, 1e-10) * 1.5, yi, f"{v:.1e}", va="center", fontsize=8)
        axes[1].set(yticks=y, yticklabels=[], xscale="log", xlim=(1e-10, 1), xlabel="mean |p(rot x) − p(x)| (log)")
        fig.tight_layout()
        return fig


def rotation_experiment(n_train: int, n_test: int, *, size: int = 32, crop: int = 16, epochs: int = 10,
                        lr: float = 3e-3, batch_size: int = 32, width: int = 4, lesion_fraction: float = 0.02,
                        seeds: Sequence[int] = (0,), device=None, progress: bool = False) -> RotationResult:
    """Train on upright lesion patches; test on upright and on turned (90, 180, 270°) patches."""
    from .. import phantoms, train
    rows = []
    for seed in seeds:
        ph = phantoms.make_phantoms(n_train + n_test, size=size, seed=seed, lesion_fraction=lesion_fraction)
        x, y = lesion_crops(ph, crop), ph.targets
        x_test, y_test = x[n_train:], y[n_train:]
        for name in _models(width):
            torch.manual_seed(seed)
            model, augment = _models(width)[name]
            start = time.perf_counter()
            train.fit(model, (x[:n_train], y[:n_train]), loss="bce", epochs=epochs, lr=lr, batch_size=batch_size,
                      seed=seed, augment=augment, progress=progress, device=device)
            p = train.predict(model, x_test, proba=True)
            turned = [torch.rot90(x_test, k, dims=(-2, -1)) for k in (1, 2, 3)]
            p_turned = torch.stack([train.predict(model, t, proba=True) for t in turned])   # (3, N)
            auc_up = _auc(y_test, p)
            auc_rot = float(np.mean([_auc(y_test, q) for q in p_turned]))
            rows.append({"model": name, "seed": seed, "params": sum(q.numel() for q in model.parameters()),
                         "auc upright": auc_up, "auc rotated": auc_rot, "auc drop": auc_up - auc_rot,
                         "mean |Δp| under rotation": float((p_turned - p).abs().mean()),
                         "train s": time.perf_counter() - start})
    return RotationResult(pd.DataFrame(rows))


def _auc(y: torch.Tensor, p: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y.cpu().numpy(), p.cpu().numpy()))


# ----------------------------------------------------------------------------- scale
def blob(radius: float, size: int = 48) -> torch.Tensor:
    """A bright Gaussian-edged disc of ``radius`` pixels at the centre of a size x size image."""
    ii = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    r = torch.sqrt(ii[:, None] ** 2 + ii[None, :] ** 2)
    return torch.sigmoid((radius - r) * 2.0)


def _detector(sigma: float = 2.0) -> torch.Tensor:
    """A centre-surround (difference of Gaussians) filter tuned to blobs of radius about 1.5 sigma."""
    k = int(4 * sigma) * 2 + 1
    ii = torch.arange(k, dtype=torch.float32) - k // 2
    r2 = ii[:, None] ** 2 + ii[None, :] ** 2
    g = lambda s: torch.exp(-r2 / (2 * s * s)) / (2 * torch.pi * s * s)   # noqa: E731
    return (g(sigma) - g(1.6 * sigma))[None, None]                        # (1, 1, k, k)


def scale_demo(radii: Sequence[float] = (2, 3, 4, 6, 8, 11, 16), scales: Sequence[float] = (1, 0.5, 0.25),
               size: int = 64) -> pd.DataFrame:
    """Peak response of one fixed filter to blobs of growing radius: on the image alone
    (single scale) and as the max over an image pyramid (multi-scale, shared weights)."""
    w = _detector()
    rows = []
    for radius in radii:
        x = blob(radius, size)[None, None]
        per_scale = []
        for s in scales:   # the same filter on a down-sampled copy sees the blob s times smaller
            xs = F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, antialias=True)
            per_scale.append(float(F.conv2d(xs, w, padding=w.shape[-1] // 2).max()))
        rows.append({"radius px": radius, "single scale": per_scale[0], "multi-scale (max)": max(per_scale)})
    return pd.DataFrame(rows)


def plot_scale_demo(table: pd.DataFrame):
    fig, ax = _fig(figsize=(5.5, 3.3))
    for col in ("single scale", "multi-scale (max)"):
        ax.plot(table["radius px"], table[col], "o-", label=col)
    ax.set(xscale="log", xlabel="blob radius (pixels)", ylabel="peak filter response",
           title="one filter, shared across an image pyramid")
    ax.legend()
    fig.tight_layout()
    return fig
