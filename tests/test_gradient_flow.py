"""radlab.experiments.gradient_flow: the hook recorder, the networks, the Jacobian, boundary sharpness."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from radlab.experiments import gradient_flow as gf
from radlab.models import count_params


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv3d(3, 2, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 1))


# ---------------------------------------------------------------- recorder
def test_recorder_matches_autograd_and_removes_its_hooks():
    net, x = _tiny_net(), torch.randn(4, 1, 5, 5, 5)
    outputs = {}

    def keep(module, inputs, out):      # returns None: the output is not replaced
        out.retain_grad()
        outputs[module] = out
    handles = [m.register_forward_hook(keep) for m in (net[0], net[2], net[6])]
    with gf.GradientRecorder(net) as rec:
        net(x).pow(2).mean().backward()
    for h in handles:
        h.remove()
    table = rec.table()
    assert list(table["layer"]) == ["0", "2", "6"] and list(table["depth"]) == [0, 1, 2]
    for (_, row), layer in zip(table.iterrows(), (net[0], net[2], net[6])):
        out = outputs[layer]
        assert row["grad_norm"] == pytest.approx(layer.weight.grad.norm().item(), rel=1e-6)
        assert row["out_grad_norm"] == pytest.approx(out.grad.norm().item(), rel=1e-6)
        assert row["act_mean"] == pytest.approx(out.mean().item(), rel=1e-5, abs=1e-7)
        assert row["act_std"] == pytest.approx(out.std(correction=0).item(), rel=1e-5)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all(not p._backward_hooks for p in net.parameters())


def test_recorder_counts_steps_during_training():
    net, x = _tiny_net(), torch.randn(4, 1, 5, 5, 5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    with gf.GradientRecorder(net) as rec:
        for _ in range(3):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            last = net[0].weight.grad.norm().item()
            opt.step()
    table = rec.table()
    assert sorted(table["step"].unique()) == [0, 1, 2] and len(table) == 9
    assert table[(table["step"] == 2) & (table["depth"] == 0)]["grad_norm"].item() == pytest.approx(last, rel=1e-6)


@pytest.mark.parametrize("model, layers, error", [
    ("not a model", None, TypeError),
    (nn.Linear(2, 2), [nn.Linear(2, 2)], ValueError),
    (nn.Linear(2, 2), [], ValueError),
])
def test_recorder_rejects_bad_input(model, layers, error):
    with pytest.raises(error, match="model|layers"):
        gf.GradientRecorder(model, layers)


# ---------------------------------------------------------------- networks
def test_plain_resnet_densenet_have_comparable_parameter_counts():
    for depth, within in ((4, 0.1), (20, 0.1), (32, 0.35), (64, 0.35)):   # the growth rate is a coarse knob
        counts = {arch: count_params(gf.build(arch, depth)) for arch in gf.ARCHS}
        assert counts["plain"] == counts["resnet"]
        assert abs(counts["densenet"] - counts["plain"]) <= within * counts["plain"], (depth, counts)


@pytest.mark.parametrize("kwargs, match", [
    (dict(arch="vgg"), "arch"), (dict(arch="plain", depth=5), "depth"), (dict(arch="plain", depth=2), "depth"),
    (dict(arch="plain", depth=66), "depth"), (dict(arch="plain", depth=True), "depth"),
    (dict(arch="resnet", norm="layer"), "norm"),
])
def test_build_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gf.build(**kwargs)


def test_plain_gradient_vanishes_relative_to_resnet_at_init():
    data = (torch.rand(4, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0., 1., 0., 1.]))
    flow = gf.gradients_at_init(("plain", "resnet"), depth=12, norms=(None,), data=data)
    t = flow.table()
    assert set(t["arch"]) == {"plain", "resnet"} and (t["layers"] == 12).all()
    assert flow.first("plain") < 1e-2 * flow.first("resnet")
    fig = flow.plot()
    assert fig.axes[0].get_yscale() == "log"


def test_train_curves_records_every_step():
    data = (torch.rand(8, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0., 1.] * 4))
    res = gf.train_curves(("plain",), depth=4, norms=("batch",), epochs=2, batch_size=4, data=data)
    assert len(res.curves) == 2 and res.final("plain", "batch").shape == (1,)
    assert len(res.grads) >= 4 and (res.grads["first_grad"] > 0).all()    # 2 epochs x 2 steps (+ fit's dry run)


# ---------------------------------------------------------------- the identity path
def test_residual_jacobian_is_identity_plus_plain_jacobian():
    res = gf.residual_jacobian(channels=2, size=3, blocks=(1, 2))
    assert res.identity_error < 1e-5
    assert res.spectral_norm("residual", 2) > res.spectral_norm("plain", 2)
    with pytest.raises(ValueError, match="blocks"):
        res.spectral_norm("plain", 99)


def test_block_jacobian_cross_checked_with_torch_func_and_finite_differences():
    torch.manual_seed(1)
    block = gf.TinyBlock(2).double()
    x = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64)
    jac = gf.block_jacobian(block, x)
    reference = torch.func.jacrev(block)(x).reshape(x.numel(), x.numel())     # a second autograd API
    torch.testing.assert_close(jac, reference)
    eps, column = 1e-6, 7                                                       # central differences
    e = torch.zeros_like(x).flatten()
    e[column] = eps
    fd = (block(x + e.view_as(x)) - block(x - e.view_as(x))).flatten() / (2 * eps)
    torch.testing.assert_close(jac[:, column], fd, rtol=1e-5, atol=1e-7)


def test_dense_growth_counts_the_concatenation():
    g = gf.dense_growth(depth=8, width=8)
    t = g.table()
    growth = g.params["growth"]
    first_block = t[t["block"] == 0]["in_channels"].to_numpy()
    assert (np.diff(first_block) == growth).all() and first_block[0] == 8


# ---------------------------------------------------------------- boundary sharpness
def _sharpness_numpy(prob, mask, spacing):
    """Reference: numpy's gradient and scipy's morphology, one case at a time."""
    from scipy import ndimage
    out = []
    for p, m in zip(prob[:, 0], mask[:, 0]):
        grads = np.gradient(p.astype(np.float64), *spacing)
        magnitude = np.sqrt(sum(g ** 2 for g in grads))
        footprint = np.ones((3, 3, 3), bool)
        band = ndimage.binary_dilation(m, footprint) & ~ndimage.binary_erosion(m, footprint, border_value=1)
        out.append(magnitude[band].mean())
    return np.array(out)


def test_boundary_sharpness_cross_checked_with_numpy_and_scipy():
    gen = torch.Generator().manual_seed(0)
    z, y, x = torch.meshgrid(*[torch.arange(10.0)] * 3, indexing="ij")
    mask = (((z - 4.5) ** 2 + (y - 5) ** 2 + (x - 4) ** 2) < 9)[None, None].repeat(2, 1, 1, 1, 1)   # (2, 1, 10, 10, 10)
    prob = torch.rand(mask.shape, generator=gen)
    spacing = (2.0, 1.0, 0.5)
    got = gf.boundary_sharpness(prob, mask, spacing).numpy()
    np.testing.assert_allclose(got, _sharpness_numpy(prob.numpy(), mask.numpy(), spacing), rtol=1e-5)


def test_sharp_prediction_scores_higher_than_a_blurred_one():
    z, y, x = torch.meshgrid(*[torch.arange(16.0)] * 3, indexing="ij")
    mask = ((((z - 8) ** 2 + (y - 8) ** 2 + (x - 8) ** 2) < 25))[None, None]
    sharp = mask.float()
    blurred = F.avg_pool3d(sharp, 5, stride=1, padding=2, count_include_pad=False)
    flat = torch.full_like(sharp, 0.5)
    s = [gf.boundary_sharpness(p, mask).item() for p in (sharp, blurred, flat)]
    assert s[0] > s[1] > s[2] == 0.0


@pytest.mark.parametrize("prob, mask, match", [
    (torch.rand(1, 1, 4, 4, 4), torch.ones(1, 1, 4, 4, 5, dtype=torch.bool), "shapes"),
    (torch.rand(4, 4, 4), torch.ones(4, 4, 4, dtype=torch.bool), "shapes"),
    (torch.full((1, 1, 4, 4, 4), 1.5), torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), "probabilities"),
    (torch.full((1, 1, 4, 4, 4), float("nan")), torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), "probabilities"),
])
def test_boundary_sharpness_rejects_bad_input(prob, mask, match):
    with pytest.raises(ValueError, match=match):
        gf.boundary_sharpness(prob, mask)


def _boundary_f1_scipy(pred, mask, tolerance):
    """Reference: scipy's erosion for the borders and chessboard distance transforms for the matching."""
    from scipy import ndimage
    out = []
    for p, m in zip(pred[:, 0], mask[:, 0]):
        border = [x & ~ndimage.binary_erosion(x, np.ones((3, 3, 3), bool), border_value=1) for x in (p, m)]
        dist = [ndimage.distance_transform_cdt(~b, metric="chessboard") if b.any() else np.full(b.shape, 99)
                for b in border]
        precision = (dist[1][border[0]] <= tolerance).mean() if border[0].any() else 0.0
        recall = (dist[0][border[1]] <= tolerance).mean() if border[1].any() else 0.0
        out.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return np.array(out)


@pytest.mark.parametrize("tolerance", [0, 1, 2])
def test_boundary_f1_cross_checked_with_scipy(tolerance):
    z, y, x = torch.meshgrid(*[torch.arange(12.0)] * 3, indexing="ij")
    ball = lambda c, r: (((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) < r ** 2)[None, None]   # noqa: E731
    mask = torch.cat([ball((6, 6, 6), 4), ball((5, 6, 6), 3), ball((6, 6, 6), 4)])
    pred = torch.cat([ball((6, 6, 6), 4), ball((6, 7, 6), 3.5), torch.zeros_like(ball((6, 6, 6), 4))])
    got = gf.boundary_f1(pred, mask, tolerance).numpy()
    np.testing.assert_allclose(got, _boundary_f1_scipy(pred.numpy(), mask.numpy(), tolerance), atol=1e-6)
    assert got[0] == pytest.approx(1.0) and got[2] == 0.0


@pytest.mark.parametrize("pred, tolerance, match", [
    (torch.ones(1, 1, 4, 4, 5, dtype=torch.bool), 1, "shapes"),
    (torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), -1, "tolerance"),
    (torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), 1.5, "tolerance"),
])
def test_boundary_f1_rejects_bad_input(pred, tolerance, match):
    with pytest.raises(ValueError, match=match):
        gf.boundary_f1(pred, torch.ones(1, 1, 4, 4, 4, dtype=torch.bool), tolerance)


@pytest.mark.slow
def test_unet_skips_runs_and_reports_both_variants():
    res = gf.unet_skips(size=8, n_train=4, n_test=2, epochs=1, batch_size=4, levels=3)
    t = res.table()
    assert list(t["skips"]) == [True, False] and t["dice"].between(0, 1).all() and (t["sharpness"] >= 0).all()
    assert t["boundary_f1"].between(0, 1).all()
    assert t["params"].iloc[0] > t["params"].iloc[1]
    assert res.plot() is not None


def test_explore_and_its_panel():
    from radlab.widgets import Panel
    res = gf.explore("densenet", depth=4, normalise=True, size=8, n=8, epochs=1)
    assert set(res.table()["arch"]) == {"densenet"} and res.plot() is not None
    panel = Panel(gf.explore, arch=list(gf.ARCHS), depth=(4, 64, 2), normalise=False, lr=[1e-3, 3e-3, 1e-2])
    assert panel.values == {"arch": "resnet", "depth": 20, "normalise": False, "lr": 3e-3}
