"""radlab.io: NIfTI round trips, the (z, y, x) axis convention, atomic writes, bad files."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from radlab.io import Volume, load_nifti, save_nifti

SPACING = (5.0, 0.7, 0.8)          # (z, y, x) mm: thick slices, anisotropic in-plane too


def _asymmetric(dtype) -> np.ndarray:
    """A (D,H,W) = (3,4,5) array whose every voxel is distinct: value = 100 z + 10 y + x."""
    z, y, x = np.meshgrid(np.arange(3), np.arange(4), np.arange(5), indexing="ij")
    return (100 * z + 10 * y + x).astype(dtype)


def _oblique_affine() -> np.ndarray:
    """A non-trivial voxel->world affine for (x, y, z) indices: rotation, spacing (0.8, 0.7, 5.0), shift."""
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING[::-1])
    affine[:3, 3] = (-12.5, 40.0, 7.25)
    return affine


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8, bool, np.int64, np.float64])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_round_trip_is_exact(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    if dtype is bool:
        data = rng.random((6, 7, 8)) > 0.5
    elif np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -30000), min(info.max, 30000), (6, 7, 8), endpoint=True).astype(dtype)
    else:
        data = (rng.standard_normal((6, 7, 8)) * 1000).astype(dtype)
    volume = Volume(data, SPACING, _oblique_affine())
    back = load_nifti(save_nifti(volume, tmp_path / f"v{suffix}"))
    assert back.data.dtype == data.dtype
    assert np.array_equal(back.data, data)
    assert back.spacing == SPACING
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)   # header keeps float32


def test_torch_data_saves_like_numpy(tmp_path):
    data = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    back = load_nifti(save_nifti(Volume(data, (1.0, 2.0, 3.0)), tmp_path / "t.nii.gz"))
    assert np.array_equal(back.data, data.numpy()) and back.spacing == (1.0, 2.0, 3.0)


def test_load_transposes_nibabel_xyz_to_zyx(tmp_path):
    data = _asymmetric(np.int16)                                     # (z, y, x) = (3, 4, 5)
    affine = _oblique_affine()
    nib.save(nib.Nifti1Image(data.transpose(2, 1, 0), affine), tmp_path / "n.nii.gz")   # nibabel: (x, y, z)
    volume = load_nifti(tmp_path / "n.nii.gz")
    assert volume.shape == (3, 4, 5)
    assert volume.data[2, 1, 4] == 214                                # [z, y, x]
    assert volume.spacing == SPACING                                  # header zooms (x, y, z) reversed
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    # the affine still maps nibabel's (x, y, z) index of voxel [z=2, y=1, x=4] to its world position
    world = affine @ np.array([4, 1, 2, 1.0])
    np.testing.assert_allclose(volume.affine @ np.array([4, 1, 2, 1.0]), world, atol=1e-4)


def test_anisotropic_spacing_from_header(tmp_path):
    image = nib.Nifti1Image(np.zeros((10, 20, 30), np.float32), np.diag([0.5, 0.9, 3.0, 1.0]))
    nib.save(image, tmp_path / "a.nii")
    volume = load_nifti(tmp_path / "a.nii")
    assert volume.shape == (30, 20, 10) and volume.spacing == (3.0, 0.9, 0.5)
    assert volume.extent_mm == pytest.approx((90.0, 18.0, 5.0))


def test_scaled_integers_load_in_physical_units(tmp_path):
    # CT files often store int16 with scl_slope/scl_inter; the loader returns HU.
    raw = _asymmetric(np.int16).transpose(2, 1, 0)
    image = nib.Nifti1Image(raw, np.eye(4))
    image.header.set_slope_inter(2.0, -1024.0)
    nib.save(image, tmp_path / "ct.nii.gz")
    volume = load_nifti(tmp_path / "ct.nii.gz")
    np.testing.assert_allclose(volume.data, _asymmetric(np.float64) * 2 - 1024)


def test_default_affine_follows_spacing():
    volume = Volume(np.zeros((2, 3, 4)), SPACING)
    np.testing.assert_array_equal(volume.affine, np.diag([0.8, 0.7, 5.0, 1.0]))


def test_save_refuses_to_overwrite(tmp_path):
    path = save_nifti(Volume(np.zeros((2, 2, 2), np.float32), (1, 1, 1)), tmp_path / "x.nii.gz")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_nifti(Volume(np.ones((2, 2, 2), np.float32), (1, 1, 1)), path)
    assert load_nifti(path).data.sum() == 0
    save_nifti(Volume(np.ones((2, 2, 2), np.float32), (1, 1, 1)), path, overwrite=True)
    assert load_nifti(path).data.sum() == 8


def test_save_leaves_no_temporary_files(tmp_path, monkeypatch):
    save_nifti(Volume(np.zeros((2, 2, 2), np.float32), (1, 1, 1)), tmp_path / "x.nii.gz")
    assert os.listdir(tmp_path) == ["x.nii.gz"]

    def broken_save(image, filename):                  # a crash half-way through writing
        open(filename, "wb").write(b"half a file")
        raise OSError("disk full")
    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(Volume(np.zeros((2, 2, 2), np.float32), (1, 1, 1)), tmp_path / "y.nii.gz")
    assert os.listdir(tmp_path) == ["x.nii.gz"]        # neither y.nii.gz nor a temporary file


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="path: .*nope.nii.gz"):
        load_nifti(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_truncated_file_is_a_value_error_naming_the_path(tmp_path, suffix):
    path = save_nifti(Volume(np.random.default_rng(0).random((20, 20, 20), np.float32), (1, 1, 1)),
                      tmp_path / f"cut{suffix}")
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ValueError, match=f"path: .*cut{suffix}.*truncated or corrupt"):
        load_nifti(path)


def test_garbage_file_is_a_value_error(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all"))
    with pytest.raises(ValueError, match="junk.nii.gz"):
        load_nifti(path)


def test_four_d_file_is_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((2, 3, 4, 5), np.float32), np.eye(4)), tmp_path / "t.nii.gz")
    with pytest.raises(ValueError, match="3-D"):
        load_nifti(tmp_path / "t.nii.gz")
