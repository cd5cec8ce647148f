"""rl.train: fit learns, resume is exact, checkpoints are atomic, History, predict/evaluate
against scikit-learn, every data form and loss name, and input validation."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import radlab as rl
from radlab import models as M
from radlab import train as T

torch.set_num_threads(1)


def separable(n=48, size=8, seed=0):
    """Two classes of noise volumes; class 1 is brighter. (N, 1, S, S, S), (N,)"""
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    x = 0.5 * torch.randn(n, 1, size, size, size, generator=g) + y[:, None, None, None, None]
    return x, y


def tiny_cnn(seed=0):
    torch.manual_seed(seed)
    return M.CNN3D(width=4, depth=2)


def random_flip(x):
    """An augmentation that draws from torch's global RNG, so resume must restore it."""
    flip = torch.rand(len(x)) < 0.5
    return torch.where(flip[:, None, None, None, None], x.flip(-1), x)


class InterruptAfter:
    """Wraps an augmentation and raises KeyboardInterrupt on call ``calls + 1`` (a user's Ctrl-C)."""

    def __init__(self, calls):
        self.calls, self.seen = calls, 0

    def __call__(self, x):
        self.seen += 1
        if self.seen > self.calls:
            raise KeyboardInterrupt
        return random_flip(x)


def test_fit_learns_a_separable_problem():
    x, y = separable()
    model = tiny_cnn()
    hist = T.fit(model, (x, y), (x, y), loss="bce", epochs=6, lr=1e-2, batch_size=16, progress=False)
    assert hist.train_loss[-1] < 0.6 * hist.train_loss[0]
    assert T.evaluate(model, (x, y))["auc"] > 0.95


def test_one_host_sync_per_epoch(monkeypatch):
    # The epoch loss is summed on the device and read once: 6 steps per epoch, 3 epochs, 3 reads.
    # (AdamW reads its CPU-side step counters with .item(); those never wait for a GPU.)
    import os
    import sys
    package = os.path.dirname(rl.__file__)
    x, y = separable(48)
    reads, real_item = [], torch.Tensor.item

    def counting_item(self):   # count reads made by radlab's own code
        if sys._getframe(1).f_code.co_filename.startswith(package):
            reads.append(1)
        return real_item(self)

    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    T.fit(tiny_cnn(), (x, y), loss="bce", epochs=3, lr=1e-3, batch_size=8, progress=False)
    assert len(reads) == 3


def test_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path):
    x, y = separable()
    xv, yv = separable(16, seed=1)
    kwargs = dict(loss="bce", epochs=4, lr=5e-3, batch_size=16, progress=False, seed=3)

    full_model = tiny_cnn()
    full = T.fit(full_model, (x, y), (xv, yv), augment=random_flip, **kwargs)

    with pytest.raises(KeyboardInterrupt):   # 3 steps per epoch: stop inside epoch 3
        T.fit(tiny_cnn(), (x, y), (xv, yv), augment=InterruptAfter(2 * 3 + 1), checkpoint_dir=tmp_path, **kwargs)
    assert T.load_checkpoint(tmp_path / "last.pt")["epoch"] == 2
    resumed_model = tiny_cnn(seed=99)         # other weights: they must come from the checkpoint
    resumed = T.fit(resumed_model, (x, y), (xv, yv), augment=random_flip, checkpoint_dir=tmp_path,
                    resume=True, **kwargs)

    assert resumed.train_loss == full.train_loss and resumed.val_loss == full.val_loss   # exact floats
    assert [r["lr"] for r in resumed.records] == [r["lr"] for r in full.records]
    for (name, a), (_, b) in zip(full_model.state_dict().items(), resumed_model.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_checks_the_checkpoint(tmp_path):
    x, y = separable(8)
    with pytest.raises(FileNotFoundError, match="resume: no checkpoint"):
        T.fit(tiny_cnn(), (x, y), loss="bce", epochs=2, lr=1e-3, batch_size=4, progress=False,
              checkpoint_dir=tmp_path, resume=True)
    T.fit(tiny_cnn(), (x, y), loss="bce", epochs=1, lr=1e-3, batch_size=4, progress=False, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs: the checkpoint .* epochs=1, got 3"):
        T.fit(tiny_cnn(), (x, y), loss="bce", epochs=3, lr=1e-3, batch_size=4, progress=False,
              checkpoint_dir=tmp_path, resume=True)


def test_checkpoint_holds_everything_needed(tmp_path):
    x, y = separable(8)
    T.fit(tiny_cnn(), (x, y), loss="bce", epochs=2, lr=1e-3, batch_size=4, progress=False, checkpoint_dir=tmp_path)
    state = T.load_checkpoint(tmp_path / "last.pt")
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "epoch", "epochs", "history"} <= set(state)
    assert state["epoch"] == 2 and len(state["history"]["records"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_save_checkpoint_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    T.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    def save_then_fail(obj, f, *args, **kwargs):   # half the bytes written, then the disk fills
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]   # no temporary left behind
    assert T.load_checkpoint(path)["epoch"] == 1                       # the old checkpoint intact


def test_interrupt_while_saving_keeps_the_previous_epoch(tmp_path, monkeypatch):
    real_save, calls = torch.save, []

    def interrupted_second_save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"par")
            raise KeyboardInterrupt
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted_second_save)
    x, y = separable(8)
    with pytest.raises(KeyboardInterrupt):
        T.fit(tiny_cnn(), (x, y), loss="bce", epochs=3, lr=1e-3, batch_size=4, progress=False,
              checkpoint_dir=tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert T.load_checkpoint(tmp_path / "last.pt")["epoch"] == 1


def test_history_table_and_plot():
    x, y = separable(16)
    hist = T.fit(tiny_cnn(), (x, y), (x, y), loss="bce", epochs=3, lr=1e-2, batch_size=8, progress=False)
    table = hist.table()
    assert list(table.columns) == ["train_loss", "val_loss", "val_auc", "lr", "seconds"]
    assert list(table.index) == [1, 2, 3] and table["lr"].is_monotonic_decreasing   # cosine schedule
    fig = hist.plot()
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    fig.savefig("/tmp/radlab_history.png")
    assert "3 epochs" in repr(hist)


def test_early_stopping_restores_the_best_weights():
    x, y = separable(16)
    model, snapshots = tiny_cnn(), []

    def constant(outputs, targets):   # never improves after epoch 1
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return 0.5

    hist = T.fit(model, (x, y), (x, y), loss="bce", epochs=6, lr=1e-2, batch_size=8, progress=False,
                 metric=constant, patience=2)
    assert hist.stopped_early and len(hist.records) == 3 and hist.best_epoch == 1
    assert all(torch.equal(v, snapshots[0][k]) for k, v in model.state_dict().items())


def test_non_finite_loss_warns_and_stops():
    x, y = separable(8)
    nan_loss = lambda out, target: (out - target).mean() * float("nan")   # noqa: E731
    with pytest.warns(RuntimeWarning, match="training loss is nan"):
        hist = T.fit(tiny_cnn(), (x, y), loss=nan_loss, epochs=3, lr=1e-3, batch_size=4, progress=False)
    assert len(hist.records) == 1


def test_dataset_phantomset_and_phantom_dataset():
    x, y = separable(16)
    seen = []

    def augment(xb, yb):   # two arguments: gets the targets too
        seen.append(yb.shape)
        return xb, yb

    hist = T.fit(tiny_cnn(), torch.utils.data.TensorDataset(x, y), loss="bce", epochs=1, lr=1e-3,
                 batch_size=8, progress=False, augment=augment)
    assert seen == [(8,), (8,)] and len(hist.records) == 1

    ph = rl.phantoms.make_phantoms(12, size=16, seed=0)
    model = M.CNN3D(width=2, depth=2)
    T.fit(model, ph, ph, loss="bce", epochs=1, lr=1e-3, batch_size=6, progress=False)
    assert T.predict(model, ph).shape == (12,)
    assert set(T.evaluate(model, ph)) == {"auc", "accuracy", "brier"}

    lazy = rl.phantoms.PhantomDataset(12, size=16, block=4, seed=0)
    hist = T.fit(M.CNN3D(width=2, depth=2), lazy, loss="bce", epochs=1, lr=1e-3, batch_size=4, progress=False)
    assert math.isfinite(hist.train_loss[0])


def test_block_shuffle_keeps_blocks_together():
    lazy = rl.phantoms.PhantomDataset(10, size=16, block=4)
    order = T._block_shuffle(lazy, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(10))
    blocks = [i // 4 for i in order]
    assert sum(a != b for a, b in zip(blocks, blocks[1:])) == 2   # each block visited once


@pytest.mark.parametrize("name, out, target", [
    ("bce", torch.randn(6), torch.tensor([0., 1.] * 3)),
    ("focal", torch.randn(6), torch.tensor([0., 1.] * 3)),
    ("mse", torch.randn(6), torch.randn(6)),
    ("cross_entropy", torch.randn(6, 3), torch.tensor([0, 1, 2] * 2)),
    ("dice", torch.randn(2, 1, 4, 4, 4), (torch.rand(2, 1, 4, 4, 4) > 0.5).float()),
    ("dice_bce", torch.randn(2, 1, 4, 4, 4), (torch.rand(2, 1, 4, 4, 4) > 0.5).float()),
    ("cox", torch.randn(6), torch.tensor([[5., 1], [3, 0], [8, 1], [1, 1], [9, 0], [2, 1]])),
])
def test_named_losses(name, out, target):
    loss_fn, resolved = T.resolve_loss(name)
    value = loss_fn(out, target)
    assert resolved == name and value.ndim == 0 and torch.isfinite(value)


def test_bce_and_mse_match_the_lesson_losses():
    out, target = torch.randn(20), (torch.rand(20) > 0.5).float()
    torch.testing.assert_close(T.resolve_loss("bce")[0](out, target), rl.losses.bce_loss(out, target))
    torch.testing.assert_close(T.resolve_loss("mse")[0](out, target), rl.losses.mse_loss(out, target))


def test_predict_and_evaluate_match_scikit_learn():
    from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score
    x, y = separable(32)
    model = tiny_cnn()
    T.fit(model, (x, y), loss="bce", epochs=2, lr=1e-2, batch_size=8, progress=False)
    model.train()
    p = T.predict(model, x, batch_size=5, proba=True)
    assert model.training and p.shape == (32,) and p.device.type == "cpu"
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(p, torch.sigmoid(model(x))[:, 0])
    scores = T.evaluate(model, (x, y))
    assert scores["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert scores["accuracy"] == pytest.approx(accuracy_score(y, p > 0.5))
    assert scores["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-6)


def test_multiclass_cross_entropy_and_accuracy():
    x, y = separable(24)
    labels = (y + (x.mean((1, 2, 3, 4)) > 1.2).float()).long()    # three classes: 0, 1, 2
    torch.manual_seed(0)
    model = M.CNN3D(width=4, depth=2, num_classes=3)
    T.fit(model, (x, labels), loss="cross_entropy", epochs=2, lr=1e-2, batch_size=8, progress=False)
    scores = T.evaluate(model, (x, labels))
    expected = (T.predict(model, x).argmax(1) == labels).float().mean().item()
    assert set(scores) == {"accuracy"} and scores["accuracy"] == pytest.approx(expected)
    assert torch.allclose(T.predict(model, x, proba=True).sum(1), torch.ones(24))


def test_evaluate_segmentation_dice_is_per_sample_f1():
    from sklearn.metrics import f1_score
    masks = (torch.rand(4, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) > 0.7).float()
    noisy = masks.clone()
    noisy[:, :, :2] = 1 - noisy[:, :, :2]              # corrupt a third of each prediction
    model = nn.Conv3d(1, 1, 1)
    with torch.no_grad():
        model.weight.fill_(10.0), model.bias.fill_(-5.0)  # logit > 0 exactly where the input is 1
    assert T.evaluate(model, (masks, masks), task="segmentation")["dice"] == 1.0
    expected = np.mean([f1_score(m.flatten(), n.flatten()) for m, n in zip(masks, noisy)])
    assert T.evaluate(model, (noisy, masks), task="segmentation")["dice"] == pytest.approx(expected, abs=1e-6)


def test_evaluate_survival_c_index():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 1, 4, 4, 4, generator=g)
    time = torch.rand(30, generator=g) * 10
    target = torch.stack([time, (torch.rand(30, generator=g) > 0.3).float()], 1)   # (N, 2) [time, event]
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    risk = T.predict(model, x)
    expected = rl.survival.concordance_index(time.numpy(), risk.numpy(), target[:, 1].numpy() > 0.5)
    assert T.evaluate(model, (x, target), task="survival")["c_index"] == pytest.approx(expected)


def test_channels_last_gives_the_same_training_up_to_rounding():
    x, y = separable(16)
    runs = {}
    for cl in (False, True):
        model = tiny_cnn()
        runs[cl] = T.fit(model, (x, y), loss="bce", epochs=2, lr=1e-2, batch_size=8, progress=False,
                         channels_last=cl).train_loss
        weight = model.blocks[1].conv.weight   # (8, 4, 3, 3, 3): C_in > 1, strides unambiguous
        assert weight.is_contiguous() != cl   # channels_last_3d: NDHWC strides, not NCDHW
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)


X, Y = separable(8)
X_NAN = X.clone()
X_NAN[0, 0, 0, 0, 0] = float("nan")
Y_INF = Y.clone()
Y_INF[0] = float("inf")
GOOD = dict(train=(X, Y), loss="bce", epochs=1, lr=1e-3, batch_size=4)


@pytest.mark.parametrize("change, error, match", [
    (dict(train=(X[..., 0, 0], Y)), ValueError, r"train: expected float inputs X of shape"),
    (dict(train=(X[:, :, 0], Y)), ValueError, r"train: the model and loss cannot take inputs of shape \(1, 8, 8\)"),
    (dict(train=(X, Y[:5])), ValueError, "train: expected as many targets as inputs"),
    (dict(train=(X_NAN, Y)), ValueError, "train: expected finite inputs, got NaN"),
    (dict(train=(X, Y_INF)), ValueError, "train: expected finite targets"),
    (dict(val=(X_NAN, Y)), ValueError, "val: expected finite inputs"),
    (dict(train=torch.utils.data.TensorDataset(X_NAN, Y)), ValueError, "train: expected finite inputs"),
    (dict(train="phantoms"), TypeError, "train: expected a PhantomSet"),
    (dict(train=(X, torch.zeros(8, 3))), ValueError, "train: the model and loss cannot take"),
    (dict(loss="hinge"), ValueError, "loss: expected a callable or one of"),
    (dict(epochs=0), ValueError, "epochs: expected an int >= 1, got 0"),
    (dict(epochs=2.5), ValueError, "epochs"),
    (dict(lr=0.0), ValueError, "lr: expected a finite float > 0, got 0.0"),
    (dict(lr=-1e-3), ValueError, "lr"),
    (dict(lr=float("nan")), ValueError, "lr"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(clip=0), ValueError, "clip"),
    (dict(patience=2), ValueError, "patience: early stopping watches validation data"),
    (dict(patience=0, val=(X, Y)), ValueError, "patience"),
    (dict(resume=True), ValueError, "resume: resuming needs the checkpoint_dir"),
    (dict(augment=3), TypeError, "augment"),
    (dict(checkpoint_dir=3.5), TypeError, "checkpoint_dir: expected a path"),
])
def test_fit_rejects_bad_input(change, error, match):
    with pytest.raises(error, match=match):
        T.fit(tiny_cnn(), **{**GOOD, "progress": False, **change})


def test_fit_rejects_an_unwritable_checkpoint_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ValueError, match="checkpoint_dir: expected a writable folder"):
        T.fit(tiny_cnn(), **GOOD, progress=False, checkpoint_dir=blocker / "checkpoints")


def test_fit_rejects_a_non_module():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        T.fit(lambda x: x, **GOOD)


@pytest.mark.parametrize("call, error, match", [
    (lambda: T.predict(tiny_cnn(), X, batch_size=0), ValueError, "batch_size"),
    (lambda: T.predict(tiny_cnn(), X_NAN), ValueError, "data: expected finite inputs"),
    (lambda: T.evaluate(tiny_cnn(), (X, Y), task="detection"), ValueError, "task: expected one of"),
    (lambda: T.evaluate(tiny_cnn(), (X, Y), task="survival"), ValueError, r"survival targets must be \(N, 2\)"),
])
def test_predict_and_evaluate_reject_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()
