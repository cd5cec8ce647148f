"""rl.losses: cross-checks against MONAI and torch.nn.functional, gradchecks, extreme logits, bad input;
rl.experiments.losses: closed forms, metrics, smoke runs; the nb07 exercises.

Tolerances: float32 values agree with the reference to rtol 1e-6 / atol 1e-6 (the
implementations differ only in the order of floating-point operations); gradcheck
runs in float64 with torch's defaults (eps 1e-6, atol 1e-5, rtol 1e-3).
"""
import monai.losses
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import radlab as rl
from radlab import losses as L
from radlab.experiments import losses as E

TOL32 = dict(rtol=1e-6, atol=1e-6)


def _segmentation_batch(shape=(3, 2, 6, 7, 5), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(shape, generator=g, dtype=dtype)
    target = (torch.rand(shape, generator=g) < 0.2).to(dtype)
    return logits, target


# --- cross-checks -----------------------------------------------------------------------------

@pytest.mark.parametrize("pos_weight", [None, 7.5])
def test_bce_matches_torch(pos_weight):
    logits, target = _segmentation_batch()
    ours = L.bce_loss(logits, target, pos_weight=pos_weight)
    pw = None if pos_weight is None else torch.tensor(pos_weight)
    ref = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pw)
    torch.testing.assert_close(ours, ref, **TOL32)
    per_voxel = L.bce_loss(logits, target, pos_weight=pos_weight, reduction="none")
    torch.testing.assert_close(per_voxel, F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=pw, reduction="none"), **TOL32)


def test_bce_soft_targets_match_torch():
    logits, _ = _segmentation_batch()
    soft = torch.rand(logits.shape)
    torch.testing.assert_close(L.bce_loss(logits, soft), F.binary_cross_entropy_with_logits(logits, soft), **TOL32)


@pytest.mark.parametrize("sigmoid", [False, True])
def test_mse_matches_torch(sigmoid):
    pred, target = _segmentation_batch()
    if not sigmoid:
        target = 50 * torch.randn(target.shape)      # regression targets are unrestricted
    ref = F.mse_loss(torch.sigmoid(pred) if sigmoid else pred, target)
    torch.testing.assert_close(L.mse_loss(pred, target, sigmoid=sigmoid), ref, **TOL32)


@pytest.mark.parametrize("smooth", [1e-5, 1.0, 10.0])
@pytest.mark.parametrize("squared", [False, True])
def test_dice_matches_monai(smooth, squared):
    logits, target = _segmentation_batch()
    ref = monai.losses.DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, squared_pred=squared)
    torch.testing.assert_close(L.dice_loss(logits, target, smooth=smooth, squared=squared),
                               ref(logits, target), **TOL32)
    per_sample = monai.losses.DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth,
                                       squared_pred=squared, reduction="none")(logits, target)
    ours = L.dice_loss(logits, target, smooth=smooth, squared=squared, reduction="none")
    assert ours.shape == (3, 2)                    # one value per sample and channel
    torch.testing.assert_close(ours, per_sample.reshape(3, 2), **TOL32)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
def test_focal_matches_monai(gamma, alpha):
    # MONAI's alpha convention for sigmoid focal loss is Lin's: alpha_t = alpha for positives,
    # 1 - alpha for negatives; MONAI's default is alpha=None, ours Lin's 0.25, so pass it explicitly.
    logits, target = _segmentation_batch()
    ref = monai.losses.FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False)
    torch.testing.assert_close(L.focal_loss(logits, target, gamma=gamma, alpha=alpha),
                               ref(logits, target), **TOL32)


def test_focal_with_gamma_zero_and_no_alpha_is_bce():
    logits, target = _segmentation_batch()
    torch.testing.assert_close(L.focal_loss(logits, target, gamma=0.0, alpha=None), L.bce_loss(logits, target),
                               **TOL32)


def test_dice_bce_is_the_weighted_sum():
    logits, target = _segmentation_batch()
    combined = L.dice_bce_loss(logits, target, dice_weight=0.3, bce_weight=2.0)
    torch.testing.assert_close(combined, 0.3 * L.dice_loss(logits, target) + 2.0 * L.bce_loss(logits, target),
                               **TOL32)


def test_dice_is_zero_for_a_perfect_prediction_and_smooth_handles_empty_masks():
    target = torch.zeros(2, 1, 4, 4, 4)
    target[0, 0, 1:3, 1:3, 1:3] = 1
    perfect = 200 * (target - 0.5)                 # logits ±100: sigmoid is exactly 0 or 1 in float32
    assert L.dice_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    # Sample 1 has no lesion and no prediction: without smoothing this is 0/0; with it, a perfect 0 loss.
    assert L.dice_loss(perfect, target, reduction="none")[1, 0].item() == pytest.approx(0.0, abs=1e-6)


# --- gradients --------------------------------------------------------------------------------

GRAD_CASES = {
    "mse": lambda x, y: L.mse_loss(x, y),
    "mse_sigmoid": lambda x, y: L.mse_loss(x, y, sigmoid=True),
    "bce": lambda x, y: L.bce_loss(x, y, pos_weight=3.0),
    "dice": lambda x, y: L.dice_loss(x, y),
    "dice_squared": lambda x, y: L.dice_loss(x, y, squared=True, smooth=0.1),
    "focal": lambda x, y: L.focal_loss(x, y, gamma=2.0, alpha=0.25),
    "focal_small_gamma": lambda x, y: L.focal_loss(x, y, gamma=0.3, alpha=None),
    "dice_bce": lambda x, y: L.dice_bce_loss(x, y),
}


@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_gradcheck_float64(name):
    logits, target = _segmentation_batch(shape=(2, 1, 3, 3, 3), dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: GRAD_CASES[name](x, target), (logits,))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("name", sorted(GRAD_CASES))
def test_finite_at_extreme_logits(name, dtype):
    # Confidently right and confidently wrong voxels, both signs: every loss and gradient stays finite.
    target = torch.tensor([1.0, 0.0, 1.0, 0.0] * 4).reshape(2, 1, 2, 2, 2)
    logits = torch.tensor([100.0, -100.0, -100.0, 100.0] * 4, dtype=dtype).reshape(2, 1, 2, 2, 2)
    logits.requires_grad_(True)
    loss = GRAD_CASES[name](logits, target)
    loss.backward()
    assert loss.dtype == (torch.float32 if dtype != torch.float32 else dtype)
    assert torch.isfinite(loss), f"{name} in {dtype}: loss {loss}"
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all(), f"{name} in {dtype}: {logits.grad}"


def test_half_precision_matches_float32():
    # The half-precision path computes in float32, so it differs from float32 only by the rounding
    # of the logits themselves to float16 (relative 2^-11).
    logits, target = _segmentation_batch(shape=(2, 1, 16, 16, 16))
    half = logits.half()
    for loss in (L.bce_loss, L.dice_loss, L.focal_loss):
        torch.testing.assert_close(loss(half, target), loss(half.float(), target), rtol=0, atol=0)
        torch.testing.assert_close(loss(half, target), loss(logits, target), rtol=2e-3, atol=1e-4)


def test_confident_wrong_prediction_mse_gradient_vanishes_but_bce_does_not():
    x = torch.tensor([-10.0], requires_grad=True)   # p = 4.5e-5 for a positive voxel
    y = torch.ones(1)
    (g_mse,) = torch.autograd.grad(L.mse_loss(x, y, sigmoid=True), x)
    (g_bce,) = torch.autograd.grad(L.bce_loss(x, y), x)
    assert abs(g_mse.item()) < 1e-3 < 0.99 < abs(g_bce.item())


def test_focal_downweights_easy_examples_more_than_hard_ones():
    y = torch.ones(2)
    x = torch.tensor([3.0, -3.0])                   # easy (p=0.95) and hard (p=0.05) positive voxels
    ratio = L.focal_loss(x, y, alpha=None, reduction="none") / L.bce_loss(x, y, reduction="none")
    assert ratio[0] < 0.01 and ratio[1] > 0.9


def test_named_losses_are_callable():
    logits, target = _segmentation_batch()
    for name, loss in L.LOSSES.items():
        assert torch.isfinite(loss(logits, target)), name
    assert rl.losses.dice_loss is L.dice_loss


# --- bad input --------------------------------------------------------------------------------

X, Y = _segmentation_batch(shape=(2, 1, 3, 3, 3))
BAD_INPUT = [
    # (call, error type, words the message must contain)
    (lambda: L.bce_loss(X.numpy(), Y), TypeError, ["logits", "torch.Tensor", "ndarray"]),
    (lambda: L.bce_loss(X, [0, 1]), TypeError, ["target", "list"]),
    (lambda: L.bce_loss(X.long(), Y), TypeError, ["logits", "floating", "int64"]),
    (lambda: L.dice_loss(X, Y[:, :, :2]), ValueError, ["logits", "target", "(2, 1, 3, 3, 3)", "(2, 1, 2, 3, 3)"]),
    (lambda: L.dice_loss(X[:, 0, 0, 0], Y[:, 0, 0, 0]), ValueError, ["logits", "3 dimensions", "(2, 3)"]),
    (lambda: L.focal_loss(X.masked_fill(X > 0, float("nan")), Y), ValueError, ["logits", "NaN"]),
    (lambda: L.bce_loss(X, torch.full_like(Y, float("inf"))), ValueError, ["target", "finite"]),
    (lambda: L.bce_loss(X, 2 * Y), ValueError, ["target", "[0, 1]", "max 2"]),
    (lambda: L.dice_loss(X, Y - 1), ValueError, ["target", "[0, 1]", "min -1"]),
    (lambda: L.focal_loss(X, Y, gamma=-1), ValueError, ["gamma", ">= 0", "-1"]),
    (lambda: L.focal_loss(X, Y, alpha=1.5), ValueError, ["alpha", "[0, 1]", "1.5"]),
    (lambda: L.focal_loss(X, Y, alpha="0.25"), TypeError, ["alpha", "number", "str"]),
    (lambda: L.dice_loss(X, Y, smooth=float("nan")), ValueError, ["smooth", "finite"]),
    (lambda: L.bce_loss(X, Y, pos_weight=0), ValueError, ["pos_weight", "> 0", "0"]),
    (lambda: L.bce_loss(X, Y, reduction="avg"), ValueError, ["reduction", "mean", "avg"]),
    (lambda: L.dice_bce_loss(X, Y, dice_weight=-0.5), ValueError, ["dice_weight", ">= 0"]),
    (lambda: L.mse_loss(X, Y[:1]), ValueError, ["logits", "target"]),
    (lambda: L.bce_loss(X[:0], Y[:0]), ValueError, ["logits", "non-empty"]),
]


@pytest.mark.parametrize("call,error,words", BAD_INPUT)
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


def test_bool_and_integer_targets_are_accepted():
    torch.testing.assert_close(L.dice_loss(X, Y.bool()), L.dice_loss(X, Y), rtol=0, atol=0)
    torch.testing.assert_close(L.bce_loss(X, Y.long()), L.bce_loss(X, Y), rtol=0, atol=0)


# --- rl.experiments.losses -------------------------------------------------------------------


def test_loss_curves_match_closed_forms():
    curves = E.loss_curves(gamma=2.0, alpha=None, lesion_fraction=0.01, size=16, context=1.0, n_points=19)
    p = curves.p
    for y in (0, 1):
        np.testing.assert_allclose(curves.grad[("bce", y)], p - y, rtol=1e-9, atol=1e-12)   # dBCE/dx = p − y
        np.testing.assert_allclose(curves.grad[("mse", y)], 2 * (p - y) * p * (1 - p), rtol=1e-9, atol=1e-12)
        p_t = p if y else 1 - p
        np.testing.assert_allclose(curves.loss[("focal", y)], -(1 - p_t) ** 2 * np.log(p_t), rtol=1e-9)
    # Dice, scanned lesion voxel, every other voxel exactly right (context=1): L = 1 − (2I + s) / (P + G + s)
    n, s = 16 ** 3, 1.0
    G = round(0.01 * n)
    P = I = (G - 1) + p
    dL_dp = -(2 * (P + G + s) - (2 * I + s)) / (P + G + s) ** 2
    np.testing.assert_allclose(curves.grad[("dice", 1)], n * dL_dp * p * (1 - p), rtol=1e-6)


def test_loss_curves_table_and_plot():
    curves = E.loss_curves(size=8, n_points=9)
    table = curves.table()
    assert table.shape == (8, 5) and np.isfinite(table.to_numpy()).all()
    assert len(curves.curves()) == 8 * 9
    fig = curves.plot()
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_optimal_probability_closed_forms():
    opt = E.optimal_probability(gamma=2.0, alpha=None, pos_weight=4.0, grid=2001)
    q, step = opt.q, 1 / 2000
    np.testing.assert_allclose(opt.p_star["bce"], q, atol=step)
    np.testing.assert_allclose(opt.p_star["mse"], q, atol=step)
    np.testing.assert_allclose(opt.p_star["weighted_bce (w=4)"], 4 * q / (4 * q + 1 - q), atol=step)
    focal = opt.p_star["focal (γ=2, α=None)"]
    assert (np.abs(focal - 0.5) <= np.abs(q - 0.5) + step).all()   # pulled towards 0.5, never away


def test_expected_calibration_error_against_a_loop():
    g = torch.Generator().manual_seed(3)
    prob = torch.rand(500, generator=g)
    y = (torch.rand(500, generator=g) < prob).float()
    expected = 0.0
    for b in range(10):
        inside = (prob >= b / 10) & (prob < (b + 1) / 10) if b < 9 else prob >= 0.9
        if inside.any():
            expected += inside.sum().item() / 500 * abs(y[inside].mean().item() - prob[inside].mean().item())
    assert E.expected_calibration_error(prob, y) == pytest.approx(expected, abs=1e-7)   # float32 bin means
    assert E.expected_calibration_error(torch.full((10,), 0.5), torch.zeros(10)) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="prob and y"):
        E.expected_calibration_error(prob, y[:3])


def test_segmentation_scores_on_a_hand_made_case():
    mask = torch.zeros(2, 1, 4, 4, 4, dtype=torch.bool)
    mask[:, 0, 0, 0, :2] = True                      # 2 lesion voxels per patient
    prob = torch.zeros(2, 1, 4, 4, 4)
    prob[0, 0, 0, 0, :2] = 0.9                       # patient 0: perfect
    prob[1, 0, 0, 0, 0] = 0.9                        # patient 1: one hit, one false positive
    prob[1, 0, 3, 3, 3] = 0.9
    scores = E.segmentation_scores(prob, mask, spacing=(2.0, 1.0, 1.0))
    assert scores["dice"] == pytest.approx((1.0 + 0.5) / 2)
    assert scores["sensitivity"] == pytest.approx(3 / 4)
    assert scores["fp_volume_mm3"] == pytest.approx((0 + 1) / 2 * 2.0)
    assert 0 <= scores["ece"] <= 1


def test_lesion_patches_are_centred_on_the_lesion():
    ph = rl.phantoms.make_phantoms(4, size=16, seed=0)
    patches = E.lesion_patches(ph, 8)
    assert patches.shape == (4, 1, 8, 8, 8)
    for i in range(4):
        centre = ph.masks[i, 0].nonzero().float().mean(0).round().long()
        lo = torch.minimum((centre - 4).clamp(min=0), torch.tensor([8, 8, 8]))
        z, y_, x = lo.tolist()
        assert torch.equal(patches[i], ph.inputs[i][:, z:z + 8, y_:y_ + 8, x:x + 8])


@pytest.mark.parametrize("call,error,words", [
    (lambda: E.loss_curves(lesion_fraction=0.0), ValueError, ["lesion_fraction", "(0, 1)"]),
    (lambda: E.loss_curves(losses=("hinge",)), ValueError, ["losses", "hinge"]),
    (lambda: E.loss_curves(size=1), ValueError, ["size", ">= 2"]),
    (lambda: E.imbalance_sweep(losses=("hinge",)), ValueError, ["losses", "hinge"]),
    (lambda: E.imbalance_sweep(fractions=(1.5,)), ValueError, ["fractions", "1.5"]),
    (lambda: E.classification_imbalance(prevalence=0), ValueError, ["prevalence", "(0, 1)"]),
    (lambda: E.classification_imbalance(losses=("dice",)), ValueError, ["losses", "dice"]),
])
def test_experiment_bad_input(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.mark.slow
def test_imbalance_sweep_runs_and_reports_every_metric():
    sweep = E.imbalance_sweep(fractions=(0.01,), losses=("bce", "dice"), size=16, n_train=4, n_test=2, epochs=1,
                              batch_size=2)
    table = sweep.table()
    assert list(table.loss) == ["bce", "dice"] and set(table.columns) >= {"dice", "sensitivity", "fp_volume_mm3", "ece"}
    assert ((table[["dice", "sensitivity", "ece"]] >= 0) & (table[["dice", "sensitivity", "ece"]] <= 1)).all().all()
    assert len(sweep.get(0.01, "dice", "dice")) == 1
    import matplotlib.pyplot as plt
    plt.close(sweep.plot())


@pytest.mark.slow
def test_classification_imbalance_runs_and_thins_positives():
    result = E.classification_imbalance(prevalence=0.2, n_pool=120, n_test_pool=120, size=16, patch=8, epochs=1)
    table = result.table()
    assert list(table.loss) == ["bce", "weighted_bce", "focal"]
    assert 0.05 < table.prevalence.iloc[0] < 0.4                   # thinned from about 0.5
    assert ((table.auc >= 0) & (table.auc <= 1)).all() and (table.ece >= 0).all()
    import matplotlib.pyplot as plt
    plt.close(result.plot())


# --- exercises ---------------------------------------------------------------------------------

def test_nb07_exercises_pass_the_reference_reject_starters_and_known_mistakes():
    from radlab.exercises import exercises_in
    from radlab.exercises import nb07 as ex
    for q in exercises_in(ex):
        if q.kind == "thought":
            continue
        good, wrongs = q.examples()
        assert q.check(good), q.name
        assert not q.check(...) and "not attempted" in q.last_message
        for wrong, message in wrongs:
            assert not q.check(wrong), (q.name, message)
            assert message in q.last_message
    assert ex.q1.check(ex._solution_dice)                          # the shown solution passes too
