"""rl.models: shapes in every geometry, documented parameter counts, anisotropic kernels,
U-Net skips, equal-parameter plain/residual nets, input validation, and MONAI's ResNet-18."""
import pytest
import torch
from torch import nn

from radlab import models as M

torch.set_num_threads(1)

VOLUME = (2, 1, 16, 16, 16)   # (N, C, D, H, W), small enough to be quick


@pytest.mark.parametrize("make, x_shape, out_shape", [
    (lambda: M.CNN3D(), VOLUME, (2, 1)),
    (lambda: M.CNN2D(), (2, 1, 16, 16), (2, 1)),
    (lambda: M.CNN2D(), VOLUME, (2, 1)),                    # volumes slice by slice
    (lambda: M.CNN25D(), (2, 5, 16, 16), (2, 1)),
    (lambda: M.CNN25D(slices=3), VOLUME, (2, 1)),
    (lambda: M.SimpleCNN("3d", num_classes=3, in_channels=2), (2, 2, 16, 16, 16), (2, 3)),
    (lambda: M.ResNet3D(10), VOLUME, (2, 1)),
    (lambda: M.ResNet3D(18, dims="2d"), (2, 1, 16, 16), (2, 1)),
    (lambda: M.ResNet3D(18, dims="2.5d"), VOLUME, (2, 1)),
    (lambda: M.ResNet3D(34, width=4, num_classes=2), VOLUME, (2, 2)),
    (lambda: M.ResNet3D(18, width=4, stem="classic"), VOLUME, (2, 1)),
    (lambda: M.DenseNet3D(), VOLUME, (2, 1)),
    (lambda: M.DenseNet3D(dims="2d"), (2, 1, 16, 16), (2, 1)),
    (lambda: M.PlainCNN3D(depth=6, width=4), VOLUME, (2, 1)),
    (lambda: M.ResidualCNN3D(depth=6, width=4, norm="batch"), VOLUME, (2, 1)),
    (lambda: M.UNet3D(), VOLUME, VOLUME),
    (lambda: M.UNet3D(skips=False, out_channels=2), VOLUME, (2, 2, 16, 16, 16)),
    (lambda: M.UNet3D(anisotropic=True), (2, 1, 4, 16, 16), (2, 1, 4, 16, 16)),
])
def test_output_shapes(make, x_shape, out_shape):
    model = make()
    assert model(torch.randn(x_shape)).shape == out_shape


@pytest.mark.parametrize("make", [M.CNN3D, M.CNN2D, M.CNN25D, lambda: M.ResNet3D(10, width=4),
                                  lambda: M.DenseNet3D(depth=5), lambda: M.PlainCNN3D(depth=4, width=4)])
def test_features_are_the_heads_input(make):
    model = make().eval()
    x = torch.randn(VOLUME)
    feats = model.features(x)
    assert feats.shape == (2, model.num_features) == (2, model.head.in_features)
    torch.testing.assert_close(model.head(feats), model(x))


@pytest.mark.parametrize("obj, make", [
    (M.SimpleCNN, M.SimpleCNN), (M.CNN3D, M.CNN3D), (M.CNN2D, M.CNN2D), (M.CNN25D, M.CNN25D),
    (M.ResNet3D, M.ResNet3D), (M.DenseNet3D, M.DenseNet3D), (M.PlainCNN3D, M.PlainCNN3D),
    (M.ResidualCNN3D, M.ResidualCNN3D), (M.UNet3D, M.UNet3D),
])
def test_docstring_states_the_default_parameter_count(obj, make):
    assert M.documented_param_count(obj) == M.count_params(make())


def test_unet_docstring_states_the_count_without_skips():
    assert f"Without skips: {M.count_params(M.UNet3D(skips=False)):,d}." in M.UNet3D.__doc__


def test_2d_25d_3d_share_depth_and_widths():
    widths = {dims: [m.out_channels for m in M.SimpleCNN(dims).modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
              for dims in ("2d", "2.5d", "3d")}
    assert widths["2d"] == widths["2.5d"] == widths["3d"] == [8, 16, 32]
    first = M.CNN25D(slices=5).blocks[0].conv
    assert first.in_channels == 5 and first.kernel_size == (3, 3)   # 3×3×5 = 45 MACs per output


def test_25d_windows_are_adjacent_slices_with_edges_repeated():
    x = torch.arange(2 * 1 * 6 * 2 * 2, dtype=torch.float32).reshape(2, 1, 6, 2, 2)
    s = M.volume_to_slices(x, "2.5d", 5)                       # (N·D, 5, H, W)
    assert s.shape == (12, 5, 2, 2)
    torch.testing.assert_close(s[3], x[0, 0, 1:6])            # slice 3 of patient 0: slices 1..5
    torch.testing.assert_close(s[6], x[1, 0, [0, 0, 0, 1, 2]])  # slice 0 of patient 1: edge repeated
    torch.testing.assert_close(M.volume_to_slices(x, "2d", 1)[7], x[1, :, 1])


def test_2d_on_a_volume_averages_per_slice_features():
    model = M.CNN2D().eval()
    x = torch.randn(VOLUME)
    per_slice = torch.stack([model.features(x[:, :, d]) for d in range(x.shape[2])], 1)  # (N, D, F)
    torch.testing.assert_close(model.features(x), per_slice.mean(1), rtol=1e-5, atol=1e-6)


def conv_kernels(model):
    return [m.kernel_size for m in model.modules() if isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1)]


@pytest.mark.parametrize("model, n_flat", [
    (M.CNN3D(anisotropic=True, depth=4), 2),
    (M.CNN3D(anisotropic=1), 1),
    (M.ResNet3D(10, width=4, anisotropic=True), 3),           # stem + stage 1 (one block of two convs)
    (M.DenseNet3D(depth=8, anisotropic=True), 3),             # stem + block 1 (two dense layers)
])
def test_anisotropic_first_layers_are_in_plane(model, n_flat):
    kernels = conv_kernels(model)
    assert kernels[:n_flat] == [(1, 3, 3)] * n_flat
    assert set(kernels[n_flat:]) == {(3, 3, 3)}


def test_anisotropic_unet_first_level_is_in_plane_in_encoder_and_decoder():
    model = M.UNet3D(anisotropic=True, levels=3)              # levels // 2 = 1 in-plane level
    level = {i: conv_kernels(model.encoder[i]) + conv_kernels(model.decoder[i]) for i in (0, 1)}
    assert level[0] == [(1, 3, 3)] * 4 and level[1] == [(3, 3, 3)] * 4
    assert model.pool_sizes == [(1, 2, 2), 2]


def test_anisotropic_cnn_keeps_the_slices_in_its_first_blocks():
    x = torch.randn(1, 1, 4, 32, 32)                # thick slices: 4 × (32 × 32)
    h = M.CNN3D(anisotropic=True, depth=4).blocks[0](x)
    assert h.shape[2:] == (4, 16, 16)               # pooled in-plane only


def test_unet_skips_change_the_decoder_input_only():
    with_skips, without = M.UNet3D(width=4), M.UNet3D(width=4, skips=False)
    assert [d[0].conv.in_channels for d in with_skips.decoder] == [8, 16]
    assert [d[0].conv.in_channels for d in without.decoder] == [4, 8]
    with pytest.raises(ValueError, match="divisible by"):
        with_skips(torch.randn(1, 1, 15, 16, 16))


def test_unet_without_skips_loses_voxel_level_detail():
    # Through the bottleneck alone an output voxel sees the input only via pooled maps; the long
    # skip adds a full-resolution path, so flipping one input voxel moves its own output more.
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 8, 8, 8, requires_grad=True)
    grads = {}
    for skips in (True, False):
        model = M.UNet3D(width=4, levels=2, skips=skips, norm=None)
        model(x)[0, 0, 4, 4, 4].backward()
        g = x.grad[0, 0].abs()
        grads[skips] = (g[4, 4, 4] / g.sum()).item()    # share of the sensitivity at the same voxel
        x.grad = None
    assert grads[True] > grads[False]


@pytest.mark.parametrize("depth", [4, 8, 20, 34, 64])
def test_plain_and_residual_have_equal_parameters(depth):
    plain, residual = M.PlainCNN3D(depth=depth, width=4), M.ResidualCNN3D(depth=depth, width=4)
    assert M.count_params(plain) == M.count_params(residual)
    assert len(plain.blocks) == depth - 2 and len(residual.blocks) == (depth - 2) // 2
    assert len(M.DenseNet3D(depth=depth, growth_rate=2, width=4).blocks) == depth - 2


def test_residual_net_keeps_first_layer_gradient_at_depth_20():
    # The chapter's identity path: without normalisation the plain net's first-layer gradient
    # vanishes at PyTorch's default init, the residual net's does not.
    x = torch.randn(2, 1, 8, 8, 8)
    norms = {}
    for cls in (M.PlainCNN3D, M.ResidualCNN3D):
        torch.manual_seed(0)
        model = cls(depth=20, width=8)
        model(x).sum().backward()
        norms[cls.__name__] = model.stem.conv.weight.grad.norm().item()
    assert norms["ResidualCNN3D"] > 1e3 * norms["PlainCNN3D"]


def test_resnet_blocks_and_stages():
    model = M.ResNet3D(34, width=2)
    assert [len(s) for s in model.stages] == [3, 4, 6, 3] and len(model.blocks) == 16
    assert sum(isinstance(m, nn.Conv3d) and m.kernel_size != (1, 1, 1) for m in model.modules()) + 1 == 34


@pytest.mark.slow   # importing MONAI takes 10-40 s here
def test_resnet18_matches_monai_architecture():
    from monai.networks.nets import resnet18
    with torch.device("meta"):   # shapes only: no 33 M random numbers to draw
        ours = M.ResNet3D(18, width=64, stem="classic")
        theirs = resnet18(spatial_dims=3, n_input_channels=1, num_classes=1)
    shortcut_biases = 128 + 256 + 512       # MONAI's 1×1 shortcut convolutions carry a bias
    assert M.count_params(theirs) - M.count_params(ours) == shortcut_biases
    ours_shapes = sorted(p.shape for n, p in ours.named_parameters() if p.ndim > 1)
    theirs_shapes = sorted(p.shape for n, p in theirs.named_parameters() if p.ndim > 1)
    assert ours_shapes == theirs_shapes


@pytest.mark.parametrize("make, error, match", [
    (lambda: M.SimpleCNN("4d"), ValueError, "dims"),
    (lambda: M.SimpleCNN(norm="layer"), ValueError, "norm"),
    (lambda: M.SimpleCNN(width=0), ValueError, "width"),
    (lambda: M.CNN25D(slices=4), ValueError, "slices"),
    (lambda: M.CNN3D(anisotropic=9), ValueError, "anisotropic"),
    (lambda: M.ResNet3D(50), ValueError, "depth"),
    (lambda: M.ResNet3D(stem="huge"), ValueError, "stem"),
    (lambda: M.ResidualCNN3D(depth=21), ValueError, "depth"),
    (lambda: M.PlainCNN3D(depth=2), ValueError, "depth"),
    (lambda: M.DenseNet3D(compression=0), ValueError, "compression"),
    (lambda: M.UNet3D(skips="yes"), TypeError, "skips"),
])
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make()


@pytest.mark.parametrize("model, x, match", [
    (M.CNN3D(), torch.randn(2, 1, 16, 16), r"x: a 3d network expects \(N, C, D, H, W\)"),
    (M.CNN3D(), torch.randn(2, 3, 16, 16, 16), "expected 1 channels"),
    (M.CNN25D(), torch.randn(2, 1, 16, 16), "expected 5 channels"),
    (M.UNet3D(), torch.randn(1, 16, 16, 16), r"x: expected \(N, 1, D, H, W\)"),
])
def test_wrong_input_shape_names_x(model, x, match):
    with pytest.raises(ValueError, match=match):
        model(x)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        M.CNN3D()([[1.0]])
