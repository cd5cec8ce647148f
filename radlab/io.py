"""NIfTI files in and out, as a :class:`Volume` in (z, y, x) order.

Axis convention (the one SimpleITK uses, and radlab everywhere):

* ``Volume.data`` is indexed ``data[z, y, x]``: slices first, so a batch of
  volumes stacks to (N, C, D, H, W) with D = z. nibabel hands out the transpose,
  ``array[x, y, z]``; :func:`load_nifti` and :func:`save_nifti` transpose.
* ``Volume.spacing`` is the voxel size in millimetres in the same (z, y, x) order,
  e.g. (5.0, 0.7, 0.7) for thick CT slices.
* ``Volume.affine`` is the file's 4x4 voxel-to-world matrix, unchanged: like in
  nibabel it maps voxel indices in (x, y, z) order, ``world = affine @ [i_x, i_y, i_z, 1]``.

Taught in ``notebooks/00_welcome.ipynb`` ("Real images: NIfTI").
"""
from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["Volume", "load_nifti", "save_nifti", "check_spacing"]

_BOOL_TAG = b"radlab:bool"       # header 'descrip' of a saved bool mask, so it loads back as bool
_SUFFIXES = (".nii", ".nii.gz")
_DTYPES = ("bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float32", "float64")


def check_spacing(spacing: Any, name: str = "spacing") -> tuple[float, float, float]:
    """`spacing` as a (z, y, x) tuple of three positive finite floats, or a ValueError naming `name`."""
    if not isinstance(spacing, (str, bytes)) and not hasattr(spacing, "__len__"):
        raise TypeError(f"{name}: expected a sequence of three voxel sizes (z, y, x) in mm, got {spacing!r}")
    if isinstance(spacing, (str, bytes)) or len(spacing) != 3:
        raise ValueError(f"{name}: expected three voxel sizes (z, y, x) in mm, got {spacing!r}")
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected numbers, got {spacing!r}") from None
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"{name}: expected positive finite voxel sizes in mm, got {spacing!r}")
    return values


@dataclasses.dataclass
class Volume:
    """One 3-D image: `data` (D,H,W) indexed [z, y, x], `spacing` (z, y, x) mm, `affine` 4x4.

    `data` is a NumPy array or a torch tensor. `affine` maps voxel indices in
    nibabel's (x, y, z) order to world millimetres; it defaults to a diagonal matrix
    built from `spacing`. Taught in ``00_welcome``.
    """

    data: Any
    spacing: tuple[float, float, float]
    affine: np.ndarray | None = None

    def __post_init__(self):
        if not isinstance(self.data, (np.ndarray, torch.Tensor)):
            raise TypeError(f"data: expected a numpy.ndarray or torch.Tensor, got {type(self.data).__name__}")
        if self.data.ndim != 3:
            raise ValueError(f"data: expected a 3-D array (D, H, W) in (z, y, x) order, got shape "
                             f"{tuple(self.data.shape)}")
        self.spacing = check_spacing(self.spacing, "spacing")
        if self.affine is None:
            self.affine = np.diag([*self.spacing[::-1], 1.0])          # (x, y, z) order
        self.affine = np.array(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4) or not np.isfinite(self.affine).all():
            raise ValueError(f"affine: expected a finite 4x4 matrix, got shape {self.affine.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """Field of view (z, y, x) in mm: shape times spacing."""
        return tuple(n * s for n, s in zip(self.shape, self.spacing))


def _check_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.name.endswith(_SUFFIXES):
        raise ValueError(f"path: expected a file name ending in .nii or .nii.gz, got {str(path)!r}")
    return path


def load_nifti(path) -> Volume:
    """Read a NIfTI file into a :class:`Volume` with data in (z, y, x) order.

    Spacing comes from the header's voxel sizes, reversed to (z, y, x); the affine is
    kept as it is. Intensity scaling in the header (``scl_slope``) is applied.
    Taught in ``00_welcome``.
    """
    import nibabel as nib

    path = _check_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no NIfTI file at {str(path)!r}")
    try:
        image = nib.load(path)
        xyz = np.asanyarray(image.dataobj)           # reads (and decompresses) everything now
        zooms = image.header.get_zooms()
    except Exception as err:                          # truncated gzip, short data, bad header ...
        raise ValueError(f"path: {str(path)!r} is not a readable NIfTI file (truncated or corrupt?): "
                         f"{type(err).__name__}: {err}") from err
    if xyz.ndim != 3:
        raise ValueError(f"path: expected a 3-D image in {str(path)!r}, got shape {xyz.shape}")
    data = np.ascontiguousarray(xyz.transpose(2, 1, 0))            # (x, y, z) -> (z, y, x)
    if image.header["descrip"].tobytes().rstrip(b"\0") == _BOOL_TAG and data.dtype == np.uint8:
        data = data.astype(bool)
    # The header stores float32: report its shortest decimal (0.7, not 0.699999988).
    spacing = tuple(float(str(np.float32(z))) for z in zooms[:3][::-1])
    return Volume(data, spacing, image.affine)


def save_nifti(volume: Volume, path, *, overwrite: bool = False) -> Path:
    """Write `volume` to `path` (.nii or .nii.gz); returns the path.

    The file appears atomically (written to a temporary file, then renamed), so an
    interrupted run never leaves half a file. An existing file is kept unless
    ``overwrite=True``. float32, int16 and uint8 data round-trip exactly; bool masks
    are stored as uint8 and load back as bool. Taught in ``00_welcome``.
    """
    import nibabel as nib

    if not isinstance(volume, Volume):
        raise TypeError(f"volume: expected a radlab.io.Volume, got {type(volume).__name__}")
    path = _check_path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"path: {str(path)!r} exists; pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path: the folder {str(path.parent)!r} does not exist")
    data = volume.data.detach().cpu().numpy() if isinstance(volume.data, torch.Tensor) else volume.data
    if data.dtype.name not in _DTYPES:
        raise TypeError(f"volume: expected data of dtype {', '.join(_DTYPES)}, got {data.dtype}")
    is_bool = data.dtype == bool
    xyz = np.asarray(data, dtype=np.uint8 if is_bool else data.dtype).transpose(2, 1, 0)  # (z,y,x) -> (x,y,z)
    image = nib.Nifti1Image(xyz, volume.affine, dtype=xyz.dtype)
    image.header.set_zooms(volume.spacing[::-1])      # spacing as given, even if the affine is sheared
    image.header["descrip"] = _BOOL_TAG if is_bool else b""
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else ".nii"   # nibabel compresses by name
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        nib.save(image, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
