"""Classical radiomics: a fixed feature map φ(x) followed by a trained model f_w.

The chapter's classical pipeline has two separate stages: hand-crafted features
``φ(x) ∈ R^d`` computed by a fixed algorithm inside the lesion mask, then a
scikit-learn model ``f_w`` fitted on the feature table. This module writes φ by
hand so you can read it, and wraps f_w in short scikit-learn pipelines. It also
holds the "deep features" variant: a *frozen* CNN plays the part of φ.

Taught in ``notebooks/01_end_to_end_vs_classical.ipynb`` ("The classical
pipeline"); cross-checked against scipy.stats, scikit-image and pyradiomics in
``tests/test_classical.py``.

How the code is vectorised: every lesion voxel of every patient goes into one
long list (patient index, value, grey level, position) and per-patient sums are
``numpy.bincount(patient, weights=...)``. No Python loop runs over patients.

Definitions (and where pyradiomics 3.1 differs):

=====================  ==========================================================
feature                definition here
=====================  ==========================================================
firstorder_mean/std    mean, population standard deviation (ddof=0) in the mask
firstorder_skewness    m3 / m2^1.5, the biased Fisher-Pearson coefficient
                       (``scipy.stats.skew(bias=True)``, pyradiomics Skewness)
firstorder_kurtosis    **excess** kurtosis m4 / m2² − 3 (Fisher, scipy's default);
                       pyradiomics Kurtosis is Pearson's m4 / m2², i.e. ours + 3
firstorder_entropy     −Σ p log2 p of the binned grey-level histogram (the same
                       bins as the GLCM); pyradiomics adds eps inside the log
firstorder_p10/p90     10th / 90th percentile, linear interpolation (numpy default)
firstorder_energy      Σ x² over mask voxels (pyradiomics Energy, no shift)
firstorder_min/max/    minimum, maximum, max − min
range
shape_volume_mm3       voxel count × voxel volume (pyradiomics VoxelVolume);
                       pyradiomics MeshVolume encloses the marching-cubes mesh
shape_surface_mm2      Crofton's formula on the voxel grid (see surface_area);
                       pyradiomics SurfaceArea is the marching-cubes mesh area
shape_sphericity       π^(1/3) (6V)^(2/3) / A with the V and A above
shape_elongation       sqrt(λ2 / λ1), principal moments λ1 ≥ λ2 ≥ λ3 of the voxel
shape_flatness         positions in mm; sqrt(λ3 / λ1) (both as pyradiomics)
glcm_*                 grey levels binned to ``bin_count`` equal bins between the
                       lesion's min and max (pyradiomics ``binCount``); symmetric
                       GLCM at distance 1 over the 13 3D directions, pairs with
                       both voxels in the mask; each feature computed per
                       direction, then averaged over directions that have pairs
                       (as pyradiomics does by default; IBSI's "merged" variant
                       averages the matrices instead)
glcm_contrast          Σ (i−j)² p(i,j)
glcm_correlation       Σ (i−μ)(j−μ) p(i,j) / σ²  (1 for a flat region)
glcm_energy            Σ p(i,j)², the angular second moment (pyradiomics
                       JointEnergy; scikit-image "ASM", its "energy" is the root)
glcm_homogeneity       Σ p(i,j) / (1 + (i−j)²), Haralick's inverse difference
                       moment (scikit-image "homogeneity", pyradiomics Idm)
glcm_inverse_difference  Σ p(i,j) / (1 + |i−j|) (pyradiomics Id)
=====================  ==========================================================
"""
from __future__ import annotations

import functools
import itertools

import numpy as np
import pandas as pd
import torch

from .io import check_spacing

# The 13 "forward" neighbours of a voxel (dz, dy, dx); with their mirror images
# they are the 26 voxels around it. A symmetric GLCM needs only one of each pair.
DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = tuple(
    d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0))
# The 4 in-plane directions, in scikit-image's order for angles 0, π/4, π/2, 3π/4
# (its offset is (round(sin θ), round(cos θ)) in (row, col)).
DIRECTIONS_2D: tuple[tuple[int, int, int], ...] = ((0, 0, 1), (0, 1, 1), (0, 1, 0), (0, 1, -1))

# ---------------------------------------------------------------------------------------------
# Input checks and the "one long list of lesion voxels" representation
# ---------------------------------------------------------------------------------------------


def _as_volumes(x, name: str) -> np.ndarray:
    """(N,1,D,H,W), (N,D,H,W) or (D,H,W), torch or numpy -> numpy (N,D,H,W)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim == 5:
        if x.shape[1] != 1:
            raise ValueError(f"{name}: expected one channel (N,1,D,H,W), got shape {x.shape}")
        x = x[:, 0]
    elif x.ndim == 3:
        x = x[None]
    elif x.ndim != 4:
        raise ValueError(f"{name}: expected shape (N,1,D,H,W), (N,D,H,W) or (D,H,W), got {x.shape}")
    return x


def _check_inputs(images, masks):
    images, masks = _as_volumes(images, "images"), _as_volumes(masks, "masks")
    if images.shape != masks.shape:
        raise ValueError(f"masks: expected the shape of images {images.shape}, got {masks.shape}")
    if not np.issubdtype(images.dtype, np.number) or images.dtype == bool:
        raise TypeError(f"images: expected a float or integer array, got dtype {images.dtype}")
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise ValueError("masks: expected a boolean mask (or 0/1 values), got other values")
        masks = masks.astype(bool)
    empty = np.flatnonzero(~masks.reshape(len(masks), -1).any(1))
    if len(empty):
        raise ValueError(f"masks: expected at least one voxel per patient, patients {empty[:5].tolist()} are empty")
    if not np.isfinite(images[masks]).all():
        raise ValueError("images: expected finite values inside the masks, got NaN or inf")
    return images, masks


def _roi(images: np.ndarray, masks: np.ndarray):
    """Every mask voxel of every patient in one list: (patient, value, (z, y, x)), patient-sorted."""
    patient, z, y, x = np.nonzero(masks)            # C order: sorted by patient
    values = images[patient, z, y, x].astype(np.float64)
    return patient, values, np.stack([z, y, x], 1)  # (M,), (M,), (M, 3)


def _per_patient(patient, weights, n):
    """Σ weights for each patient: the workhorse of this module."""
    return np.bincount(patient, weights=weights, minlength=n)


# ---------------------------------------------------------------------------------------------
# Grey-level binning
# ---------------------------------------------------------------------------------------------


def discretize(values, patient, n: int, *, bin_count: int = 32) -> np.ndarray:
    """Bin each patient's lesion values into ``bin_count`` equal bins from its min to its max.

    Returns levels 0..bin_count-1 (pyradiomics ``binCount`` gives the same bins, numbered from 1).
    A fixed bin *count* makes texture independent of the intensity scale; a fixed bin *width*
    (IBSI's advice for CT in HU) would keep absolute intensity, which first-order features hold anyway.
    """
    if not isinstance(bin_count, (int, np.integer)) or bin_count < 2:
        raise ValueError(f"bin_count: expected an int >= 2, got {bin_count!r}")
    lo = np.full(n, np.inf)
    hi = np.full(n, -np.inf)
    np.minimum.at(lo, patient, values)
    np.maximum.at(hi, patient, values)
    width = (hi - lo) / bin_count
    width[width == 0] = 1.0                          # a flat lesion: everything in bin 0
    levels = np.floor((values - lo[patient]) / width[patient]).astype(np.int64)
    return np.clip(levels, 0, bin_count - 1)         # the maximum goes into the top bin


# ---------------------------------------------------------------------------------------------
# First-order features
# ---------------------------------------------------------------------------------------------


def _percentile(patient, values, n, q: float) -> np.ndarray:
    """q-th percentile per patient, linear interpolation as ``numpy.percentile``."""
    order = np.lexsort((values, patient))            # sort by patient, then value
    sorted_values = values[order]
    counts = np.bincount(patient, minlength=n)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = q / 100 * (counts - 1)                     # fractional rank inside each patient
    below = np.floor(pos).astype(np.int64)
    above = np.minimum(below + 1, counts - 1)
    frac = pos - below
    return sorted_values[start + below] * (1 - frac) + sorted_values[start + above] * frac


def first_order(patient, values, levels, n: int, bin_count: int) -> dict[str, np.ndarray]:
    """Intensity statistics of the lesion voxels, one value per patient (definitions: module doc)."""
    count = np.bincount(patient, minlength=n)
    mean = _per_patient(patient, values, n) / count
    dev = values - mean[patient]
    m2, m3, m4 = (_per_patient(patient, dev**k, n) / count for k in (2, 3, 4))   # central moments
    with np.errstate(invalid="ignore", divide="ignore"):
        skewness = np.where(m2 > 0, m3 / m2**1.5, 0.0)
        kurtosis = np.where(m2 > 0, m4 / m2**2 - 3.0, 0.0)                        # Fisher: normal -> 0
    hist = np.bincount(patient * bin_count + levels, minlength=n * bin_count).reshape(n, bin_count)
    p = hist / count[:, None]
    entropy = -np.sum(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0.0), 1)
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, patient, values)
    np.maximum.at(hi, patient, values)
    return {"mean": mean, "std": np.sqrt(m2), "skewness": skewness, "kurtosis": kurtosis,
            "entropy": entropy, "p10": _percentile(patient, values, n, 10),
            "p90": _percentile(patient, values, n, 90), "energy": _per_patient(patient, values**2, n),
            "min": lo, "max": hi, "range": hi - lo}


# ---------------------------------------------------------------------------------------------
# Shape features
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def crofton_weights(spacing=(1.0, 1.0, 1.0), n_points: int = 200_000) -> np.ndarray:
    """Share of the unit sphere closest to each of the 13 lattice directions (and its mirror).

    Each direction stands for the directions in its Voronoi cell on the sphere; we measure
    the cells with a dense, even (Fibonacci) set of points. For a cubic grid this gives the
    published Voronoi weights 0.0458 / 0.0370 / 0.0352 for each of the 26 directions
    (axes / face diagonals / body diagonals; Lang, Ohser & Hilfer 2001).
    Returns (13,) weights W_d for +d and -d together (twice those); they sum to 1.
    """
    steps = np.array(DIRECTIONS_3D, float) * np.array(spacing)      # (13, 3) steps in mm
    units = steps / np.linalg.norm(steps, axis=1, keepdims=True)
    k = np.arange(n_points) + 0.5                                    # Fibonacci sphere points
    z = 1 - 2 * k / n_points
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    points = np.stack([z, r * np.cos(phi), r * np.sin(phi)], 1)      # (n_points, 3)
    nearest = np.abs(points @ units.T).argmax(1)                     # |.|: d and -d share a weight
    return np.bincount(nearest, minlength=len(units)) / n_points


def surface_area(patient, coords, masks: np.ndarray, spacing) -> np.ndarray:
    """Lesion surface area in mm² by Crofton's formula, no mesh needed.

    A line in direction u crosses a surface of area S in a volume V on average
    P_L(u) = S |cos| / V times per unit length, and the average of |cos| over all
    directions is 1/2, so S = 2 V E_u[P_L(u)]. On the grid we count in/out changes
    N_d between neighbours along each of the 13 directions, whose lines have total
    length (grid voxels) x |step_d|; hence S = 2 Σ_d W_d N_d v / |step_d| with v the voxel
    volume and W_d the Voronoi weights of ±d (``crofton_weights``). Unbiased for isotropic
    surfaces; a flat face aligned with the grid is off by a few percent.
    """
    n = masks.shape[0]
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1), (1, 1)))          # (N, D+2, H+2, W+2): outside = False
    p, c = patient, coords + 1
    voxel_mm3 = float(np.prod(spacing))
    area = np.zeros(n)
    for w, d in zip(crofton_weights(tuple(spacing)), DIRECTIONS_3D):
        step_mm = float(np.linalg.norm(np.array(d) * np.array(spacing)))
        ahead, behind = c + d, c - d
        changes = (~padded[p, ahead[:, 0], ahead[:, 1], ahead[:, 2]]).astype(float) \
            + (~padded[p, behind[:, 0], behind[:, 1], behind[:, 2]])  # each in/out pair has one mask voxel
        area += 2 * w * _per_patient(p, changes, n) * voxel_mm3 / step_mm
    return area


def shape(patient, coords, masks: np.ndarray, spacing) -> dict[str, np.ndarray]:
    """Volume, surface, sphericity and the principal-moment ratios of each lesion (module doc)."""
    n = masks.shape[0]
    count = np.bincount(patient, minlength=n)
    volume = count * float(np.prod(spacing))
    area = surface_area(patient, coords, masks, spacing)
    pos = coords * np.array(spacing)                                   # (M, 3) voxel centres in mm
    centre = np.stack([_per_patient(patient, pos[:, a], n) for a in range(3)], 1) / count[:, None]
    dev = pos - centre[patient]
    cov = np.stack([[_per_patient(patient, dev[:, a] * dev[:, b], n) for b in range(3)]
                    for a in range(3)], -1).transpose(1, 0, 2) / count[:, None, None]  # (N, 3, 3)
    lam = np.clip(np.linalg.eigvalsh(cov)[:, ::-1], 0, None)          # λ1 >= λ2 >= λ3
    with np.errstate(invalid="ignore", divide="ignore"):
        elongation = np.where(lam[:, 0] > 0, np.sqrt(lam[:, 1] / lam[:, 0]), 0.0)
        flatness = np.where(lam[:, 0] > 0, np.sqrt(lam[:, 2] / lam[:, 0]), 0.0)
    sphericity = np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area
    return {"volume_mm3": volume, "surface_mm2": area, "sphericity": sphericity,
            "elongation": elongation, "flatness": flatness}


# ---------------------------------------------------------------------------------------------
# Texture: the grey-level co-occurrence matrix (GLCM)
# ---------------------------------------------------------------------------------------------


def glcm_matrices(levels: np.ndarray, n_levels: int, directions=DIRECTIONS_3D) -> np.ndarray:
    """Symmetric, normalised GLCMs at distance 1: (N, n_directions, Ng, Ng).

    ``levels``: (N, D, H, W) ints, grey level 0..n_levels-1 inside the mask and -1 outside.
    P[n, k, i, j] is the share of neighbour pairs (voxel, voxel + direction k) of patient n,
    both inside the mask, with levels (i, j) or (j, i). A direction without pairs gives NaN.
    """
    n = levels.shape[0]
    padded = np.pad(levels, ((0, 0), (1, 1), (1, 1), (1, 1)), constant_values=-1)  # (N, D+2, H+2, W+2)
    flat = padded.ravel()
    _, d2, h2, w2 = padded.shape
    inside = np.flatnonzero(flat >= 0)                 # flat index of every mask voxel
    patient, a = inside // (d2 * h2 * w2), flat[inside]
    P = np.empty((n, len(directions), n_levels, n_levels))
    for k, (dz, dy, dx) in enumerate(directions):
        b = flat[inside + (dz * h2 + dy) * w2 + dx]    # the neighbour's level; padding keeps it in-patient
        pair = b >= 0
        idx = (patient[pair] * n_levels + a[pair]) * n_levels + b[pair]
        counts = np.bincount(idx, minlength=n * n_levels**2).reshape(n, n_levels, n_levels)
        counts = counts + counts.transpose(0, 2, 1)   # symmetric: (i, j) and (j, i)
        with np.errstate(invalid="ignore", divide="ignore"):
            P[:, k] = counts / counts.sum((1, 2), keepdims=True)
    return P


def glcm_features(P: np.ndarray) -> dict[str, np.ndarray]:
    """Haralick features of GLCMs ``P`` (..., Ng, Ng), one value per matrix (module doc)."""
    ng = P.shape[-1]
    i, j = np.meshgrid(np.arange(ng), np.arange(ng), indexing="ij")
    mu = np.sum(i * P, (-2, -1))                       # symmetric P: μ_i = μ_j, σ_i = σ_j
    var = np.sum((i - mu[..., None, None]) ** 2 * P, (-2, -1))
    cov = np.sum((i - mu[..., None, None]) * (j - mu[..., None, None]) * P, (-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        correlation = np.where(var > 1e-15, cov / var, 1.0)   # flat region: perfectly correlated
    correlation[np.isnan(mu)] = np.nan
    return {"contrast": np.sum((i - j) ** 2 * P, (-2, -1)),
            "correlation": correlation,
            "energy": np.sum(P**2, (-2, -1)),
            "homogeneity": np.sum(P / (1 + (i - j) ** 2), (-2, -1)),
            "inverse_difference": np.sum(P / (1 + np.abs(i - j)), (-2, -1))}


def _mean_over_directions(values: np.ndarray) -> np.ndarray:
    """(N, n_directions) -> (N,): mean over the directions that have pairs (NaN if none has)."""
    has_pairs = np.isfinite(values)
    total = np.where(has_pairs, values, 0.0).sum(1)
    count = has_pairs.sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ---------------------------------------------------------------------------------------------
# φ(x): the feature table
# ---------------------------------------------------------------------------------------------


def extract_features(images, masks, spacing=None, *, bin_count: int = 32, chunk: int = 256) -> pd.DataFrame:
    """φ(x): one row of hand-crafted features per patient, columns ``firstorder_*``, ``shape_*``, ``glcm_*``.

    ``images``/``masks``: (N,1,D,H,W), (N,D,H,W) or (D,H,W), torch or numpy; images in physical
    units (HU, SUV, ...), masks boolean. ``spacing``: (z, y, x) in mm (default 1 mm). Definitions
    and the differences from pyradiomics are in the module docstring. Patients go through in
    chunks of ``chunk`` to bound memory. Taught in notebook 01 ("The classical pipeline").
    """
    images, masks = _check_inputs(images, masks)
    spacing = (1.0, 1.0, 1.0) if spacing is None else check_spacing(spacing)
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk: expected a positive int, got {chunk!r}")
    tables = []
    for start in range(0, len(images), chunk):
        img, msk = images[start:start + chunk], masks[start:start + chunk]
        n = len(img)
        patient, values, coords = _roi(img, msk)
        levels = discretize(values, patient, n, bin_count=bin_count)
        grid = np.full(msk.shape, -1, np.int64)
        grid[patient, coords[:, 0], coords[:, 1], coords[:, 2]] = levels   # (N, D, H, W), -1 outside
        texture = {k: _mean_over_directions(v) for k, v in glcm_features(glcm_matrices(grid, bin_count)).items()}
        groups = {"firstorder": first_order(patient, values, levels, n, bin_count),
                  "shape": shape(patient, coords, msk, spacing), "glcm": texture}
        tables.append(pd.DataFrame({f"{g}_{k}": v for g, feats in groups.items() for k, v in feats.items()}))
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# f_w: scikit-learn models, and the deep-feature variant of φ
# ---------------------------------------------------------------------------------------------


def classical_model(kind: str = "logreg", **kw):
    """f_w: a scikit-learn Pipeline, StandardScaler then ``kind`` ("logreg" | "svm" | "rf").

    Defaults regularise for the small tables of radiomics: L2 logistic regression with C=1,
    an RBF SVM with C=1 and Platt-scaled probabilities, a forest of 300 trees with at least
    3 patients per leaf. ``kw`` overrides the model's arguments. Taught in notebook 01.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    makers = {
        "logreg": lambda: LogisticRegression(**{"C": 1.0, "max_iter": 5000, **kw}),
        # Platt scaling (sigmoid on cross-validated SVM scores) turns margins into probabilities
        "svm": lambda: CalibratedClassifierCV(SVC(**{"C": 1.0, "kernel": "rbf", **kw}),
                                              method="sigmoid", ensemble=False),
        "rf": lambda: RandomForestClassifier(**{"n_estimators": 300, "min_samples_leaf": 3,
                                                "random_state": 0, "n_jobs": 1, **kw}),
    }
    if kind not in makers:
        raise ValueError(f"kind: expected one of {sorted(makers)}, got {kind!r}")
    return make_pipeline(StandardScaler(), makers[kind]())


def deep_features(model: torch.nn.Module, images, *, batch_size: int = 64) -> np.ndarray:
    """φ(x) = a frozen CNN: ``model.features(x)`` for every image, as a numpy (N, F) array.

    Runs in eval mode under ``torch.no_grad()`` on the model's device and restores the
    model's training mode afterwards. ``images``: (N,1,D,H,W) network-ready inputs.
    Taught in notebook 01 ("Deep features").
    """
    if not callable(getattr(model, "features", None)):
        raise TypeError(f"model: expected a radlab classifier with a .features(x) method, got {type(model).__name__}")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim != 5:
        raise ValueError(f"images: expected shape (N,C,D,H,W), got {tuple(x.shape)}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = [model.features(x[i:i + batch_size].to(device)).flatten(1).float().cpu()
                     for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(feats).numpy()


class FrozenFeatures:
    """A scikit-learn transformer: images -> ``deep_features(model, images)``. Nothing is fitted."""

    def __init__(self, model, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return deep_features(self.model, X, batch_size=self.batch_size)

    def fit_transform(self, X, y=None):
        return self.transform(X)

    def get_params(self, deep=True):
        return {"model": self.model, "batch_size": self.batch_size}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self


def deep_feature_model(model: torch.nn.Module, images, labels, kind: str = "logreg", **kw):
    """Frozen CNN -> features -> ``classical_model(kind)``, fitted on (images, labels).

    Returns a fitted Pipeline whose ``predict_proba`` takes images. Only f_w learns: the
    CNN's weights never see the labels, which is why METRICS condition #5 scores this "No".
    Taught in notebook 01 ("Deep features").
    """
    from sklearn.pipeline import Pipeline

    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or len(y) != len(images):
        raise ValueError(f"labels: expected shape ({len(images)},), got {y.shape}")
    head = classical_model(kind, **kw)
    pipe = Pipeline([("cnn", FrozenFeatures(model)), *head.steps])
    return pipe.fit(images, y)
