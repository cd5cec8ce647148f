"""radlab.experiments.welcome (notebook 00): slice spacing, preprocessing per modality, ground truth."""
import numpy as np
import pytest
import torch

from radlab import phantoms, preprocess
from radlab.experiments import welcome


@pytest.fixture(scope="module")
def patients():
    return {m: phantoms.make_phantoms(2, size=24, modality=m, seed=3) for m in ("ct", "mri", "pet")}


def test_thick_slices_cover_the_same_field_and_show_the_lesion_on_fewer_slices():
    r = welcome.slice_spacing(24, thick_mm=5.0, seed=2)
    assert r.thick.spacing[0] == 5.0 and r.thick.images.shape[2] == int(32 // 5)
    assert r.lesion_slices(r.thick) < r.lesion_slices(r.iso)
    assert r.back.spacing[0] == pytest.approx(r.iso.spacing[0], rel=0.05)     # resampled onto ~ the iso grid
    assert list(r.table()["slices with lesion"]) == [r.lesion_slices(r.iso), r.lesion_slices(r.thick)]
    assert len(r.plot().axes) == 3


def test_preprocessing_matches_rl_preprocess_inside_the_body(patients):
    res = welcome.preprocessing(patients)
    t = res.table()
    assert t.loc["ct", "after_min"].min() >= 0 and t.loc["ct", "after_max"].max() <= 1
    np.testing.assert_allclose(t.loc["mri", "after_mean"], 0, atol=1e-4)
    np.testing.assert_allclose(t.loc["mri", "after_std"], 1, atol=1e-4)
    pet = patients["pet"]
    suv = preprocess.suv(pet.images, weight_kg=pet.weight_kg, injected_dose_bq=pet.injected_dose_bq)
    np.testing.assert_allclose(res.after["pet"][1], suv[1][pet.body[1]].numpy(), rtol=1e-6)
    assert len(res.plot().axes) == 6


def test_ground_truth_table_and_checks():
    ph = phantoms.make_phantoms(60, size=16, modality="ct", task="survival", seed=4)
    truth = welcome.ground_truth(ph)
    assert list(truth.table().columns) == ["p_true", "label", "risk", "time", "event", "site", "lesion_mm3"]
    gap, se = truth.label_gap
    assert gap == pytest.approx(float(ph.labels.float().mean() - ph.p_true.double().mean()), abs=1e-6) and se > 0
    p = ph.p_true.double()
    assert se == pytest.approx(float((p * (1 - p)).sum().sqrt() / len(p)), rel=1e-6)
    assert 0.5 < truth.c_index <= 1.0
    assert len(truth.plot().axes) == 2


@pytest.mark.parametrize("call, error, match", [
    (lambda: welcome.slice_spacing(16, thick_mm=0.5), ValueError, "thick_mm: expected a slice thickness"),
    (lambda: welcome.slice_spacing(16, thick_mm="5"), TypeError, "thick_mm: expected a finite number"),
    (lambda: welcome.preprocessing([]), TypeError, "patients: expected a non-empty dict"),
    (lambda: welcome.preprocessing({"mri": phantoms.make_phantoms(1, size=8, modality="ct")}), ValueError,
     "patients: expected the key to name the modality"),
    (lambda: welcome.ground_truth(phantoms.make_phantoms(1, size=8)), ValueError, "ph: expected at least 2"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
