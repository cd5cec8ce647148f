"""radlab.preprocess: windowing, z-score, SUV and resampling, checked on values we can work out."""
import numpy as np
import pytest
import torch

from radlab.io import Volume
from radlab.preprocess import ct_window, resample, suv, zscore


# --------------------------------------------------------------------------- ct_window
def test_ct_window_endpoints_and_saturation():
    hu = torch.tensor([-1000.0, -100.0, 75.0, 250.0, 3000.0])
    assert torch.equal(ct_window(hu), torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert torch.allclose(ct_window(hu, lo=-1000, hi=1000), torch.tensor([0.0, 0.45, 0.5375, 0.625, 1.0]))


def test_ct_window_keeps_the_array_kind():
    hu = np.array([-200, 0, 400], dtype=np.int16)                    # CT files store int16
    out = ct_window(hu)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 100 / 350, 1.0], rtol=1e-6)
    assert ct_window(torch.zeros(2, dtype=torch.float64)).dtype == torch.float64


# --------------------------------------------------------------------------- zscore
def test_zscore_inside_mask_has_mean_0_std_1_and_outside_is_0():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 1, 8, 9, 10, generator=g) * torch.tensor([1.0, 50.0, 5.0]).view(3, 1, 1, 1, 1) + 300
    mask = torch.rand(3, 1, 8, 9, 10, generator=g) > 0.4
    z = zscore(x, mask)
    for i in range(3):                                               # each patient on its own
        inside = z[i][mask[i]].double()
        assert abs(inside.mean()) < 1e-5 and abs(inside.std(unbiased=False) - 1) < 1e-5
    assert torch.all(z[~mask] == 0)


def test_zscore_statistics_come_from_the_mask_only():
    x = torch.zeros(1, 1, 4, 4, 4)
    x[..., :2] = torch.arange(32.0).reshape(1, 1, 4, 4, 2)            # body voxels
    x[..., 2:] = 1e6                                                   # "air" far away
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., :2] = True
    body = x[mask]
    expected = (body - body.mean()) / body.std(unbiased=False)
    assert torch.allclose(zscore(x, mask)[mask], expected, atol=1e-6)


def test_zscore_samples_do_not_influence_each_other():
    x = torch.randn(2, 1, 5, 5, 5)
    alone = zscore(x[:1])
    x2 = x.clone()
    x2[1] *= 1000
    assert torch.allclose(zscore(x2)[:1], alone)


def test_zscore_of_a_constant_volume_is_zero_not_nan():
    assert torch.equal(zscore(torch.full((4, 4, 4), 7.0)), torch.zeros(4, 4, 4))


def test_zscore_without_mask_single_volume_and_numpy():
    x = np.random.default_rng(0).normal(5, 3, (6, 7, 8)).astype(np.float32)
    z = zscore(x)
    assert isinstance(z, np.ndarray)
    np.testing.assert_allclose(z, (x - x.mean()) / x.std(), atol=1e-5)


# --------------------------------------------------------------------------- suv
def test_suv_arithmetic():
    # 5 kBq/mL in a 70 kg patient after 350 MBq: 5000 * 70000 g / 3.5e8 Bq = 1.0
    assert suv(torch.tensor([5000.0]), weight_kg=70, injected_dose_bq=3.5e8).item() == pytest.approx(1.0)
    assert suv(np.array([10000.0]), weight_kg=70.0, injected_dose_bq=3.5e8)[0] == pytest.approx(2.0)


def test_suv_per_sample_weight_and_dose_broadcast_over_the_batch():
    activity = torch.full((3, 1, 2, 2, 2), 4000.0)
    weight = torch.tensor([50.0, 75.0, 100.0])
    dose = torch.tensor([2e8, 3e8, 4e8])
    out = suv(activity, weight_kg=weight, injected_dose_bq=dose)
    expected = 4000 * weight * 1000 / dose                            # (3,)
    assert out.shape == activity.shape
    assert torch.allclose(out, expected.view(3, 1, 1, 1, 1).expand_as(out))


# --------------------------------------------------------------------------- resample
def _world_ramp(shape, affine):
    """A volume whose value at each voxel is its world z coordinate (under `affine`)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    xyz1 = np.stack([x, y, z, np.ones_like(x)], -1).reshape(-1, 4).T          # (4, voxels), (x,y,z) order
    return (affine @ xyz1)[2].reshape(shape)


@pytest.mark.parametrize("new_spacing", [(1.0, 1.0, 1.0), (10.0, 2.0, 0.5), (2.5, 0.7, 1.3)])
def test_resample_keeps_extent_and_places_voxels_right(new_spacing):
    affine = np.diag([0.8, 0.7, 5.0, 1.0])
    affine[:3, 3] = (3.0, -4.0, 20.0)
    shape = (12, 20, 16)
    volume = Volume(torch.tensor(_world_ramp(shape, affine), dtype=torch.float64), (5.0, 0.7, 0.8), affine)
    out = resample(volume, new_spacing)
    assert out.extent_mm == pytest.approx(volume.extent_mm)             # same field of view
    assert out.spacing == pytest.approx(new_spacing, rel=0.1)           # close to the request ...
    for n, s, target in zip(out.shape, out.spacing, new_spacing):      # ... and exact when it divides
        if abs(round(n * s / target) - n * s / target) < 1e-9:
            assert s == pytest.approx(target)
    # A linear ramp is reproduced exactly at each new voxel's world position (clamped at the edges).
    world_z = _world_ramp(out.shape, out.affine)
    lowest, highest = 20.0, 20.0 + 5.0 * (shape[0] - 1)
    np.testing.assert_allclose(out.data.numpy(), np.clip(world_z, lowest, highest), atol=1e-9)


def test_resample_matches_scipy_zoom():
    from scipy import ndimage

    x = np.random.default_rng(0).random((6, 10, 14))
    out = resample(x, (1.0, 1.5, 0.7), from_spacing=(2.0, 1.0, 1.0))
    zoom = [m / n for m, n in zip(out.shape, x.shape)]
    reference = ndimage.zoom(x, zoom, order=1, mode="nearest", grid_mode=True)
    assert isinstance(out, np.ndarray) and out.shape == reference.shape
    np.testing.assert_allclose(out, reference, atol=1e-6)


def test_resample_nearest_keeps_mask_dtype_and_labels():
    mask = torch.zeros(4, 8, 8, dtype=torch.bool)
    mask[1:3, 2:6, 2:6] = True
    up = resample(Volume(mask, (2.0, 1.0, 1.0)), (1.0, 1.0, 1.0), order=0)
    assert up.data.dtype == torch.bool and up.shape == (8, 8, 8)
    assert torch.equal(up.data, mask.repeat_interleave(2, dim=0))       # every slice copied twice
    labels = torch.randint(0, 5, (2, 1, 4, 4, 4))
    down = resample(labels, (2.0, 2.0, 2.0), order=0, from_spacing=(1.0, 1.0, 1.0))
    assert down.shape == (2, 1, 2, 2, 2) and down.dtype == labels.dtype
    assert set(down.unique().tolist()) <= set(labels.unique().tolist())


def test_resample_identity_and_batch_shapes():
    x = torch.randn(2, 3, 5, 6, 7)
    assert torch.equal(resample(x, (1, 2, 3), from_spacing=(1, 2, 3)), x)
    out = resample(x, (0.5, 1.0, 1.5), from_spacing=(1, 1, 1))
    assert out.shape == (2, 3, 10, 6, 5)
    assert torch.allclose(out[1, 2], resample(x[1, 2], (0.5, 1.0, 1.5), from_spacing=(1, 1, 1)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_resample_stays_on_the_gpu():
    x = torch.randn(1, 1, 8, 8, 8, device="cuda")
    out = resample(x, (2.0, 2.0, 2.0), from_spacing=(1.0, 1.0, 1.0))
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), resample(x.cpu(), (2.0, 2.0, 2.0), from_spacing=(1.0, 1.0, 1.0)), atol=1e-6)


def test_crop_around_centres_the_lesion_and_stays_inside():
    from radlab.preprocess import crop_around
    masks = torch.zeros(2, 1, 20, 20, 20, dtype=torch.bool)
    masks[0, 0, 3:6, 10:13, 15:18] = True        # centre (4, 11, 16)
    masks[1, 0, 17:20, 0:2, 9:11] = True         # at the border: the crop is clamped inside
    images = torch.arange(2 * 20**3, dtype=torch.float32).reshape(2, 1, 20, 20, 20)
    crop = crop_around(images, masks, 8)
    assert crop.shape == (2, 1, 8, 8, 8)
    assert crop[0, 0, 0, 0, 0] == images[0, 0, 0, 7, 12]
    assert crop[1, 0, 0, 0, 0] == images[1, 0, 12, 0, 6]
    assert crop_around(masks.float(), masks, 8).sum((1, 2, 3, 4)).tolist() == [27.0, 12.0]
    with pytest.raises(ValueError, match="edge: expected an int in"):
        crop_around(images, masks, 30)
    with pytest.raises(ValueError, match="sample 1 is empty"):
        crop_around(images, torch.zeros_like(masks).index_fill_(0, torch.tensor([0]), True), 8)
    with pytest.raises(ValueError, match="mask: expected shape"):
        crop_around(images, masks[:, :, :10], 8)
