"""Training loop, prediction and evaluation for every radlab notebook.

    hist = rl.train.fit(model, ph_train, ph_val, loss="bce", epochs=P.epochs, lr=1e-3,
                        batch_size=P.batch_size)
    hist.table(); hist.plot()
    p = rl.train.predict(model, ph_test, proba=True)           # (N,) probabilities, on the CPU
    rl.train.evaluate(model, ph_test, task="classification")   # {"auc": ..., "accuracy": ..., "brier": ...}

What ``fit`` does, in the order a step runs:

* **Data.** A PhantomSet (``.inputs``/``.targets``) or a tuple ``(X, Y)`` of tensors is
  moved to the device once; each epoch draws a shuffled index on the device and
  slices batches from it, so there is no DataLoader and no copy through the host. Any
  other torch Dataset of ``(x, y)`` goes through a DataLoader.
* **Step.** AdamW, gradient-norm clipping, a cosine learning-rate schedule stepped
  per batch. On CUDA the forward runs under autocast: bfloat16 where the GPU supports
  it, else float16 with a GradScaler.
* **No per-step host sync.** The epoch loss is summed on the device and read with one
  ``.item()`` per epoch; the progress bar moves once per epoch.
* **Memory format.** ``channels_last_3d`` (NDHWC) is used where it was measured to be
  faster (``channels_last=None`` decides; see :func:`use_channels_last`).
* **Checkpoints.** With ``checkpoint_dir``, every epoch writes ``last.pt`` atomically
  (a temporary file, then ``os.replace``): model, optimizer, scheduler, scaler, every
  RNG state, the history and the early-stopping state. ``resume=True`` continues from
  it and reproduces the uninterrupted run exactly (bitwise on the CPU; tested).

Taught in ``notebooks/01_end_to_end_vs_classical.ipynb`` ("Training the 3D CNN").
"""
from __future__ import annotations

import dataclasses
import inspect
import math
import os
import random
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fit", "predict", "evaluate", "History", "LOSS_NAMES", "METRICS", "save_checkpoint",
           "load_checkpoint", "use_channels_last"]

LOSS_NAMES = ("bce", "mse", "cross_entropy", "dice", "dice_bce", "focal", "cox")
METRICS = ("auc", "accuracy", "brier", "dice", "c_index")
LOWER_IS_BETTER = ("brier", "loss")
# Metric recorded on the validation set by default for each named loss.
DEFAULT_METRIC = {"bce": "auc", "focal": "auc", "cross_entropy": "accuracy", "dice": "dice",
                  "dice_bce": "dice", "cox": "c_index", "mse": None}
TASK_METRICS = {"classification": ("auc", "accuracy", "brier"), "segmentation": ("dice",),
                "survival": ("c_index",)}


# ---------------------------------------------------------------- history
@dataclasses.dataclass
class History:
    """What ``fit`` measured, one record per epoch: train loss, val loss and metrics, lr, seconds."""

    records: list[dict] = dataclasses.field(default_factory=list)
    best_epoch: int | None = None       # epoch (1-based) with the best monitored value, if validated
    stopped_early: bool = False

    @property
    def train_loss(self) -> list[float]:
        return [r["train_loss"] for r in self.records]

    @property
    def val_loss(self) -> list[float]:
        return [r.get("val_loss", math.nan) for r in self.records]

    def table(self):
        """pandas DataFrame, one row per epoch."""
        import pandas as pd
        return pd.DataFrame(self.records).set_index("epoch")

    def plot(self):
        """Loss per epoch (left) and validation metrics per epoch (right, if any)."""
        from matplotlib.figure import Figure  # not pyplot: the notebook shows the returned figure once
        from matplotlib.ticker import MaxNLocator
        df = self.table()
        metrics = [c for c in df.columns if c.startswith("val_") and c != "val_loss"]
        fig = Figure(figsize=(9 if metrics else 4.5, 3.2), layout="constrained")
        axes = fig.subplots(1, 2 if metrics else 1, squeeze=False)[0]
        for column in ("train_loss", "val_loss"):
            if column in df:
                axes[0].plot(df.index, df[column], marker="o", label=column.replace("_", " "))
        axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
        axes[0].legend()
        for column in metrics:
            axes[1].plot(df.index, df[column], marker="o", label=column[4:])
        if metrics:
            axes[1].set(xlabel="epoch", title="validation metrics")
            axes[1].legend()
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        return fig

    def __repr__(self) -> str:
        last = self.records[-1] if self.records else {}
        shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k not in ("epoch", "seconds"))
        return f"History({len(self.records)} epochs; last: {shown})"


# ---------------------------------------------------------------- data
def as_data(data, name: str):
    """A PhantomSet / (X, Y) tuple -> (X, Y) tensors, checked; a torch Dataset stays a Dataset."""
    if hasattr(data, "inputs") and hasattr(data, "targets"):
        data = (data.inputs, data.targets)
    if isinstance(data, torch.utils.data.Dataset):
        if len(data) < 1:
            raise ValueError(f"{name}: expected a non-empty Dataset, got length 0")
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(f"{name}: expected a PhantomSet, a torch Dataset or a tuple (X, Y) of tensors, "
                        f"got {type(data).__name__}")
    X, Y = (torch.as_tensor(v) for v in data)
    if X.ndim not in (4, 5) or not X.is_floating_point():
        raise ValueError(f"{name}: expected float inputs X of shape (N, C, D, H, W) or (N, C, H, W), "
                         f"got {tuple(X.shape)} {X.dtype}")
    if len(Y) != len(X) or len(X) == 0:
        raise ValueError(f"{name}: expected as many targets as inputs (N ≥ 1), got {len(X)} inputs "
                         f"and {len(Y)} targets")
    for what, t in (("inputs", X), ("targets", Y)):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"{name}: expected finite {what}, got NaN or inf")
    return X, Y


def n_samples(data) -> int:
    return len(data[0]) if isinstance(data, tuple) else len(data)


def batches(data, batch_size: int, device, generator: torch.Generator | None = None):
    """Yield (x, y) batches on ``device``; shuffled when a ``generator`` is given.

    Tensors are indexed on the device; a last batch of one sample is dropped while
    shuffling (BatchNorm needs two). Datasets go through a DataLoader.
    """
    if not isinstance(data, tuple):
        sampler = _block_shuffle(data, generator) if generator is not None else None
        loader = torch.utils.data.DataLoader(data, batch_size=batch_size, sampler=sampler)
        for x, y in loader:
            yield x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        return
    X, Y = data
    n = len(X)
    if generator is None:   # in order: plain slices are views, no copies
        for start in range(0, n, batch_size):
            yield X[start:start + batch_size], Y[start:start + batch_size]
        return
    order = torch.randperm(n, generator=generator).to(X.device)
    for start in range(0, n, batch_size):
        index = order[start:start + batch_size]
        if len(index) == 1 and n > 1:
            break
        yield X[index], Y[index]   # gather on the device


def _block_shuffle(data, generator: torch.Generator) -> list[int]:
    """Shuffled indices; for block-generated data (PhantomDataset, ``.block``) blocks stay together.

    Shuffling blocks, then samples inside each block, regenerates each block once per
    epoch instead of once per sample.
    """
    n, block = len(data), getattr(data, "block", None) or len(data)
    order = []
    for b in torch.randperm(-(-n // block), generator=generator).tolist():
        size = min(block, n - b * block)
        order += (b * block + torch.randperm(size, generator=generator)).tolist()
    return order


# ---------------------------------------------------------------- losses and metrics
def _cox(risk, target):
    from . import survival   # layer 1, imported on use
    return survival.cox_loss(risk, target[:, 0].detach().cpu().numpy(), target[:, 1].detach().cpu().numpy() > 0.5)


def resolve_loss(loss) -> tuple[Callable, str]:
    """A loss callable(output, target) and its name. bce/mse/cross_entropy use torch's fused ops.

    (``rl.losses.bce_loss`` computes the same numbers, tested, but checks its inputs with
    host syncs that a training step should not pay for.)
    """
    if callable(loss):
        return loss, getattr(loss, "__name__", "loss")
    if loss not in LOSS_NAMES:
        raise ValueError(f"loss: expected a callable or one of {LOSS_NAMES}, got {loss!r}")
    if loss == "bce":
        return (lambda out, y: F.binary_cross_entropy_with_logits(out, y.to(out.dtype))), loss
    if loss == "mse":
        return (lambda out, y: F.mse_loss(out, y.to(out.dtype))), loss
    if loss == "cross_entropy":
        return (lambda out, y: F.cross_entropy(out, y.long())), loss
    if loss == "cox":
        return _cox, loss
    from . import losses   # dice, dice_bce, focal: the lesson's own code
    return getattr(losses, f"{loss}_loss"), loss


def match_output(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N, 1) logits against (N,) targets -> (N,); everything else unchanged."""
    if out.ndim == 2 and out.shape[1] == 1 and y.ndim == 1:
        return out[:, 0]
    return out


def _dice_scores(outputs, targets) -> torch.Tensor:
    """Hard Dice per sample, 2|A∩B| / (|A| + |B|), prediction = logit > 0; two empty masks score 1."""
    pred = (outputs > 0).flatten(1).float()   # (N, voxels)
    true = (targets > 0.5).flatten(1).float()
    overlap, total = (pred * true).sum(1), pred.sum(1) + true.sum(1)
    return torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total))


def compute_metric(name, outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """One metric from raw outputs (logits / risks) and targets, both on the CPU."""
    if callable(name):
        return float(name(outputs, targets))
    if name == "dice":
        return _dice_scores(outputs, targets).mean().item()
    if name == "c_index":
        from . import survival
        return float(survival.concordance_index(targets[:, 0].numpy(), outputs.reshape(-1).numpy(),
                                                targets[:, 1].numpy() > 0.5))
    if outputs.ndim == 2 and outputs.shape[1] > 1:    # multi-class logits (N, K)
        if name != "accuracy":
            raise ValueError(f"metric: only 'accuracy' is defined for multi-class outputs, got {name!r}")
        return (outputs.argmax(1) == targets.long()).float().mean().item()
    p, y = torch.sigmoid(outputs.reshape(-1).float()), targets.reshape(-1).float()
    if name == "accuracy":
        return ((p > 0.5).float() == y).float().mean().item()
    if name == "brier":
        return ((p - y) ** 2).mean().item()
    if len(torch.unique(y)) < 2:    # AUC needs both classes
        return math.nan
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y.numpy(), p.numpy()))


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(state: dict, path) -> None:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: never a partial file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)      # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"resume: no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _rng_state(shuffle: torch.Generator) -> dict:
    np_name, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    return {"torch": torch.get_rng_state(), "shuffle": shuffle.get_state(), "python": random.getstate(),
            "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_gauss, np_cached),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict, shuffle: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    shuffle.set_state(state["shuffle"])
    random.setstate(state["python"])
    np_name, np_keys, *rest = state["numpy"]
    np.random.set_state((np_name, np_keys.numpy().astype(np.uint32), *rest))
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _checkpoint_path(checkpoint_dir) -> Path | None:
    """Create ``checkpoint_dir`` if needed and prove it writable; return the path of ``last.pt``."""
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir: expected a path, got {type(checkpoint_dir).__name__}")
    folder = Path(checkpoint_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ValueError(f"checkpoint_dir: expected a writable folder, got {str(folder)!r} ({error})") from None
    return folder / "last.pt"


# ---------------------------------------------------------------- the loop
def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """Whether to train in ``channels_last_3d`` (NDHWC): for 3D convolution nets on CPU and CUDA.

    Measured with ``benchmarks/bench_train_cpu.py`` (torch 2.13, 1 thread, batch 8 at 32³):
    ResNet3D-18 at width 16 trained 1.21× faster per CPU second (1.36× wall) in NDHWC;
    MONAI's width-64 architecture was unchanged (1.02× CPU, 0.96× wall): oneDNN gains on the
    narrow layers and loses nothing on the wide ones. cuDNN's 3D kernels under bf16/fp16
    autocast also prefer NDHWC. 2D nets and nets without Conv3d keep their format.
    """
    has_conv3d = any(isinstance(m, nn.Conv3d) for m in model.modules())
    return has_conv3d and device.type in CHANNELS_LAST_DEVICES


CHANNELS_LAST_DEVICES = ("cuda", "cpu")


def _to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last and x.ndim == 5 else x


def _amp_dtype(device: torch.device):
    """bfloat16 on GPUs that support it (no scaler needed), else float16; None (fp32) on the CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _call_augment(augment, x, y):
    """``augment(x, y) -> (x, y)`` when it takes two arguments (segmentation), else ``augment(x) -> x``."""
    n_args = len([p for p in inspect.signature(augment).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    return augment(x, y) if n_args >= 2 else (augment(x), y)


@dataclasses.dataclass
class _Step:
    """Everything one optimisation step needs."""
    model: nn.Module
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    clip: float | None
    channels_last: bool
    augment: Callable | None

    def __call__(self, x, y) -> torch.Tensor:
        if self.augment is not None:
            x, y = _call_augment(self.augment, x, y)
        x = _to_memory_format(x, self.channels_last)
        with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(match_output(self.model(x), y), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()


def train_one_epoch(step: _Step, data, batch_size: int, generator: torch.Generator, device) -> float:
    """One pass over shuffled batches; the loss is summed on the device and read once."""
    step.model.train()
    total, count = torch.zeros((), device=device), 0
    for x, y in batches(data, batch_size, device, generator):
        total += step(x, y) * len(x)
        count += len(x)
    return total.item() / max(count, 1)   # the epoch's only host sync


@torch.no_grad()
def _outputs(model, data, batch_size, device, channels_last=False) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs and targets of the whole set, in order, on the device (eval mode)."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for x, y in batches(data, batch_size, device):
        with torch.autocast(device.type, dtype=_amp_dtype(device) or torch.float32,
                            enabled=_amp_dtype(device) is not None):
            outs.append(match_output(model(_to_memory_format(x, channels_last)), y).float())
        ys.append(y)
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def _validate(model, val, loss_fn, metric, batch_size, device, channels_last) -> dict:
    out, y = _outputs(model, val, batch_size, device, channels_last)
    record = {"val_loss": loss_fn(out, y).item()}
    if metric is not None:
        name = getattr(metric, "__name__", metric)
        record[f"val_{name}"] = compute_metric(metric, out.cpu(), y.cpu())
    return record


class _EarlyStopping:
    """Tracks the best value of ``key`` in the epoch records; stops after ``patience`` epochs without one."""

    def __init__(self, patience: int | None, key: str, higher_is_better: bool):
        self.patience, self.key, self.sign = patience, key, 1.0 if higher_is_better else -1.0
        self.best, self.best_epoch, self.bad_epochs, self.best_state = None, None, 0, None

    def update(self, record: dict, model: nn.Module) -> bool:
        value = record.get(self.key)
        if value is None:
            return False
        if math.isfinite(value) and (self.best is None or self.sign * (value - self.best) > 0):
            self.best, self.best_epoch, self.bad_epochs = value, record["epoch"], 0
            if self.patience is not None:   # keep the best weights to restore at the end
                self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad_epochs += 1
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("best", "best_epoch", "bad_epochs", "best_state")}

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


def _check_fit_args(model, epochs, lr, batch_size, weight_decay, clip, patience, val, augment, resume,
                    checkpoint_dir) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    checks = (("lr", lr, lambda v: v > 0, "a finite float > 0"),
              ("weight_decay", weight_decay, lambda v: v >= 0, "a finite float >= 0"),
              ("clip", clip, lambda v: v > 0, "None or a finite float > 0"))
    for name, value, ok, expected in checks:
        if name == "clip" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not ok(value):
            raise ValueError(f"{name}: expected {expected}, got {value!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience: expected None or an int >= 1, got {patience!r}")
    if patience is not None and val is None:
        raise ValueError("patience: early stopping watches validation data, but val is None")
    if augment is not None and not callable(augment):
        raise TypeError(f"augment: expected None or a callable, got {type(augment).__name__}")
    if resume and checkpoint_dir is None:
        raise ValueError("resume: resuming needs the checkpoint_dir of the interrupted run, got None")


def _dry_run(model, data, loss_fn, device, channels_last: bool) -> None:
    """One eval-mode forward and loss on one sample, so shape errors name the data, not a conv."""
    x, y = next(iter(batches(data, 1, device)))
    if not torch.isfinite(x).all():   # tensors were checked whole; a Dataset is checked here
        raise ValueError("train: expected finite inputs, got NaN or inf in the first batch")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            loss_fn(match_output(model(_to_memory_format(x, channels_last)), y), y)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"train: the model and loss cannot take inputs of shape {tuple(x.shape)[1:]} "
                         f"with targets of shape {tuple(y.shape)[1:]} (per sample): {error}") from error
    finally:
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _to_device(data, device):
    return tuple(t.to(device) for t in data) if isinstance(data, tuple) else data


def _steps_per_epoch(data, batch_size: int) -> int:
    n = n_samples(data)
    if not isinstance(data, tuple):   # DataLoader: every batch, however small
        return -(-n // batch_size)
    full, rest = divmod(n, batch_size)
    return full + (rest > 1 or (rest == 1 and n == 1))   # a lone last sample is dropped


def _make_step(model, loss_fn, lr, weight_decay, clip, epochs, steps, device, channels_last, augment) -> _Step:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    amp_dtype = _amp_dtype(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return _Step(model, loss_fn, optimizer, scheduler, scaler, amp_dtype, clip, channels_last, augment)


def _checkpoint_state(step: _Step, shuffle, history: History, stopper, epochs: int) -> dict:
    return {"epoch": len(history.records), "epochs": epochs, "model": step.model.state_dict(),
            "optimizer": step.optimizer.state_dict(), "scheduler": step.scheduler.state_dict(),
            "scaler": step.scaler.state_dict(), "rng": _rng_state(shuffle),
            "history": {"records": history.records, "best_epoch": history.best_epoch,
                        "stopped_early": history.stopped_early},
            "early_stopping": stopper.state_dict()}


def _resume(path: Path, step: _Step, shuffle, history: History, stopper, epochs: int) -> int:
    """Load ``last.pt`` into the step, RNGs, history and stopper; return the epoch to start from."""
    state = load_checkpoint(path)
    if state["epochs"] != epochs:
        raise ValueError(f"epochs: the checkpoint in {path.parent} was made for epochs={state['epochs']}, "
                         f"got {epochs} (the LR schedule depends on it)")
    step.model.load_state_dict(state["model"])
    step.optimizer.load_state_dict(state["optimizer"])
    step.scheduler.load_state_dict(state["scheduler"])
    step.scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"], shuffle)
    for key, value in state["history"].items():
        setattr(history, key, value)
    stopper.load_state_dict(state["early_stopping"])
    return epochs if history.stopped_early else state["epoch"]


def _watch(metric, loss_name: str, patience):
    """The metric to record and the early stopper: it watches ``metric`` if one was given, else val loss."""
    watched = metric is not None
    metric = metric if watched else DEFAULT_METRIC.get(loss_name)
    key = f"val_{getattr(metric, '__name__', metric)}" if watched else "val_loss"
    return metric, _EarlyStopping(patience, key, higher_is_better=watched and metric not in LOWER_IS_BETTER)


def _epoch(epoch: int, step: _Step, train, val, metric, batch_size, shuffle, device) -> dict:
    """Train one epoch, validate, and return the epoch's record."""
    t0, lr_now = time.perf_counter(), step.optimizer.param_groups[0]["lr"]
    record = {"epoch": epoch + 1, "train_loss": train_one_epoch(step, train, batch_size, shuffle, device)}
    if val is not None:
        record.update(_validate(step.model, val, step.loss_fn, metric, batch_size, device, step.channels_last))
    record.update(lr=lr_now, seconds=time.perf_counter() - t0)
    return record


def fit(model: nn.Module, train, val=None, *, loss, epochs: int, lr: float, batch_size: int,
        checkpoint_dir=None, resume: bool = False, progress: bool = True, seed: int = 0,
        weight_decay: float = 1e-4, clip: float | None = 1.0, patience: int | None = None, metric=None,
        augment: Callable | None = None, device=None, channels_last: bool | None = None) -> History:
    """Train ``model`` in place with AdamW and a cosine schedule; return the :class:`History`.

    ``train``/``val``: a PhantomSet, a tuple ``(X, Y)`` of tensors or a torch Dataset of ``(x, y)``.
    ``loss``: a callable ``(output, target)`` or one of ``LOSS_NAMES``. ``metric``: a name in
    ``METRICS`` or a callable ``(outputs, targets) -> float`` (higher is better) recorded on
    ``val`` each epoch; by default the loss's usual metric (AUC for "bce"). ``patience``:
    stop after that many epochs without a better ``metric`` (val loss if no metric was
    given) and restore the best weights. ``augment``: called on every training batch on
    the device, ``augment(x) -> x`` or ``augment(x, y) -> (x, y)``. ``seed`` seeds torch
    (dropout, augmentation) and the shuffling. ``clip``: max gradient norm (None: off).
    With ``checkpoint_dir`` each epoch is saved; ``resume=True`` continues from there.
    """
    loss_fn, loss_name = resolve_loss(loss)
    _check_fit_args(model, epochs, lr, batch_size, weight_decay, clip, patience, val, augment, resume,
                    checkpoint_dir)
    device = torch.device(device) if device is not None else _model_device(model)
    train = _to_device(as_data(train, "train"), device)
    val = _to_device(as_data(val, "val"), device) if val is not None else None
    path = _checkpoint_path(checkpoint_dir)
    channels_last = use_channels_last(model, device) if channels_last is None else bool(channels_last)
    model.to(device, memory_format=torch.channels_last_3d if channels_last else torch.preserve_format)
    _dry_run(model, train, loss_fn, device, channels_last)
    metric, stopper = _watch(metric, loss_name, patience)

    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    step = _make_step(model, loss_fn, lr, weight_decay, clip, epochs, _steps_per_epoch(train, batch_size),
                      device, channels_last, augment)
    history = History()
    start = _resume(path, step, shuffle, history, stopper, epochs) if resume else 0
    from tqdm.auto import tqdm   # notebook-aware bar
    bar = tqdm(range(start, epochs), desc="epochs", disable=not progress, leave=False)
    for epoch in bar:
        record = _epoch(epoch, step, train, val, metric, batch_size, shuffle, device)
        history.records.append(record)
        history.stopped_early = stopper.update(record, model)
        history.best_epoch = stopper.best_epoch
        bar.set_postfix({k: f"{v:.3g}" for k, v in record.items() if k.endswith(("loss", *METRICS))})
        if path is not None:
            save_checkpoint(_checkpoint_state(step, shuffle, history, stopper, epochs), path)
        if not math.isfinite(record["train_loss"]):
            warnings.warn(f"fit: the training loss is {record['train_loss']} at epoch {epoch + 1}; "
                          f"stopping. Try a smaller lr (got {lr}).", RuntimeWarning, stacklevel=2)
            break
        if history.stopped_early:
            break
    if stopper.best_state is not None:
        model.load_state_dict(stopper.best_state)
    return history


def _prediction_data(data):
    if isinstance(data, torch.Tensor):   # inputs alone: dummy targets (N, 0)
        data = (data, torch.empty(len(data), 0))
    return as_data(data, "data")


def _is_channels_last(model: nn.Module) -> bool:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv3d)), None)
    return conv is not None and conv.weight.is_contiguous(memory_format=torch.channels_last_3d) \
        and not conv.weight.is_contiguous()


def predict(model: nn.Module, data, batch_size: int = 256, *, proba: bool = False, device=None) -> torch.Tensor:
    """Model outputs in eval mode without gradients, as a CPU tensor in the order of ``data``.

    ``data``: inputs X, a tuple (X, Y), a PhantomSet or a Dataset. Outputs of shape (N, 1)
    come back as (N,). ``proba=True`` applies a sigmoid (one logit per voxel or sample)
    or a softmax over dim 1 (several classes).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    out, _ = _outputs(model, _to_device(_prediction_data(data), device), batch_size, device,
                      _is_channels_last(model))
    out = out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out   # (N, 1) -> (N,)
    if proba:
        out = torch.softmax(out, 1) if out.ndim >= 2 and out.shape[1] > 1 else torch.sigmoid(out)
    return out.cpu()


def evaluate(model: nn.Module, data, task: str = "classification", batch_size: int = 256,
             device=None) -> dict[str, float]:
    """Metrics of ``model`` on labelled ``data``: classification -> AUC, accuracy, Brier score
    (of sigmoid probabilities); segmentation -> mean hard Dice (logit > 0); survival -> C-index."""
    if task not in TASK_METRICS:
        raise ValueError(f"task: expected one of {tuple(TASK_METRICS)}, got {task!r}")
    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    data = _to_device(as_data(data, "data"), device)
    out, y = _outputs(model, data, batch_size, device, _is_channels_last(model))
    if task == "survival" and (y.ndim != 2 or y.shape[1] != 2):
        raise ValueError(f"data: survival targets must be (N, 2) [time, event], got {tuple(y.shape)}")
    names = ("accuracy",) if out.ndim == 2 and out.shape[1] > 1 else TASK_METRICS[task]   # multi-class
    return {name: compute_metric(name, out.cpu(), y.cpu()) for name in names}
