"""Notebook 01: the classical pipeline φ(x) + f_w against one network trained end to end.

Three pipelines see the same phantom patients and the same lesion masks:

* **classical**: hand-crafted features ``rl.classical.extract_features`` (φ, fixed) then
  logistic regression or an SVM (f_w, trained);
* **deep features**: a CNN trained on *another* task (the source: MRI phantoms), frozen,
  its pooled features then logistic regression (``rl.classical.deep_feature_model``);
* **end to end**: a 3D CNN trained on the labels with ``rl.train.fit``.

The CNNs read a lesion-centred cube with two channels, the network-ready image and the
lesion mask, so every pipeline is told where the lesion is. ``learning_curve`` repeats
the comparison over training-set sizes and seeds and measures against the Bayes ceiling:
the AUC and Brier score of the true probability ``p_true``.

Used by ``notebooks/01_end_to_end_vs_classical.ipynb``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import torch

from .. import augment, classical, e2e, models, phantoms, preprocess, train

CLASSICAL_LOGREG, CLASSICAL_SVM = "classical + logreg", "classical + SVM"
DEEP_FEATURES, CNN = "deep features + logreg", "3D CNN end to end"
METHODS = (CLASSICAL_LOGREG, CLASSICAL_SVM, DEEP_FEATURES, CNN)
COLORS = {CLASSICAL_LOGREG: "tab:blue", CLASSICAL_SVM: "tab:cyan", DEEP_FEATURES: "tab:purple", CNN: "tab:red"}


# ---------------------------------------------------------------------------------------------
# Data: one cohort = crops for the CNNs, φ(x) for the classical models, and the truth
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Cohort:
    """The patients of one experiment, ready for both paradigms."""

    crops: torch.Tensor          # (N, 2, c, c, c) image + mask, lesion-centred (the CNNs' input)
    features: pd.DataFrame       # (N, F) φ(x), hand-crafted features
    labels: np.ndarray           # (N,) 0/1
    p_true: np.ndarray           # (N,) true P(label = 1 | image): the Bayes classifier
    truth: pd.DataFrame | None = None   # the generating scores: "handcrafted" H and "pattern" S

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int) -> "Cohort":
        """The first ``n`` patients (training sets of a learning curve are nested)."""
        if not 1 <= n <= len(self):
            raise ValueError(f"n: expected 1..{len(self)}, got {n}")
        truth = None if self.truth is None else self.truth.iloc[:n]
        return Cohort(self.crops[:n], self.features.iloc[:n], self.labels[:n], self.p_true[:n], truth)


def make_cohort(n: int, *, seed: int, size: int = 32, crop: int = 16, modality: str = "ct",
                pattern_share: float = 0.5, device="cpu") -> Cohort:
    """``n`` phantom patients as a :class:`Cohort` (crops, φ(x), labels, p_true)."""
    ph = phantoms.make_phantoms(n, size=size, modality=modality, seed=seed, pattern_share=pattern_share,
                                device=device)
    return Cohort(crops=preprocess.crop_around(ph.inputs, ph.masks, crop, with_mask=True),
                  features=classical.extract_features(ph.images, ph.masks, ph.spacing),
                  labels=ph.labels.cpu().numpy(), p_true=ph.p_true.cpu().numpy(),
                  truth=pd.DataFrame({k: ph.lesion[k].cpu().numpy() for k in ("handcrafted", "pattern")}))


def feature_correlations(cohort: Cohort) -> pd.DataFrame:
    """|Pearson r| of every hand-crafted feature with the two parts of the true logit:
    H (size, contrast, spiculation) and S (the internal pattern's sign)."""
    if cohort.truth is None:
        raise ValueError("cohort: expected a Cohort from make_cohort (with .truth), got one without")
    both = pd.concat([cohort.features.reset_index(drop=True), cohort.truth.reset_index(drop=True)], axis=1)
    corr = both.corr().loc[cohort.features.columns, list(cohort.truth.columns)].abs()
    return corr.rename(columns={"handcrafted": "|r| with H", "pattern": "|r| with S"}).round(3)


def plot_crops(cohort: Cohort, k: int = 6):
    """The middle slice of ``k`` lesion crops (image, mask outline) titled with label and p_true."""
    import matplotlib.pyplot as plt

    k = min(k, len(cohort))
    fig, axes = plt.subplots(1, k, figsize=(1.9 * k, 2.2), squeeze=False)
    mid = cohort.crops.shape[2] // 2
    for i, ax in enumerate(axes[0]):
        image, mask = cohort.crops[i, 0, mid].cpu(), cohort.crops[i, 1, mid].cpu()
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.contour(mask, levels=[0.5], colors="tab:orange", linewidths=0.8)
        ax.set_title(f"y={cohort.labels[i]}  p={cohort.p_true[i]:.2f}", fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# The pipelines
# ---------------------------------------------------------------------------------------------

def train_cnn(cohort: Cohort, *, steps: int = 100, lr: float = 1e-2, batch_size: int = 32, width: int = 8,
              seed: int = 0, device="cpu") -> torch.nn.Module:
    """The end-to-end pipeline: a 3D CNN on (image, mask) crops, trained on the labels with BCE.

    Every training set gets about the same number of optimiser ``steps`` (epochs = steps /
    batches per epoch), so a small set is seen many times, as it would be in practice.
    The training History is kept as ``model.history`` (``.table()``, ``.plot()``).
    """
    torch.manual_seed(seed)
    model = models.CNN3D(in_channels=cohort.crops.shape[1], width=width).to(device)
    batch_size = min(batch_size, len(cohort))
    epochs = math.ceil(steps / math.ceil(len(cohort) / batch_size))
    y = torch.as_tensor(cohort.labels, dtype=torch.float32)
    model.history = train.fit(model, (cohort.crops, y), loss="bce", epochs=epochs, lr=lr, batch_size=batch_size,
                              seed=seed, progress=False, augment=augment.random_flips, device=device)
    return model.eval()


def cnn_proba(model: torch.nn.Module, cohort: Cohort) -> np.ndarray:
    """P(label = 1) from a trained CNN: the sigmoid of its logit."""
    return train.predict(model, cohort.crops, proba=True).numpy()


def fit_predict(method: str, train_set: Cohort, test: Cohort, *, source_cnn=None, seed: int = 0,
                **cnn_kw) -> np.ndarray:
    """Train pipeline ``method`` (one of METHODS) on ``train_set``; return its P(label = 1) on ``test``."""
    if method in (CLASSICAL_LOGREG, CLASSICAL_SVM):
        f_w = classical.classical_model("logreg" if method == CLASSICAL_LOGREG else "svm")
        return f_w.fit(train_set.features.to_numpy(), train_set.labels).predict_proba(test.features.to_numpy())[:, 1]
    if method == DEEP_FEATURES:
        if source_cnn is None:
            raise ValueError("source_cnn: the deep-features pipeline needs a CNN trained on another task")
        pipe = classical.deep_feature_model(source_cnn, train_set.crops, train_set.labels)
        return pipe.predict_proba(test.crops)[:, 1]
    if method == CNN:
        return cnn_proba(train_cnn(train_set, seed=seed, **cnn_kw), test)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def scores(labels, proba) -> dict[str, float]:
    """AUC (ranking; higher is better) and Brier score (calibration too; lower is better)."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    return {"auc": float(roc_auc_score(labels, proba)), "brier": float(brier_score_loss(labels, proba))}


def bayes_ceiling(test: Cohort) -> dict[str, float]:
    """The best any pipeline can do on ``test`` in expectation: the scores of ``p_true`` itself."""
    return scores(test.labels, test.p_true)


# ---------------------------------------------------------------------------------------------
# The learning curve
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class LearningCurve:
    """Test AUC and Brier score of every pipeline, training-set size and seed, and the Bayes ceiling."""

    results: pd.DataFrame        # one row per (method, n, seed): auc, brier, confidence = mean |2p - 1|
    ceiling: dict[str, float]    # scores of p_true on the test set

    def table(self) -> pd.DataFrame:
        """Mean and standard deviation across seeds, one row per (method, n)."""
        return (self.results.groupby(["method", "n"], sort=False)[["auc", "brier", "confidence"]]
                .agg(["mean", "std"]).round(3))

    def per_seed(self, metric: str, method: str, n: int) -> np.ndarray:
        """The ``metric`` of ``method`` at size ``n``, one value per seed (for claims across seeds)."""
        r = self.results
        values = r[(r.method == method) & (r.n == n)].sort_values("seed")[metric].to_numpy()
        if len(values) == 0:
            raise ValueError(f"method, n: no results for {method!r} at n={n}")
        return values

    def plot(self):
        """AUC and Brier score against n (log scale): mean ± one standard deviation across seeds."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
        for ax, metric, better in zip(axes, ("auc", "brier"), ("higher", "lower")):
            for method, part in self.results.groupby("method", sort=False):
                stats = part.groupby("n")[metric].agg(["mean", "std"]).fillna(0.0)
                ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3,
                            label=method, color=COLORS.get(method))
            ax.axhline(self.ceiling[metric], ls="--", color="k", label="Bayes ceiling (p_true)")
            ax.set(xscale="log", xlabel="training patients n", ylabel=f"test {metric} ({better} is better)")
            ax.set_xticks(sorted(self.results.n.unique()), [str(n) for n in sorted(self.results.n.unique())])
            ax.minorticks_off()
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.suptitle("Classical radiomics vs end to end: mean ± sd over seeds")
        fig.tight_layout(rect=(0, 0.07, 1, 1))                 # room for the legend below
        return fig


def learning_curve(pools: list[Cohort], test: Cohort, sizes, *, methods=METHODS, source_cnn=None,
                   progress: bool = False, **cnn_kw) -> LearningCurve:
    """Every pipeline at every training-set size, once per pool (one pool per seed).

    ``pools[r]`` holds the training patients of repeat ``r``; size ``n`` trains on its first
    ``n`` (nested sets, as a growing study would collect). Returns a :class:`LearningCurve`.
    """
    sizes = sorted({int(n) for n in sizes})
    if not pools or sizes[0] < 2 or sizes[-1] > min(len(p) for p in pools):
        raise ValueError(f"sizes: expected sizes in [2, {min((len(p) for p in pools), default=0)}] "
                         f"(the smallest pool), got {sizes}")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods: expected names from {METHODS}, got {sorted(unknown)}")
    from tqdm.auto import tqdm

    jobs = [(seed, n, m) for seed in range(len(pools)) for n in sizes for m in methods]
    rows = []
    for seed, n, method in tqdm(jobs, desc="learning curve", disable=not progress, leave=False):
        proba = fit_predict(method, pools[seed].head(n), test, source_cnn=source_cnn, seed=seed, **cnn_kw)
        confidence = float(np.mean(np.abs(2 * proba - 1)))   # 0: always 0.5, 1: always 0 or 1
        rows.append({"method": method, "n": n, "seed": seed, **scores(test.labels, proba), "confidence": confidence})
    return LearningCurve(pd.DataFrame(rows), bayes_ceiling(test))


# ---------------------------------------------------------------------------------------------
# The METRICS #5 checker as a small form
# ---------------------------------------------------------------------------------------------

STAGE_FLAGS = ("deep", "trained_jointly", "predicts", "exports_tabular_features", "hand_crafted", "preprocessing")


def stages_table(stages) -> pd.DataFrame:
    """One row per stage with the fields the rule reads (for display)."""
    rows = [{"stage": s.name, "reads": s.reads, **{f: getattr(s, f) for f in STAGE_FLAGS},
             "frozen": s.frozen, "extra_inputs": ", ".join(s.extra_inputs)} for s in stages]
    return pd.DataFrame(rows)


def stage_from_values(values: dict) -> e2e.Stage:
    """A Stage from the form's values (``extra_inputs`` as comma-separated text)."""
    values = dict(values)
    extra = values.pop("extra_inputs", "") or ""
    return e2e.Stage(**values, extra_inputs=tuple(x.strip() for x in extra.split(",") if x.strip()))


def _stage_row():
    import ipywidgets as w

    fields = {"name": w.Text(placeholder="what it is, e.g. 3D CNN", layout=w.Layout(width="190px")),
              "reads": w.Dropdown(options=e2e.READS, layout=w.Layout(width="110px")),
              **{f: w.Checkbox(description=f.replace("_", " "), indent=False, layout=w.Layout(width="auto"))
                 for f in STAGE_FLAGS},
              "frozen": w.Dropdown(options=e2e.FROZEN, layout=w.Layout(width="80px")),
              "extra_inputs": w.Text(placeholder="extra inputs: sex, age", layout=w.Layout(width="150px"))}
    row = w.HBox(list(fields.values()), layout=w.Layout(flex_flow="row wrap"))
    row.fields = fields
    return row


def metrics_form(examples=None):
    """An ipywidgets form: pick one of ``rl.e2e.EXAMPLES`` or describe your own pipeline stage by stage,
    then read the METRICS #5 verdict and its reasons. Taught in notebook 01 ("Is it end to end?")."""
    import ipywidgets as w
    from IPython.display import Markdown, display

    examples = e2e.EXAMPLES if examples is None else examples
    mine = "(my own pipeline)"
    pick = w.Dropdown(options=[mine, *examples], description="pipeline", layout=w.Layout(width="560px"))
    rows = w.VBox([_stage_row()])
    add, drop, go = w.Button(description="add stage"), w.Button(description="remove last"), \
        w.Button(description="assess", button_style="primary")
    out = w.Output()

    def show(*_):
        out.clear_output()
        with out:
            try:
                if pick.value in examples:
                    stages, expected = examples[pick.value]
                    display(stages_table(stages))
                    print(f"expected: {'Yes' if expected else 'No'}")
                else:
                    stages = [stage_from_values({k: v.value for k, v in r.fields.items()}) for r in rows.children]
                box.last = e2e.assess(stages)
                display(Markdown(box.last._repr_markdown_()))
            except (TypeError, ValueError) as err:   # the rule's own validation message
                box.last = f"⚠ {err}"
                print(box.last)

    add.on_click(lambda _: setattr(rows, "children", (*rows.children, _stage_row())))
    drop.on_click(lambda _: setattr(rows, "children", rows.children[:-1] or rows.children))
    go.on_click(show)
    pick.observe(show, names="value")
    box = w.VBox([pick, w.HTML(f"<b>Your stages</b>, in order (used when the pipeline is '{mine}'):"),
                  rows, w.HBox([add, drop, go]), out])
    box.last = None   # the last Verdict, or the validation message (for tests)
    return box
