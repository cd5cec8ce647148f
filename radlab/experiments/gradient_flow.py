"""Gradient flow through plain, residual, dense and U-Net architectures, measured with hooks.

The chapter's argument ("Advanced Architectures and Information Flow"), one function each:

* :class:`GradientRecorder`: forward and backward hooks (no model edits) that record,
  for every weighted layer, the norm of its weight gradient ‖∂L/∂W‖, the norm of the
  gradient reaching its output ‖∂L/∂h‖, and the mean and std of its output h.
* :func:`gradients_at_init`: plain CNN vs ResNet vs DenseNet of equal depth and
  similar parameter count, with and without BatchNorm, at PyTorch's default initialisation.
* :func:`depth_sweep`: the first layer's gradient relative to the last, depth 4 … 64.
* :func:`train_curves`: training loss of the same networks on a phantom classification task.
* :func:`residual_jacobian`: ∂y/∂x of ``y = x + F(x)`` is ``I + ∂F/∂x``, measured with autograd.
* :func:`dense_growth`: DenseNet's concatenation growth and parameter count.
* :func:`unet_skips`: U-Net with and without long skips: Dice, :func:`boundary_f1`, :func:`boundary_sharpness`.

Taught in ``notebooks/05_gradient_flow.ipynb``.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import phantoms, train
from ..models import DenseNet3D, PlainCNN3D, ResidualCNN3D, UNet3D, count_params

ARCHS = ("plain", "resnet", "densenet")
NORMS = (None, "batch")
WEIGHTED = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose3d, nn.Linear)
COLORS = {"plain": "tab:red", "resnet": "tab:blue", "densenet": "tab:green"}


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def _norm_name(norm) -> str:
    return "no norm" if norm is None else f"{norm}norm"


# ----------------------------------------------------------------------------- the recorder
class GradientRecorder:
    """Record per-layer gradient norms and activation statistics with hooks; the model is not changed.

        with GradientRecorder(model) as rec:
            loss_fn(model(x), y).backward()
        rec.table()      # one row per (step, layer): grad_norm, out_grad_norm, act_mean, act_std

    ``layers``: the modules to watch (default: every Conv/Linear layer). Layers are
    numbered in the order the first forward pass reaches them (``depth`` 0 = first
    layer). Each forward call of ``model`` starts a new ``step``, so the recorder also
    works around a whole training run (weight gradients go to the latest step).
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module] | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        names = {m: name for name, m in model.named_modules()}
        layers = [m for m in model.modules() if isinstance(m, WEIGHTED)] if layers is None else list(layers)
        if not layers or any(m not in names for m in layers):
            raise ValueError("layers: expected a non-empty list of submodules of model")
        self.model, self.layers, self.names = model, layers, names
        self.order: dict[nn.Module, int] = {}      # layer -> position in the forward pass
        self.rows: dict[tuple[int, nn.Module], dict] = {}
        self.step, self._handles = -1, []

    def _row(self, layer: nn.Module, step: int) -> dict:
        return self.rows.setdefault((step, layer), {"step": step, "layer": self.names[layer],
                                                    "type": type(layer).__name__})

    def _on_forward(self, layer, inputs, out):
        self.order.setdefault(layer, len(self.order))
        h, step = out.detach().float(), self.step
        self._row(layer, step).update(act_mean=h.mean().item(), act_std=h.std(correction=0).item())
        if out.requires_grad:   # dL/dh arrives during backward; keep the step it belongs to
            out.register_hook(lambda g: self._row(layer, step).update(out_grad_norm=g.norm().item()))

    def _on_weight_grad(self, layer, grad):
        self._row(layer, self.step)["grad_norm"] = grad.norm().item()

    def __enter__(self) -> "GradientRecorder":
        def next_step(module, args):
            self.step += 1
        self._handles.append(self.model.register_forward_pre_hook(next_step))
        for layer in self.layers:
            self._handles.append(layer.register_forward_hook(self._on_forward))
            if getattr(layer, "weight", None) is not None and layer.weight.requires_grad:
                self._handles.append(layer.weight.register_hook(
                    lambda g, layer=layer: self._on_weight_grad(layer, g)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def table(self) -> pd.DataFrame:
        """One row per (step, layer), layers in forward order; ``depth`` is the layer's position."""
        rows = [dict(r, depth=self.order.get(layer, -1)) for (step, layer), r in self.rows.items()]
        cols = ["step", "depth", "layer", "type", "grad_norm", "out_grad_norm", "act_mean", "act_std"]
        df = pd.DataFrame(rows).reindex(columns=cols)
        return df.sort_values(["step", "depth"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- the networks
def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or not 4 <= depth <= 64 or depth % 2:
        raise ValueError(f"depth: expected an even int in [4, 64], got {depth!r}")
    return depth


def _check_choice(value, options, name: str):
    if value not in options:
        raise ValueError(f"{name}: expected one of {options}, got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def matched_growth(depth: int, width: int, norm=None) -> int:
    """DenseNet growth rate whose parameter count is closest to ``PlainCNN3D(depth, width)``'s.

    A DenseNet's parameters grow with depth² · growth, so at the smallest growth rates
    the match is coarse: within a few percent at depth 20, about a third off at depth 64.
    """
    target, best = count_params(PlainCNN3D(depth, width=width, norm=norm)), None
    for growth in range(1, 2 * width + 1):        # parameters rise with growth: stop once past the target
        params = count_params(DenseNet3D(depth, growth_rate=growth, width=width, norm=norm))
        if best is None or abs(params - target) < best[1]:
            best = (growth, abs(params - target))
        if params > target:
            break
    return best[0]


def build(arch: str, depth: int = 20, *, width: int = 8, norm=None) -> nn.Module:
    """A plain / residual / dense 3D classifier with ``depth`` weighted layers, default init.

    Plain and residual nets have identical layers (same parameter count); the DenseNet's
    growth rate is chosen to match their parameter count (:func:`matched_growth`).
    """
    _check_choice(arch, ARCHS, "arch"), _check_depth(depth), _check_choice(norm, NORMS, "norm")
    if arch == "plain":
        return PlainCNN3D(depth, width=width, norm=norm)
    if arch == "resnet":
        return ResidualCNN3D(depth, width=width, norm=norm)
    return DenseNet3D(depth, growth_rate=matched_growth(depth, width, norm), width=width, norm=norm)


def _phantom_batch(n: int, size: int, seed: int, task: str = "classification"):
    ph = phantoms.make_phantoms(n, size=size, task=task, seed=seed)
    return ph.inputs, ph.targets       # (N, 1, S, S, S), (N,) or (N, 1, S, S, S)


def layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    loss: Callable = F.binary_cross_entropy_with_logits) -> pd.DataFrame:
    """One forward/backward pass of ``loss(model(x)[:, 0], y)`` under a :class:`GradientRecorder`."""
    model.train()                      # BatchNorm normalises with the batch's statistics, as in training
    model.zero_grad(set_to_none=True)
    with GradientRecorder(model) as rec:
        loss(model(x)[:, 0], y).backward()
    model.zero_grad(set_to_none=True)
    return rec.table()


# ----------------------------------------------------------------------------- at initialisation
@dataclasses.dataclass
class GradientFlow:
    """Per-layer gradient norms at init: one row per (arch, norm, seed, layer)."""

    layers: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """One row per (arch, norm, seed): first and last layer gradient norm, their ratio, params."""
        def ends(g):
            g = g.sort_values("depth")
            first, last = g["grad_norm"].iloc[0], g["grad_norm"].iloc[-1]
            return pd.Series({"params": g["params"].iloc[0], "layers": len(g), "first_grad": first,
                              "last_grad": last, "first/last": first / last})
        keys = ["arch", "norm", "depth_knob", "seed"]
        return self.layers.groupby(keys, sort=False, dropna=False).apply(ends, include_groups=False).reset_index()

    def first(self, arch: str, norm=None) -> float:
        """Median over seeds of the first layer's gradient norm for ``arch`` with ``norm``."""
        t = self.table()
        sel = t[(t["arch"] == arch) & (t["norm"] == _norm_name(norm))]
        if sel.empty:
            raise ValueError(f"arch/norm: no rows for {arch!r} with {_norm_name(norm)}")
        return float(sel["first_grad"].median())

    def plot(self):
        """‖∂L/∂W‖ per layer on a log scale, one panel per normalisation, a curve per arch and seed."""
        norms = list(dict.fromkeys(self.layers["norm"]))
        fig, axes = _fig(1, len(norms), figsize=(5.2 * len(norms), 3.6), squeeze=False, sharey=True)
        for ax, norm in zip(axes[0], norms):
            sub = self.layers[self.layers["norm"] == norm]
            for (arch, seed), g in sub.groupby(["arch", "seed"], sort=False):
                g = g.sort_values("depth")
                first_seed = seed == sub["seed"].min()    # one labelled, opaque curve per arch; other seeds faint
                ax.plot(g["depth"], g["grad_norm"], marker=".", color=COLORS[arch], alpha=1 if first_seed else 0.35,
                        label=f"{arch} ({g['params'].iloc[0]:,} params)" if first_seed else None)
            ax.set(yscale="log", xlabel="layer (0 = first, input side)", title=f"at init, {norm}")
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel("‖∂L/∂W‖ of the layer")
        fig.tight_layout()
        return fig


def gradients_at_init(archs: Sequence[str] = ARCHS, depth: int = 20, norms: Sequence = NORMS, *,
                      width: int = 8, size: int = 16, n: int = 8, seeds: Sequence[int] = (0,),
                      data: tuple | None = None) -> GradientFlow:
    """Per-layer gradients of each (arch, norm, seed) at PyTorch's default init on one phantom batch.

    ``seeds`` seed the weights; the batch (``n`` CT phantoms of ``size``³, or ``data=(x, y)``) is the same.
    """
    x, y = data if data is not None else _phantom_batch(n, size, seed=0)
    frames = []
    for norm in norms:
        for arch in archs:
            for seed in seeds:
                torch.manual_seed(seed)
                model = build(arch, depth, width=width, norm=norm)
                df = layer_gradients(model, x, y)
                frames.append(df.assign(arch=arch, norm=_norm_name(norm), depth_knob=depth, seed=seed,
                                        params=count_params(model)))
    return GradientFlow(pd.concat(frames, ignore_index=True))


# ----------------------------------------------------------------------------- over depth
@dataclasses.dataclass
class DepthSweep:
    """First-layer / last-layer gradient ratio at init, per (arch, norm, depth, seed)."""

    flow: GradientFlow

    def table(self) -> pd.DataFrame:
        return self.flow.table().rename(columns={"depth_knob": "depth"})

    def ratio(self, arch: str, depth: int, norm=None) -> float:
        """Median over seeds of first/last gradient norm."""
        t = self.table()
        sel = t[(t["arch"] == arch) & (t["depth"] == depth) & (t["norm"] == _norm_name(norm))]
        return float(sel["first/last"].median())

    def plot(self):
        t = self.table()
        norms = list(dict.fromkeys(t["norm"]))
        fig, axes = _fig(1, len(norms), figsize=(5.2 * len(norms), 3.4), squeeze=False, sharey=True)
        for ax, norm in zip(axes[0], norms):
            for arch, g in t[t["norm"] == norm].groupby("arch", sort=False):
                med = g.groupby("depth")["first/last"].median()
                med = med.where(med > 0)                 # an exactly-zero gradient cannot go on a log axis
                ax.plot(med.index, med.values, marker="o", color=COLORS[arch], label=arch)
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            # linear depth, log ratio: exponential decay (a constant factor per layer) is a straight line
            ax.set(yscale="log", xlabel="depth (weighted layers)", title=f"at init, {norm}")
            ax.set_xticks(sorted(set(t["depth"])))
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel("‖∂L/∂W‖ first layer / last layer")
        fig.tight_layout()
        return fig


def depth_sweep(depths: Sequence[int] = (4, 8, 16, 32, 64), archs: Sequence[str] = ("plain", "resnet"),
                norms: Sequence = (None,), *, width: int = 8, size: int = 16, n: int = 8,
                seeds: Sequence[int] = (0,), data: tuple | None = None) -> DepthSweep:
    """:func:`gradients_at_init` at each depth: how the first layer's share of the gradient falls with depth."""
    data = data if data is not None else _phantom_batch(n, size, seed=0)
    flows = [gradients_at_init(archs, d, norms, width=width, seeds=seeds, data=data).layers for d in depths]
    return DepthSweep(GradientFlow(pd.concat(flows, ignore_index=True)))


# ----------------------------------------------------------------------------- training
@dataclasses.dataclass
class TrainingCurves:
    """Training loss per epoch of each (arch, norm, seed), and the first layer's gradient per step."""

    curves: pd.DataFrame         # arch, norm, seed, epoch, train_loss
    grads: pd.DataFrame          # arch, norm, seed, step, first_grad, last_grad

    last_epochs: int = 3         # "final" loss: mean over this many last epochs (one epoch is noisy)

    def table(self) -> pd.DataFrame:
        """Final training loss (mean of the last ``last_epochs`` epochs) per (arch, norm, seed)."""
        tail = self.curves.sort_values("epoch").groupby(["arch", "norm", "seed"], sort=False).tail(self.last_epochs)
        final = tail.groupby(["arch", "norm", "seed"], sort=False)["train_loss"].mean()
        return final.rename("final_train_loss").reset_index()

    def final(self, arch: str, norm=None) -> np.ndarray:
        """Final training loss of ``arch`` for each seed."""
        t = self.table()
        return t[(t["arch"] == arch) & (t["norm"] == _norm_name(norm))]["final_train_loss"].to_numpy()

    def plot(self):
        fig, axes = _fig(1, 2, figsize=(10, 3.5))
        for (arch, norm, seed), g in self.curves.groupby(["arch", "norm", "seed"], sort=False):
            style = "-" if norm == "no norm" else "--"
            axes[0].plot(g["epoch"], g["train_loss"], style, marker=".", color=COLORS[arch],
                         label=f"{arch}, {norm}" if seed == self.curves["seed"].min() else None)
        axes[0].set(xlabel="epoch", ylabel="training loss (BCE)", title="training loss, same steps")
        axes[0].legend(fontsize=8)
        for (arch, norm, seed), g in self.grads.groupby(["arch", "norm", "seed"], sort=False):
            style = "-" if norm == "no norm" else "--"
            axes[1].plot(g["step"], g["first_grad"], style, color=COLORS[arch], alpha=0.8)
        axes[1].set(yscale="log", xlabel="step", ylabel="‖∂L/∂W‖ first layer",
                    title="first-layer gradient in training")
        fig.tight_layout()
        return fig


def _first_last(table: pd.DataFrame) -> pd.DataFrame:
    """Per step: the first and the last layer's weight-gradient norm."""
    t = table.dropna(subset=["grad_norm"]).sort_values(["step", "depth"])
    g = t.groupby("step")["grad_norm"]
    return pd.DataFrame({"first_grad": g.first(), "last_grad": g.last()}).reset_index()


def train_curves(archs: Sequence[str] = ("plain", "resnet"), depth: int = 20, norms: Sequence = (None, "batch"), *,
                 width: int = 8, size: int = 16, n: int = 64, epochs: int = 8, lr: float = 3e-3,
                 batch_size: int = 16, seeds: Sequence[int] = (0,), data: tuple | None = None,
                 progress: Callable | None = None) -> TrainingCurves:
    """Train each (arch, norm, seed) with ``rl.train.fit`` on the same phantoms; record loss and gradients.

    Every run sees the same ``n`` patients in the same order (AdamW, cosine schedule,
    gradient clipping at 1, as ``fit`` does), so only the architecture differs.
    """
    x, y = data if data is not None else _phantom_batch(n, size, seed=0)
    curves, grads, runs = [], [], [(a, m, s) for m in norms for a in archs for s in seeds]
    for i, (arch, norm, seed) in enumerate(runs):
        torch.manual_seed(seed)
        model = build(arch, depth, width=width, norm=norm)
        with GradientRecorder(model) as rec:
            hist = train.fit(model, (x, y), loss="bce", epochs=epochs, lr=lr, batch_size=batch_size,
                             seed=seed, progress=False)
        key = dict(arch=arch, norm=_norm_name(norm), seed=seed)
        curves.append(hist.table().reset_index()[["epoch", "train_loss"]].assign(**key))
        grads.append(_first_last(rec.table()).assign(**key))
        if progress is not None:
            progress(i + 1, len(runs))
    return TrainingCurves(pd.concat(curves, ignore_index=True), pd.concat(grads, ignore_index=True))


# ----------------------------------------------------------------------------- the identity path
class TinyBlock(nn.Module):
    """F(x) = conv(relu(conv(x))), no norm; ``residual=True`` returns x + F(x) (the chapter's y = F(x) + x)."""

    def __init__(self, channels: int = 2, residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        self.residual = residual

    def forward(self, x):
        f = self.conv2(F.relu(self.conv1(x)))
        return x + f if self.residual else f


def block_jacobian(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """∂block(x)/∂x as an (n, n) matrix, n = x.numel(), by autograd."""
    jac = torch.autograd.functional.jacobian(block, x)     # (*x.shape, *x.shape)
    return jac.reshape(x.numel(), x.numel())


@dataclasses.dataclass
class JacobianResult:
    """Jacobians of a tiny block with and without its identity skip, and of stacks of such blocks."""

    plain: torch.Tensor          # (n, n) ∂F/∂x
    residual: torch.Tensor       # (n, n) ∂(x + F(x))/∂x
    stack: pd.DataFrame          # blocks, arch, spectral norm, smallest singular value of the stack's Jacobian

    def spectral_norm(self, arch: str, blocks: int) -> float:
        """Largest singular value of the Jacobian of ``blocks`` stacked blocks (``arch``: plain | residual)."""
        sel = self.stack[(self.stack["arch"] == arch) & (self.stack["blocks"] == blocks)]
        if sel.empty:
            raise ValueError(f"arch/blocks: no stack of {blocks} {arch!r} blocks was measured")
        return float(sel["spectral_norm"].iloc[0])

    @property
    def identity_error(self) -> float:
        """max |J_residual − J_plain − I|: zero up to rounding if the skip adds exactly I."""
        eye = torch.eye(self.plain.shape[0], dtype=self.plain.dtype)
        return float((self.residual - self.plain - eye).abs().max())

    def singular_values(self) -> dict[str, np.ndarray]:
        return {k: torch.linalg.svdvals(j).numpy() for k, j in (("plain", self.plain), ("residual", self.residual))}

    def table(self) -> pd.DataFrame:
        return self.stack

    def plot(self):
        fig, axes = _fig(1, 4, figsize=(16, 3.4))
        for ax, (title, j) in zip(axes, [("∂F/∂x (plain block)", self.plain),
                                         ("∂(x+F)/∂x (residual block)", self.residual),
                                         ("residual − plain = I", self.residual - self.plain)]):
            vmax = float(j.abs().max())                  # each its own scale: ∂F/∂x is small
            im = ax.imshow(j.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            ax.set(title=title, xticks=[], yticks=[])
            fig.colorbar(im, ax=ax, shrink=0.8)
        for arch, g in self.stack.groupby("arch", sort=False):
            color = COLORS["plain" if arch == "plain" else "resnet"]
            for column, style in (("spectral_norm", "-"), ("smallest_sv", ":")):
                values = g[column].where(g[column] > 0)      # exact zeros (dead ReLUs) cannot go on a log axis
                label = f"{arch}: {'largest' if column == 'spectral_norm' else 'smallest'} σ"
                axes[3].plot(g["blocks"], values, marker="o", ls=style, color=color, label=label)
        axes[3].set(yscale="log", xlabel="blocks stacked", title="singular values of a stack's Jacobian")
        axes[3].legend(fontsize=7)
        fig.tight_layout()
        return fig


def residual_jacobian(channels: int = 2, size: int = 3, blocks: Sequence[int] = (1, 2, 4, 8), seed: int = 0
                      ) -> JacobianResult:
    """Measure ∂y/∂x of one tiny block with and without the skip, and of stacks of ``blocks`` blocks.

    Both versions share their weights, so J_residual − J_plain should be exactly I.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, channels, size, size, size, generator=gen)    # (1, C, S, S, S)
    torch.manual_seed(seed)
    block = TinyBlock(channels, residual=False)
    plain = block_jacobian(block, x)
    block.residual = True
    residual = block_jacobian(block, x)
    rows = []
    for k in blocks:
        torch.manual_seed(seed)
        stack = [TinyBlock(channels) for _ in range(k)]
        for arch, skip in (("plain", False), ("residual", True)):
            for b in stack:
                b.residual = skip
            sv = torch.linalg.svdvals(block_jacobian(nn.Sequential(*stack), x))
            rows.append({"blocks": k, "arch": arch, "spectral_norm": float(sv[0]), "smallest_sv": float(sv[-1])})
    return JacobianResult(plain.detach(), residual.detach(), pd.DataFrame(rows))


# ----------------------------------------------------------------------------- DenseNet: concatenation
@dataclasses.dataclass
class DenseGrowth:
    """Input channels of every dense layer (the concatenation growing) and parameter counts."""

    layers: pd.DataFrame
    params: dict

    def table(self) -> pd.DataFrame:
        return self.layers

    def plot(self):
        fig, ax = _fig(figsize=(6, 3.2))
        ax.step(self.layers["layer"], self.layers["in_channels"], where="mid", color=COLORS["densenet"],
                label=f"DenseNet input channels ({self.params['densenet']:,} params)")
        ax.axhline(self.params["plain_width"], color=COLORS["plain"], ls="--",
                   label=f"plain CNN width ({self.params['plain']:,} params)")
        ax.set(xlabel="dense layer", ylabel="channels in", title="concatenation: each layer sees all earlier maps")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig


def dense_growth(depth: int = 20, width: int = 8, norm=None) -> DenseGrowth:
    """Channels seen by each dense layer of :func:`build`'s DenseNet vs the plain net's constant width."""
    dense, plain = build("densenet", depth, width=width, norm=norm), build("plain", depth, width=width, norm=norm)
    rows = [{"layer": i, "block": b, "in_channels": layer.in_channels, "new_maps": layer.growth_rate,
             "params": count_params(layer)}
            for b, block in enumerate(dense.dense_blocks) for i, layer in
            enumerate(block, start=sum(len(bb) for bb in dense.dense_blocks[:b]))]
    params = {"densenet": count_params(dense), "plain": count_params(plain), "plain_width": width,
              "growth": dense.blocks[0].growth_rate, "dense_features": dense.num_features}
    return DenseGrowth(pd.DataFrame(rows), params)


# ----------------------------------------------------------------------------- U-Net: long skips
def boundary_sharpness(prob: torch.Tensor, mask: torch.Tensor, spacing=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """Mean |∇p| (per mm) of the predicted probability on the true lesion boundary, per case (N,).

    The boundary is the band of voxels whose 3×3×3 neighbourhood holds both lesion and
    background. ∇p uses central differences (``torch.gradient``) with the voxel spacing.
    A prediction that jumps from 0 to 1 exactly at the true edge scores about 0.5/mm per
    crossed axis; one that ramps over w mm scores about 1/w; a blurred, misplaced or
    missing edge scores near 0. ``prob``, ``mask``: (N, 1, D, H, W).
    """
    if prob.shape != mask.shape or prob.ndim != 5:
        raise ValueError(f"prob, mask: expected equal shapes (N, 1, D, H, W), got {tuple(prob.shape)} "
                         f"and {tuple(mask.shape)}")
    if not torch.isfinite(prob).all() or prob.min() < 0 or prob.max() > 1:
        raise ValueError("prob: expected finite probabilities in [0, 1]")
    m = mask.float()
    dilated = F.max_pool3d(m, 3, stride=1, padding=1)
    eroded = -F.max_pool3d(-m, 3, stride=1, padding=1)
    band = (dilated - eroded) > 0                               # (N, 1, D, H, W) both classes nearby
    grads = torch.gradient(prob.float(), spacing=[float(s) for s in spacing], dim=(2, 3, 4))
    magnitude = torch.sqrt(sum(g ** 2 for g in grads))         # (N, 1, D, H, W) per mm
    count = band.flatten(1).sum(1)
    return (magnitude * band).flatten(1).sum(1) / count.clamp_min(1)


def _surface(mask: torch.Tensor) -> torch.Tensor:
    """Boundary voxels of a mask: inside it, with a 3×3×3 neighbour outside (the volume's edge does not count)."""
    m = mask.float()
    eroded = -F.max_pool3d(-m, 3, stride=1, padding=1)         # max_pool pads with -inf: the edge never erodes
    return (m - eroded) > 0


def boundary_f1(pred: torch.Tensor, mask: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Boundary F1 per case (N,): do the predicted and true lesion borders lie on each other?

    Precision: share of predicted boundary voxels within ``tolerance`` voxels (chessboard
    distance) of a true boundary voxel; recall: the same the other way round; F1 their
    harmonic mean (0 when nothing is predicted). ``pred``, ``mask``: (N, 1, D, H, W) bool.
    """
    if pred.shape != mask.shape or pred.ndim != 5:
        raise ValueError(f"pred, mask: expected equal shapes (N, 1, D, H, W), got {tuple(pred.shape)} "
                         f"and {tuple(mask.shape)}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ValueError(f"tolerance: expected an int >= 0 (voxels), got {tolerance!r}")
    found, true = _surface(pred.bool()), _surface(mask.bool())
    k = 2 * tolerance + 1
    near_true = F.max_pool3d(true.float(), k, stride=1, padding=tolerance) > 0    # (N, 1, D, H, W)
    near_found = F.max_pool3d(found.float(), k, stride=1, padding=tolerance) > 0
    precision = (found & near_true).flatten(1).sum(1) / found.flatten(1).sum(1).clamp_min(1)
    recall = (true & near_found).flatten(1).sum(1) / true.flatten(1).sum(1).clamp_min(1)
    return torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                       torch.zeros_like(precision))


@dataclasses.dataclass
class UNetComparison:
    """Test Dice and boundary sharpness of U-Nets with and without long skips, and example predictions."""

    rows: pd.DataFrame           # skips, seed, dice, boundary_f1, sharpness, params, seconds
    example: dict                # image, mask, prob_skips, prob_noskips: (D, H, W) arrays of one test case

    def table(self) -> pd.DataFrame:
        return self.rows

    def mean(self, column: str, skips: bool) -> float:
        return float(self.rows[self.rows["skips"] == skips][column].mean())

    def plot(self):
        ex = self.example
        z = int(np.argmax(ex["mask"].sum((1, 2))))              # the slice with the most lesion
        fig, axes = _fig(1, 4, figsize=(13, 3.4))
        panels = [("input", ex["image"] / max(float(ex["image"].max()), 1e-6), "gray"),
                  ("true lesion", ex["mask"].astype(float), "gray"),
                  ("U-Net with skips: P(lesion)", ex["prob_skips"], "magma"),
                  ("U-Net without skips: P(lesion)", ex["prob_noskips"], "magma")]
        for ax, (title, vol, cmap) in zip(axes, panels):
            ax.imshow(vol[z], cmap=cmap, vmin=0, vmax=1)
            ax.contour(ex["mask"][z], levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set(title=title, xticks=[], yticks=[])
        fig.tight_layout()
        return fig


def unet_skips(*, size: int = 16, n_train: int = 32, n_test: int = 16, epochs: int = 24, lr: float = 5e-3,
               width: int = 4, batch_size: int = 8, seeds: Sequence[int] = (0,), lesion_fraction: float = 0.05,
               levels: int = 4, modality: str = "pet", norm="instance", progress: Callable | None = None
               ) -> UNetComparison:
    """Train ``UNet3D(skips=True)`` and ``UNet3D(skips=False)`` on the same phantoms (Dice+BCE loss).

    Reports the test Dice (logit > 0), :func:`boundary_f1` (where the predicted edge lies) and
    :func:`boundary_sharpness` (how steeply the probability changes on the true edge).
    Four levels by default: at 16³ the bottleneck is 2³ cells of 16 mm, so without skips the
    decoder must rebuild every edge from those. PET by default: every PET lesion is brighter than
    the liver, so a lesion is always visible and the comparison is about where its edge goes,
    not whether it can be seen. Instance
    norm by default: it normalises each volume alone, so the network behaves the same in
    training and at prediction (BatchNorm's running statistics are still settling after
    a few dozen steps and would add noise to the comparison).
    """
    ph = phantoms.make_phantoms(n_train + n_test, size=size, task="segmentation", seed=0, modality=modality,
                                lesion_fraction=lesion_fraction)
    tr, te = ph[:n_train], ph[n_train:]
    rows, example, runs = [], {"image": te.inputs[0, 0].numpy(), "mask": te.masks[0, 0].numpy()}, 0
    for seed in seeds:
        for skips in (True, False):
            torch.manual_seed(seed)
            model = UNet3D(width=width, levels=levels, skips=skips, norm=norm)
            t0 = time.perf_counter()
            train.fit(model, tr, loss="dice_bce", epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                      progress=False)
            logits = train.predict(model, te.inputs)                       # (N, 1, D, H, W)
            prob = torch.sigmoid(logits)
            rows.append({"skips": skips, "seed": seed, "params": count_params(model),
                         "dice": train.compute_metric("dice", logits, te.targets),
                         "boundary_f1": float(boundary_f1(logits > 0, te.masks).mean()),
                         "sharpness": float(boundary_sharpness(prob, te.masks, te.spacing).mean()),
                         "seconds": time.perf_counter() - t0})
            if seed == seeds[0]:
                example["prob_skips" if skips else "prob_noskips"] = prob[0, 0].numpy()
            runs += 1
            if progress is not None:
                progress(runs, 2 * len(seeds))
    return UNetComparison(pd.DataFrame(rows), example)


# ----------------------------------------------------------------------------- the Panel's function
@dataclasses.dataclass
class Exploration:
    """One architecture: its per-layer gradients at init and its training curve."""

    flow: GradientFlow
    curves: TrainingCurves

    def table(self) -> pd.DataFrame:
        return self.flow.table().merge(self.curves.table(), on=["arch", "norm", "seed"])

    def plot(self):
        fig, axes = _fig(1, 2, figsize=(10, 3.4))
        g = self.flow.layers.sort_values("depth")
        arch = g["arch"].iloc[0]
        axes[0].plot(g["depth"], g["grad_norm"], marker=".", color=COLORS[arch])
        axes[0].set(yscale="log", xlabel="layer", ylabel="‖∂L/∂W‖",
                    title=f"{arch}, {g['norm'].iloc[0]}: at init")
        c = self.curves.curves
        axes[1].plot(c["epoch"], c["train_loss"], marker="o", color=COLORS[arch])
        axes[1].set(xlabel="epoch", ylabel="training loss", title="training")
        fig.tight_layout()
        return fig


def explore(arch: str = "resnet", depth: int = 20, normalise: bool = False, lr: float = 3e-3, *,
            width: int = 8, size: int = 16, n: int = 32, epochs: int = 4, progress: Callable | None = None
            ) -> Exploration:
    """Gradients at init and a short training run of one network (the notebook's Panel)."""
    norm = "batch" if normalise else None
    data = _phantom_batch(n, size, seed=0)
    flow = gradients_at_init([arch], depth, [norm], width=width, data=(data[0][:8], data[1][:8]))
    curves = train_curves([arch], depth, [norm], width=width, epochs=epochs, lr=lr, data=data, progress=progress)
    return Exploration(flow, curves)
