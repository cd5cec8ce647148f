"""Cross-checks of radlab.survival against lifelines and scikit-survival (reference libraries,
imported here only), a naive O(n²) Cox loss, torch's gradcheck, and input validation.

Tolerances: rank statistics (C-index, Uno's C, AUC) and closed forms (KM, log-rank, Brier,
Breslow) must agree to 1e-10 (float64 round-off); Cox coefficients fitted by L-BFGS on our
loss vs. the libraries' Newton solvers to 1e-5 absolute.
"""
import numpy as np
import pandas as pd
import pytest
import torch

from radlab import survival as S

lifelines = pytest.importorskip("lifelines")
sksurv = pytest.importorskip("sksurv")
from lifelines.statistics import logrank_test as ll_logrank, multivariate_logrank_test  # noqa: E402
from lifelines.utils import concordance_index as ll_cindex  # noqa: E402
from sksurv import metrics as skm  # noqa: E402
from sksurv.util import Surv  # noqa: E402

EXACT = 1e-10   # agreement for closed-form / counting statistics
COEF = 1e-5     # agreement for fitted Cox coefficients


def tied_data(seed, n=300, n_times=25, risk_levels=None):
    """Integer times (many ties) with ~40% censoring; optionally integer risks (risk ties)."""
    rng = np.random.default_rng(seed)
    time = rng.integers(1, n_times, n).astype(float)
    event = rng.random(n) < 0.6
    risk = rng.integers(0, risk_levels, n).astype(float) if risk_levels else rng.normal(size=n)
    return time, event, risk


def train_data(seed, n=300):
    """Training sample whose largest time is an event, so that G(t) > 0 everywhere."""
    time, event, _ = tied_data(seed + 100, n)
    event[np.argmax(time)] = True
    time[np.argmax(time)] = 40.0
    return time, event


def real_datasets():
    from lifelines.datasets import load_rossi
    from sksurv.datasets import load_gbsg2, load_whas500
    rossi = load_rossi()
    yield "rossi", rossi["week"].to_numpy(float), rossi["arrest"].to_numpy(bool), rossi.drop(columns=["week", "arrest"])
    for name, load in (("whas500", load_whas500), ("gbsg2", load_gbsg2)):
        X, y = load()
        event_field, time_field = y.dtype.names
        yield name, y[time_field].astype(float), y[event_field].astype(bool), X.select_dtypes("number")


REAL = list(real_datasets())


# ---------------------------------------------------------------- Harrell's C
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("risk_levels", [None, 5])
def test_harrell_c_matches_sksurv_and_lifelines(seed, risk_levels):
    time, event, risk = tied_data(seed, n=50 + 60 * seed, risk_levels=risk_levels)
    ours = S.concordance_index(time, risk, event)
    assert abs(ours - skm.concordance_index_censored(event, time, risk)[0]) < EXACT
    assert abs(ours - ll_cindex(time, -risk, event)) < EXACT


@pytest.mark.parametrize("name,time,event,X", REAL, ids=[r[0] for r in REAL])
def test_harrell_c_on_real_data(name, time, event, X):
    for column in X.columns:  # every numeric covariate as a risk score (with ties)
        risk = X[column].to_numpy(float)
        ours = S.concordance_index(time, risk, event)
        assert abs(ours - skm.concordance_index_censored(event, time, risk)[0]) < EXACT, column
        assert abs(ours - ll_cindex(time, -risk, event)) < EXACT, column


def test_harrell_c_extremes_and_torch_input():
    time = np.arange(1.0, 11.0)
    event = np.ones(10, dtype=bool)
    assert S.concordance_index(time, -time, event) == 1.0
    assert S.concordance_index(time, time, event) == 0.0
    assert S.concordance_index(torch.tensor(time), torch.zeros(10), torch.tensor(event)) == 0.5


def test_count_below_in_prefix_against_brute_force():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 20, 137)
    prefix, query = rng.integers(0, 138, 60), rng.integers(0, 20, 60)
    less, equal = S._count_below_in_prefix(values, prefix, query)
    assert all(less[i] == (values[:p] < q).sum() and equal[i] == (values[:p] == q).sum()
               for i, (p, q) in enumerate(zip(prefix, query)))


# ---------------------------------------------------------------- IPCW metrics
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [None, 15.0])
def test_uno_c_matches_sksurv(seed, tau):
    time, event, risk = tied_data(seed, risk_levels=8 if seed % 2 else None)
    time_train, event_train = train_data(seed)
    expected = skm.concordance_index_ipcw(Surv.from_arrays(event_train, time_train),
                                          Surv.from_arrays(event, time), risk, tau=tau)[0]
    assert abs(S.uno_c(time_train, event_train, time, risk, event, tau=tau) - expected) < EXACT


@pytest.mark.parametrize("seed", range(4))
def test_brier_and_auc_match_sksurv(seed):
    time, event, risk = tied_data(seed, risk_levels=6 if seed % 2 else None)
    time_train, event_train = train_data(seed)
    y_train, y_test = Surv.from_arrays(event_train, time_train), Surv.from_arrays(event, time)
    times = np.arange(2.0, 22.0)
    survival = np.exp(-np.exp(risk)[:, None] * times[None, :] / 20)   # (N, T)
    _, ours = S.brier_score(time_train, event_train, time, event, survival, times)
    np.testing.assert_allclose(ours, skm.brier_score(y_train, y_test, survival, times)[1], atol=EXACT)
    assert abs(S.integrated_brier_score(time_train, event_train, time, event, survival, times)
               - skm.integrated_brier_score(y_train, y_test, survival, times)) < EXACT
    auc, mean_auc = S.cumulative_dynamic_auc(time_train, event_train, time, event, risk, times)
    ref_auc, ref_mean = skm.cumulative_dynamic_auc(y_train, y_test, risk, times)
    np.testing.assert_allclose(auc, ref_auc, atol=EXACT)
    assert abs(mean_auc - ref_mean) < EXACT


def test_ipcw_metrics_on_whas500():
    _, time, event, X = REAL[1]
    half = len(time) // 2
    risk = X["age"].to_numpy(float)
    y_train, y_test = Surv.from_arrays(event[:half], time[:half]), Surv.from_arrays(event[half:], time[half:])
    tau = np.quantile(time[:half], 0.8)
    ours = S.uno_c(time[:half], event[:half], time[half:], risk[half:], event[half:], tau=tau)
    assert abs(ours - skm.concordance_index_ipcw(y_train, y_test, risk[half:], tau=tau)[0]) < EXACT
    times = np.quantile(time[half:][event[half:]], [0.2, 0.4, 0.6, 0.8])
    ours_auc = S.cumulative_dynamic_auc(time[:half], event[:half], time[half:], event[half:], risk[half:], times)
    np.testing.assert_allclose(ours_auc[0], skm.cumulative_dynamic_auc(y_train, y_test, risk[half:], times)[0],
                               atol=EXACT)


# ---------------------------------------------------------------- Kaplan-Meier and log-rank
@pytest.mark.parametrize("name,time,event,X", REAL + [("tied", *tied_data(0)[:2], None)],
                         ids=[r[0] for r in REAL] + ["tied"])
def test_kaplan_meier_matches_lifelines(name, time, event, X):
    km = S.kaplan_meier(time, event)
    fitter = lifelines.KaplanMeierFitter().fit(time, event)
    ref = fitter.survival_function_.iloc[:, 0]
    np.testing.assert_allclose(km(ref.index.to_numpy()), ref.to_numpy(), atol=EXACT)
    assert km.median() == fitter.median_survival_time_ or not np.isfinite(km.median())


def test_kaplan_meier_greenwood_matches_sksurv_variance():
    from sksurv.nonparametric import kaplan_meier_estimator
    time, event, _ = tied_data(1)
    km = S.kaplan_meier(time, event)
    # sksurv's log-log interval is built from the same Greenwood sum: check the interval.
    _, _, ci = kaplan_meier_estimator(event, time, conf_type="log-log")
    z = 1.959963984540054
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = km.std_error / (km.survival * np.abs(np.log(km.survival)))
        lower = km.survival ** np.exp(z * sigma)
    ok = np.isfinite(lower) & (km.survival < 1) & (km.survival > 0)
    np.testing.assert_allclose(lower[ok], ci[0][ok], atol=1e-8)


@pytest.mark.parametrize("seed", range(3))
def test_logrank_two_groups_matches_lifelines(seed):
    time, event, _ = tied_data(seed)
    group = np.random.default_rng(seed).integers(0, 2, len(time))
    ours = S.logrank_test(time, event, group)
    ref = ll_logrank(time[group == 0], time[group == 1], event[group == 0], event[group == 1])
    assert abs(ours.statistic - ref.test_statistic) < EXACT and abs(ours.p_value - ref.p_value) < EXACT


@pytest.mark.parametrize("name,time,event,X", REAL, ids=[r[0] for r in REAL])
def test_logrank_k_groups_matches_lifelines(name, time, event, X):
    group = pd.qcut(X.iloc[:, 0].rank(method="first"), 3, labels=False).to_numpy()
    ours = S.logrank_test(time, event, group)
    ref = multivariate_logrank_test(time, group, event)
    assert ours.df == 2
    assert abs(ours.statistic - ref.test_statistic) < 1e-8 * max(1, ref.test_statistic)
    assert abs(ours.p_value - ref.p_value) < EXACT


# ---------------------------------------------------------------- Cox loss
def naive_cox_loss(risk, time, event, ties):
    """Textbook O(n²) partial likelihood: a Python loop over event times, a full risk-set mask."""
    total = 0.0
    for t in np.unique(time[event]):
        died, at_risk = torch.as_tensor((time == t) & event), torch.as_tensor(time >= t)
        d = int(died.sum())
        sum_risk_set, sum_died = risk[at_risk].exp().sum(), risk[died].exp().sum()
        total = total + risk[died].sum()
        for ell in range(d):
            total = total - torch.log(sum_risk_set - (ell / d if ties == "efron" else 0.0) * sum_died)
    return -total / event.sum()


@pytest.mark.parametrize("ties", S.TIES)
@pytest.mark.parametrize("seed", range(3))
def test_cox_loss_matches_naive_quadratic_version(ties, seed):
    time, event, risk = tied_data(seed, n=120)
    risk = torch.tensor(risk, requires_grad=True)
    ours = S.cox_loss(risk, time, event, ties=ties)
    naive = naive_cox_loss(risk, time, event, ties)
    assert abs(ours.item() - naive.item()) < 1e-12
    g_ours, = torch.autograd.grad(ours, risk)
    g_naive, = torch.autograd.grad(naive, risk)
    torch.testing.assert_close(g_ours, g_naive, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ties", S.TIES)
def test_cox_loss_gradcheck(ties):
    time, event, risk = tied_data(7, n=40, n_times=8)
    risk = torch.tensor(risk, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r: S.cox_loss(r, time, event, ties=ties), (risk,))


def test_cox_loss_is_stable_and_shape_tolerant():
    time, event, risk = tied_data(2, n=100)
    big = torch.tensor(risk * 1000.0)                       # exp would overflow
    assert torch.isfinite(S.cox_loss(big, time, event, "efron"))
    r32 = torch.tensor(risk, dtype=torch.float32)
    assert abs(float(S.cox_loss(r32[:, None], time, event)) - float(S.cox_loss(torch.tensor(risk), time, event))) < 1e-5
    no_event = S.cox_loss(torch.tensor(risk, requires_grad=True), time, np.zeros(100, bool))
    assert no_event.item() == 0.0 and no_event.requires_grad
    # Shifting every risk by a constant changes nothing (only ratios of hazards matter).
    shifted, plain = S.cox_loss(torch.tensor(risk + 3.0), time, event), S.cox_loss(torch.tensor(risk), time, event)
    assert abs(shifted.item() - plain.item()) < 1e-12


# ---------------------------------------------------------------- linear Cox fits
def test_fit_cox_efron_matches_lifelines_on_rossi():
    _, time, event, X = REAL[0]
    ours = S.fit_cox(X.to_numpy(float), time, event, ties="efron")
    df = X.assign(week=time, arrest=event.astype(int))
    ref = lifelines.CoxPHFitter().fit(df, "week", "arrest").params_[X.columns].to_numpy()
    np.testing.assert_allclose(ours.coef, ref, atol=COEF)


@pytest.mark.parametrize("index", [1, 2], ids=["whas500", "gbsg2"])
def test_fit_cox_breslow_matches_sksurv(index):
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    _, time, event, X = REAL[index]
    ours = S.fit_cox(X.to_numpy(float), time, event, ties="breslow")
    ref = CoxPHSurvivalAnalysis(ties="breslow").fit(X.to_numpy(float), Surv.from_arrays(event, time))
    np.testing.assert_allclose(ours.coef, ref.coef_, atol=COEF, rtol=1e-4)
    # Breslow's baseline: ours is for centred features, sksurv's for raw ones, hence the factor.
    base_times, H0 = ours.baseline
    ref_times = ref.cum_baseline_hazard_.x
    H0_at_ref = np.r_[0.0, H0][np.searchsorted(base_times, ref_times, side="right")]
    np.testing.assert_allclose(H0_at_ref / np.exp(ours.mean @ ours.coef), ref.cum_baseline_hazard_.y, rtol=1e-4)
    times = np.quantile(time, [0.2, 0.5, 0.8])
    surv_ref = np.array([fn(times) for fn in ref.predict_survival_function(X.to_numpy(float)[:20])])
    np.testing.assert_allclose(ours.predict_survival(X.to_numpy(float)[:20], times), surv_ref, atol=1e-4)


def test_fit_cox_ridge_shrinks():
    _, time, event, X = REAL[0]
    free = S.fit_cox(X.to_numpy(float), time, event)
    ridge = S.fit_cox(X.to_numpy(float), time, event, l2=1.0)
    assert np.linalg.norm(ridge.coef * ridge.scale) < np.linalg.norm(free.coef * free.scale)


# ---------------------------------------------------------------- bad input
GOOD_T, GOOD_E, GOOD_R = np.array([1.0, 2.0, 3.0]), np.array([True, False, True]), np.array([0.1, 0.2, 0.3])


@pytest.mark.parametrize("call,error,words", [
    (lambda: S.concordance_index(GOOD_T[:2], GOOD_R, GOOD_E[:2]), ValueError, "risk: expected length 2"),
    (lambda: S.concordance_index(GOOD_T, GOOD_R, GOOD_E[:2]), ValueError, "event: expected length 3"),
    (lambda: S.concordance_index(np.array([1.0, np.nan, 2.0]), GOOD_R, GOOD_E), ValueError, "time: expected finite"),
    (lambda: S.concordance_index(np.array([0.0, 1.0, 2.0]), GOOD_R, GOOD_E), ValueError, "time: expected times > 0"),
    (lambda: S.concordance_index(GOOD_T, np.array([0.1, np.nan, 0.3]), GOOD_E), ValueError, "risk: expected finite"),
    (lambda: S.concordance_index(GOOD_T, GOOD_R, np.array([0, 2, 1])), ValueError, "event: expected bool or 0/1"),
    (lambda: S.concordance_index(GOOD_T, GOOD_R, np.zeros(3, bool)), ValueError, "event: all samples are censored"),
    (lambda: S.concordance_index(np.array(["a", "b", "c"]), GOOD_R, GOOD_E), TypeError, "time: expected numbers"),
    (lambda: S.concordance_index(GOOD_T[:, None].repeat(2, 1), GOOD_R, GOOD_E), ValueError, "time: expected a 1-D"),
    (lambda: S.cox_loss(GOOD_R, GOOD_T, GOOD_E), TypeError, "risk: expected a torch.Tensor"),
    (lambda: S.cox_loss(torch.tensor(GOOD_R), GOOD_T, GOOD_E, ties="exact"), ValueError, "ties: expected one of"),
    (lambda: S.cox_loss(torch.tensor([1, 2, 3]), GOOD_T, GOOD_E), ValueError, "risk: expected a float tensor"),
    (lambda: S.cox_loss(torch.tensor([0.1, float("nan"), 0.2]), GOOD_T, GOOD_E), ValueError, "risk: expected finite"),
    (lambda: S.cox_loss(torch.zeros(2), GOOD_T, GOOD_E), ValueError, "time: expected length 2"),
    (lambda: S.logrank_test(GOOD_T, GOOD_E, [0, 0, 0]), ValueError, "group: expected at least 2 groups"),
    (lambda: S.logrank_test(GOOD_T, GOOD_E, [0, 1]), ValueError, "group: expected length 3"),
    (lambda: S.uno_c(GOOD_T, GOOD_E, GOOD_T, GOOD_R, GOOD_E, tau=-1.0), ValueError, "tau: expected a positive"),
    (lambda: S.brier_score(GOOD_T, GOOD_E, GOOD_T, GOOD_E, np.ones((3, 1)), [5.0]), ValueError,
     "times: expected values"),
    (lambda: S.brier_score(GOOD_T, GOOD_E, GOOD_T, GOOD_E, np.ones((3, 2)), [1.5]), ValueError, "survival: expected"),
    (lambda: S.fit_cox(np.ones((2, 1)), GOOD_T, GOOD_E), ValueError, "X: expected a finite (N, p)"),
    (lambda: S.fit_cox(np.ones((3, 1)), GOOD_T, GOOD_E, l2=-1.0), ValueError, "l2: expected a float >= 0"),
    (lambda: S.kaplan_meier(GOOD_T, np.array([True, False])), ValueError, "event: expected length 3"),
])
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        call()


# ---------------------------------------------------------------- rl.experiments.survival (notebook 09)
def test_score_risk_ranks_truth_above_noise():
    from radlab.experiments import survival as es
    rng = np.random.default_rng(0)
    risk = rng.normal(size=400)
    time = rng.exponential(np.exp(-risk)) + 1e-3
    censor = rng.exponential(2.0, 400) + 1e-3
    t, e = np.minimum(time, censor), time <= censor
    split = (t[:200], e[:200]), (t[200:], e[200:])
    truth = es.score_risk(risk[:200], risk[200:], *split)
    noise = es.score_risk(rng.normal(size=200), rng.normal(size=200), *split)
    assert truth["harrell_c"] > 0.65 > noise["harrell_c"] and truth["logrank_p"] < 0.01
    assert truth["ibs"] < noise["ibs"] and truth["mean_auc"] > noise["mean_auc"]


@pytest.mark.slow
def test_run_pipelines_small_run_has_every_row_and_plots():
    import matplotlib
    matplotlib.use("Agg")
    from radlab.experiments import survival as es
    res = es.run_pipelines(40, 40, size=16, epochs=1, batch_size=20,
                           pipelines=["clinical", "features", "end-to-end CNN", "fused"], seed=0)
    table = res.table()
    assert list(table.index) == ["clinical", "features", "end-to-end CNN", "fused", "oracle"]
    assert table[["harrell_c", "uno_c", "mean_auc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert table.loc["oracle", "harrell_c"] > 0.6          # the true risk ranks well even at n = 40
    assert len(res.plot().axes) == 6


@pytest.mark.parametrize("kwargs,words", [
    (dict(pipelines="svm"), "pipelines: expected names from"),
    (dict(ties="exact"), "ties: expected one of"),
    (dict(n_train=5), "n_train: expected an int >= 20"),
])
def test_run_pipelines_bad_input(kwargs, words):
    from radlab.experiments import survival as es
    with pytest.raises(ValueError, match=words):
        es.run_pipelines(**kwargs)


def test_bundled_lung_data_matches_lifelines_copy():
    from lifelines.datasets import load_lung
    from radlab.experiments import survival as es
    ours, ref = es.load_lung(), load_lung()
    pd.testing.assert_frame_equal(ours, ref, check_dtype=False)
    # The classic result (R survival::coxph(Surv(time, status) ~ age + sex + ph.ecog, lung)).
    complete = ours.dropna(subset=["age", "sex", "ph.ecog"])
    cox = S.fit_cox(complete[["age", "sex", "ph.ecog"]].to_numpy(float), complete["time"], complete["status"])
    np.testing.assert_allclose(cox.coef, [0.011067, -0.552612, 0.463728], atol=1e-5)
