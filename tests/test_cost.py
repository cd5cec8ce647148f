"""rl.cost: MACs cross-checked against torch's FlopCounterMode, activation memory,
receptive fields against an empirical (autograd) receptive field, fits, input checks."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import radlab as rl
from radlab import cost

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- small reference networks
class TinyResNet(nn.Module):
    """Stem, two residual blocks (one strided with a 1x1 shortcut), BatchNorm, pooling, linear."""

    def __init__(self, dims=3, width=4):
        super().__init__()
        Conv, BN = (nn.Conv3d, nn.BatchNorm3d) if dims == 3 else (nn.Conv2d, nn.BatchNorm2d)
        Pool = nn.MaxPool3d if dims == 3 else nn.MaxPool2d
        self.stem = nn.Sequential(Conv(1, width, 3, padding=1, bias=False), BN(width), nn.ReLU(), Pool(2))
        self.c1, self.b1 = Conv(width, width, 3, padding=1, bias=False), BN(width)
        self.c2, self.b2 = Conv(width, 2 * width, 3, stride=2, padding=1, bias=False), BN(2 * width)
        self.short = Conv(width, 2 * width, 1, stride=2, bias=False)
        self.pool = nn.AdaptiveAvgPool3d(1) if dims == 3 else nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, 3)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.b1(self.c1(x)))                  # functional residual add and ReLU
        x = F.relu(self.short(x) + self.b2(self.c2(x)))
        return self.fc(self.pool(x).flatten(1))


class TinyUNet(nn.Module):
    def __init__(self, w=4):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv3d(1, w, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.MaxPool3d(2), nn.Conv3d(w, 2 * w, 3, padding=1), nn.ReLU())
        self.up = nn.ConvTranspose3d(2 * w, w, 2, stride=2)
        self.dec = nn.Sequential(nn.Conv3d(2 * w, w, 3, padding=1), nn.InstanceNorm3d(w), nn.ReLU())
        self.out = nn.Conv3d(w, 1, 1)

    def forward(self, x):
        e = self.enc(x)
        return self.out(self.dec(torch.cat([e, self.up(self.down(e))], 1)))


class Attention(nn.Module):
    """Self-attention over voxels written with matmul, einsum and bmm (functional matrix products)."""

    def __init__(self, c=8):
        super().__init__()
        self.embed = nn.Conv3d(1, c, 3, padding=1)
        self.qkv = nn.Linear(c, 3 * c)
        self.proj = nn.Parameter(torch.randn(c, c) / c)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)           # (N, T, C)
        q, k, v = self.qkv(t).chunk(3, -1)
        att = torch.softmax(q @ k.transpose(1, 2) / 8, -1)    # matmul
        y = torch.einsum("nts,nsc->ntc", att, v)              # einsum
        y = torch.bmm(y, self.proj.expand(y.shape[0], -1, -1))  # bmm
        return F.linear(y, self.proj).mean((1, 2))             # functional linear


def _networks():
    nets = {
        "conv3d": (nn.Conv3d(2, 5, 3, padding=1), (2, 2, 9, 10, 11)),
        "conv2d_strided": (nn.Conv2d(3, 6, 5, stride=2), (2, 3, 17, 19)),
        "conv2d_grouped_dilated": (nn.Conv2d(4, 8, 3, groups=2, dilation=2, padding=2), (1, 4, 12, 12)),
        "conv3d_anisotropic": (nn.Conv3d(1, 4, (1, 3, 3), padding=(0, 1, 1)), (2, 1, 5, 16, 16)),
        "conv1d": (nn.Conv1d(3, 4, 7, stride=3), (2, 3, 50)),
        "conv_transpose3d": (nn.ConvTranspose3d(4, 2, 3, stride=2, groups=2), (2, 4, 5, 6, 7)),
        "conv_transpose2d": (nn.ConvTranspose2d(3, 5, 4, stride=2, padding=1), (1, 3, 8, 8)),
        "mlp": (nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU(), nn.Linear(10, 2)), (4, 1, 4, 4, 4)),
        "resnet3d": (TinyResNet(3), (2, 1, 16, 16, 16)),
        "resnet2d": (TinyResNet(2), (3, 1, 20, 20)),
        "unet3d": (TinyUNet(), (1, 1, 16, 16, 16)),
        "attention": (Attention(), (2, 1, 4, 4, 4)),
    }
    try:  # the course's own networks, once rl.models exists
        m = rl.models
        nets.update({
            "rl.CNN3D": (m.CNN3D(), (2, 1, 32, 32, 32)),
            "rl.CNN2D_volume": (m.CNN2D(), (2, 1, 16, 32, 32)),
            "rl.CNN25D_volume": (m.CNN25D(), (2, 1, 16, 32, 32)),
            "rl.CNN3D_anisotropic": (m.CNN3D(anisotropic=True), (2, 1, 16, 32, 32)),
            "rl.ResNet3D": (m.ResNet3D(depth=18), (1, 1, 32, 32, 32)),
            "rl.DenseNet3D": (m.DenseNet3D(), (1, 1, 32, 32, 32)),
            "rl.UNet3D": (m.UNet3D(), (1, 1, 32, 32, 32)),
        })
        if hasattr(m, "P4Conv2d"):
            nets["rl.P4Conv2d"] = (nn.Sequential(m.P4Conv2d(1, 4, 3, lifting=True), m.P4Conv2d(4, 4, 3)),
                                   (2, 1, 12, 12))
    except (ImportError, AttributeError):
        pass
    return nets


NETS = _networks()


@pytest.mark.parametrize("name", sorted(NETS))
def test_macs_equal_flop_counter_exactly(name):
    model, shape = NETS[name]
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(shape))
    report = cost.profile(model, shape)
    assert report.macs * 2 == counter.get_total_flops(), name
    assert report.macs == report.per_layer["macs"].sum()
    assert report.params == sum(p.numel() for p in model.parameters())


def test_conv_formula_by_hand():
    # 3x3x3 conv, 1 -> 1 channel: 27 MACs per output voxel; 5 slices as channels in 2D: 45
    assert cost.profile(nn.Conv3d(1, 1, 3, padding=1, bias=False), (1, 1, 8, 8, 8)).macs == 27 * 8 ** 3
    assert cost.profile(nn.Conv2d(5, 1, 3, padding=1, bias=False), (1, 5, 8, 8)).macs == 45 * 8 ** 2
    assert cost.profile(nn.Conv2d(1, 1, 3, padding=1, bias=False), (1, 1, 8, 8)).macs == 9 * 8 ** 2


def test_other_ops_definition():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.AdaptiveAvgPool2d(1))
    rep = cost.profile(net, (1, 1, 8, 8))
    n = 2 * 8 * 8
    # norm + ReLU write n elements each; max-pool reads 2x2 per output (= n); adaptive pool reads n/4
    assert rep.other_ops == n + n + n + n // 4
    res = cost.profile(TinyResNet(2), (1, 1, 16, 16))
    functional = res.per_layer[res.per_layer["type"] == "functional"]
    assert functional["other_ops"].sum() > 0   # the residual additions and F.relu are counted


def test_activation_bytes_measured_vs_layer_outputs():
    # conv saves its input (excluded: the batch) and ReLU saves its output; conv2 reuses that tensor.
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    rep = cost.profile(net, (2, 1, 10, 10))
    one_map = 2 * 4 * 10 * 10 * 4   # (N, C, H, W) float32 bytes
    assert rep.activation_bytes == one_map
    assert rep.activation_bytes_estimate == 3 * one_map   # every layer's output
    half = cost.profile(net, (2, 1, 10, 10), dtype=torch.float16)
    assert half.activation_bytes == one_map // 2


def test_meta_count_equals_real_run():
    model, shape = NETS["resnet3d"]
    meta, real = cost.profile(model, shape), cost.profile(model, shape, device="cpu")
    assert (meta.macs, meta.other_ops, meta.activation_bytes) == (real.macs, real.other_ops, real.activation_bytes)


def test_profile_leaves_batchnorm_statistics_alone():
    model, shape = NETS["resnet3d"]
    before = model.stem[1].running_mean.clone()
    cost.profile(model, shape, device="cpu")
    assert torch.equal(before, model.stem[1].running_mean)


def test_activation_memory_scales_with_depth():
    # a 3D conv on D slices keeps D times what a 2D conv keeps for one slice
    c3 = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv3d(4, 4, 3, padding=1))
    c2 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    depth = 12
    ratio = cost.profile(c3, (1, 1, depth, 16, 16)).activation_bytes / cost.profile(c2, (1, 1, 16, 16)).activation_bytes
    assert ratio == depth


def test_measure_runs_and_reports():
    rep = cost.profile(NETS["resnet2d"][0], (2, 1, 16, 16))
    m = rep.measure(steps=2)
    assert m["step_s"] > 0 and m["estimate_MiB"] == rep.activation_bytes / 2 ** 20
    assert math.isnan(m["peak_extra_MiB"])   # CPU: no allocator statistics


# ----------------------------------------------------------------------------- receptive field
def _empirical_rf(model, shape):
    """Extent (voxels per axis) of input positions with a nonzero gradient of the central output."""
    model = model.double().eval()   # eval: BatchNorm must not mix positions through batch statistics
    for p in model.parameters():   # positive weights: no cancellation, ReLU passes everything
        p.data = p.data.abs() + 0.1
    x = torch.ones(shape, dtype=torch.double, requires_grad=True)
    out = model(x)
    centre = tuple(s // 2 for s in out.shape[2:])
    out[(0, 0) + centre].backward()
    nonzero = x.grad[0, 0].nonzero()
    return tuple(int(nonzero[:, i].max() - nonzero[:, i].min() + 1) for i in range(nonzero.shape[1]))


class ResidualChain(nn.Module):
    """conv -> x + conv(conv(x)) -> strided conv: the skip must not shrink or double the field."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=1)
        self.c = nn.Conv2d(2, 2, 5, padding=2)
        self.d = nn.Conv2d(2, 1, 3, stride=2, padding=1)

    def forward(self, x):
        x = self.a(x)
        return self.d(x + self.c(F.relu(self.b(x))))


RF_CASES = {
    "one 3x3x3": (nn.Conv3d(1, 1, 3, padding=1), (1, 1, 15, 15, 15)),
    "three 3x3x3": (nn.Sequential(*[nn.Conv3d(1, 1, 3, padding=1) for _ in range(3)]), (1, 1, 21, 21, 21)),
    "strided + pooled": (nn.Sequential(nn.Conv3d(1, 2, 3, stride=2, padding=1), nn.ReLU(),
                                       nn.AvgPool3d(2), nn.Conv3d(2, 1, 3, padding=1)), (1, 1, 48, 48, 48)),
    "dilated": (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2, padding=2), nn.Conv2d(2, 1, 3, dilation=3,
                                                                                    padding=3)), (1, 1, 31, 31)),
    "anisotropic 1x3x3 first": (nn.Sequential(nn.Conv3d(1, 2, (1, 3, 3), padding=(0, 1, 1)),
                                              nn.Conv3d(2, 2, (1, 3, 3), padding=(0, 1, 1)),
                                              nn.Conv3d(2, 1, 3, padding=1)), (1, 1, 15, 15, 15)),
    "residual": (ResidualChain(), (1, 1, 33, 33)),
}




@pytest.mark.parametrize("name", sorted(RF_CASES))
def test_receptive_field_matches_autograd(name):
    model, shape = RF_CASES[name]
    dims = len(shape) - 2
    rf = cost.receptive_field(model, (1.0,) * dims, input_shape=shape)
    assert rf == tuple(float(v) for v in _empirical_rf(model, shape))


def test_receptive_field_in_mm_on_thick_slices():
    spacing = (5.0, 0.7, 0.7)
    assert cost.receptive_field(nn.Conv3d(1, 1, 3), spacing) == pytest.approx((15, 2.1, 2.1), abs=1e-9)
    three = nn.Sequential(*[nn.Conv3d(1, 1, 3) for _ in range(3)])
    assert cost.receptive_field(three, spacing) == pytest.approx((35, 4.9, 4.9), abs=1e-9)
    # max-pool has the same geometry as avg-pool
    mp = nn.Sequential(nn.Conv3d(1, 1, 3), nn.MaxPool3d(2), nn.Conv3d(1, 1, 3))
    assert cost.receptive_field(mp, (1, 1, 1)) == (8.0, 8.0, 8.0)
    # a 2D network sees one slice; a 2.5D network sees `slices` of them
    assert cost.receptive_field(nn.Conv2d(5, 1, 3), spacing, slices=5) == pytest.approx((25, 2.1, 2.1))


def test_receptive_field_residual_network_with_global_pool():
    model = TinyResNet(2)   # stem 3 -> pool(2) 4 -> 3x3 (jump 2) 8 -> strided 3x3 12; 1x1 shortcut adds 0
    assert cost.receptive_field(model, (1.0, 1.0)) == (12.0, 12.0)


# ----------------------------------------------------------------------------- fits
def test_fits_grows_with_batch_and_max_batch_is_consistent():
    model = nn.Sequential(nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                          nn.Linear(8, 1))
    small = cost.fits(model, (1, 64, 64, 64), batch=1, gpu="T4")
    assert small and small.max_batch > 1
    assert cost.fits(model, (1, 64, 64, 64), batch=small.max_batch, gpu="T4")
    assert not cost.fits(model, (1, 64, 64, 64), batch=small.max_batch + 1, gpu="T4")
    assert cost.fits(model, (1, 64, 64, 64), batch=1, gpu="H100-80").max_batch > small.max_batch
    assert cost.fits(model, (4, 1, 64, 64, 64), batch=2).batch == 2   # a leading N is replaced


# ----------------------------------------------------------------------------- bad input
BAD = [
    (lambda: cost.profile("net", (1, 1, 8, 8)), TypeError, "model"),
    (lambda: cost.profile(nn.Conv2d(1, 1, 3), (1, 0, 8, 8)), ValueError, "input_shape"),
    (lambda: cost.profile(nn.Conv2d(1, 1, 3), (1, 1, 8.0, 8)), TypeError, "input_shape"),
    (lambda: cost.profile(nn.Conv2d(1, 1, 3), (1, 1, 8, 8), dtype=torch.int64), TypeError, "dtype"),
    (lambda: cost.profile(nn.Conv2d(1, 1, 3), (1, 1, 8, 8), dtype="float32"), TypeError, "dtype"),
    (lambda: cost.profile(nn.Conv2d(1, 1, 3), (1, 1, 8, 8)).measure(steps=0), ValueError, "steps"),
    (lambda: cost.receptive_field(nn.Conv3d(1, 1, 3), (5, 0.7)), ValueError, "spacing"),
    (lambda: cost.receptive_field(nn.Conv3d(1, 1, 3), (5, -0.7, 0.7)), ValueError, "spacing"),
    (lambda: cost.receptive_field(nn.Conv3d(1, 1, 3), (5, float("nan"), 0.7)), ValueError, "spacing"),
    (lambda: cost.receptive_field(nn.Linear(2, 2), (1, 1, 1)), ValueError, "model"),
    (lambda: cost.receptive_field(nn.Conv2d(1, 1, 3), (5, 1, 1), slices=0), ValueError, "slices"),
    (lambda: cost.fits(nn.Conv3d(1, 1, 3), (1, 8, 8, 8), batch=0), ValueError, "batch"),
    (lambda: cost.fits(nn.Conv3d(1, 1, 3), (1, 8, 8, 8), batch=1, gpu="V100"), ValueError, "gpu"),
    (lambda: cost.fits(nn.Conv3d(1, 1, 3), (1, 8, 8, 8), batch=1, optimizer="lbfgs"), ValueError, "optimizer"),
    (lambda: cost.fits(nn.Conv3d(1, 1, 3), (8, 8, 8), batch=1), ValueError, "input_shape"),
]


@pytest.mark.parametrize("call,error,word", BAD)
def test_bad_input_raises_clear_errors(call, error, word):
    with pytest.raises(error, match=word):
        call()


# ----------------------------------------------------------------------------- notebook 03's experiment functions
def test_volumetric_experiments_reproduce_the_chapter_numbers():
    from radlab.experiments import volumetric as V
    assert list(V.macs_per_output(slices=5, size=8)["MACs per output"]) == [9, 45, 27]
    rule = V.memory_rule(size=16)
    assert rule["ratio"].iloc[0] == 16 and 8 <= rule["ratio"].iloc[1] <= 16
    rf = V.receptive_fields((5.0, 0.7, 0.7), (6, 46, 46)).set_index("configuration")
    assert rf["first layer RF mm"].iloc[0] == (15.0, 2.1, 2.1)
    assert rf["RF z / x"].iloc[0] > 7 and 0.8 <= rf["RF z / x"].iloc[1] <= 1.25 and rf["RF z / x"].iloc[2] == 1
    assert V.inplane_blocks((5.0, 0.7, 0.7), depth=3) == 2 and V.inplane_blocks((1, 1, 1), depth=3) == 0


def test_volumetric_cost_table_and_live_panel_function():
    from radlab.experiments import volumetric as V
    t = V.cost_table((16, 32), measure_up_to=16, steps=1).table()
    assert t["step s"].notna().sum() == 3 and t["step s"].isna().sum() == 3
    live = V.live_costs(size=64, depth=2, width=4, slices=3).table()
    assert list(live["network"]) == ["2d", "2.5d", "3d"] and (live["GMACs"] > 0).all()
    gpus = V.gpu_table(sizes=(32,), gpus=("T4", "H100-80"))
    assert (gpus["H100-80"] > gpus["T4"]).all()
