"""Tests for radlab.phantoms: shapes, determinism, physical values, the generating
process (labels, confounding, censoring, lesion fraction), anisotropic rendering,
validation and the on-the-fly Dataset."""
import math

import numpy as np
import pytest
import torch

from radlab import phantoms, preprocess
from radlab.phantoms import PhantomDataset, make_phantoms


@pytest.fixture(scope="module")
def ct():
    return make_phantoms(12, size=24, modality="ct", seed=1)


# ----------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("modality", phantoms.MODALITIES)
@pytest.mark.parametrize("task", phantoms.TASKS)
def test_shapes_and_dtypes(modality, task):
    ph = make_phantoms(3, size=16, modality=modality, task=task, seed=0)
    n, shape = 3, (3, 1, 16, 16, 16)
    assert ph.images.shape == shape and ph.images.dtype == torch.float32
    assert ph.masks.shape == shape and ph.masks.dtype == torch.bool
    assert ph.body.shape == shape and ph.body.dtype == torch.bool
    assert ph.inputs.shape == shape and ph.inputs.dtype == torch.float32
    assert ph.labels.shape == (n,) and ph.labels.dtype == torch.long
    for name in ("p_true", "risk", "time", "weight_kg", "injected_dose_bq"):
        assert getattr(ph, name).shape == (n,) and getattr(ph, name).dtype == torch.float32, name
    assert ph.event.dtype == torch.bool and ph.sites.dtype == torch.long
    assert len(ph.clinical) == n and {"age", "stage"} <= set(ph.clinical.columns)
    assert all(v.shape == (n,) for v in ph.lesion.values())
    expected = {"classification": (n,), "segmentation": shape, "survival": (n, 2)}[task]
    assert ph.targets.shape == expected and ph.targets.dtype == torch.float32
    assert ph.spacing == (2.0, 2.0, 2.0) and ph.modality == modality and ph.task == task
    assert torch.isfinite(ph.images).all() and torch.isfinite(ph.inputs).all()


def test_thread_setting_is_restored():
    before = torch.get_num_threads()
    make_phantoms(2, size=8)
    assert torch.get_num_threads() == before


def test_non_cubic_size_and_explicit_spacing():
    ph = make_phantoms(2, size=(6, 20, 24), spacing=(5.0, 0.8, 0.8), seed=0)
    assert ph.images.shape == (2, 1, 6, 20, 24) and ph.spacing == (5.0, 0.8, 0.8)


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_tensors_different_seed_different(ct):
    again = make_phantoms(12, size=24, modality="ct", seed=1)
    other = make_phantoms(12, size=24, modality="ct", seed=2)
    assert torch.equal(ct.images, again.images) and torch.equal(ct.labels, again.labels)
    assert torch.equal(ct.masks, again.masks) and torch.equal(ct.time, again.time)
    assert not torch.equal(ct.images, other.images)


def test_same_patient_across_modalities():
    a = make_phantoms(4, size=16, modality="ct", seed=5)
    b = make_phantoms(4, size=16, modality="pet", seed=5)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.lesion["radius_mm"], b.lesion["radius_mm"])


# ----------------------------------------------------------------------------- physical values
def test_ct_values_are_hounsfield_units(ct):
    hu, body, mask = ct.images, ct.body, ct.masks
    assert abs(hu[~body].median().item() + 1000) < 30           # air
    assert hu.amax().item() > 500                                 # bone
    liver_like = hu[body & ~mask]
    assert -200 < liver_like.median().item() < 120                # soft tissue / fat
    lesion_mean = torch.stack([hu[i][mask[i]].mean() for i in range(len(ct))])
    assert ((lesion_mean > 60 - 70 - 30) & (lesion_mean < 60 + 30 + 30)).all()   # liver + [-70, 30] HU
    assert ((ct.inputs >= 0) & (ct.inputs <= 1)).all()


def test_mri_values_and_zscore_input():
    ph = make_phantoms(6, size=24, modality="mri", seed=3)
    assert (ph.images >= 0).all()                                  # Rician magnitudes
    assert ph.images[ph.body].median() > 5 * ph.images[~ph.body].median()
    for i in range(len(ph)):
        inside = ph.inputs[i][ph.body[i]]
        assert abs(inside.mean().item()) < 1e-3 and abs(inside.std().item() - 1) < 1e-2


def test_pet_activity_gives_suv_about_one_and_hot_lesions():
    ph = make_phantoms(8, size=24, modality="pet", seed=4)
    suv = preprocess.suv(ph.images, weight_kg=ph.weight_kg, injected_dose_bq=ph.injected_dose_bq)
    assert (ph.images >= 0).all()
    assert 1e3 < ph.images[ph.body].median().item() < 2e4              # Bq/mL
    assert 0.4 < suv[ph.body & ~ph.masks].median().item() < 2.5       # background SUV ~ 1
    lesion_suv = torch.stack([suv[i][ph.masks[i]].mean() for i in range(len(ph))])
    assert (lesion_suv > 2.5).all() and (lesion_suv < 12).all()
    assert torch.allclose(ph.inputs, torch.log1p(suv))
    assert ((ph.weight_kg >= 50) & (ph.weight_kg <= 100)).all()


def test_noise_off_gives_exact_tissue_values():
    ph = make_phantoms(2, size=16, modality="ct", noise=False, seed=0)
    assert abs(ph.images.min().item() + 1000.0) < 1e-2 and abs(ph.images.max().item() - 700.0) < 1


# ----------------------------------------------------------------------------- generating process
@pytest.fixture(scope="module")
def many():
    return make_phantoms(3000, size=8, seed=7, sites=2)


def test_labels_follow_p_true(many):
    p, y = many.p_true.double(), many.labels.double()
    assert ((p > 0) & (p < 1)).all()
    sd = math.sqrt((p * (1 - p)).sum().item()) / len(p)
    assert abs(y.mean().item() - p.mean().item()) < 4 * sd
    for lo, hi in [(0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1)]:   # calibration in bins
        sel = (p >= lo) & (p < hi)
        sd = math.sqrt((p[sel] * (1 - p[sel])).sum().item()) / sel.sum().item()
        assert abs(y[sel].mean().item() - p[sel].mean().item()) < 4 * sd + 1e-9


def test_bayes_auc_is_hard_but_not_hopeless(many):
    from sklearn.metrics import roc_auc_score
    for share in (0.0, 0.5, 1.0):
        ph = make_phantoms(2000, size=8, seed=8, pattern_share=share)
        auc = roc_auc_score(ph.labels.numpy(), ph.p_true.numpy())
        assert 0.85 < auc < 0.96, (share, auc)


def test_pattern_share_moves_the_logit_to_necrosis():
    def corr(ph):
        return np.corrcoef(ph.lesion["logit"].numpy(), ph.lesion["necrosis"].numpy())[0, 1]
    low = make_phantoms(2000, size=8, seed=9, pattern_share=0.1)
    high = make_phantoms(2000, size=8, seed=9, pattern_share=0.9)
    assert corr(low) < 0.4 < 0.9 < corr(high)


def _site_gap(ph):
    return abs(ph.labels[ph.sites == 0].float().mean() - ph.labels[ph.sites == 1].float().mean()).item()


def test_confounding_increases_site_label_association(many):
    strong = make_phantoms(3000, size=8, seed=7, sites=2, confounding=1.0)
    mid = make_phantoms(3000, size=8, seed=7, sites=2, confounding=0.5)
    assert _site_gap(many) < 0.06                                 # independent: only noise
    assert _site_gap(many) < _site_gap(mid) < _site_gap(strong)
    assert _site_gap(strong) > 0.5
    assert torch.bincount(many.sites).min() > 1300                # sites about equally large


@pytest.mark.parametrize("target", [0.0, 0.3, 0.7])
def test_censoring_fraction_hits_target(target):
    ph = make_phantoms(3000, size=8, seed=10, task="survival", censoring=target)
    censored = 1 - ph.event.float().mean().item()
    assert abs(censored - target) < 0.035
    assert (ph.time > 0).all()


def test_risk_orders_event_times():
    from scipy.stats import spearmanr
    ph = make_phantoms(2000, size=8, seed=11, task="survival", censoring=0.0)
    assert spearmanr(ph.risk.numpy(), ph.time.numpy()).statistic < -0.4
    stage_risk = np.corrcoef(ph.clinical["stage"], ph.risk.numpy())[0, 1]
    assert stage_risk > 0.3


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.1])
def test_lesion_fraction_is_honoured(fraction):
    ph = make_phantoms(4, size=32, task="segmentation", lesion_fraction=fraction, seed=12)
    got = ph.masks.flatten(1).float().mean(1)
    assert torch.allclose(got, torch.full_like(got, fraction), rtol=0.05, atol=2 / 32 ** 3)


def test_natural_lesions_are_visible_but_small(ct):
    voxels = ct.masks.flatten(1).sum(1)
    assert (voxels > 20).all() and (voxels < 0.1 * 24 ** 3).all()


# ----------------------------------------------------------------------------- anisotropy
def test_thick_slices_average_the_isotropic_patient():
    kw = dict(modality="ct", seed=13, noise=False)
    iso = make_phantoms(3, size=(35, 32, 32), spacing=(1.0, 1.0, 1.0), **kw)
    thick = make_phantoms(3, size=(7, 32, 32), spacing=(5.0, 1.0, 1.0), **kw)
    slabs = iso.images.view(3, 1, 7, 5, 32, 32).mean(3)          # (N, 1, 7, H, W) 5 mm slabs
    # the necrosis pattern is sampled at voxel centres (not averaged): compare around the lesions
    lesion = thick.masks | iso.masks.view(3, 1, 7, 5, 32, 32).any(3)
    near = torch.nn.functional.max_pool3d(lesion.float(), (1, 3, 3), 1, (0, 1, 1)) > 0
    assert (slabs - thick.images)[~near].abs().max().item() < 0.5  # HU
    inside = [(slabs[i][thick.masks[i]] - thick.images[i][thick.masks[i]]).mean().abs() for i in range(3)]
    assert max(inside).item() < 15
    assert torch.equal(iso.labels, thick.labels) and torch.equal(iso.p_true, thick.p_true)
    # partial volume: thick slices hold intermediate values where the lesion edge crosses
    assert thick.images.std() < iso.images.std()


def test_thick_slices_are_less_noisy():
    kw = dict(modality="ct", seed=14, sites=1)
    noisy = make_phantoms(2, size=(8, 32, 32), spacing=(1.0, 1.0, 1.0), **kw)
    clean = make_phantoms(2, size=(8, 32, 32), spacing=(1.0, 1.0, 1.0), noise=False, **kw)
    noisy5 = make_phantoms(2, size=(8, 32, 32), spacing=(5.0, 1.0, 1.0), **kw)
    clean5 = make_phantoms(2, size=(8, 32, 32), spacing=(5.0, 1.0, 1.0), noise=False, **kw)
    ratio = (noisy.images - clean.images).std() / (noisy5.images - clean5.images).std()
    # quantum noise (12 HU at water) falls by sqrt(5), electronic noise (4 HU) does not
    expected = math.sqrt(12 ** 2 + 4 ** 2) / math.sqrt(12 ** 2 / 5 + 4 ** 2)
    assert abs(ratio.item() - expected) < 0.15


def test_lesion_centred_field_of_view_is_the_same_patient():
    body = make_phantoms(4, size=32, seed=16, noise=False)
    crop = make_phantoms(4, size=16, seed=16, noise=False, center="lesion", spacing=(1.0, 1.0, 1.0))
    assert crop.spacing == (1.0, 1.0, 1.0) and torch.equal(crop.p_true, body.p_true)
    for i in range(4):
        centroid = crop.masks[i, 0].nonzero().float().mean(0)
        assert (centroid - 7.5).abs().max() < 1.0                  # the lesion sits in the middle
    # lesion volume is the same up to a few voxels sampled at another sub-voxel offset
    assert (crop.masks.flatten(1).sum(1) - body.masks.flatten(1).sum(1)).abs().max() <= 0.05 * body.masks.flatten(1).sum(1).max()
    assert make_phantoms(1, size=16, center="lesion").spacing == (1.0, 1.0, 1.0)   # 16 mm FOV by default


# ----------------------------------------------------------------------------- sets & datasets
def test_indexing_and_to(ct):
    sub = ct[[0, 3, 5]]
    assert len(sub) == 3 and torch.equal(sub.images[1], ct.images[3])
    assert sub.clinical["age"].tolist() == ct.clinical["age"].iloc[[0, 3, 5]].tolist()
    assert torch.equal(ct[2:4].labels, ct.labels[2:4])
    keep = ct.labels == 1
    assert len(ct[keep]) == int(keep.sum())
    assert torch.equal(ct[torch.tensor([1])].inputs, ct.inputs[1:2])
    assert len(ct[4]) == 1
    moved = ct.to("cpu")
    assert torch.equal(moved.images, ct.images) and moved.lesion.keys() == ct.lesion.keys()


def test_phantom_dataset_is_deterministic_in_any_order():
    ds = PhantomDataset(10, size=16, block=4, seed=3)
    assert len(ds) == 10
    forward = [ds[i] for i in range(10)]
    backward = [PhantomDataset(10, size=16, block=4, seed=3)[i] for i in reversed(range(10))][::-1]
    for (x1, y1), (x2, y2) in zip(forward, backward):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x, y = ds[5]
    block = make_phantoms(4, size=16, seed=3 * 100003 + 1)
    assert x.shape == (1, 16, 16, 16) and torch.equal(x, block.inputs[1]) and torch.equal(y, block.targets[1])
    assert torch.equal(ds[-1][0], ds[9][0])
    loader = torch.utils.data.DataLoader(ds, batch_size=5)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, 1, 16, 16, 16) and yb.shape == (5,)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, error, words", [
    (dict(n=0), ValueError, "n: expected an int >= 1"),
    (dict(n=2.5), ValueError, "n:"),
    (dict(n=True), ValueError, "n:"),
    (dict(size=4), ValueError, "size: expected an int >= 8"),
    (dict(size="32"), ValueError, "size:"),
    (dict(size=(8, 8)), ValueError, "size:"),
    (dict(modality="xray"), ValueError, "modality: expected one of"),
    (dict(task="detection"), ValueError, "task: expected one of"),
    (dict(sites=0), ValueError, "sites: expected an int >= 1"),
    (dict(confounding=1.5), ValueError, "confounding: expected a float in [0, 1], got 1.5"),
    (dict(confounding=-0.1), ValueError, "confounding"),
    (dict(confounding="high"), TypeError, "confounding"),
    (dict(confounding=float("nan")), ValueError, "confounding"),
    (dict(pattern_share=2), ValueError, "pattern_share"),
    (dict(censoring=1.0), ValueError, "censoring: expected a float in [0, 1)"),
    (dict(lesion_fraction=0.0), ValueError, "lesion_fraction: expected a float in (0, 0.5]"),
    (dict(lesion_fraction=0.6), ValueError, "lesion_fraction"),
    (dict(spacing=(1.0, 1.0)), ValueError, "spacing"),
    (dict(spacing=(1.0, -1.0, 1.0)), ValueError, "spacing"),
    (dict(spacing=(1.0, "a", 1.0)), TypeError, "spacing"),
    (dict(seed=-1), ValueError, "seed"),
    (dict(device="gpu0"), ValueError, "device"),
    (dict(noise="yes"), TypeError, "noise"),
    (dict(center="middle"), ValueError, "center: expected one of"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, error, words):
    args = dict(n=2, size=8)
    args.update(kwargs)
    n = args.pop("n")
    with pytest.raises(error) as info:
        make_phantoms(n, **args)
    assert words in str(info.value)


def test_dataset_validates_too():
    with pytest.raises(ValueError, match="n:"):
        PhantomDataset(0)
    with pytest.raises(ValueError, match="modality"):
        PhantomDataset(4, modality="xray")
    with pytest.raises(IndexError):
        PhantomDataset(4, size=8)[4]


# ----------------------------------------------------------------------------- learnability
@pytest.mark.slow
def test_first_order_features_miss_the_pattern():
    """Volume + first-order statistics see the size/contrast part of the logit, not the pattern."""
    from scipy import stats
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    ph = make_phantoms(500, size=24, seed=15, pattern_share=0.5)
    feats = []
    for x, m in zip(ph.inputs[:, 0], ph.masks[:, 0]):
        v = x[m].double().numpy()
        feats.append([m.sum().item(), v.mean(), v.std(), stats.skew(v), stats.kurtosis(v)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    prob = cross_val_predict(model, np.array(feats), ph.labels.numpy(), cv=5, method="predict_proba")[:, 1]
    auc = roc_auc_score(ph.labels.numpy(), prob)
    bayes = roc_auc_score(ph.labels.numpy(), ph.p_true.numpy())
    assert 0.62 < auc < bayes - 0.08, (auc, bayes)
    necrosis = ph.lesion["necrosis"].numpy()
    necrosis_corr = [abs(np.corrcoef(np.array(feats)[:, j], necrosis)[0, 1]) for j in range(5)]
    assert max(necrosis_corr) < 0.25, necrosis_corr
