"""Training steps per second on this CPU: radlab's ResNet3D-18 + rl.train.fit against MONAI's
``resnet18(spatial_dims=3)`` in a default eager loop, 32³ volumes, batch 8, same AdamW, same run.

    .venv/bin/python benchmarks/bench_train_cpu.py                # minutes: MONAI's net is 33 M params
    .venv/bin/python benchmarks/bench_train_cpu.py --steps 4 --rounds 5 --detail

Rows (each timed ``--rounds`` times, interleaved so machine load hits all alike; median shown):

* ``monai eager``       MONAI resnet18 (width 64, 7³ stride-1 stem + max-pool), the textbook loop:
                         zero_grad, forward, loss, backward, step, ``loss.item()`` every step.
* ``radlab fit``        ResNet3D(18), radlab's teaching default (width 16, lean 3³ stride-2 stem),
                         trained by ``rl.train.fit`` (channels_last_3d, device-side loss sum, clipping,
                         cosine schedule: all the work fit does, setup included).
* ``radlab fit, = arch`` ResNet3D(18, width=64, stem="classic"): MONAI's architecture, trained by fit.
* ``radlab fit, NCDHW`` the default network with ``channels_last=False``: the measurement behind
                         fit's memory-format default.
* with ``--detail``: the equal architecture without channels_last, and in MONAI's eager loop
                         (isolates what fit itself buys).

Both ratios against MONAI are printed: the default network (a smaller, honest ResNet-18 of basic
blocks: the speed-up is mostly architecture) and the equal architecture (the loop and memory format).
Each is given per wall-clock second and per CPU second of this process: on a machine shared with
other jobs the wall clock measures the neighbours too, the CPU time much less so. One thread by
default, for the same reason (two threads on two busy cores wait on each other).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import radlab as rl

BATCH, SIZE = 8, 32


def clock() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time is what a shared machine cannot steal."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def eager_steps(model, X, Y) -> tuple[float, float]:
    """MONAI-tutorial style loop; returns (wall, CPU) seconds for len(X) // BATCH steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    model.train()
    losses = []
    start = clock()
    for i in range(len(X) // BATCH):
        x, y = X[i * BATCH:(i + 1) * BATCH], Y[i * BATCH:(i + 1) * BATCH]
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())   # the usual per-step host sync
    return since(start)


def fit_steps(model, X, Y, channels_last=None) -> tuple[float, float]:
    """rl.train.fit for one epoch over the same data; returns (wall, CPU) seconds for the whole call."""
    start = clock()
    rl.train.fit(model, (X, Y), loss="bce", epochs=1, lr=1e-3, batch_size=BATCH, progress=False,
                 channels_last=channels_last)
    return since(start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="training steps per timing")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timings per configuration")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: stable on a shared machine; more on a quiet one)")
    parser.add_argument("--detail", action="store_true", help="also: equal arch without channels_last, "
                        "and in the eager loop")
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
    }
    if args.detail:   # two more 33 M-parameter rows: slow on a small CPU
        configs["radlab fit, = arch, NCDHW"] = (equal(), lambda m, x, y: fit_steps(m, x, y, False))
        configs["radlab eager, = arch"] = (equal(), eager_steps)
    for name, (model, run) in configs.items():   # warm-up: oneDNN picks and caches its kernels
        print(f"warm-up {name}: {run(model, X[:BATCH], Y[:BATCH])[0]:.1f} s", flush=True)
    seconds = {name: [] for name in configs}   # name -> [(wall, cpu), ...]
    for r in range(args.rounds):
        for name, (model, run) in configs.items():
            seconds[name].append(run(model, X, Y))
            wall, cpu = seconds[name][-1]
            print(f"round {r + 1} {name}: {args.steps / wall:.3f} steps/s wall, "
                  f"{args.steps / cpu:.3f} steps per CPU-s", flush=True)
    report(configs, seconds, args)


def report(configs, seconds, args) -> None:
    # rate[kind][name]: steps per wall second / per CPU second, median over rounds
    rate = {kind: {name: args.steps / statistics.median(s[i] for s in runs) for name, runs in seconds.items()}
            for i, kind in enumerate(("wall", "cpu"))}
    print(f"\ntorch {torch.__version__}, {args.threads} thread(s), batch {BATCH} at {SIZE}³, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    print(f"{'configuration':28s} {'params':>12s} {'steps/s':>8s} {'ratio':>6s} {'steps/CPU-s':>12s} {'ratio':>6s}")
    for name, (model, _) in configs.items():
        cells = [f"{rate[k][name]:{w}.3f} {rate[k][name] / rate[k]['monai eager']:5.2f}x" for k, w in
                 (("wall", ">8"), ("cpu", ">12"))]
        print(f"{name:28s} {rl.models.count_params(model):>12,d} {cells[0]} {cells[1]}")
    for kind in ("wall", "cpu"):
        r = rate[kind]
        line = (f"[{kind:4s}] ratio vs MONAI resnet18: radlab default ResNet3D-18 "
                f"{r['radlab fit'] / r['monai eager']:.2f}x,"
                f" equal architecture {r['radlab fit, = arch'] / r['monai eager']:.2f}x;"
                f" channels_last_3d in fit {r['radlab fit'] / r['radlab fit, NCDHW']:.2f}x (default net)")
        if args.detail:
            line += (f", {r['radlab fit, = arch'] / r['radlab fit, = arch, NCDHW']:.2f}x (equal arch);"
                     f" fit vs eager loop (equal arch) {r['radlab fit, = arch'] / r['radlab eager, = arch']:.2f}x")
        print(line)


if __name__ == "__main__":
    main()
