"""What 2D, 2.5D and 3D networks cost, and what anisotropic voxels do to a 3D kernel.

Every number here comes from :mod:`radlab.cost` (counted on PyTorch's ``meta``
device, so 256^3 volumes cost nothing to estimate) or from timing real steps.

* :func:`macs_per_output`: 9 / 45 / 27 MACs per output position (the chapter).
* :func:`cost_table`: the same network family in 2D, 2.5D and 3D over volume sizes.
* :func:`memory_rule`: the "3D needs about D times the memory of 2D" rule, made precise.
* :func:`gpu_table`: the largest batch that fits on common GPUs.
* :func:`receptive_fields` / :func:`anisotropy_experiment`: thick slices and the two fixes.
* :func:`live_costs`: pure arithmetic for the notebook's live Panel.

Taught in ``notebooks/03_volumetric_costs.ipynb``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .. import cost
from ..models import SimpleCNN

DIMS = ("2d", "2.5d", "3d")
MIB = 2 ** 20


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


# ----------------------------------------------------------------------------- MACs per output position
def macs_per_output(slices: int = 5, size: int = 16) -> pd.DataFrame:
    """MACs per output position of one 1-channel-out 3x3 layer: 2D, 2.5D (``slices`` as channels), 3D.

    Counted by :func:`radlab.cost.profile` on a ``size``-voxel input, then divided
    by the number of output positions.
    """
    layers = {"2D 3x3": (nn.Conv2d(1, 1, 3, padding=1, bias=False), (1, 1, size, size)),
              f"2.5D 3x3 on {slices} slices": (nn.Conv2d(slices, 1, 3, padding=1, bias=False), (1, slices, size, size)),
              "3D 3x3x3": (nn.Conv3d(1, 1, 3, padding=1, bias=False), (1, 1, size, size, size))}
    rows = []
    for name, (layer, shape) in layers.items():
        rep = cost.profile(layer, shape)
        positions = math.prod(rep.per_layer["output_shape"][0][2:])
        rows.append({"layer": name, "MACs": rep.macs, "output positions": positions,
                     "MACs per output": rep.macs / positions})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the family over sizes
def _family(dims: str, width: int, depth: int, slices: int) -> SimpleCNN:
    return SimpleCNN(dims, width=width, depth=depth, slices=slices)


def _sample_shape(dims: str, size: int, slices: int) -> tuple[int, ...]:
    """One training example: a slice (2D), a stack of slices (2.5D), a volume (3D)."""
    return {"2d": (1, size, size), "2.5d": (slices, size, size), "3d": (1, size, size, size)}[dims]


@dataclasses.dataclass
class CostTable:
    """One row per (dims, size): a whole volume through the network (2D/2.5D: every slice)."""

    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.rows

    def plot(self):
        fig, axes = _fig(1, 3, figsize=(13, 3.6))
        for ax, col in zip(axes, ["GMACs", "activations MiB", "step s"]):
            for dims, g in self.rows.groupby("dims", sort=False):
                measured = g.dropna(subset=[col])
                ax.plot(measured["size"], measured[col], "o-", label=dims)
            ax.set(xscale="log", yscale="log", xlabel="volume edge (voxels)", title=col)
            sizes = sorted(self.rows["size"].unique())
            ax.set_xticks(sizes, [str(s) for s in sizes], minor=False)
            ax.xaxis.set_minor_locator(__import__("matplotlib").ticker.NullLocator())
        axes[0].legend(title="network")
        fig.suptitle("the same network family on a whole volume of size³ (log-log)")
        fig.tight_layout()
        return fig


def cost_table(sizes: Sequence[int] = (32, 64, 128, 256), *, width: int = 8, depth: int = 3, slices: int = 5,
               measure_up_to: int = 32, steps: int = 2, device=None) -> CostTable:
    """Params, MACs and activation memory of 2D / 2.5D / 3D SimpleCNNs on one size^3 volume.

    2D and 2.5D networks see the volume as size slices (one batch), so the three rows
    of a size do the same job: one prediction per volume. Step time (forward+backward)
    is measured for sizes <= ``measure_up_to``; larger sizes are estimates only (NaN).
    """
    rows = []
    for size in sizes:
        for dims in DIMS:
            model = _family(dims, width, depth, slices)
            rep = cost.profile(model, (1, 1, size, size, size))
            step = rep.measure(steps=steps, device=device)["step_s"] if size <= measure_up_to else float("nan")
            rows.append({"dims": dims, "size": size, "params": rep.params, "GMACs": rep.macs / 1e9,
                         "other Gops": rep.other_ops / 1e9, "activations MiB": rep.activation_bytes / MIB,
                         "layer-output estimate MiB": rep.activation_bytes_estimate / MIB, "step s": step})
    return CostTable(pd.DataFrame(rows))


def memory_rule(size: int = 64, *, width: int = 8, depth: int = 3) -> pd.DataFrame:
    """Activation memory of a 3D network on a whole D^3 volume divided by a 2D network's on ONE slice.

    Two rows: a single full-resolution conv layer (ratio exactly D) and the whole
    SimpleCNN (pooling shrinks 3D maps 8x but 2D maps only 4x, so the ratio falls below D).
    """
    rows = []
    nets = {"one 3x3(x3) layer": (nn.Sequential(nn.Conv3d(1, width, 3, padding=1), nn.ReLU()),
                                  nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())),
            f"SimpleCNN depth {depth}": (_family("3d", width, depth, 5), _family("2d", width, depth, 5))}
    for name, (net3, net2) in nets.items():
        a3 = cost.profile(net3, (1, 1, size, size, size)).activation_bytes
        a2 = cost.profile(net2, (1, 1, size, size)).activation_bytes
        rows.append({"network": name, "D": size, "3D volume MiB": a3 / MIB, "2D slice MiB": a2 / MIB,
                     "ratio": a3 / a2, "ratio / D": a3 / a2 / size})
    return pd.DataFrame(rows)


def gpu_table(sizes: Sequence[int] = (64, 128, 256), *, width: int = 8, depth: int = 3, slices: int = 5,
              gpus: Sequence[str] = tuple(cost.GPUS), dtype=torch.float32) -> pd.DataFrame:
    """Largest training batch (Adam, fp32 by default) per GPU; a sample is a slice, a slice stack or a volume."""
    rows = []
    for size in sizes:
        for dims in DIMS:
            model = _family(dims, width, depth, slices)
            row = {"dims": dims, "size": size, "sample": "x".join(map(str, _sample_shape(dims, size, slices)))}
            for gpu in gpus:
                row[gpu] = cost.fits(model, _sample_shape(dims, size, slices), batch=1, gpu=gpu, dtype=dtype).max_batch
            rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- anisotropic voxels
def inplane_blocks(spacing: Sequence[float], depth: int) -> int:
    """How many leading blocks should pool only in-plane so the in-plane step catches up with z:
    each 2x in-plane pooling doubles the in-plane step, so about log2(z / in-plane spacing)."""
    ratio = spacing[0] / min(spacing[1:])
    return int(min(depth - 1, max(0, round(math.log2(ratio))))) if ratio > 1 else 0


def _configs(spacing, iso, width, depth):
    """name -> (model, spacing it runs at)."""
    return {"3x3x3 on thick slices": (SimpleCNN("3d", width=width, depth=depth), tuple(spacing)),
            "1x3x3 first layers": (SimpleCNN("3d", width=width, depth=depth,
                                             anisotropic=max(1, inplane_blocks(spacing, depth))), tuple(spacing)),
            f"resampled to {iso:g} mm": (SimpleCNN("3d", width=width, depth=depth), (iso,) * 3)}


def _iso_shape(shape, spacing, iso):
    return tuple(int(round(n * s / iso)) for n, s in zip(shape, spacing))


def receptive_fields(spacing: Sequence[float] = (5.0, 0.7, 0.7), shape: Sequence[int] = (6, 46, 46), *,
                     iso: float | None = None, width: int = 8, depth: int = 3) -> pd.DataFrame:
    """Receptive field in mm (z, y, x) of the first layer and of the whole network, and the cost,
    for the naive 3x3x3 network, in-plane-first kernels, and resampling to ``iso`` mm (default: in-plane)."""
    iso = float(min(spacing)) if iso is None else float(iso)
    rows = []
    for name, (model, sp) in _configs(spacing, iso, width, depth).items():
        grid = tuple(shape) if sp == tuple(spacing) else _iso_shape(shape, spacing, iso)
        first = next(m for m in model.modules() if isinstance(m, nn.Conv3d))
        rf1, rf = cost.receptive_field(first, sp), cost.receptive_field(model, sp)
        rep = cost.profile(model, (1, 1, *grid))
        rows.append({"configuration": name, "grid": "x".join(map(str, grid)), "spacing mm": sp,
                     "first layer RF mm": tuple(round(v, 2) for v in rf1),
                     "network RF mm": tuple(round(v, 2) for v in rf), "RF z / x": rf[0] / rf[2],
                     "GMACs": rep.macs / 1e9, "activations MiB": rep.activation_bytes / MIB})
    return pd.DataFrame(rows)


def lesion_centre(mask: torch.Tensor) -> tuple[int, int, int]:
    """(z, y, x) voxel index of the centre of a (D, H, W) mask (the volume centre if it is empty)."""
    idx = mask.nonzero().float()
    if len(idx) == 0:
        return tuple(n // 2 for n in mask.shape)
    return tuple(int(v) for v in idx.mean(0).round())


def plot_rf_boxes(image: torch.Tensor, spacing: Sequence[float], rf_table: pd.DataFrame, *, centre=None):
    """Each configuration's receptive field (z by x, in mm) over a coronal slice of ``image`` (D, H, W):
    left the first layer's, right the whole network's (clipped by the field of view)."""
    import matplotlib.patches as patches
    img = image.detach().cpu().float()
    d, h, w = img.shape
    cz, cy, cx = centre if centre is not None else (d // 2, h // 2, w // 2)
    fig, axes = _fig(1, 2, figsize=(11, 4.4))
    extent = (0, w * spacing[2], d * spacing[0], 0)   # x in mm to the right, z in mm downwards
    colours = ["tab:red", "tab:orange", "tab:cyan"]
    for ax, column in zip(axes, ["first layer RF mm", "network RF mm"]):
        ax.imshow(img[:, cy, :].numpy(), cmap="gray", extent=extent, aspect="equal", interpolation="nearest")
        z0, x0 = (cz + 0.5) * spacing[0], (cx + 0.5) * spacing[2]
        for (_, row), colour in zip(rf_table.iterrows(), colours):
            rz, _, rx = row[column]
            ax.add_patch(patches.Rectangle((x0 - rx / 2, z0 - rz / 2), rx, rz, fill=False, lw=2, ec=colour,
                                           label=f"{row['configuration']}: {rz:g} x {rx:g} mm"))
        ax.set(xlabel="x (mm)", ylabel="z (mm)", xlim=(extent[0], extent[1]), ylim=(extent[2], extent[3]),
               title=f"{column[:-3]} (z x x)")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.suptitle(f"coronal slice through the lesion, {spacing[0]:g} x {spacing[1]:g} x {spacing[2]:g} mm voxels")
    fig.tight_layout()
    return fig


@dataclasses.dataclass
class AnisotropyResult:
    """One row per (configuration, seed): test AUC, training time and cost."""

    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """Mean and spread over seeds per configuration."""
        g = self.rows.groupby("configuration", sort=False)
        out = g.agg(auc_mean=("auc", "mean"), auc_min=("auc", "min"), auc_max=("auc", "max"),
                    train_s=("train s", "mean"), GMACs=("GMACs", "first"),
                    activations_MiB=("activations MiB", "first"), params=("params", "first"))
        return out.reset_index()

    def plot(self):
        t = self.table()
        fig, axes = _fig(1, 2, figsize=(11, 3.4))
        y = np.arange(len(t))
        axes[0].barh(y, t["auc_mean"], xerr=[t["auc_mean"] - t["auc_min"], t["auc_max"] - t["auc_mean"]],
                     color="tab:blue", alpha=0.7)
        axes[0].axvline(0.5, color="k", lw=0.8, ls=":")
        axes[0].set(yticks=y, yticklabels=t["configuration"], xlabel="test AUC (bar: mean, line: seed range)",
                    xlim=(0.0, 1.0))
        axes[1].barh(y, t["GMACs"], color="tab:gray")
        axes[1].set(yticks=y, yticklabels=[], xlabel="GMACs per volume")
        fig.tight_layout()
        return fig


def anisotropy_experiment(n_train: int, n_test: int, *, spacing: Sequence[float] = (5.0, 1.0, 1.0),
                          shape: Sequence[int] = (6, 32, 32), iso: float | None = None, epochs: int = 5,
                          batch_size: int = 32, lr: float = 3e-3, width: int = 8, depth: int = 3,
                          lesion_fraction: float | None = None, seeds: Sequence[int] = (0,), device=None,
                          progress: bool = False) -> AnisotropyResult:
    """Train the three configurations on thick-slice CT phantoms and score them on held-out patients.

    The same patients (per seed) feed all three; the resampled configuration sees
    ``rl.preprocess.resample`` of the same inputs onto an ``iso`` mm grid.
    """
    from .. import phantoms, preprocess, train
    iso = float(min(spacing)) if iso is None else float(iso)
    rows = []
    for seed in seeds:
        ph = phantoms.make_phantoms(n_train + n_test, size=tuple(shape), spacing=tuple(spacing), seed=seed,
                                    lesion_fraction=lesion_fraction, device=device or "cpu")
        x, y = ph.inputs, ph.targets
        x_iso = preprocess.resample(x, (iso,) * 3, from_spacing=ph.spacing)
        for name, (_, sp) in _configs(spacing, iso, width, depth).items():
            torch.manual_seed(seed)
            model = _configs(spacing, iso, width, depth)[name][0]   # fresh weights from this seed
            inputs = x if sp == tuple(spacing) else x_iso
            start = time.perf_counter()
            train.fit(model, (inputs[:n_train], y[:n_train]), loss="bce", epochs=epochs, lr=lr,
                      batch_size=batch_size, seed=seed, progress=progress, device=device)
            seconds = time.perf_counter() - start
            auc = train.evaluate(model, (inputs[n_train:], y[n_train:]))["auc"]
            rep = cost.profile(model, (1, *inputs.shape[1:]))
            rows.append({"configuration": name, "seed": seed, "auc": auc, "train s": seconds,
                         "GMACs": rep.macs / 1e9, "activations MiB": rep.activation_bytes / MIB,
                         "params": rep.params})
    return AnisotropyResult(pd.DataFrame(rows))


# ----------------------------------------------------------------------------- the live panel
@dataclasses.dataclass
class LiveCosts:
    rows: pd.DataFrame

    def table(self) -> pd.DataFrame:
        return self.rows

    def plot(self):
        fig, axes = _fig(1, 2, figsize=(9, 2.6))
        for ax, col in zip(axes, ["GMACs", "activations MiB"]):
            ax.barh(self.rows["network"], self.rows[col], color=["tab:blue", "tab:orange", "tab:green"])
            ax.set(xlabel=col)
        axes[1].set_yticklabels([])
        fig.tight_layout()
        return fig


def live_costs(size: int = 64, depth: int = 3, width: int = 8, slices: int = 5, z_spacing: float = 5.0,
               inplane_spacing: float = 0.7) -> LiveCosts:
    """Costs of the 2D / 2.5D / 3D family on one size^3 volume and each one's receptive field in mm.

    Shapes only (``meta`` device), so a slider move answers at once, whatever the size.
    """
    spacing = (float(z_spacing), float(inplane_spacing), float(inplane_spacing))
    rows = []
    for dims in DIMS:
        model = _family(dims, width, depth, slices)
        rep = cost.profile(model, (1, 1, size, size, size))
        rf = cost.receptive_field(model, spacing, slices=slices if dims == "2.5d" else 1)
        rows.append({"network": dims, "params": rep.params, "GMACs": rep.macs / 1e9,
                     "activations MiB": rep.activation_bytes / MIB,
                     "RF mm (z x y x x)": " x ".join(f"{v:.1f}" for v in rf)})
    return LiveCosts(pd.DataFrame(rows))
