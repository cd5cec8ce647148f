"""Training steps per second on this CPU: radlab's ResNet3D-18 + rl.train.fit against MONAI's
``resnet18(spatial_dims=3)`` in a default eager loop, 32³ volumes, batch 8, same AdamW, same run.

    .venv/bin/python benchmarks/bench_train_cpu.py            # ~5 min on a busy 2-core machine
    .venv/bin/python benchmarks/bench_train_cpu.py --steps 2 --rounds 2

Rows (each timed ``--rounds`` times, interleaved so machine load hits all alike; median shown):

* ``monai eager``       MONAI resnet18 (width 64, 7³ stride-1 stem + max-pool), the textbook loop:
                         zero_grad, forward, loss, backward, step, ``loss.item()`` every step.
* ``radlab fit``        ResNet3D(18), radlab's teaching default (width 16, lean 3³ stride-2 stem),
                         trained by ``rl.train.fit`` (channels_last_3d, device-side loss sum, clipping,
                         cosine schedule: all the work fit does, setup included).
* ``radlab fit, = arch`` ResNet3D(18, width=64, stem="classic"): MONAI's architecture, trained by fit.
* ``radlab eager, = arch`` the same network in MONAI's eager loop: isolates what fit itself buys.
* ``..., NCDHW``        fit with ``channels_last=False``: the measurement behind fit's default.

Both ratios against MONAI are printed: the default network (a smaller, honest ResNet-18 of basic
blocks: the speed-up is mostly architecture) and the equal architecture (the loop and memory format).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import radlab as rl

BATCH, SIZE = 8, 32


def eager_steps(model, X, Y) -> float:
    """MONAI-tutorial style loop; returns seconds for len(X) // BATCH steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    losses = []
    start = time.perf_counter()
    for i in range(len(X) // BATCH):
        x, y = X[i * BATCH:(i + 1) * BATCH], Y[i * BATCH:(i + 1) * BATCH]
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())   # the usual per-step host sync
    return time.perf_counter() - start


def fit_steps(model, X, Y, channels_last=None) -> float:
    """rl.train.fit for one epoch over the same data; returns seconds for the whole call."""
    start = time.perf_counter()
    rl.train.fit(model, (X, Y), loss="bce", epochs=1, lr=1e-3, batch_size=BATCH, progress=False,
                 channels_last=channels_last)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings per configuration")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from monai.networks.nets import resnet18

    torch.manual_seed(0)
    X = torch.rand(args.steps * BATCH, 1, SIZE, SIZE, SIZE)
    Y = (torch.rand(args.steps * BATCH) > 0.5).float()
    equal = lambda: rl.models.ResNet3D(18, width=64, stem="classic")   # noqa: E731
    configs = {   # name -> (model, how to train it)
        "monai eager": (resnet18(spatial_dims=3, n_input_channels=1, num_classes=1), eager_steps),
        "radlab fit": (rl.models.ResNet3D(18), fit_steps),
        "radlab fit, NCDHW": (rl.models.ResNet3D(18), lambda m, x, y: fit_steps(m, x, y, False)),
        "radlab fit, = arch": (equal(), fit_steps),
        "radlab fit, = arch, NCDHW": (equal(), lambda m, x, y: fit_steps(m, x, y, False)),
        "radlab eager, = arch": (equal(), eager_steps),
    }
    for model, run in configs.values():   # warm-up: oneDNN picks and caches its kernels
        run(model, X[:BATCH], Y[:BATCH])
    seconds = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, (model, run) in configs.items():
            seconds[name].append(run(model, X, Y))

    rate = {name: args.steps / statistics.median(s) for name, s in seconds.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH} at {SIZE}³, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    print(f"{'configuration':28s} {'params':>12s} {'steps/s':>9s} {'vs MONAI':>9s}")
    for name, (model, _) in configs.items():
        params = rl.models.count_params(model)
        print(f"{name:28s} {params:>12,d} {rate[name]:>9.3f} {rate[name] / rate['monai eager']:>8.2f}x")
    print(f"ratio, radlab default ResNet3D-18 (fit) / MONAI resnet18: {rate['radlab fit'] / rate['monai eager']:.2f}x")
    print(f"ratio, equal architecture (fit) / MONAI resnet18:        "
          f"{rate['radlab fit, = arch'] / rate['monai eager']:.2f}x")
    print(f"channels_last_3d in fit: {rate['radlab fit'] / rate['radlab fit, NCDHW']:.2f}x (default net), "
          f"{rate['radlab fit, = arch'] / rate['radlab fit, = arch, NCDHW']:.2f}x (equal arch)")


if __name__ == "__main__":
    main()
