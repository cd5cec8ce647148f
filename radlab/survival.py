"""Survival analysis written out by hand: Cox loss, C-index, Kaplan-Meier, log-rank, Brier score.

Every function here is the lesson's code for ``notebooks/09_survival.ipynb`` and is
cross-checked against lifelines and scikit-survival in ``tests/test_survival.py``.

Conventions (as in scikit-survival and lifelines):

* ``time``  (N,) positive, finite follow-up times;
* ``event`` (N,) bool (or 0/1): True = the event was observed, False = censored at ``time``;
* ``risk``  (N,) a score where *higher risk means an earlier event* (a log-hazard).

Speed: ``cox_loss`` and ``concordance_index`` cost O(n log n) — a sort plus cumulative
sums — instead of the O(n²) pairwise loops of the textbook formulas
(``benchmarks/bench_survival.py`` measures the gain).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

__all__ = [
    "cox_loss", "concordance_index", "uno_c", "kaplan_meier", "KaplanMeier", "logrank_test",
    "LogRankResult", "censoring_survival", "brier_score", "integrated_brier_score",
    "cumulative_dynamic_auc", "breslow_baseline", "predict_survival", "fit_cox", "CoxModel",
]

TIES = ("breslow", "efron")


# ---------------------------------------------------------------- input checks
def _to_numpy(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    elif isinstance(x, (pd.Series, pd.Index)):
        x = x.to_numpy()
    try:
        x = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"{name}: expected a 1-D array, got {type(x).__name__}") from err
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]  # (N, 1) -> (N,)
    if x.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of shape (N,), got shape {x.shape}")
    return x


def _check_time(time, name: str = "time") -> np.ndarray:
    time = _to_numpy(time, name)
    if time.dtype == bool or not np.issubdtype(time.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, got dtype {time.dtype}")
    time = time.astype(np.float64)
    if not np.isfinite(time).all():
        raise ValueError(f"{name}: expected finite times, got {int((~np.isfinite(time)).sum())} NaN/inf")
    if (time <= 0).any():
        raise ValueError(f"{name}: expected times > 0, got minimum {time.min():g}")
    return time


def _check_event(event, n: int, name: str = "event") -> np.ndarray:
    event = _to_numpy(event, name)
    if event.dtype != bool:
        if not np.issubdtype(event.dtype, np.number) or not np.isin(event, (0, 1)).all():
            raise ValueError(f"{name}: expected bool or 0/1 values, got {np.unique(event)[:5]} (dtype {event.dtype})")
        event = event.astype(bool)
    if len(event) != n:
        raise ValueError(f"{name}: expected length {n} (as time), got {len(event)}")
    return event


def _check_risk(risk, n: int, name: str = "risk") -> np.ndarray:
    risk = _to_numpy(risk, name)
    if risk.dtype == bool or not np.issubdtype(risk.dtype, np.number):
        raise TypeError(f"{name}: expected numbers, got dtype {risk.dtype}")
    if len(risk) != n:
        raise ValueError(f"{name}: expected length {n} (as time), got {len(risk)}")
    risk = risk.astype(np.float64)
    if not np.isfinite(risk).all():
        raise ValueError(f"{name}: expected finite scores, got {int((~np.isfinite(risk)).sum())} NaN/inf")
    return risk


def _check_survival_data(time, event, name: str = "") -> tuple[np.ndarray, np.ndarray]:
    time = _check_time(time, f"time{name}")
    return time, _check_event(event, len(time), f"event{name}")


# ---------------------------------------------------------------- Cox partial likelihood
def cox_loss(risk: torch.Tensor, time, event, ties: str = "breslow") -> torch.Tensor:
    """Negative Cox partial log-likelihood, averaged over events (notebook 09, "The Cox loss").

    For each event i at time t_i the model is scored on how much of the hazard in the
    *risk set* R(t_i) = {j : t_j >= t_i} it gives to i:

        loss = -1/E * sum_{i: event} [ risk_i - log sum_{j in R(t_i)} exp(risk_j) ]

    ``ties="efron"`` corrects the denominator when d events share a time (Efron 1977):
    the l-th of them (l = 0..d-1) uses sum_R exp(risk) - l/d * sum_D exp(risk); ``"breslow"``
    uses the full risk set for all d. Sorting by time turns every risk-set sum into a
    cumulative log-sum-exp, so the cost is O(n log n) and nothing overflows.
    A batch without events carries no information: the loss is 0 (with a gradient of 0).
    """
    if not isinstance(risk, torch.Tensor):
        raise TypeError(f"risk: expected a torch.Tensor (N,) or (N, 1), got {type(risk).__name__}")
    if ties not in TIES:
        raise ValueError(f"ties: expected one of {TIES}, got {ties!r}")
    risk = risk.reshape(-1) if risk.ndim == 2 and risk.shape[1] == 1 else risk  # (N, 1) -> (N,)
    if risk.ndim != 1 or not risk.is_floating_point():
        raise ValueError(f"risk: expected a float tensor of shape (N,), got {tuple(risk.shape)} {risk.dtype}")
    if risk.dtype in (torch.float16, torch.bfloat16):
        risk = risk.float()                                   # sums over risk sets need float32
    time, event = _check_survival_data(time, event)
    if len(time) != len(risk):
        raise ValueError(f"time: expected length {len(risk)} (as risk), got {len(time)}")
    if not torch.isfinite(risk).all():
        raise ValueError("risk: expected finite scores, got NaN/inf")
    if not event.any():
        return risk.sum() * 0.0

    # Sort by time, latest first: the risk set of a patient is then a prefix of the order.
    order = torch.as_tensor(np.argsort(-time, kind="stable"), device=risk.device)
    t = torch.as_tensor(time, device=risk.device)[order]
    e = torch.as_tensor(event, device=risk.device)[order]
    r = risk[order]
    _, group, size = torch.unique_consecutive(t, return_inverse=True, return_counts=True)
    last = torch.cumsum(size, 0) - 1                          # last index of each tied-time group
    log_sum_risk_set = torch.logcumsumexp(r, 0)[last]         # (G,) log sum_{t_j >= t} exp(risk_j)

    # Efron: the l-th of the d events tied at a time (l = 0..d-1) leaves l/d of their hazard out.
    g, r_ev = group[e], r[e]                                  # (E,) group and risk of every event
    frac = _rank_in_group(g, len(size)).to(r.dtype) if ties == "efron" else torch.zeros_like(r_ev)
    log_sum_tied = _log_sum_exp_by_group(r_ev, g, len(size))  # (G,) log sum_{events at t} exp(risk)
    # log(S_R - l/d S_D) = log S_R + log(1 - l/d * S_D/S_R); S_D <= S_R, so the log1p is safe.
    log_denominator = log_sum_risk_set[g] + torch.log1p(-frac * torch.exp(log_sum_tied[g] - log_sum_risk_set[g]))
    return -(r_ev - log_denominator).mean()


def _rank_in_group(g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """l/d for sorted group ids ``g``: l = 0..d-1 numbers the d members of each group."""
    d = torch.zeros(n_groups, dtype=torch.long, device=g.device).index_add_(0, g, torch.ones_like(g))
    first = torch.cumsum(d, 0) - d                            # members before each group
    rank = torch.arange(len(g), device=g.device) - first[g]
    return rank.double() / d[g]


def _log_sum_exp_by_group(x: torch.Tensor, g: torch.Tensor, n_groups: int) -> torch.Tensor:
    """log sum exp(x) over each group, shifted by the group's max so nothing overflows."""
    shift = torch.zeros(n_groups, dtype=x.dtype, device=x.device).scatter_reduce_(
        0, g, x.detach(), "amax", include_self=False)
    total = torch.zeros_like(shift).index_add_(0, g, torch.exp(x - shift[g]))
    return torch.log(total.clamp_min(torch.finfo(x.dtype).tiny)) + shift


# ---------------------------------------------------------------- concordance
def _count_below_in_prefix(values: np.ndarray, prefix: np.ndarray, query: np.ndarray):
    """For each q: how many of values[:prefix[q]] are < query[q], and how many are == query[q].

    A wavelet matrix: going from the top bit of the (integer, >= 0) values down, stably
    split the array into values with that bit 0, then 1. A query whose bit is 1 counts the
    0-bit values of its range as smaller and follows its range into the 1-part; else into
    the 0-part. Each bit costs a few passes over the array: O(n log n) in all, no loop over n.
    """
    current = values.astype(np.int64)
    lo = np.zeros(len(query), dtype=np.int64)                  # each query's range [lo, hi)
    hi = prefix.astype(np.int64)
    less = np.zeros(len(query), dtype=np.int64)
    n_bits = max(int(max(current.max(initial=0), query.max(initial=0))).bit_length(), 1)
    for bit in reversed(range(n_bits)):
        is_one = ((current >> bit) & 1).astype(bool)
        zeros_before = np.r_[0, np.cumsum(~is_one)]            # 0-bits in current[:i]
        n_zeros = zeros_before[-1]
        query_one = ((query >> bit) & 1).astype(bool)
        z_lo, z_hi = zeros_before[lo], zeros_before[hi]
        less += np.where(query_one, z_hi - z_lo, 0)
        lo = np.where(query_one, n_zeros + lo - z_lo, z_lo)
        hi = np.where(query_one, n_zeros + hi - z_hi, z_hi)
        current = np.concatenate([current[~is_one], current[is_one]])  # stable split by this bit
    return less, hi - lo


def _concordance_parts(time, risk, event):
    """Per event: concordant (+0.5 per tied risk) count and number of comparable partners."""
    # Latest time first; inside a tied time, censored before events. Then the partners of an
    # event (everyone with a later time + those censored at its own time) are a prefix.
    order = np.lexsort((event, -time))
    neg_t, e = -time[order], event[order]
    group_start = np.searchsorted(neg_t, neg_t, side="left")
    group_end = np.searchsorted(neg_t, neg_t, side="right")
    censored_before = np.r_[0, np.cumsum(~e)]
    partners = group_start + censored_before[group_end] - censored_before[group_start]
    ranks = np.unique(risk, return_inverse=True)[1].reshape(-1)[order]  # exact risk ties share a rank
    less, equal = _count_below_in_prefix(ranks, partners[e], ranks[e])
    return order[e], less + 0.5 * equal, partners[e]


def concordance_index(time, risk, event) -> float:
    """Harrell's C: the share of comparable pairs that the risk orders correctly (notebook 09).

    A pair (i, j) is comparable when i had the event first: t_i < t_j, or t_i == t_j with
    j censored. It is concordant when risk_i > risk_j; a tie in risk counts 1/2. Same
    definition as ``sksurv.metrics.concordance_index_censored`` (which treats risks within
    1e-8 as tied; here ties are exact) and lifelines ``concordance_index(time, -risk, event)``.
    """
    time, event = _check_survival_data(time, event)
    risk = _check_risk(risk, len(time))
    if not event.any():
        raise ValueError("event: all samples are censored, the C-index is undefined")
    _, concordant, partners = _concordance_parts(time, risk, event)
    if partners.sum() == 0:
        raise ValueError("time: no comparable pairs (every event is at the latest time)")
    return float(concordant.sum() / partners.sum())


def uno_c(time_train, event_train, time, risk, event, tau: float | None = None) -> float:
    """Uno's C: Harrell's pairs weighted by 1/G(t_i)², G the censoring survival (notebook 09).

    The weights undo the bias of Harrell's C towards early pairs when censoring is heavy;
    G is a Kaplan-Meier of the *training* censoring times; only events before ``tau`` count.
    Matches ``sksurv.metrics.concordance_index_ipcw``.
    """
    time_train, event_train = _check_survival_data(time_train, event_train, "_train")
    time, event = _check_survival_data(time, event)
    risk = _check_risk(risk, len(time))
    if tau is not None and not (np.isfinite(tau) and tau > 0):
        raise ValueError(f"tau: expected a positive finite time or None, got {tau!r}")
    index, concordant, partners = _concordance_parts(time, risk, event)
    t_event = time[index]
    counted = t_event < tau if tau is not None else np.ones(len(t_event), dtype=bool)
    G = censoring_survival(time_train, event_train, t_event)
    if (G[counted] <= 0).any():
        raise ValueError("time: the censoring survival G(t) is 0 at some event times; choose a smaller tau")
    weight = np.divide(1.0, G**2, out=np.zeros(len(G)), where=counted)
    if (weight * partners).sum() == 0:
        raise ValueError("tau: no comparable pairs with an event before tau")
    return float((weight * concordant).sum() / (weight * partners).sum())


# ---------------------------------------------------------------- Kaplan-Meier
def _counts(time: np.ndarray, event: np.ndarray):
    """Distinct times (ascending) with the number at risk, of events and of censorings there."""
    times, inverse = np.unique(time, return_inverse=True)
    events = np.bincount(inverse, weights=event, minlength=len(times)).astype(np.int64)
    total = np.bincount(inverse, minlength=len(times))
    at_risk = len(time) - np.r_[0, np.cumsum(total)[:-1]]     # still followed just before t
    return times, at_risk, events, total - events


@dataclasses.dataclass
class KaplanMeier:
    """Kaplan-Meier estimate: S(t) = prod_{t_k <= t} (1 - d_k / n_k), a step function."""

    times: np.ndarray      # distinct observed times (events and censorings), ascending
    survival: np.ndarray   # S just after each time
    at_risk: np.ndarray    # n_k: followed just before t_k
    events: np.ndarray     # d_k
    censored: np.ndarray   # censorings at t_k
    std_error: np.ndarray  # Greenwood standard error of S

    def __call__(self, t) -> np.ndarray:
        """S(t) at any times (right-continuous step; 1 before the first time)."""
        idx = np.searchsorted(self.times, np.asarray(t, dtype=np.float64), side="right")
        return np.r_[1.0, self.survival][idx]

    def median(self) -> float:
        """First time where S drops to 0.5 or below (inf if it never does)."""
        below = np.flatnonzero(self.survival <= 0.5)
        return float(self.times[below[0]]) if len(below) else float("inf")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"time": self.times, "at_risk": self.at_risk, "events": self.events,
                             "censored": self.censored, "survival": self.survival,
                             "std_error": self.std_error})


def kaplan_meier(time, event) -> KaplanMeier:
    """Kaplan-Meier survival curve with Greenwood standard errors (notebook 09, "KM by hand")."""
    time, event = _check_survival_data(time, event)
    times, n, d, c = _counts(time, event)
    survival = np.cumprod(1.0 - d / n)
    # Greenwood: Var S = S² sum d / (n (n - d)); undefined once S = 0 (n = d).
    with np.errstate(divide="ignore", invalid="ignore"):
        greenwood = np.cumsum(np.where(d > 0, d / (n * (n - d)), 0.0))
    std_error = np.where(survival > 0, survival * np.sqrt(np.where(n > d, greenwood, 0.0)), 0.0)
    return KaplanMeier(times, survival, n, d, c, std_error)


def censoring_survival(time_train, event_train, t) -> np.ndarray:
    """G(t) = P(censoring time > t): Kaplan-Meier with the roles of event and censoring swapped.

    Events at a time leave the risk set before the censorings there (as in scikit-survival).
    """
    time_train, event_train = _check_survival_data(time_train, event_train, "_train")
    times, n, d, c = _counts(time_train, event_train)
    at_risk = n - d
    G = np.cumprod(1.0 - np.divide(c, at_risk, out=np.zeros(len(times)), where=c > 0))
    idx = np.searchsorted(times, np.asarray(t, dtype=np.float64), side="right")
    return np.r_[1.0, G][idx]


# ---------------------------------------------------------------- log-rank test
@dataclasses.dataclass
class LogRankResult:
    statistic: float        # chi² with k - 1 degrees of freedom
    p_value: float
    df: int
    table: pd.DataFrame     # observed and expected events per group


def logrank_test(time, event, group) -> LogRankResult:
    """Log-rank test that k groups share one survival curve (notebook 09, "Risk groups").

    At each event time the d events are shared out in proportion to the numbers at risk;
    O - E (observed minus expected events per group) with its hypergeometric covariance V
    gives chi² = (O - E)ᵀ V⁻¹ (O - E) on k - 1 degrees of freedom (the last group dropped).
    """
    from scipy import stats
    time, event = _check_survival_data(time, event)
    group = _to_numpy(group, "group")
    if len(group) != len(time):
        raise ValueError(f"group: expected length {len(time)} (as time), got {len(group)}")
    labels, g = np.unique(group, return_inverse=True)
    if len(labels) < 2:
        raise ValueError(f"group: expected at least 2 groups, got {len(labels)}")
    times, t_idx = np.unique(time, return_inverse=True)
    total = np.zeros((len(times), len(labels)))                # (T, k) leaving at each time
    dead = np.zeros((len(times), len(labels)))                 # (T, k) events at each time
    np.add.at(total, (t_idx, g), 1.0)
    np.add.at(dead, (t_idx, g), event.astype(float))
    at_risk = total[::-1].cumsum(0)[::-1]                      # (T, k) followed just before t
    n, d = at_risk.sum(1, keepdims=True), dead.sum(1, keepdims=True)   # (T, 1)
    expected = (d * at_risk / n).sum(0)
    share = at_risk / n                                        # (T, k)
    spread = (d * (n - d) / np.maximum(n - 1, 1))[:, :, None]  # (T, 1, 1)
    V = (spread * (share[:, :, None] * (np.eye(len(labels)) - share[:, None, :]))).sum(0)
    o_e = dead.sum(0) - expected
    statistic = float(o_e[:-1] @ np.linalg.solve(V[:-1, :-1], o_e[:-1]))
    df = len(labels) - 1
    table = pd.DataFrame({"group": labels, "n": total.sum(0).astype(int),
                          "observed": dead.sum(0), "expected": expected})
    return LogRankResult(statistic, float(stats.chi2.sf(statistic, df)), df, table)


# ---------------------------------------------------------------- Brier score and time-dependent AUC
def _check_times_grid(times, time) -> np.ndarray:
    times = np.unique(_to_numpy(np.atleast_1d(times), "times").astype(np.float64))
    if times.min() < time.min() or times.max() >= time.max():
        raise ValueError(f"times: expected values in the follow-up of the test data "
                         f"[{time.min():g}, {time.max():g}), got [{times.min():g}, {times.max():g}]")
    return times


def brier_score(time_train, event_train, time, event, survival, times):
    """Brier score of predicted S(t | x) at each t in ``times``, with IPCW (Graf et al. 1999).

    BS(t) = mean[ S(t|x_i)² 1{t_i <= t, event} / G(t_i) + (1 - S(t|x_i))² 1{t_i > t} / G(t) ].
    ``survival``: (N, T) predicted survival probabilities at ``times``. Returns (times, scores);
    matches ``sksurv.metrics.brier_score``.
    """
    time, event = _check_survival_data(time, event)
    times = _check_times_grid(times, time)
    survival = np.asarray(survival, dtype=np.float64).reshape(len(time), -1)  # (N, T)
    if survival.shape[1] != len(times) or not np.isfinite(survival).all():
        raise ValueError(f"survival: expected finite values of shape ({len(time)}, {len(times)}), "
                         f"got {survival.shape}")
    G_t = censoring_survival(time_train, event_train, times)
    G_own = censoring_survival(time_train, event_train, time)
    G_t, G_own = np.where(G_t > 0, G_t, np.inf), np.where(G_own > 0, G_own, np.inf)
    case = (time[:, None] <= times) & event[:, None]           # (N, T) had the event by t
    control = time[:, None] > times                            # (N, T) still event-free at t
    scores = (survival**2 * case / G_own[:, None] + (1 - survival)**2 * control / G_t).mean(0)
    return times, scores


def integrated_brier_score(time_train, event_train, time, event, survival, times) -> float:
    """Brier score averaged over ``times`` (trapezoid rule); matches scikit-survival."""
    times, scores = brier_score(time_train, event_train, time, event, survival, times)
    if len(times) < 2:
        raise ValueError("times: expected at least 2 distinct time points")
    return float(np.trapezoid(scores, times) / (times[-1] - times[0]))


def cumulative_dynamic_auc(time_train, event_train, time, event, risk, times):
    """Time-dependent AUC(t): cases (event by t, weighted 1/G(t_i)) vs controls (t_i > t).

    Returns (auc per time, mean AUC weighted by the drop of the test Kaplan-Meier);
    matches ``sksurv.metrics.cumulative_dynamic_auc`` for a risk score (N,).
    """
    time, event = _check_survival_data(time, event)
    risk = _check_risk(risk, len(time))
    times = _check_times_grid(times, time)
    G = censoring_survival(time_train, event_train, time)
    if (event & (time <= times.max()) & (G <= 0)).any():
        raise ValueError("time_train: the censoring survival G(t) is 0 before the last of times; choose earlier times")
    ipcw = np.divide(1.0, G, out=np.zeros(len(time)), where=event & (G > 0))
    order = np.argsort(-risk, kind="stable")                   # thresholds from high to low risk
    r, t, w = risk[order], time[order][:, None], ipcw[order][:, None]
    case = (t <= times) & event[order][:, None]                # (N, T)
    control = t > times
    tp = np.cumsum(case * w, 0) / np.cumsum(case * w, 0)[-1]
    fp = np.cumsum(control, 0) / control.sum(0)
    keep = np.r_[r[1:] != r[:-1], True]                        # last row of each tied risk
    tp, fp = np.vstack([np.zeros(len(times)), tp[keep]]), np.vstack([np.zeros(len(times)), fp[keep]])
    auc = np.trapezoid(tp, fp, axis=0)
    if len(times) == 1:
        return auc, float(auc[0])
    S = kaplan_meier(time, event)(times)
    drop = -np.diff(np.r_[1.0, S])
    return auc, float((auc * drop).sum() / (1.0 - S[-1]))


# ---------------------------------------------------------------- survival curves from a Cox model
def breslow_baseline(risk, time, event) -> tuple[np.ndarray, np.ndarray]:
    """Breslow's baseline cumulative hazard H0(t) = sum_{t_k <= t} d_k / sum_{R(t_k)} exp(risk).

    Returns (distinct event times, H0 there); with it S(t | x) = exp(-H0(t) exp(risk(x))).
    """
    time, event = _check_survival_data(time, event)
    risk = _check_risk(risk, len(time))
    times, inverse = np.unique(time, return_inverse=True)
    shift = risk.max()
    weight = np.bincount(inverse, weights=np.exp(risk - shift), minlength=len(times))
    in_risk_set = weight[::-1].cumsum()[::-1] * np.exp(shift)  # sum over t_j >= t
    d = np.bincount(inverse, weights=event, minlength=len(times))
    H0 = np.cumsum(d / in_risk_set)
    return times[d > 0], H0[d > 0]


def predict_survival(risk, baseline: tuple[np.ndarray, np.ndarray], times) -> np.ndarray:
    """S(t | x) = exp(-H0(t) exp(risk)) at ``times`` for each risk: shape (N, T)."""
    risk = _check_risk(risk, len(_to_numpy(risk, "risk")))
    base_times, H0 = baseline
    idx = np.searchsorted(base_times, np.asarray(times, dtype=np.float64), side="right")
    H = np.r_[0.0, H0][idx]                                    # (T,) step function
    return np.exp(-np.exp(risk)[:, None] * H[None, :])


@dataclasses.dataclass
class CoxModel:
    """A linear Cox model: risk = ((X - mean) / scale) @ coef_std; ``coef`` is on X's own scale."""

    coef: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    baseline: tuple[np.ndarray, np.ndarray]
    loss: float

    def predict_risk(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return (X - self.mean) @ self.coef

    def predict_survival(self, X, times) -> np.ndarray:
        return predict_survival(self.predict_risk(X), self.baseline, times)


def fit_cox(X, time, event, *, ties: str = "efron", l2: float = 0.0, max_iter: int = 200) -> CoxModel:
    """Fit a linear Cox model by minimising ``cox_loss`` + l2/2 ||beta||² with L-BFGS (float64).

    Features are standardised first (the ridge penalty acts on standardised coefficients);
    with l2=0 the coefficients are lifelines' ``CoxPHFitter`` ones (ties="efron").
    """
    X = np.asarray(X, dtype=np.float64)
    time, event = _check_survival_data(time, event)
    if X.ndim != 2 or len(X) != len(time) or not np.isfinite(X).all():
        raise ValueError(f"X: expected a finite (N, p) array with N={len(time)}, got shape {X.shape}")
    if not (np.isfinite(l2) and l2 >= 0):
        raise ValueError(f"l2: expected a float >= 0, got {l2!r}")
    mean, scale = X.mean(0), X.std(0)
    scale = np.where(scale > 0, scale, 1.0)                    # constant columns stay put
    Z = torch.as_tensor((X - mean) / scale)                    # (N, p) standardised
    beta = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([beta], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def objective():
        opt.zero_grad()
        loss = cox_loss(Z @ beta, time, event, ties=ties) + 0.5 * l2 * (beta**2).sum()
        loss.backward()
        return loss

    loss = float(opt.step(objective).detach())
    coef = beta.detach().numpy() / scale
    risk = (X - mean) @ coef
    return CoxModel(coef, mean, scale, breslow_baseline(risk, time, event), loss)
