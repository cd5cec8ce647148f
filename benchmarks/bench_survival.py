"""Speed of radlab.survival against its peers, measured in the same run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_survival.py [--max-n 1000000] [--budget 20]

* ``concordance_index`` (sort + dyadic prefix counting, O(n log n)) against
  lifelines ``concordance_index`` (O(n log n), a Python-level tree), scikit-survival
  ``concordance_index_censored`` (a Python loop over events with an n-long mask: O(n²))
  and a naive O(n²) numpy double loop in blocks.
* ``cox_loss`` forward + backward (sort + logcumsumexp, O(n log n)) against the naive
  O(n²) loss that builds the n x n risk-set matrix.

Every peer's value is asserted equal to ours. A peer is skipped at a size where its
previous timing, extrapolated with its complexity, would exceed ``--budget`` seconds;
the table says so. Target: C-index >= 5x faster than the fastest of lifelines and
scikit-survival at n = 1e5.
"""
from __future__ import annotations

import argparse
import time as clock

import numpy as np
import torch

from radlab import survival as S


def naive_cindex(time, risk, event, block=2048):
    """Harrell's C over all pairs, O(n²) work in (block, n) chunks (sksurv's tie rules)."""
    num = den = 0.0
    ev = np.flatnonzero(event)
    for start in range(0, len(ev), block):
        i = ev[start:start + block]
        comparable = (time[None, :] > time[i, None]) | ((time[None, :] == time[i, None]) & ~event[None, :])
        diff = risk[i, None] - risk[None, :]                        # (b, n)
        num += (comparable & (diff > 0)).sum() + 0.5 * (comparable & (diff == 0)).sum()
        den += comparable.sum()
    return num / den


def naive_cox_loss(risk, time, event):
    """Breslow partial likelihood with the full (n, n) risk-set matrix: O(n²) memory and time."""
    t = torch.as_tensor(time)
    at_risk = t[None, :] >= t[:, None]                              # (n, n) row i: R(t_i)
    log_denominator = torch.logsumexp(risk[None, :].masked_fill(~at_risk, -torch.inf), dim=1)
    e = torch.as_tensor(event)
    return -(risk[e] - log_denominator[e]).mean()


def timed(fn, repeat=1):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = clock.perf_counter()
        value = fn()
        best = min(best, clock.perf_counter() - start)
    return best, value


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(10.0, n), 2) + 0.01            # rounded: tied times
    event = rng.random(n) < 0.6
    risk = rng.normal(size=n)
    return time, event, risk


def bench_cindex(sizes, budget):
    from lifelines.utils import concordance_index as lifelines_cindex
    from sksurv.metrics import concordance_index_censored
    peers = {
        "lifelines": (lambda t, r, e: lifelines_cindex(t, -r, e), 1.3),      # ~n log n
        "sksurv": (lambda t, r, e: concordance_index_censored(e, t, r)[0], 2.0),  # ~n²
        "naive O(n²)": (naive_cindex, 2.0),
    }
    last, rows = {}, {}
    print("\nconcordance_index (seconds; ratio = peer / radlab)")
    print(f"{'n':>9} {'radlab':>9} " + " ".join(f"{name:>22}" for name in peers))
    for n in sizes:
        time, event, risk = data(n)
        ours_s, ours = timed(lambda: S.concordance_index(time, risk, event), repeat=3 if n <= 10**5 else 1)
        cells = []
        for name, (fn, power) in peers.items():
            if name in last and last[name][1] * (n / last[name][0]) ** power > budget:
                cells.append(f"{'skipped (>' + str(budget) + ' s)':>22}")
                continue
            peer_s, value = timed(lambda: fn(time, risk, event))
            assert abs(value - ours) < 1e-10, (name, n, value, ours)
            last[name] = (n, peer_s)
            rows[n] = rows.get(n, {}) | {"radlab": ours_s, name: peer_s}
            cells.append(f"{peer_s:9.3f} ({peer_s / ours_s:7.1f}x)")
        print(f"{n:>9} {ours_s:9.4f} " + " ".join(cells))
    return rows


def bench_cox(sizes, budget):
    print("\ncox_loss forward + backward (seconds; ratio = naive / radlab)")
    print(f"{'n':>9} {'radlab':>9} {'naive O(n²) matrix':>24}")
    last = None
    for n in sizes:
        time, event, _ = data(n)
        risk = torch.randn(n, dtype=torch.float64, requires_grad=True)

        def ours():
            loss = S.cox_loss(risk, time, event)
            loss.backward()
            return loss.item()

        ours_s, value = timed(ours, repeat=3 if n <= 10**5 else 1)
        memory_gb = n * n * 9 / 1e9                                # float64 matrix + bool mask
        if (last and last[1] * (n / last[0]) ** 2 > budget) or memory_gb > 4:
            cell = f"{'skipped (>' + str(budget) + ' s or RAM)':>24}"
        else:
            def naive():
                loss = naive_cox_loss(risk, time, event)
                loss.backward()
                return loss.item()
            naive_s, naive_value = timed(naive)
            assert abs(naive_value - value) < 1e-9, (n, naive_value, value)
            last = (n, naive_s)
            cell = f"{naive_s:11.3f} ({naive_s / ours_s:8.1f}x)"
        print(f"{n:>9} {ours_s:9.4f} {cell}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=10**6)
    parser.add_argument("--budget", type=float, default=20.0, help="skip a peer predicted to take longer (s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = [n for n in (10**3, 10**4, 10**5, 10**6) if n <= args.max_n]
    rows = bench_cindex(sizes, args.budget)
    bench_cox(sizes, args.budget)
    print("\nTies in time: times rounded to 0.01. Identical values asserted for every peer that ran.")
    row = rows.get(10**5, {})
    peers = {name: row[name] for name in ("lifelines", "sksurv") if name in row}
    if peers:  # sksurv is O(n²): at 1e5 it is skipped as slower than lifelines
        fastest = min(peers, key=peers.get)
        ratio = peers[fastest] / row["radlab"]
        print(f"C-index at n=1e5: {ratio:.1f}x faster than the fastest library peer that ran ({fastest}); "
              f"target >= 5x: {'met' if ratio >= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
