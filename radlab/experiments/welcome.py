"""Notebook 00 (welcome): slice spacing, preprocessing per modality, the ground truth.

Each function returns a result with ``.table()`` and ``.plot()``; the notebook, a
widget panel and the tests call the same functions. Figures are closed before they
are returned, so a notebook shows each one once.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from .. import phantoms, preprocess, survival
from ..io import Volume


def _figure(**kwargs):
    import matplotlib.pyplot as plt
    fig = plt.figure(**kwargs)
    plt.close(fig)  # returned, not auto-shown: a notebook displays it once
    return fig


# ---------------------------------------------------------------- slice spacing

@dataclasses.dataclass
class SpacingResult:
    """The same patient on an isotropic grid and with thick slices (noise off, to see geometry)."""

    iso: phantoms.PhantomSet
    thick: phantoms.PhantomSet
    back: Volume                      # the thick volume resampled to the isotropic grid

    def lesion_slices(self, ph) -> int:
        """Number of axial slices that contain lesion voxels."""
        return int(ph.masks[0, 0].flatten(1).any(1).sum())

    def table(self) -> pd.DataFrame:
        rows = [(name, tuple(ph.images.shape[2:]), ph.spacing, self.lesion_slices(ph),
                 float(ph.lesion["volume_mm3"][0])) for name, ph in (("isotropic", self.iso), ("thick", self.thick))]
        return pd.DataFrame(rows, columns=["grid", "shape (z,y,x)", "spacing mm", "slices with lesion",
                                           "lesion volume mm³"]).set_index("grid")

    def plot(self, half_mm: float = 11.0):
        """Coronal slices through the lesion, ``half_mm`` around it: isotropic, thick, thick resampled back."""
        fig = _figure(figsize=(9, 3.6), layout="constrained")
        axes = fig.subplots(1, 3)
        centre_mm = np.argwhere(self.iso.masks[0, 0].numpy()).mean(0) * np.array(self.iso.spacing)   # (z, y, x)
        panels = [("isotropic", self.iso.images[0, 0], self.iso.spacing, self.iso.masks[0, 0]),
                  (f"{self.thick.spacing[0]:g} mm slices", self.thick.images[0, 0], self.thick.spacing,
                   self.thick.masks[0, 0]),
                  ("thick, resampled back", torch.as_tensor(self.back.data), self.back.spacing, None)]
        fov_z = self.iso.images.shape[2] * self.iso.spacing[0]
        lo, hi = np.percentile(self._crop(centre_mm, 6.0), [2, 98])    # one narrow window around the lesion
        for ax, (title, vol, sp, mask) in zip(axes, panels):
            row = min(int(centre_mm[1] / sp[1]), vol.shape[1] - 1)
            z0 = (fov_z - vol.shape[0] * sp[0]) / 2                                # both grids are centred
            extent = (0, vol.shape[2] * sp[2], z0, z0 + vol.shape[0] * sp[0])        # mm: x, then z
            ax.imshow(vol[:, row, :].numpy(), cmap="gray", vmin=lo, vmax=hi, origin="lower",
                      extent=extent, interpolation="nearest")                        # (z, x) plane
            if mask is not None:
                ax.contour(mask[:, row, :].numpy().astype(float), levels=[0.5], colors="red", linewidths=0.8,
                           origin="lower", extent=extent)
            ax.set(xlim=(centre_mm[2] - half_mm, centre_mm[2] + half_mm),
                   ylim=(centre_mm[0] - half_mm, centre_mm[0] + half_mm), xlabel="x (mm)", title=title)
        axes[0].set_ylabel("z (mm)")
        fig.suptitle(f"coronal view through the lesion ({self.iso.modality.upper()}, window {lo:.0f}..{hi:.0f}; "
                     "red: lesion mask)", fontsize=10)
        return fig

    def _crop(self, centre_mm, half_mm) -> np.ndarray:
        """The isotropic image within ``half_mm`` of the lesion centre."""
        c = np.asarray(centre_mm) / np.asarray(self.iso.spacing)
        h = np.ceil(half_mm / np.asarray(self.iso.spacing)).astype(int)
        lo, hi = np.maximum(c.astype(int) - h, 0), c.astype(int) + h + 1
        return self.iso.images[0, 0, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].numpy()


def slice_spacing(size: int, *, thick_mm: float = 5.0, seed: int = 0, modality: str = "ct") -> SpacingResult:
    """One patient at ``size`` voxels isotropic and at ``thick_mm`` slices covering the same field of view."""
    if isinstance(thick_mm, bool) or not isinstance(thick_mm, (int, float)) or not np.isfinite(thick_mm):
        raise TypeError(f"thick_mm: expected a finite number of millimetres, got {thick_mm!r}")
    iso = phantoms.make_phantoms(1, size=size, modality=modality, seed=seed, noise=False)
    if not iso.spacing[0] < thick_mm <= iso.images.shape[2] * iso.spacing[0] / 2:
        raise ValueError(f"thick_mm: expected a slice thickness between the isotropic spacing {iso.spacing[0]:g} mm "
                         f"and half the field of view, got {thick_mm}")
    n_slices = max(2, int(iso.images.shape[2] * iso.spacing[0] // thick_mm))   # fits in the same field of view
    thick = phantoms.make_phantoms(1, size=(n_slices, size, size), spacing=(thick_mm, *iso.spacing[1:]),
                                   modality=modality, seed=seed, noise=False)
    back = preprocess.resample(Volume(thick.images[0, 0], thick.spacing), iso.spacing)
    return SpacingResult(iso, thick, back)


# ---------------------------------------------------------------- preprocessing per modality

PREPROCESSING = {"ct": "ct_window(-100..250 HU) -> [0, 1]", "mri": "zscore inside the body mask",
                 "pet": "suv(weight, dose)"}


def preprocessed(ph: phantoms.PhantomSet) -> torch.Tensor:
    """``ph.images`` after its modality's standard step (before any log or clipping for the network)."""
    if ph.modality == "ct":
        return preprocess.ct_window(ph.images, -100.0, 250.0)
    if ph.modality == "mri":
        return preprocess.zscore(ph.images, ph.body)
    return preprocess.suv(ph.images, weight_kg=ph.weight_kg, injected_dose_bq=ph.injected_dose_bq)


@dataclasses.dataclass
class PreprocessResult:
    """Raw and preprocessed voxel values inside the body, per modality and patient."""

    raw: dict[str, list[np.ndarray]]
    after: dict[str, list[np.ndarray]]
    units: dict[str, str]

    def table(self) -> pd.DataFrame:
        rows = []
        for m in self.raw:
            for i, (r, a) in enumerate(zip(self.raw[m], self.after[m])):
                rows.append(dict(modality=m, patient=i, raw_median=np.median(r),
                                 after_min=a.min(), after_max=a.max(), after_mean=a.mean(),
                                 after_std=a.std(), after_median=np.median(a)))
        return pd.DataFrame(rows).set_index(["modality", "patient"])

    def plot(self):
        """Histograms of body voxels per modality: raw (top) and preprocessed (bottom), one line per patient."""
        fig = _figure(figsize=(11, 5.2), layout="constrained")
        axes = fig.subplots(2, len(self.raw), squeeze=False)
        for j, m in enumerate(self.raw):
            for i, (r, a) in enumerate(zip(self.raw[m], self.after[m])):
                axes[0, j].hist(r, bins=60, histtype="step", density=True, label=f"patient {i}")
                axes[1, j].hist(a, bins=60, histtype="step", density=True)
            axes[0, j].set_title(f"{m.upper()} raw ({self.units[m]})", fontsize=10)
            axes[1, j].set_title(f"after {PREPROCESSING[m]}", fontsize=10)
            axes[0, j].set_yticks([])
            axes[1, j].set_yticks([])
        axes[0, 0].legend(fontsize=7)
        return fig


def preprocessing(patients: dict[str, phantoms.PhantomSet]) -> PreprocessResult:
    """Apply each modality's preprocessing; keep the body voxels before and after, per patient."""
    units = {"ct": "HU", "mri": "a.u.", "pet": "Bq/mL"}
    if not isinstance(patients, dict) or not patients:
        raise TypeError(f"patients: expected a non-empty dict modality -> PhantomSet, got {type(patients).__name__}")
    raw, after = {}, {}
    for m, ph in patients.items():
        if ph.modality != m:
            raise ValueError(f"patients: expected the key to name the modality, got {m!r} for a {ph.modality} set")
        ph = ph.to("cpu")                                    # histograms are drawn from numpy arrays
        out, body = preprocessed(ph), ph.body
        raw[m] = [ph.images[i][body[i]].numpy() for i in range(len(ph))]
        after[m] = [out[i][body[i]].numpy() for i in range(len(ph))]
    return PreprocessResult(raw, after, units)


# ---------------------------------------------------------------- the ground truth

@dataclasses.dataclass
class TruthResult:
    """What the generator knows about each patient, and two checks that later notebooks rely on."""

    truth: pd.DataFrame               # one row per patient: p_true, label, risk, time, event, site, lesion_mm3

    def table(self) -> pd.DataFrame:
        return self.truth.round(3)

    @property
    def label_gap(self) -> tuple[float, float]:
        """(mean label - mean p_true, its standard error): labels are Bernoulli(p_true) draws."""
        p = self.truth["p_true"].to_numpy(np.float64)
        gap = float(self.truth["label"].mean() - p.mean())
        return gap, float(np.sqrt((p * (1 - p)).sum()) / len(p))

    @property
    def c_index(self) -> float:
        """Harrell's C of the true log-hazard: the best any model can rank these patients."""
        t = self.truth
        return survival.concordance_index(t["time"].to_numpy(), t["risk"].to_numpy(), t["event"].to_numpy())

    def plot(self):
        fig = _figure(figsize=(10, 3.4), layout="constrained")
        ax_p, ax_s = fig.subplots(1, 2)
        p, y = self.truth["p_true"].to_numpy(), self.truth["label"].to_numpy()
        ax_p.hist([p[y == 0], p[y == 1]], bins=np.linspace(0, 1, 21), stacked=True, label=["label 0", "label 1"])
        ax_p.set(xlabel="true probability p_true", ylabel="patients", title="labels are draws from p_true")
        ax_p.legend(fontsize=8)
        t, e, r = (self.truth[k].to_numpy() for k in ("time", "event", "risk"))
        ax_s.scatter(r[e], t[e], s=8, label="event")
        ax_s.scatter(r[~e], t[~e], s=8, marker="x", label="censored")
        ax_s.set(xlabel="true log-hazard (risk)", ylabel="time (months)", yscale="log",
                 title=f"higher risk, earlier events (C = {self.c_index:.2f})")
        ax_s.legend(fontsize=8)
        return fig


def ground_truth(ph: phantoms.PhantomSet) -> TruthResult:
    """Collect a PhantomSet's per-patient truth (p_true, labels, risk, time, event, sites, lesion volume)."""
    if len(ph) < 2:
        raise ValueError(f"ph: expected at least 2 patients, got {len(ph)}")
    columns = {"p_true": ph.p_true, "label": ph.labels, "risk": ph.risk, "time": ph.time, "event": ph.event,
               "site": ph.sites, "lesion_mm3": ph.lesion["volume_mm3"]}
    return TruthResult(pd.DataFrame({k: v.detach().cpu().numpy() for k, v in columns.items()}))
