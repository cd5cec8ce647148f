"""Exercises for ``notebooks/09_survival.ipynb``.

    from radlab.exercises import nb09 as ex
    ex.q1.check(harrell_c); ex.q1.hint(); ex.q1.solution()
"""
from __future__ import annotations

import numpy as np

from .. import survival as S
from . import ChoiceExercise, FunctionExercise, NumberExercise

# ---------------------------------------------------------------- q1: Harrell's C by hand


def _harrell(time, risk, event):
    return S.concordance_index(time, risk, event)


def _pairs_c(time, risk, event, *, risk_tie=0.5, censored_tie_ok=True, flip=False):
    """Slow double loop with switches that reproduce the usual mistakes."""
    time, risk, event = np.asarray(time, float), np.asarray(risk, float), np.asarray(event, bool)
    risk = -risk if flip else risk
    num = den = 0.0
    for i in np.flatnonzero(event):
        later = time > time[i]
        if censored_tie_ok:
            later |= (time == time[i]) & ~event
        den += later.sum()
        num += (risk[later] < risk[i]).sum() + risk_tie * (risk[later] == risk[i]).sum()
    return num / den


def _c_inputs():
    rng = np.random.default_rng(9)
    out = []
    for n, levels in ((40, 4), (120, 10), (300, None)):
        time = rng.integers(1, 15, n).astype(float)            # many tied times
        event = rng.random(n) < 0.65
        risk = rng.integers(0, levels, n).astype(float) if levels else rng.normal(size=n)
        out.append((time, risk, event))
    return out


q1 = FunctionExercise(
    "q1",
    """Write `harrell_c(time, risk, event)` (numpy arrays; a higher risk should mean an earlier event).
    A pair (i, j) is *comparable* when patient i had the event first: event_i and t_i < t_j, or
    t_i == t_j with j censored. Among comparable pairs count 1 when risk_i > risk_j and 1/2 when
    the risks are tied; return that count divided by the number of comparable pairs. A double loop
    is fine here (the hidden inputs have tied times and tied risks).""",
    reference=_harrell, inputs=_c_inputs, rtol=1e-9, atol=1e-12,
    wrong=[(lambda t, r, e: _pairs_c(t, r, e, flip=True),
            "the pairs are ordered the wrong way round: a HIGHER risk should go with an EARLIER event"),
           (lambda t, r, e: _pairs_c(t, r, e, risk_tie=0.0),
            "tied risks count one half, not zero (a coin flip would order them right half of the time)"),
           (lambda t, r, e: _pairs_c(t, r, e, risk_tie=1.0),
            "tied risks count one half, not one"),
           (lambda t, r, e: _pairs_c(t, r, e, censored_tie_ok=False),
            "an event at time t and a patient censored at the same t are comparable: "
            "the censored patient was still event-free at t")],
    hints=["Loop over the patients with an event; for each, build a boolean mask of its comparable partners.",
           "partners = (time > time[i]) | ((time == time[i]) & ~event); then compare risk[partners] with risk[i]."],
    solution="""
    def harrell_c(time, risk, event):
        concordant = comparable = 0.0
        for i in np.flatnonzero(event):
            partners = (time > time[i]) | ((time == time[i]) & ~event)
            comparable += partners.sum()
            concordant += (risk[partners] < risk[i]).sum() + 0.5 * (risk[partners] == risk[i]).sum()
        return concordant / comparable
    # rl.survival.concordance_index gives the same number in O(n log n)""",
)

# ---------------------------------------------------------------- q2: Kaplan-Meier by hand

KM_TIME = np.array([2.0, 3.0, 3.0, 5.0, 6.0, 8.0])
KM_EVENT = np.array([True, True, False, True, False, True])

q2 = NumberExercise(
    "q2",
    f"""Six patients: times {KM_TIME.astype(int).tolist()} months, event {KM_EVENT.astype(int).tolist()}
    (1 = died, 0 = censored). Compute the Kaplan-Meier estimate S(5) by hand: the product over the event
    times t_k <= 5 of (1 - d_k / n_k), with n_k the patients still followed just before t_k.""",
    answer=lambda: float(S.kaplan_meier(KM_TIME, KM_EVENT)(5.0)), rtol=1e-3,
    wrong=[(2 / 6, "2/6 counts the patient censored at 3 months as if they had died: censoring is not an event"),
           (1 / 4, "dropping the censored patients from the start throws away the months they were followed"),
           (0.5, "the patient censored at 3 months is no longer followed at 5: they leave the risk set after 3")],
    hints=["Event times up to 5: 2, 3 and 5. Who is still followed just before each?",
           "n = 6 at t=2, 5 at t=3 (one dies, one is censored there), 3 at t=5."],
    solution="S(5) = (1 - 1/6) (1 - 1/5) (1 - 1/3) = 5/6 * 4/5 * 2/3 = 0.444",
)

# ---------------------------------------------------------------- q3: reading a KM plot

q3 = ChoiceExercise(
    "q3",
    """Look at the Kaplan-Meier curves of the CNN's predicted low- and high-risk halves above. Which
    statement is right?""",
    options={
        "a": "Each censoring tick makes the curve step down a little.",
        "b": "At time t the curve is the share of the group whose follow-up lasted longer than t.",
        "c": "At time t the curve estimates P(no event before t); its late steps are larger and less "
             "certain because few patients are still at risk.",
        "d": "A log-rank p < 0.05 means the high-risk group's median survival is at least twice shorter.",
    },
    answer="c",
    why={"a": "the curve only steps down at events; a censored patient just leaves the risk set (the tick)",
         "b": "that share counts censored patients as failures and is biased low; KM corrects for censoring",
         "d": "the log-rank test asks whether the curves differ at all, not by how much"},
    hints=["What happens to n_k (the number at risk) and to the step size 1 - d_k/n_k as time goes on?"],
    solution="(c): S(t) = prod (1 - d_k/n_k); as n_k shrinks each event removes a bigger share, and the "
             "Greenwood band widens.",
)

# ---------------------------------------------------------------- q4: the Cox loss in numpy


def _cox_breslow(risk, time, event):
    import torch
    return float(S.cox_loss(torch.as_tensor(risk, dtype=torch.float64), time, event, ties="breslow"))


def _cox_sum(risk, time, event):
    return _cox_breslow(risk, time, event) * np.asarray(event, bool).sum()


def _cox_strict(risk, time, event):
    risk, time, event = np.asarray(risk, float), np.asarray(time, float), np.asarray(event, bool)
    terms = [risk[i] - np.log(np.exp(risk[time > time[i]]).sum() + 1e-300) for i in np.flatnonzero(event)]
    return -float(np.mean(terms))


def _cox_all(risk, time, event):
    risk, time = np.asarray(risk, float), np.asarray(time, float)
    terms = [risk[i] - np.log(np.exp(risk[time >= time[i]]).sum()) for i in range(len(risk))]
    return -float(np.mean(terms))


def _cox_inputs():
    rng = np.random.default_rng(4)
    out = []
    for n in (15, 60, 200):
        time = rng.integers(1, 20, n).astype(float)
        out.append((rng.normal(size=n), time, rng.random(n) < 0.7))
    return out


q4 = FunctionExercise(
    "q4",
    """Write `cox_nll(risk, time, event)` in numpy: the negative Cox partial log-likelihood with
    Breslow's handling of ties, averaged over the events:
    -1/E * sum over events i of [ risk_i - log sum_{j: t_j >= t_i} exp(risk_j) ]. Return a float.""",
    reference=_cox_breslow, inputs=_cox_inputs, rtol=1e-8, atol=1e-10,
    wrong=[(_cox_sum, "divide by the number of events: the loss is a mean over events, not a sum"),
           (_cox_strict, "the risk set at t_i includes everyone with t_j >= t_i, patient i and its ties too"),
           (_cox_all, "only patients with an event contribute a term; censored ones appear in risk sets only")],
    hints=["Loop over the indices with event True; the risk set is the mask time >= time[i].",
           "np.log(np.exp(risk[mask]).sum()) is fine here; rl.survival.cox_loss does the same with a stable "
           "cumulative log-sum-exp."],
    solution="""
    def cox_nll(risk, time, event):
        terms = [risk[i] - np.log(np.exp(risk[time >= time[i]]).sum()) for i in np.flatnonzero(event)]
        return -float(np.mean(terms))
    # rl.survival.cox_loss(torch.as_tensor(risk), time, event, ties="breslow") gives the same number""",
)
