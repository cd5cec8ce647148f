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


def test_stacked_models_do_not_share_gradients():
    model = StackedCNN3D(models=3, width=4, depth=2)
    logits = model(torch.randn(2, 3, 8, 8, 8))
    logits[:, 1].sum().backward()
    grad = model.body[0].weight.grad.view(3, 4, -1)        # (model, out channel, ...)
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    assert model.head_weight.grad[[0, 2]].abs().sum() == 0


def test_stacked_training_equals_training_one_by_one():
    torch.manual_seed(0)
    x, y = torch.randn(2, 16, 8, 8, 8), torch.randint(0, 2, (2, 16))
    both = StackedCNN3D(models=2, width=4, depth=2)
    alone = StackedCNN3D(models=1, width=4, depth=2)
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
            loss = torch.nn.functional.binary_cross_entropy_with_logits(alone(x[1, idx][:, None])[:, 0], y[1, idx].float())
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    test = torch.randn(5, 8, 8, 8)
    assert torch.allclose(predict_stacked(both, test)[1], predict_stacked(alone, test)[0], atol=1e-5)
