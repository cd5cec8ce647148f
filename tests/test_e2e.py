"""rl.e2e: the METRICS condition #5 checker."""
import pytest

from radlab.e2e import EXAMPLES, Stage, Verdict, assess, validate


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples_get_their_expected_verdict(name):
    stages, expected = EXAMPLES[name]
    verdict = assess(stages)
    assert isinstance(verdict, Verdict)
    assert verdict.end_to_end is expected, (name, verdict)
    assert verdict.reasons and all(isinstance(r, str) and r for r in verdict.reasons)
    assert ("Yes" if expected else "No") in repr(verdict)
    assert ("Yes" if expected else "No") in verdict._repr_markdown_()


def test_the_issue_examples_are_all_there():
    expected = {"CNN on 2D / 2.5D / 3D video frames": True,
                "segmentation network then classifier, optimised jointly": True,
                "ResNet-34 with sex as an extra input": True,
                "transfer learning: early layers frozen, last layers fine-tuned": True,
                "hand-crafted features + SVM": False,
                "ResNet-50 deep features + logistic regression": False,
                "hand-crafted + deep features fused in a tabular model": False,
                "modular system with one end-to-end CNN": True}
    assert {k: v[1] for k, v in EXAMPLES.items()} == expected


@pytest.mark.parametrize("name, words", [
    ("hand-crafted features + SVM", "hand-crafted"),
    ("ResNet-50 deep features + logistic regression", "traditional ML model"),
    ("hand-crafted + deep features fused in a tabular model", "tabular method"),
    ("transfer learning: early layers frozen, last layers fine-tuned", "Frozen"),
    ("ResNet-34 with sex as an extra input", "sex"),
    ("modular system with one end-to-end CNN", "any end-to-end DL component"),
    ("modular system with one end-to-end CNN", "preprocessing"),
])
def test_reasons_use_the_rules_words(name, words):
    assert any(words in r for r in assess(EXAMPLES[name][0]).reasons)


def test_single_cnn_is_end_to_end_and_lists_its_component():
    v = assess([Stage("3D CNN", deep=True, trained_jointly=True, predicts=True)])
    assert v.end_to_end and v.components == ["3D CNN"] and bool(v)


@pytest.mark.parametrize("stages", [
    # a deep MLP on a radiomics feature table: deep, but not from the image
    [Stage("pyradiomics", hand_crafted=True, exports_tabular_features=True),
     Stage("deep MLP", deep=True, reads="features", trained_jointly=True, predicts=True)],
    # a pretrained network used as is (nothing trained on the task)
    [Stage("ImageNet ResNet used as is", deep=True, frozen="all", predicts=True)],
    # a CNN trained end to end, but only its features are used, by a classical model
    [Stage("CNN features", deep=True, trained_jointly=True, exports_tabular_features=True),
     Stage("SVM", reads="features", trained_jointly=True, predicts=True)],
])
def test_not_end_to_end_cases(stages):
    v = assess(stages)
    assert not v.end_to_end and v.components == [] and v.reasons


def test_a_cnn_that_predicts_and_also_exports_features_still_counts():
    v = assess([Stage("CNN", deep=True, trained_jointly=True, predicts=True, exports_tabular_features=True),
                Stage("radiomics", hand_crafted=True, exports_tabular_features=True),
                Stage("fusion model", reads="features", trained_jointly=True, predicts=True)])
    assert v.end_to_end


@pytest.mark.parametrize("kwargs, error, words", [
    ({"name": ""}, TypeError, "name"),
    ({"name": 3}, TypeError, "name"),
    ({"deep": "yes"}, TypeError, "deep"),
    ({"trained_jointly": 1}, TypeError, "trained_jointly"),
    ({"reads": "pixels"}, ValueError, "reads"),
    ({"frozen": "half"}, ValueError, "frozen"),
    ({"extra_inputs": "sex"}, TypeError, "extra_inputs"),
    ({"deep": True, "hand_crafted": True, "exports_tabular_features": True}, ValueError, "not both"),
    ({"hand_crafted": True, "trained_jointly": True, "exports_tabular_features": True}, ValueError, "learns nothing"),
    ({"hand_crafted": True}, ValueError, "exports a feature table"),
    ({"preprocessing": True, "deep": True}, ValueError, "preprocessing"),
    ({"frozen": "some"}, ValueError, "deep networks only"),
    ({"deep": True, "frozen": "all", "trained_jointly": True}, ValueError, "all layers frozen"),
    ({"extra_inputs": ("sex",)}, ValueError, "extra_inputs"),
    ({"predicts": False}, ValueError, "outputs something"),
])
def test_malformed_stage_is_rejected(kwargs, error, words):
    args = {"name": "stage", "predicts": True, **kwargs}
    with pytest.raises(error, match=words):
        Stage(**args)


cnn = Stage("CNN", deep=True, trained_jointly=True, predicts=True)
features = Stage("radiomics", hand_crafted=True, exports_tabular_features=True)


@pytest.mark.parametrize("stages, error, words", [
    ([], TypeError, "non-empty list"),
    (cnn, TypeError, "single Stage"),
    ("CNN", TypeError, "list of Stage"),
    ([cnn, "SVM"], TypeError, r"stages\[1\]"),
    ([Stage("SVM", reads="features", predicts=True)], ValueError, "no earlier stage exports"),
    ([Stage("rule", reads="predictions", predicts=True)], ValueError, "no earlier stage predicts"),
    ([cnn, features], ValueError, "last stage"),
])
def test_malformed_pipeline_is_rejected(stages, error, words):
    with pytest.raises(error, match=words):
        assess(stages)
    with pytest.raises(error, match=words):
        validate(stages)


# ---------------------------------------------------------------------------------------------
# radlab.experiments.end_to_end (notebook 01): crops, the learning curve, the METRICS form
# ---------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from radlab.experiments import end_to_end as E  # noqa: E402


def test_lesion_crops_with_mask_are_centred_on_the_mask():
    from radlab.preprocess import crop_around
    inputs = torch.rand(3, 1, 20, 20, 20)
    masks = torch.zeros(3, 1, 20, 20, 20, dtype=torch.bool)
    centres = [(10, 10, 10), (3, 4, 17), (16, 2, 9)]          # the last two touch the border
    for i, (z, y, x) in enumerate(centres):
        masks[i, 0, z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = True
    crops = crop_around(inputs, masks, 8, with_mask=True)
    assert crops.shape == (3, 2, 8, 8, 8)
    assert torch.equal(crops[0, 1, 3:6, 3:6, 3:6], torch.ones(3, 3, 3))   # mask in the middle
    assert all(crops[i, 1].sum() == 27 for i in range(3))                   # whole lesion kept at borders
    assert torch.equal(crops[0, 0], inputs[0, 0, 6:14, 6:14, 6:14])
    with pytest.raises(ValueError, match="edge"):
        crop_around(inputs, masks, 40, with_mask=True)
    with pytest.raises(ValueError, match="mask"):
        crop_around(inputs[0], masks[0], 8)


def _toy_cohort(n, seed):
    """Separable toy data: bright lesions are class 1; features see the brightness too."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < 0.5).long()
    crops = torch.rand(n, 2, 8, 8, 8, generator=g) * 0.2
    crops[:, 0, 2:6, 2:6, 2:6] += 0.5 * labels[:, None, None, None]
    crops[:, 1, 2:6, 2:6, 2:6] = 1.0
    feats = pd.DataFrame({"firstorder_mean": crops[:, 0, 2:6, 2:6, 2:6].mean((1, 2, 3)).numpy(),
                          "noise": torch.rand(n, generator=g).numpy()})
    p_true = 0.05 + 0.9 * labels.numpy()
    truth = pd.DataFrame({"handcrafted": labels.numpy().astype(float), "pattern": np.zeros(n)})
    return E.Cohort(crops, feats, labels.numpy(), p_true, truth)


def test_learning_curve_table_claims_and_plot():
    pools, test = [_toy_cohort(40, s) for s in (1, 2)], _toy_cohort(60, 3)
    source = E.train_cnn(_toy_cohort(40, 4), steps=5)
    lc = E.learning_curve(pools, test, (20, 40), source_cnn=source, steps=5)
    assert len(lc.results) == 2 * 2 * len(E.METHODS)
    assert set(lc.results.columns) >= {"method", "n", "seed", "auc", "brier", "confidence"}
    assert lc.per_seed("auc", E.CLASSICAL_LOGREG, 40).shape == (2,)
    assert lc.per_seed("auc", E.CLASSICAL_LOGREG, 40).min() > 0.9      # the toy task is easy
    assert lc.ceiling["auc"] == 1.0 and 0 < lc.ceiling["brier"] < 0.01
    assert lc.table().shape[0] == 2 * len(E.METHODS)
    fig = lc.plot()
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="sizes"):
        E.learning_curve(pools, test, (20, 80))
    with pytest.raises(ValueError, match="methods"):
        E.learning_curve(pools, test, (20,), methods=("xgboost",))
    with pytest.raises(ValueError, match="source_cnn"):
        E.fit_predict(E.DEEP_FEATURES, pools[0], test)


def test_feature_correlations_need_the_truth():
    c = _toy_cohort(30, 0)
    corr = E.feature_correlations(c)
    assert corr.loc["firstorder_mean", "|r| with H"] > 0.9
    with pytest.raises(ValueError, match="cohort"):
        E.feature_correlations(E.Cohort(c.crops, c.features, c.labels, c.p_true))


def test_metrics_form_assesses_an_example_and_a_student_pipeline():
    form = E.metrics_form()
    pick, rows, buttons = form.children[0], form.children[2], form.children[3]
    pick.value = "hand-crafted features + SVM"
    assert form.last.end_to_end is False
    pick.value = "(my own pipeline)"
    row = rows.children[0].fields
    row["name"].value, row["deep"].value, row["trained_jointly"].value, row["predicts"].value = "CNN", True, True, True
    buttons.children[2].click()                                   # assess
    assert form.last.end_to_end is True
    row["hand_crafted"].value = True                              # a deep *and* hand-crafted stage
    buttons.children[2].click()
    assert "not both" in form.last
    buttons.children[0].click()
    assert len(rows.children) == 2
    buttons.children[1].click()
    buttons.children[1].click()                                   # never below one row
    assert len(rows.children) == 1


def test_stage_from_values_splits_extra_inputs():
    s = E.stage_from_values({"name": "ResNet", "deep": True, "trained_jointly": True, "predicts": True,
                             "extra_inputs": "sex, age ,"})
    assert s.extra_inputs == ("sex", "age")
    assert E.stages_table([s]).loc[0, "extra_inputs"] == "sex, age"
