"""p4 group convolutions: exact rotation equivariance (vs a plain conv), invariance, costs, bad input."""
import pytest
import torch
from torch import nn

from radlab import cost
from radlab.models.group import P4BatchNorm, P4CNN, P4Conv2d, P4Conv3d, p4_pool, rotate_p4

torch.set_num_threads(1)


def turn(x, k=1):
    return torch.rot90(x, k, dims=(-2, -1))


def rel_error(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _p4_stack(dims):
    Conv, Pool = (P4Conv2d, nn.MaxPool2d) if dims == 2 else (P4Conv3d, nn.MaxPool3d)
    return nn.Sequential(Conv(2, 4, 3, lifting=True), P4BatchNorm(4, dims), nn.ReLU(), Pool(2),
                         Conv(4, 3, 3), nn.ReLU(), Conv(3, 2, 5))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_group_conv_is_rotation_equivariant_plain_conv_is_not(dims, k):
    torch.manual_seed(dims * 10 + k)
    shape = (2, 2, 16, 16) if dims == 2 else (2, 2, 6, 16, 16)
    x = torch.randn(shape)
    net = _p4_stack(dims).eval()
    with torch.no_grad():
        error = rel_error(net(turn(x, k)), rotate_p4(net(x), k))
    assert error < 1e-5
    Plain = nn.Conv2d if dims == 2 else nn.Conv3d
    plain = nn.Sequential(Plain(2, 4, 3, padding=1), nn.ReLU(), Plain(4, 4, 3, padding=1))
    with torch.no_grad():
        plain_error = rel_error(plain(turn(x, k)), turn(plain(x), k))
    assert plain_error > 0.1   # random filters are not symmetric: a large error


def test_lifting_layer_rotates_and_cycles_orientations():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 9, 9)
    conv = P4Conv2d(1, 1, 3, lifting=True, bias=False)
    y, y_turned = conv(x), conv(turn(x))                 # (1, 4, 9, 9)
    for r in range(4):   # orientation r of the turned input == turned orientation r-1 of the original
        assert torch.allclose(y_turned[0, r], turn(y[0, (r - 1) % 4]), atol=1e-6)


def test_four_turns_are_identity_and_pooled_maps_only_turn():
    y = torch.randn(2, 8, 5, 7, 7)
    assert torch.equal(rotate_p4(rotate_p4(y, 2), 2), y)
    assert torch.equal(p4_pool(rotate_p4(y, 1)), turn(p4_pool(y), 1))
    assert torch.allclose(p4_pool(rotate_p4(y, 3), "mean"), turn(p4_pool(y, "mean"), 3))


@pytest.mark.parametrize("dims", [2, 3])
def test_p4cnn_is_rotation_invariant_in_train_and_eval(dims):
    torch.manual_seed(1)
    x = torch.randn((4, 1, 16, 16) if dims == 2 else (4, 1, 4, 16, 16))
    model = P4CNN(dims, num_classes=2)
    for mode in (True, False):
        model.train(mode)
        with torch.no_grad():
            outs = [model(turn(x, k)) for k in range(4)]
        assert max(rel_error(o, outs[0]) for o in outs[1:]) < 1e-5


def test_weight_sharing_costs():
    # same parameters as a plain conv with C_out filters; four times its MACs
    p4, plain = P4Conv3d(3, 8, 3, lifting=True, bias=False), nn.Conv3d(3, 8, 3, padding=1, bias=False)
    assert sum(p.numel() for p in p4.parameters()) == sum(p.numel() for p in plain.parameters())
    shape = (1, 3, 4, 8, 8)
    assert cost.profile(p4, shape).macs == 4 * cost.profile(plain, shape).macs
    group = P4Conv2d(2, 3, 3)   # a p4 -> p4 layer has a filter per input orientation
    assert group.weight.shape == (3, 2, 4, 3, 3)
    assert group(torch.randn(1, 8, 6, 6)).shape == (1, 12, 6, 6)


@pytest.mark.parametrize("call,error,word", [
    (lambda: P4Conv2d(0, 4), ValueError, "in_channels"),
    (lambda: P4Conv2d(1, 4, kernel_size=2.5), ValueError, "kernel_size"),
    (lambda: P4Conv2d(1, 4, lifting=True)(torch.zeros(1, 2, 8, 8)), ValueError, "x: expected"),
    (lambda: P4Conv2d(1, 4)(torch.zeros(1, 1, 8, 8)), ValueError, "x: expected"),
    (lambda: P4Conv3d(1, 4, lifting=True)(torch.zeros(1, 1, 8, 8)), ValueError, "x: expected"),
    (lambda: rotate_p4(torch.zeros(1, 3, 4, 4)), ValueError, "groups of 4"),
    (lambda: p4_pool(torch.zeros(1, 4, 4, 4), "median"), ValueError, "reduce"),
    (lambda: P4CNN(dims=1), ValueError, "dims"),
])
def test_bad_input(call, error, word):
    with pytest.raises(error, match=word):
        call()


# ----------------------------------------------------------------------------- notebook 04's experiment functions
def test_symmetry_measurements():
    from radlab.experiments import symmetry as S
    x = torch.randn(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    t = S.translation_equivariance(x).set_index(["network", "shift"])
    assert t.loc["circular padding", "error"].max() < 1e-6
    assert t.loc["zero padding", "error away from border"].max() < 1e-6 < t.loc["zero padding", "error"].min()
    assert t.loc[("circular padding, stride 2", "(3, 5)"), "error"] > 0.1
    r = S.rotation_equivariance(x)
    assert r["p4 group CNN"].max() < 1e-5 and r["plain CNN"].min() > 0.1
    p = S.pooling_invariance(x).set_index("padding")
    assert p.loc["circular", "pooled error"] < 1e-5


def test_augmentation_and_crops():
    from radlab.experiments import symmetry as S
    torch.manual_seed(0)
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    turned = S.random_rot90(x)
    # every output is one of the four turns of its input, and all four occur
    kinds = {next(k for k in range(4) if torch.equal(t, torch.rot90(x[0], k, (-2, -1)))) for t in turned}
    assert kinds == {0, 1, 2, 3}
    from radlab.phantoms import make_phantoms
    ph = make_phantoms(3, size=16, seed=0)
    crops = S.lesion_crops(ph, 8)
    assert crops.shape == (3, 1, 8, 8)
