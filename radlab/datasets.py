"""torch Datasets over real images: a folder of NIfTI files, a MedMNIST 3D .npz.

Both hand out the same items as :class:`radlab.phantoms.PhantomDataset`:
``(x, y)`` with ``x`` a (1, D, H, W) float32 tensor and ``y`` the task's target,
so a notebook swaps synthetic patients for real ones by changing one line.

Taught in ``notebooks/00_welcome.ipynb`` ("Bring your own data").
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .io import Volume, load_nifti

__all__ = ["NiftiFolder", "MedMNIST3D", "TASKS"]

TASKS = ("classification", "segmentation", "survival")
_NIFTI = (".nii.gz", ".nii")


def _stem(path: Path) -> str:
    """'case_001.nii.gz' -> 'case_001'."""
    for suffix in _NIFTI:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.stem


def _check_callable(value, name: str):
    if value is not None and not callable(value):
        raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")


def _missing(names, limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


class NiftiFolder(torch.utils.data.Dataset):
    """Patients stored as ``root/images/<id>.nii.gz`` (+ ``root/masks/<id>.nii.gz``) + a CSV.

    The CSV (``root/labels.csv``) has an ``id`` column matching the file names and,
    per `task`, a ``label`` column (classification) or ``time`` and ``event``
    columns (survival); segmentation takes its target from the masks. Item ``i`` is
    ``(x, y)``: x (1, D, H, W) float32, optionally passed through ``preprocess(x)``
    (e.g. :func:`radlab.preprocess.ct_window`), and y a float label (), a float mask
    (1, D, H, W) or ``[time, event]`` (2,). ``transform(x, y) -> (x, y)`` runs last
    (augmentation). Files are read when an item is asked for. Taught in ``00_welcome``.
    """

    def __init__(self, root, images: str = "images", masks: str | None = "masks",
                 labels: str | None = "labels.csv", task: str = "classification", *,
                 preprocess: Callable | None = None, transform: Callable | None = None,
                 id_column: str = "id", label_column: str = "label",
                 time_column: str = "time", event_column: str = "event"):
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        _check_callable(preprocess, "preprocess")
        _check_callable(transform, "transform")
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root: expected a str or os.PathLike folder, got {type(root).__name__}")
        self.root, self.task = Path(root), task
        self.preprocess, self.transform = preprocess, transform
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: no folder at {str(self.root)!r}")
        self.image_paths = self._scan(images, "images")
        self.ids = sorted(self.image_paths)
        self.mask_paths = self._masks(masks)
        self.table = self._table(labels, id_column)
        self.targets = self._targets(label_column, time_column, event_column)

    def _scan(self, folder: str, name: str) -> dict[str, Path]:
        path = self.root / folder
        if not path.is_dir():
            raise FileNotFoundError(f"{name}: no folder {str(path)!r}")
        files = {_stem(p): p for p in path.iterdir() if p.name.endswith(_NIFTI)}
        if not files:
            raise ValueError(f"{name}: no .nii or .nii.gz files in {str(path)!r}")
        return files

    def _masks(self, masks: str | None) -> dict[str, Path] | None:
        if masks is None or not (self.root / masks).is_dir():
            if self.task == "segmentation":
                raise FileNotFoundError(f"masks: task='segmentation' needs a mask folder, "
                                        f"{str(self.root / str(masks))!r} does not exist")
            return None
        found = self._scan(masks, "masks")
        if set(self.ids) - set(found):
            raise ValueError(f"masks: no mask for images {_missing(set(self.ids) - set(found))} "
                             f"in {str(self.root / masks)!r}")
        if set(found) - set(self.ids):
            raise ValueError(f"masks: masks without an image: {_missing(set(found) - set(self.ids))}")
        return found

    def _table(self, labels: str | None, id_column: str):
        import pandas as pd

        path = None if labels is None else self.root / labels
        if path is None or not path.is_file():
            if self.task != "segmentation":
                raise FileNotFoundError(f"labels: task={self.task!r} needs a CSV, "
                                        f"{str(path) if path else None!r} does not exist")
            return None
        table = pd.read_csv(path, dtype={id_column: str})
        if id_column not in table.columns:
            raise ValueError(f"id_column: no column {id_column!r} in {str(path)!r}; columns: {list(table.columns)}")
        ids = table[id_column]
        if ids.duplicated().any():
            raise ValueError(f"labels: duplicated ids in {str(path)!r}: {_missing(set(ids[ids.duplicated()]))}")
        if set(ids) - set(self.ids):
            raise ValueError(f"labels: ids in {str(path)!r} without an image: {_missing(set(ids) - set(self.ids))}")
        if set(self.ids) - set(ids):
            raise ValueError(f"labels: images without a row in {str(path)!r}: {_missing(set(self.ids) - set(ids))}")
        return table.set_index(id_column).loc[self.ids]           # rows in the order of self.ids

    def _column(self, name: str, argument: str) -> np.ndarray:
        if name not in self.table.columns:
            raise ValueError(f"{argument}: no column {name!r} in the labels CSV; columns: {list(self.table.columns)}")
        values = self.table[name].to_numpy()
        try:
            values = values.astype(np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"{argument}: column {name!r} must hold numbers, got {values[:3].tolist()} ...") from None
        if not np.isfinite(values).all():
            raise ValueError(f"{argument}: column {name!r} has missing or non-finite values")
        return values

    def _targets(self, label_column, time_column, event_column) -> torch.Tensor | None:
        if self.task == "classification":
            return torch.from_numpy(self._column(label_column, "label_column"))          # (N,)
        if self.task == "survival":
            time, event = self._column(time_column, "time_column"), self._column(event_column, "event_column")
            if (time <= 0).any():
                raise ValueError(f"time_column: expected positive times, got minimum {time.min()}")
            if not np.isin(event, (0, 1)).all():
                raise ValueError(f"event_column: expected 0 (censored) or 1 (event), got {np.unique(event)}")
            return torch.from_numpy(np.stack([time, event], 1))                          # (N, 2)
        return None                                                                      # masks, read per item

    def __len__(self) -> int:
        return len(self.ids)

    def volume(self, i: int) -> Volume:
        """Image `i` as a :class:`radlab.io.Volume` (spacing, affine), before preprocessing."""
        return load_nifti(self.image_paths[self.ids[i]])

    def mask(self, i: int) -> Volume | None:
        """Mask `i` as a :class:`radlab.io.Volume`, or None when the folder has no masks."""
        return None if self.mask_paths is None else load_nifti(self.mask_paths[self.ids[i]])

    def __getitem__(self, i: int):
        x = torch.from_numpy(self.volume(i).data.astype(np.float32))[None]             # (1, D, H, W)
        if self.preprocess is not None:
            x = self.preprocess(x)
        if self.task == "segmentation":
            mask = self.mask(i).data
            if mask.shape != x.shape[1:]:
                raise ValueError(f"masks: mask {self.ids[i]!r} has shape {mask.shape}, image {tuple(x.shape[1:])}")
            y = torch.from_numpy((mask > 0).astype(np.float32))[None]                   # (1, D, H, W)
        else:
            y = self.targets[i]
        return self.transform(x, y) if self.transform is not None else (x, y)


class MedMNIST3D(torch.utils.data.Dataset):
    """One split of a MedMNIST 3D ``.npz`` file (e.g. ``nodulemnist3d.npz``), read from disk.

    The file holds ``{split}_images`` (N, D, H, W) uint8 and ``{split}_labels``
    (N, 1) or (N, k). Item ``i`` is ``(x, y)``: x (1, D, H, W) float32 in [0, 1]; y a
    float class index () for one label column (0./1. for binary sets, ready for BCE;
    ``y.long()`` for cross-entropy) or a float vector (k,) for multi-label sets.
    ``transform(x, y) -> (x, y)`` runs last. No download: fetch the file with
    ``data_scripts/``. Taught in ``00_welcome``.
    """

    SPLITS = ("train", "val", "test")

    def __init__(self, npz_path, split: str = "train", *, transform: Callable | None = None):
        if split not in self.SPLITS:
            raise ValueError(f"split: expected one of {self.SPLITS}, got {split!r}")
        _check_callable(transform, "transform")
        if not isinstance(npz_path, (str, os.PathLike)):
            raise TypeError(f"npz_path: expected a str or os.PathLike, got {type(npz_path).__name__}")
        self.path, self.split, self.transform = Path(npz_path), split, transform
        if not self.path.is_file():
            raise FileNotFoundError(f"npz_path: no file at {str(self.path)!r}")
        try:
            with np.load(self.path) as npz:
                arrays = {key: npz[key] for key in npz.files if key.startswith(f"{split}_")}
        except Exception as err:                           # not a zip, truncated, pickled ...
            raise ValueError(f"npz_path: {str(self.path)!r} is not a readable .npz file: {err}") from err
        if {f"{split}_images", f"{split}_labels"} - set(arrays):
            raise ValueError(f"npz_path: {str(self.path)!r} has no {split}_images/{split}_labels; "
                             f"keys for this split: {sorted(arrays)}")
        self.images, self.labels = self._check(arrays[f"{split}_images"], arrays[f"{split}_labels"])

    def _check(self, images: np.ndarray, labels: np.ndarray):
        if images.ndim == 5 and images.shape[-1] == 1:
            images = images[..., 0]                       # (N, D, H, W, 1) -> (N, D, H, W)
        if images.ndim != 4:
            raise ValueError(f"npz_path: {self.split}_images must be (N, D, H, W), got {images.shape}")
        labels = labels.reshape(len(labels), -1)          # (N,) -> (N, 1)
        if len(labels) != len(images):
            raise ValueError(f"npz_path: {len(images)} {self.split}_images but {len(labels)} labels")
        return images, torch.from_numpy(labels.astype(np.float32))

    @property
    def n_classes(self) -> int:
        """Classes of a single-label set (max label + 1), or the number of label columns."""
        return int(self.labels.max()) + 1 if self.labels.shape[1] == 1 else self.labels.shape[1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        image = self.images[i]
        scale = 255.0 if image.dtype == np.uint8 else 1.0
        x = torch.from_numpy(image.astype(np.float32) / scale)[None]                   # (1, D, H, W)
        y = self.labels[i, 0] if self.labels.shape[1] == 1 else self.labels[i]
        return self.transform(x, y) if self.transform is not None else (x, y)
