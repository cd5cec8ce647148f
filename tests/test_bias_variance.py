"""The bias-variance decomposition is exact, and R stacked models train independently."""
import numpy as np
import pytest
import torch

from radlab.experiments.bias_variance import decompose
from radlab.models.stacked import StackedCNN3D, fit_stacked, predict_stacked


def test_parts_add_up_to_the_expected_brier_score():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.02, 0.98, 500)
    p_hat = np.clip(p_true + rng.normal(0.1, 0.2, (7, 500)), 0, 1)      # biased and noisy models
    parts = decompose(p_hat, p_true)
    assert abs(parts["noise"] + parts["bias2"] + parts["variance"] - parts["brier"]) < 1e-6
    assert parts["bias2"] > 0.005 and parts["variance"] > 0.01


def test_expected_brier_matches_drawn_labels():
    # E_y[(p̂ - y)²] is what the Brier score on many label draws converges to.
    rng = np.random.default_rng(1)
    p_true = rng.uniform(0, 1, 200)
    p_hat = rng.uniform(0, 1, (3, 200))
    y = rng.random((20000, 200)) < p_true
    drawn = np.mean([(p_hat - yy) ** 2 for yy in y[:2000]])
    assert abs(drawn - decompose(p_hat, p_true)["brier"]) < 2e-3


def test_perfect_models_leave_only_the_noise():
    p_true = np.linspace(0.1, 0.9, 9)
    parts = decompose(np.tile(p_true, (4, 1)), p_true)
    assert parts["bias2"] == 0 and parts["variance"] == 0
    assert np.isclose(parts["brier"], parts["noise"])


@pytest.mark.parametrize("p_hat, p_true, words", [
    (np.zeros(5), np.zeros(5), "p_hat"),
    (np.zeros((2, 5)), np.zeros(4), "p_hat"),
    (np.full((2, 3), 1.5), np.zeros(3), "p_hat"),
    (np.zeros((2, 3)), np.array([0.1, np.nan, 0.2]), "p_true"),
])
def test_decompose_rejects_bad_input(p_hat, p_true, words):
    with pytest.raises(ValueError, match=words):
        decompose(p_hat, p_true)


def test_unbiased_estimates_remove_the_wobble_of_a_few_models():
    # Unbiased models (E[p̂] = p_true) with variance 0.2²/3: the plug-in bias² would be about variance / R.
    rng = np.random.default_rng(3)
    p_true = rng.uniform(0.3, 0.7, 4000)
    parts = decompose(p_true + rng.uniform(-0.2, 0.2, (3, 4000)), p_true)
    assert abs(parts["bias2"]) < 5e-4 and abs(parts["variance"] - 0.04 / 3) < 5e-4


def test_stacked_models_do_not_share_gradients():
    model = StackedCNN3D(models=3, width=4, depth=2, in_channels=2)
    logits = model(torch.randn(2, 3 * 2, 8, 8, 8))          # (N, R·C, D, H, W)
    logits[:, 1].sum().backward()
    grad = model.body[0].weight.grad.view(3, 4, -1)        # (model, out channel, ...)
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    assert model.head_weight.grad[[0, 2]].abs().sum() == 0


def test_stacked_training_equals_training_one_by_one():
    torch.manual_seed(0)
    # float64: Adam divides by sqrt(v), which amplifies float32 rounding of near-zero gradients
    x, y = torch.randn(2, 16, 2, 8, 8, 8, dtype=torch.float64), torch.randint(0, 2, (2, 16))   # (R, n, C, D, H, W)
    both = StackedCNN3D(models=2, width=4, depth=3, in_channels=2).double()
    alone = StackedCNN3D(models=1, width=4, depth=3, in_channels=2).double()
    # Give the lone model the weights of stacked model 1.
    with torch.no_grad():
        for (name, p_both), p_alone in zip(both.named_parameters(), alone.parameters()):
            chunk = p_both.shape[0] // 2
            p_alone.copy_(p_both[chunk:] if p_both.ndim and name.startswith("body") else p_both[1:])
    fit_stacked(both, x, y, epochs=2, batch_size=8, seed=3)
    torch.manual_seed(0)
    # Same shuffles: model 1 of the stack drew row 1 of the (R, n) random matrix.
    gen = torch.Generator().manual_seed(3)
    orders = [torch.argsort(torch.rand(2, 16, generator=gen), dim=1)[1] for _ in range(2)]
    opt = torch.optim.AdamW(alone.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=4)
    for order in orders:
        for s in range(2):
            idx = order[s * 8:(s + 1) * 8]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(alone(x[1, idx])[:, 0], y[1, idx].double())
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    test = torch.randn(5, 2, 8, 8, 8, dtype=torch.float64)
    assert torch.allclose(predict_stacked(both, test)[1], predict_stacked(alone, test)[0], atol=1e-9)


def test_independent_flips_mirror_each_patient_and_model_on_its_own():
    from radlab.models.stacked import independent_flips
    # D = H = 1, so only the flip along x changes anything: (B, R, C, D, H, W) = (64, 3, 1, 1, 1, 2)
    batch = torch.arange(64 * 3 * 2, dtype=torch.float32).reshape(64, 3, 1, 1, 1, 2)
    out = independent_flips(batch, torch.Generator().manual_seed(0))
    flipped = (out == batch.flip(5)).flatten(2).all(-1)                                 # (B, R)
    kept = (out == batch).flatten(2).all(-1)
    assert (flipped ^ kept).all()                                                      # each one or the other
    assert 0.3 < flipped.float().mean() < 0.7                                          # about half
    assert not (flipped == flipped[:, :1]).all()                                       # models draw their own


@pytest.mark.parametrize("kwargs, words", [
    (dict(families=["svm"]), "families"),
    (dict(n_sizes=[5]), "n_sizes"),
    (dict(R=1), "R"),
    (dict(pool=20, n_sizes=[40]), "pool"),
    (dict(pattern_share=1.5), "pattern_share"),
])
def test_run_rejects_bad_input(kwargs, words):
    from radlab.experiments.bias_variance import run
    with pytest.raises(ValueError, match=words):
        run(**kwargs)


def test_stacked_rejects_bad_shapes():
    model = StackedCNN3D(models=2, width=4, depth=2, in_channels=2)
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(1, 2, 8, 8, 8))                 # C channels for one model only
    with pytest.raises(ValueError, match="x"):
        fit_stacked(model, torch.randn(2, 4, 1, 8, 8, 8), torch.zeros(2, 4), epochs=1)
    with pytest.raises(ValueError, match="in_channels"):
        StackedCNN3D(models=2, in_channels=0)


@pytest.mark.slow
def test_a_small_experiment_decomposes_and_the_cnn_learns_the_pattern():
    from radlab.experiments.bias_variance import explained_by_features, make_data, run
    res = run(["logreg", "cnn"], [60], R=2, test_size=120, steps=60, pool=60, seed=5)
    table = res.table()
    # The same (cached) patients: features see H (size, contrast, spiculation) but not the pattern S.
    explained = explained_by_features(make_data(2, 60, test_size=120, size=32, crop=16, seed=5, pattern_share=0.5))
    assert explained["H"] > 0.8 and explained["S"] < 0.1
    total = table.noise + table.bias2 + table.variance
    assert np.allclose(total, table.brier, atol=1e-6)
    assert (table.auc > 0.55).all()                      # both learned something about the label


def test_nb02_exercises_accept_the_solution_and_name_common_mistakes(capsys):
    from radlab.exercises import nb02 as ex
    assert ex.q1.check(lambda p: float(np.var(p, axis=0, ddof=1).mean()))
    assert not ex.q1.check(lambda p: float(np.var(p, axis=0).mean()))
    assert "R - 1" in capsys.readouterr().out
    assert not ex.q1.check(lambda p: float(np.var(p, axis=1, ddof=1).mean()))
    assert "across patients" in capsys.readouterr().out
    assert ex.q2.check(0.16) and not ex.q2.check(0.04)
    assert ex.q3.check("b") and not ex.q3.check("d")
