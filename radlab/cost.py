"""What a network costs: parameters, MACs, activation memory, receptive field in mm.

    rep = rl.cost.profile(model, (2, 1, 64, 64, 64))   # input_shape includes N
    rep.params, rep.macs, rep.other_ops, rep.activation_bytes
    rep.per_layer                                        # one row per layer
    rep.measure(steps=5)                                 # real forward+backward time (and CUDA peak memory)
    rl.cost.receptive_field(model, spacing=(5.0, 0.7, 0.7))   # (z, y, x) in mm
    rl.cost.fits(model, (1, 64, 64, 64), batch=8, gpu="T4")

What is counted (taught in ``notebooks/03_volumetric_costs.ipynb``):

* ``macs``: multiply-accumulates of convolutions (transposed too), linear layers
  and matrix products (matmul, bmm, einsum, ...). Bias additions are not counted.
  Equal to ``torch.utils.flop_counter.FlopCounterMode`` total / 2 (tests check it).
* ``other_ops``: element-wise work, reported apart as fvcore and most papers do:
  one op per element written by a norm, activation, addition/subtraction or
  up-sampling, and one op per element *read* by a pooling window
  (output elements x window volume; adaptive pooling: input elements).
* ``activation_bytes``: bytes of the distinct tensors autograd saves for the
  backward pass at ``dtype`` (parameters, buffers and the input batch itself
  excluded), measured with ``torch.autograd.graph.saved_tensors_hooks``.
  ``activation_bytes_estimate`` is the textbook estimate: the sum of every
  layer's output size.

The counting pass runs on PyTorch's ``meta`` device by default: shapes flow
through the network but no arithmetic is done, so a 256^3 volume costs nothing.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["CostReport", "FitReport", "GPUS", "profile", "receptive_field", "fits",
           "conv_macs", "conv_transpose_macs", "linear_macs"]

# ----------------------------------------------------------------------------- MAC formulas
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_ACT = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.GELU, nn.SiLU, nn.Sigmoid,
        nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.Hardtanh, nn.Mish, nn.Softplus)
_POOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_UPSAMPLE = (nn.Upsample,)
_COUNTED = _CONV + _CONV_T + (nn.Linear,) + _NORM + _ACT + _POOL + _ADAPTIVE + _UPSAMPLE


def conv_macs(conv: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Each output value is a dot product over (C_in / groups) x k_z x k_y x k_x inputs."""
    return out.numel() * (conv.in_channels // conv.groups) * math.prod(conv.kernel_size)


def conv_transpose_macs(conv: nn.Module, x: torch.Tensor, out: torch.Tensor) -> int:
    """Each *input* value is multiplied into (C_out / groups) x k_z x k_y x k_x outputs."""
    return x.numel() * (conv.out_channels // conv.groups) * math.prod(conv.kernel_size)


def linear_macs(linear: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> int:
    """Each output value is a dot product over in_features inputs."""
    return out.numel() * linear.in_features


def _module_cost(module: nn.Module, x: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(MACs, other element-wise ops) of one leaf layer, from its input and output."""
    if isinstance(module, _CONV):
        return conv_macs(module, x, out), 0
    if isinstance(module, _CONV_T):
        return conv_transpose_macs(module, x, out), 0
    if isinstance(module, nn.Linear):
        return linear_macs(module, x, out), 0
    if isinstance(module, _POOL):  # every window reads kernel-volume inputs
        k = module.kernel_size
        dims = out.dim() - 2
        window = math.prod(k) if isinstance(k, tuple) else k ** dims
        return 0, out.numel() * window
    if isinstance(module, _ADAPTIVE):
        return 0, x.numel()
    return 0, out.numel()  # norms, activations, up-sampling: one op per element written


# Matrix products met outside the layers above (functional code: attention, einsum, F.conv).
def _functional_macs(name: str, args: Sequence[Any], out: Any) -> int:
    if name == "convolution":  # (input, weight, bias, stride, padding, dilation, transposed, ...)
        x, w, transposed = args[0], args[1], args[6]
        spatial = x.shape[2:] if transposed else out.shape[2:]
        return x.shape[0] * math.prod(spatial) * math.prod(w.shape)
    if name in ("mm", "bmm"):
        a, b = args[0], args[1]
        return math.prod(a.shape) * b.shape[-1]
    if name in ("addmm", "baddbmm"):
        a, b = args[1], args[2]
        return math.prod(a.shape) * b.shape[-1]
    return 0


_FUNCTIONAL_ELEMENTWISE = {"add", "add_", "sub", "sub_", "relu", "relu_", "gelu", "sigmoid",
                           "sigmoid_", "tanh", "tanh_", "silu", "silu_", "leaky_relu", "leaky_relu_",
                           "elu", "elu_", "hardtanh", "hardtanh_", "_softmax", "_log_softmax"}


def _functional_other(name: str, args: Sequence[Any], out: Any) -> int:
    if name in ("add", "add_", "sub", "sub_"):  # only tensor + tensor (a residual), not x + 1
        tensors = [a for a in args[:2] if isinstance(a, torch.Tensor) and a.numel() > 1]
        return out.numel() if len(tensors) == 2 else 0
    if name in _FUNCTIONAL_ELEMENTWISE or name.startswith("upsample_"):
        return out.numel()
    if name.startswith(("max_pool", "avg_pool")):  # (input, kernel_size, ...)
        first = out[0] if isinstance(out, tuple) else out
        k = args[1]
        return first.numel() * (math.prod(k) if len(k) > 1 else k[0] ** (first.dim() - 2))
    if name.startswith(("_adaptive_avg_pool", "adaptive_max_pool")):
        return args[0].numel()
    return 0


class _Counter(TorchDispatchMode):
    """Counts matrix products and element-wise ops that run *outside* the counted layers."""

    def __init__(self, stack: list[str], inside: list[int], totals: dict[str, list[int]]):
        super().__init__()
        self.stack, self.inside, self.totals = stack, inside, totals

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._overloadpacket.__name__
        known = name in ("convolution", "mm", "bmm", "addmm", "baddbmm")
        if not known and not self.inside[0]:
            with self:  # like FlopCounterMode: look inside composite ops
                decomposed = func.decompose(*args, **kwargs)
            if decomposed is not NotImplemented:
                return decomposed
        out = func(*args, **kwargs)
        if not self.inside[0]:
            macs, other = _functional_macs(name, args, out), _functional_other(name, args, out)
            if macs or other:
                row = self.totals.setdefault(self.stack[-1], [0, 0])
                row[0] += macs
                row[1] += other
        return out


# ----------------------------------------------------------------------------- input checks
def _check_model(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def _check_shape(input_shape: Any, name: str = "input_shape", ranks=(3, 4, 5)) -> tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in input_shape):
        raise TypeError(f"{name}: expected a tuple of ints like (N, C, D, H, W), got {input_shape!r}")
    if len(input_shape) not in ranks or min(input_shape) < 1:
        raise ValueError(f"{name}: expected {'/'.join(map(str, ranks))} positive sizes "
                         f"like (N, C, D, H, W), got {tuple(input_shape)}")
    return tuple(input_shape)


def _check_dtype(dtype: Any) -> torch.dtype:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype such as torch.float32, got {dtype!r}")
    return dtype


def _check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


# ----------------------------------------------------------------------------- the report
@dataclasses.dataclass
class CostReport:
    """Cost of one forward pass of ``model`` on a batch of ``input_shape`` (see module docstring)."""

    input_shape: tuple[int, ...]
    dtype: torch.dtype
    params: int                     # trainable parameters
    macs: int                       # multiply-accumulates (== FlopCounterMode total / 2)
    other_ops: int                  # element-wise ops of norms, activations, pooling, additions
    activation_bytes: int           # distinct tensors saved for backward, measured
    activation_bytes_estimate: int  # sum of every layer's output size
    input_bytes: int
    per_layer: pd.DataFrame
    model: nn.Module = dataclasses.field(repr=False)

    @property
    def param_bytes(self) -> int:
        return self.params * _itemsize(self.dtype)

    def table(self) -> pd.DataFrame:
        """One-row summary (MACs in G, memory in MiB)."""
        mib = 2 ** 20
        return pd.DataFrame([{
            "input": "x".join(map(str, self.input_shape)), "params": self.params,
            "GMACs": self.macs / 1e9, "other Gops": self.other_ops / 1e9,
            "activations MiB": self.activation_bytes / mib,
            "estimate MiB": self.activation_bytes_estimate / mib}])

    def measure(self, steps: int = 5, device: str | torch.device | None = None, warmup: int = 1) -> pd.Series:
        """Time real forward+backward passes (median ``step_s``); on CUDA also ``peak_extra_MiB``, the peak
        allocated above weights, gradients and input during a step, next to ``estimate_MiB`` (the measured
        saved activations). Runs on a copy of the model, so its BatchNorm statistics stay untouched."""
        _check_positive_int(steps, "steps")
        device = torch.device(device) if device is not None else _model_device(self.model)
        model = copy.deepcopy(self.model).to(device=device, dtype=self.dtype).train()
        x = torch.randn(self.input_shape, device=device, dtype=self.dtype)
        cuda = device.type == "cuda"
        times = []
        for step in range(warmup + steps):
            if cuda:
                torch.cuda.synchronize(device)
                if step == warmup:
                    torch.cuda.reset_peak_memory_stats(device)
                    base = torch.cuda.memory_allocated(device)
            start = time.perf_counter()
            model(x).float().sum().backward()  # a scalar loss stands in for the real one
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=False)  # keep grads allocated: they are part of the cost
        # base already holds weights, gradients (kept from the warm-up step) and the input batch,
        # so the peak above it is what one step adds: saved activations plus backward temporaries
        peak = (torch.cuda.max_memory_allocated(device) - base) if cuda else float("nan")
        return pd.Series({"device": str(device), "step_s": float(torch.tensor(times[warmup:]).median()),
                          "peak_extra_MiB": peak / 2 ** 20, "estimate_MiB": self.activation_bytes / 2 ** 20})

    def __str__(self) -> str:
        return (f"CostReport(input={self.input_shape}, params={self.params:,}, "
                f"MACs={self.macs / 1e9:.3f} G, other ops={self.other_ops / 1e9:.3f} G, "
                f"activations={self.activation_bytes / 2 ** 20:.1f} MiB "
                f"(layer-output estimate {self.activation_bytes_estimate / 2 ** 20:.1f} MiB))")


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _model_device(model: nn.Module) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


def _stand_in_state(model: nn.Module, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Parameters and buffers for a side-effect-free pass on ``device`` at ``dtype``."""
    state = {}
    for name, p in model.named_parameters():
        t = torch.empty_like(p, device=device) if device.type == "meta" else p.detach().to(device)
        state[name] = (t.to(dtype) if t.is_floating_point() else t).requires_grad_(p.requires_grad)
    for name, b in model.named_buffers():
        t = torch.empty_like(b, device=device) if device.type == "meta" else b.detach().to(device).clone()
        state[name] = t.to(dtype) if t.is_floating_point() else t
    return state


def _run_counted(model: nn.Module, input_shape, device: torch.device, dtype: torch.dtype):
    """One training-mode forward pass with hooks; returns per-layer rows and saved-tensor bytes."""
    rows, stack, inside, totals = {}, ["(model)"], [0], {}
    handles = []

    def pre_hook(module, args):
        stack.append(names[module])
        inside[0] += isinstance(module, _COUNTED)

    def hook(module, args, out):
        stack.pop()
        if isinstance(module, _COUNTED):
            inside[0] -= 1
            x = args[0] if args else out
            macs, other = _module_cost(module, x, out)
            rows[names[module]] = dict(name=names[module], type=type(module).__name__,
                                       output_shape=tuple(out.shape), params=_own_params(module),
                                       macs=macs, other_ops=other,
                                       output_bytes=out.numel() * out.element_size())

    names = {m: (n or "(model)") for n, m in model.named_modules()}
    for m in model.modules():
        handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(hook)]

    saved: dict[int, int] = {}
    exclude = set()

    def pack(t):  # key by storage so views and in-place ops are counted once
        key = t.untyped_storage()._cdata
        if key not in exclude:
            saved[key] = t.untyped_storage().nbytes()
        return t

    state = _stand_in_state(model, device, dtype)
    x = torch.randn(input_shape, device=device, dtype=dtype) if device.type != "meta" else \
        torch.empty(input_shape, device=device, dtype=dtype)
    exclude |= {t.untyped_storage()._cdata for t in [x, *state.values()]}
    was_training = model.training
    try:
        model.train()
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                _Counter(stack, inside, totals):
            torch.func.functional_call(model, state, (x,))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    for name, (macs, other) in totals.items():  # functional work, attributed to its module
        rows[name + " (functional)"] = dict(name=name, type="functional", output_shape=None, params=0,
                                            macs=macs, other_ops=other, output_bytes=0)
    return list(rows.values()), sum(saved.values()), x.numel() * x.element_size()


def _own_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters(recurse=False) if p.requires_grad)


def profile(model: nn.Module, input_shape: Sequence[int], device: str | torch.device | None = None,
            dtype: torch.dtype = torch.float32) -> CostReport:
    """Parameters, MACs, element-wise ops and activation memory of one forward pass.

    ``input_shape`` includes the batch: (N, C, D, H, W) or (N, C, H, W).
    ``device=None`` counts on the ``meta`` device (shapes only, no arithmetic) and
    falls back to the model's device for networks that cannot run on ``meta``.
    Taught in ``notebooks/03_volumetric_costs.ipynb``.
    """
    _check_model(model)
    shape = _check_shape(input_shape)
    dtype = _check_dtype(dtype)
    if device is None:
        try:
            rows, act, inp = _run_counted(model, shape, torch.device("meta"), dtype)
        except (NotImplementedError, RuntimeError):  # data-dependent code: run it for real
            rows, act, inp = _run_counted(model, shape, _model_device(model), dtype)
    else:
        rows, act, inp = _run_counted(model, shape, torch.device(device), dtype)
    per_layer = pd.DataFrame(rows, columns=["name", "type", "output_shape", "params", "macs",
                                            "other_ops", "output_bytes"])
    return CostReport(input_shape=shape, dtype=dtype,
                      params=sum(p.numel() for p in model.parameters() if p.requires_grad),
                      macs=int(per_layer["macs"].sum()), other_ops=int(per_layer["other_ops"].sum()),
                      activation_bytes=act, activation_bytes_estimate=int(per_layer["output_bytes"].sum()),
                      input_bytes=inp, per_layer=per_layer, model=model)


# ----------------------------------------------------------------------------- receptive field
def _rf_step(module: nn.Module, dims: int):
    """(kernel, stride, dilation, transposed) per axis of a conv or pooling layer, else None."""
    def per_axis(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims
    if isinstance(module, _CONV + _CONV_T):
        return (per_axis(module.kernel_size), per_axis(module.stride), per_axis(module.dilation),
                isinstance(module, _CONV_T))
    if isinstance(module, _POOL):
        dilation = getattr(module, "dilation", 1)
        stride = module.stride if module.stride is not None else module.kernel_size
        return per_axis(module.kernel_size), per_axis(stride), per_axis(dilation), False
    return None


class _RFTracker(torch.overrides.TorchFunctionMode):
    """Carries (receptive field, jump) per axis from tensor to tensor through any torch op.

    A conv/pool layer's forward hook overwrites its output's entry with the layer
    formula; every other op (add, cat, norm, ReLU, view) gives its output the
    largest receptive field among its inputs, which is exact for residual additions.
    """

    def __init__(self, info: dict[int, tuple], keep: list):
        super().__init__()
        self.info, self.keep = info, keep

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        known = [self.info[id(a)] for a in _flat(args, kwargs) if id(a) in self.info]
        if known and isinstance(out, torch.Tensor):
            rf = tuple(max(k[0][i] for k in known) for i in range(len(known[0][0])))
            jump = tuple(max(k[1][i] for k in known) for i in range(len(known[0][1])))
            if getattr(func, "__name__", "") == "interpolate":  # up-sampling shrinks the jump
                ratio = [o / i for o, i in zip(out.shape[2:], args[0].shape[2:])]
                jump = tuple(j / r for j, r in zip(jump, ratio))
            self.info[id(out)] = (rf, jump)
            self.keep.append(out)
        return out


def _flat(args, kwargs):
    for a in list(args) + list((kwargs or {}).values()):
        if isinstance(a, (list, tuple)):
            yield from a
        else:
            yield a


def _conv_dims(model: nn.Module) -> tuple[int, int]:
    for m in model.modules():
        if isinstance(m, _CONV + _CONV_T):
            return len(m.kernel_size), m.in_channels
    raise ValueError(f"model: expected a network with at least one convolution, got {type(model).__name__}")


def receptive_field(model: nn.Module, spacing: Sequence[float], *, input_shape: Sequence[int] | None = None,
                    slices: int = 1) -> tuple[float, ...]:
    """Extent in mm of the input region that one position of the last feature map sees.

    Walks the layers in forward order with hooks, per axis:
    ``rf += (k - 1) * dilation * jump`` then ``jump *= stride``. Exact for stacked
    conv/pool layers and residual additions (an upper bound after up-sampling).
    Global (adaptive) pooling is not counted: it would make the field the whole input.
    ``spacing`` is in (z, y, x) order; for a 2D network a 3-tuple spacing returns
    (slices x spacing_z, y, x), where ``slices`` is how many slices a 2.5D input stacks.
    Taught in ``notebooks/03_volumetric_costs.ipynb`` (anisotropic voxels).
    """
    _check_model(model)
    dims, in_channels = _conv_dims(model)
    if not isinstance(spacing, (tuple, list)) or len(spacing) not in (dims, 3) or not all(
            isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing: expected {dims} (or 3) positive finite mm values in (z, y, x) order, "
                         f"got {spacing!r}")
    _check_positive_int(slices, "slices")
    shape = _check_shape(input_shape, ranks=(dims + 2,)) if input_shape is not None else \
        (1, in_channels) + (64,) * dims
    info: dict[int, tuple] = {}
    keep: list = []  # keeps tensors alive so their ids stay unique
    rfs = [(1,) * dims]

    def hook(module, args, out):
        step = _rf_step(module, dims)
        if step is None or id(args[0]) not in info:
            if isinstance(module, _ADAPTIVE):
                info.pop(id(out), None)  # global pooling: stop tracking
            return
        (rf, jump), (k, s, d, transposed) = info[id(args[0])], step
        if transposed:  # each output sees ceil((k-1)d/s)+1 inputs, one input step apart
            rf = tuple(r + math.ceil((ki - 1) * di / si) * j for r, ki, di, si, j in zip(rf, k, d, s, jump))
            jump = tuple(j / si for j, si in zip(jump, s))
        else:
            rf = tuple(r + (ki - 1) * di * j for r, ki, di, j in zip(rf, k, d, jump))
            jump = tuple(j * si for j, si in zip(jump, s))
        info[id(out)] = (rf, jump)
        keep.append(out)
        rfs.append(rf)

    handles = [m.register_forward_hook(hook) for m in model.modules() if _rf_step(m, dims) or
               isinstance(m, _ADAPTIVE)]
    x = torch.empty(shape, device="meta")
    info[id(x)] = ((1,) * dims, (1,) * dims)
    state = _stand_in_state(model, torch.device("meta"), torch.float32)
    try:
        with torch.no_grad(), _RFTracker(info, keep):
            torch.func.functional_call(model, state, (x,))
    finally:
        for h in handles:
            h.remove()
    voxels = tuple(max(r[i] for r in rfs + [v[0] for v in info.values()]) for i in range(dims))
    if dims == 2 and len(spacing) == 3:
        voxels, spacing = (slices, *voxels), tuple(spacing)
    return tuple(round(v * float(s), 9) for v, s in zip(voxels, spacing[-len(voxels):]))


# ----------------------------------------------------------------------------- will it fit?
# Memory that nvidia-smi reports for each card, in MiB.
GPUS = {"T4": 15360, "A100-40": 40960, "A100-80": 81920, "H100-80": 81559}
OVERHEAD = 1.25           # allocator fragmentation, cuDNN workspaces, temporaries of backward
CONTEXT_MIB = 600         # CUDA context and kernels, never available to tensors
OPTIMIZER_STATES = {"adam": 2, "adamw": 2, "sgd": 1, "none": 0}  # extra copies of the parameters


@dataclasses.dataclass
class FitReport:
    """Will a training step fit? ``bool(report)`` is the answer; ``max_batch`` the largest batch that fits."""

    gpu: str
    batch: int
    need_bytes: int
    gpu_bytes: int
    max_batch: int
    breakdown: dict[str, int]

    def __bool__(self) -> bool:
        return self.need_bytes <= self.gpu_bytes

    def __str__(self) -> str:
        verdict = "fits" if self else "does not fit"
        return (f"batch {self.batch} {verdict} on {self.gpu}: needs {self.need_bytes / 2 ** 30:.2f} GiB "
                f"of {self.gpu_bytes / 2 ** 30:.2f} GiB (largest batch that fits: {self.max_batch})")


def fits(model: nn.Module, input_shape: Sequence[int], batch: int, gpu: str = "T4",
         dtype: torch.dtype = torch.float32, optimizer: str = "adam") -> FitReport:
    """Estimate whether training ``model`` at ``batch`` fits in the memory of ``gpu``.

    need = OVERHEAD x (weights + gradients + optimizer states + activations + input) + CUDA context,
    with activations measured by :func:`profile` at this batch. ``input_shape`` is one
    sample's shape, (C, D, H, W) or (C, H, W); a leading N is replaced by ``batch``.
    Taught in ``notebooks/03_volumetric_costs.ipynb``.
    """
    _check_model(model)
    _check_positive_int(batch, "batch")
    if gpu not in GPUS:
        raise ValueError(f"gpu: expected one of {sorted(GPUS)}, got {gpu!r}")
    if optimizer not in OPTIMIZER_STATES:
        raise ValueError(f"optimizer: expected one of {sorted(OPTIMIZER_STATES)}, got {optimizer!r}")
    dims, _ = _conv_dims(model)
    shape = _check_shape(input_shape, ranks=(dims + 1, dims + 2))
    sample = shape if len(shape) == dims + 1 else shape[1:]
    rep = profile(model, (batch, *sample), dtype=dtype)
    weights = rep.param_bytes
    per_sample = (rep.activation_bytes + rep.input_bytes) / batch
    breakdown = {"weights": weights, "gradients": weights, "optimizer": OPTIMIZER_STATES[optimizer] * weights,
                 "activations": rep.activation_bytes, "input": rep.input_bytes}
    fixed = (2 + OPTIMIZER_STATES[optimizer]) * weights
    need = int(OVERHEAD * (fixed + per_sample * batch)) + CONTEXT_MIB * 2 ** 20
    have = GPUS[gpu] * 2 ** 20
    room = (have - CONTEXT_MIB * 2 ** 20) / OVERHEAD - fixed
    return FitReport(gpu=gpu, batch=batch, need_bytes=need, gpu_bytes=have,
                     max_batch=max(0, int(room // per_sample)), breakdown=breakdown)
