"""METRICS condition #5: "Does the study include end-to-end deep learning?"

METRICS (Kocak et al. 2024, Insights Imaging 15:8; CC BY) scores a radiomics study
"Yes" when "a DL model processes input data (e.g., images) directly to generate
predictions or classifications without manual feature extraction, meaning it learns
directly from input to output". Its scoring advice adds three points:

1. *Any component is enough.* "Evaluators should focus on the presence of any
   end-to-end DL component rather than requiring the entire system to be fully
   end-to-end": a modular system with one end-to-end CNN scores "Yes".
2. *Fused models are tabular.* Handcrafted + deep features fused into one model:
   "extracting deep features disrupts the unified input-to-output process", "No".
3. *Deep features + classical model is "No"* (their Example #6): the final prediction
   comes from a traditional ML model, which "breaks the continuity".

Frozen or pretrained layers do not break it ("Even with frozen layers or transfer
learning, the system remains end-to-end", Example #4), nor does a non-image input
such as sex entering the network (Example #3), nor does fixed preprocessing: the test
names manual feature extraction, and the chapter notes that end to end "does not mean
no preprocessing".

Describe a pipeline as a list of :class:`Stage`, in order, and call :func:`assess`.
Taught in ``notebooks/01_end_to_end_vs_classical.ipynb`` ("Is it end to end?").
"""
from __future__ import annotations

import dataclasses

READS = ("image", "features", "predictions")
FROZEN = ("none", "some", "all")
_RULE = "METRICS condition #5"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of a radiomics pipeline, as the rule sees it."""

    name: str                               # what it is, e.g. "ResNet-34, ImageNet-pretrained"
    deep: bool = False                      # a deep network (CNN, ViT, U-Net, ...)
    reads: str = "image"                    # its input: "image" (raw, preprocessed or a segmented image),
                                            # "features" (a feature table), "predictions" (another model's output)
    trained_jointly: bool = False           # its weights are optimised by back-propagating the loss of the
                                            # output it produces (alone or together with the stages it feeds)
    predicts: bool = False                  # it outputs a prediction: class, score, regression, segmentation
    exports_tabular_features: bool = False  # its outputs leave as a feature table for another model
    hand_crafted: bool = False              # a fixed, manually designed feature extractor φ(x) (e.g. pyradiomics)
    preprocessing: bool = False             # fixed image preprocessing (window, resample, normalise): learns nothing
    frozen: str = "none"                    # deep networks: "none", "some" (e.g. early layers) or "all" layers frozen
    extra_inputs: tuple[str, ...] = ()      # non-image inputs a deep network takes alongside the image, e.g. ("sex",)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise TypeError(f"name: expected a non-empty str saying what the stage is, got {self.name!r}")
        for field in ("deep", "trained_jointly", "predicts", "exports_tabular_features", "hand_crafted",
                      "preprocessing"):
            value = getattr(self, field)
            if not isinstance(value, bool):
                raise TypeError(f"{field}: expected True or False for stage {self.name!r}, got {value!r}")
        if self.reads not in READS:
            raise ValueError(f"reads: expected one of {READS} for stage {self.name!r}, got {self.reads!r}")
        if self.frozen not in FROZEN:
            raise ValueError(f"frozen: expected one of {FROZEN} for stage {self.name!r}, got {self.frozen!r}")
        if not isinstance(self.extra_inputs, tuple) or not all(isinstance(x, str) for x in self.extra_inputs):
            raise TypeError(f"extra_inputs: expected a tuple of str for stage {self.name!r}, got {self.extra_inputs!r}")
        self._check_consistent()

    def _check_consistent(self):
        problems = []
        if self.deep and self.hand_crafted:
            problems.append("a stage is either a deep network or a hand-crafted extractor, not both")
        if self.hand_crafted and (self.trained_jointly or self.reads != "image" or not self.exports_tabular_features):
            problems.append("a hand-crafted extractor reads the image, learns nothing and exports a feature table")
        if self.preprocessing and (self.deep or self.hand_crafted or self.predicts or self.trained_jointly
                                   or self.exports_tabular_features or self.reads != "image"):
            problems.append("fixed preprocessing reads an image, learns nothing and outputs an image")
        if self.frozen != "none" and not self.deep:
            problems.append("frozen layers apply to deep networks only")
        if self.frozen == "all" and self.trained_jointly:
            problems.append("a network with all layers frozen cannot be trained with the objective")
        if self.extra_inputs and not self.deep:
            problems.append("extra_inputs describes non-image inputs of a deep network")
        if not (self.predicts or self.exports_tabular_features or self.preprocessing):
            problems.append("every stage outputs something: set predicts, exports_tabular_features or preprocessing")
        if problems:
            raise ValueError(f"stage {self.name!r}: " + "; ".join(problems))


@dataclasses.dataclass
class Verdict:
    """The answer to METRICS #5 and the reasons, in the rule's words."""

    end_to_end: bool
    reasons: list[str]
    components: list[str] = dataclasses.field(default_factory=list)   # the end-to-end DL stages found

    @property
    def answer(self) -> str:
        return "Yes" if self.end_to_end else "No"

    def __bool__(self) -> bool:
        return self.end_to_end

    def __repr__(self) -> str:
        lines = [f"Verdict({_RULE} end-to-end deep learning: {self.answer})"]
        return "\n".join(lines + [f"  - {r}" for r in self.reasons])

    def _repr_markdown_(self) -> str:
        icon = "✅" if self.end_to_end else "❌"
        head = f"**{_RULE} — does the pipeline include end-to-end deep learning? {icon} {self.answer}**\n\n"
        return head + "\n".join(f"- {r}" for r in self.reasons)


def _is_component(s: Stage) -> bool:
    """An end-to-end DL component: a deep network reading the image, trained with its objective, predicting."""
    return s.deep and s.reads == "image" and s.trained_jointly and s.predicts


def validate(stages) -> list[Stage]:
    """Check that ``stages`` is a non-empty list of Stage that wire up; returns it as a list."""
    if isinstance(stages, Stage):
        raise TypeError("stages: expected a list of Stage, got a single Stage (wrap it in [ ])")
    if not isinstance(stages, (list, tuple)) or not stages:
        raise TypeError(f"stages: expected a non-empty list of Stage, got {stages!r}")
    for i, s in enumerate(stages):
        if not isinstance(s, Stage):
            raise TypeError(f"stages[{i}]: expected a Stage, got {type(s).__name__}")
    for i, s in enumerate(stages):
        before = stages[:i]
        if s.reads == "features" and not any(b.exports_tabular_features for b in before):
            raise ValueError(f"stages[{i}] {s.name!r} reads a feature table, but no earlier stage exports one")
        if s.reads == "predictions" and not any(b.predicts for b in before):
            raise ValueError(f"stages[{i}] {s.name!r} reads predictions, but no earlier stage predicts")
    if not stages[-1].predicts:
        raise ValueError(f"stages[-1] {stages[-1].name!r}: expected the last stage to produce the prediction "
                         "(predicts=True)")
    return list(stages)


def assess(stages) -> Verdict:
    """Apply METRICS condition #5 to a pipeline given as a list of :class:`Stage`, in order.

    "Yes" when some stage is an end-to-end DL component: a deep network that reads the image
    and produces a prediction, trained with the objective of that prediction. Otherwise "No",
    with the reason the rule gives (hand-crafted features, deep features into a classical model,
    a fusion of both). Taught in notebook 01 ("Is it end to end?").
    """
    stages = validate(stages)
    components = [s for s in stages if _is_component(s)]
    reasons = [_component_reason(s) for s in components]
    if components:
        reasons += _yes_details(stages, components)
    else:
        reasons += _no_reasons(stages)
    return Verdict(bool(components), reasons, [s.name for s in components])


def _component_reason(s: Stage) -> str:
    reason = (f"'{s.name}' is a deep network that processes the image directly and is trained with the "
              f"objective of its own prediction: an end-to-end DL component ({_RULE}: a DL model that "
              "'learns directly from input to output', without manual feature extraction).")
    if s.frozen == "some":
        reason += (" Frozen or pretrained layers do not change this: the network still connects input to "
                   "output in one training process (METRICS condition #5, Example #4, transfer learning).")
    if s.extra_inputs:
        reason += (f" Its non-image input ({', '.join(s.extra_inputs)}) enters the network and is learned "
                   "together with the image (METRICS condition #5, Example #3, ResNet-34 with sex).")
    return reason


def _yes_details(stages: list[Stage], components: list[Stage]) -> list[str]:
    reasons = []
    if len(components) > 1:
        reasons.append("Several deep stages, each trained end to end: a modular system, which still meets the "
                       "condition (METRICS condition #5, Example #2, segmentation then classification "
                       "optimised together).")
    others = [s.name for s in stages if s not in components and not s.preprocessing]
    if others:
        reasons.append(f"The rest of the pipeline ({', '.join(others)}) is not end to end, which the rule allows: "
                       "evaluators look for the presence of any end-to-end DL component rather than requiring "
                       "the whole system to be end to end.")
    reasons += _preprocessing_reasons(stages)
    return reasons


def _preprocessing_reasons(stages: list[Stage]) -> list[str]:
    fixed = [s.name for s in stages if s.preprocessing]
    if not fixed:
        return []
    return [f"Fixed preprocessing ({', '.join(fixed)}) learns nothing and extracts no features; the test "
            "concerns manual feature extraction, and end to end does not mean no preprocessing (the chapter)."]


def _no_reasons(stages: list[Stage]) -> list[str]:
    hand = [s.name for s in stages if s.hand_crafted]
    deep_export = [s.name for s in stages if s.deep and s.exports_tabular_features]
    final = stages[-1]
    reasons = []
    if hand and deep_export:
        reasons.append(f"Hand-crafted ({', '.join(hand)}) and deep features ({', '.join(deep_export)}) are fused "
                       f"into '{final.name}': a fused model is a tabular method, because extracting deep features "
                       f"disrupts the unified input-to-output process ({_RULE}, fused models: 'No').")
    elif hand:
        reasons.append(f"'{', '.join(hand)}' extracts hand-crafted features, so the model does not learn directly "
                       f"from the images; manual feature extraction breaks the end-to-end process "
                       f"({_RULE}, its Example #5, pyradiomics features + SVM).")
    elif deep_export:
        reasons.append(f"'{', '.join(deep_export)}' only extracts deep features and '{final.name}' makes the "
                       f"prediction from them: the final classification by a traditional ML model breaks the "
                       f"continuity of end-to-end deep learning ({_RULE}, its Example #6, ResNet-50 features + "
                       "logistic regression).")
    for s in stages:
        if s.deep and s.reads != "image" and not s.preprocessing:
            reasons.append(f"'{s.name}' is deep but reads {s.reads}, not the image: it does not learn from input "
                           "to output.")
        elif s.deep and s.reads == "image" and s.predicts and not s.trained_jointly:
            reasons.append(f"'{s.name}' reads the image and predicts, but is not trained with the objective of its "
                           "prediction (all layers frozen / used as is), so nothing is learned end to end.")
    if not reasons:
        reasons.append(f"No stage is a deep network that reads the image and is trained to make its own "
                       f"prediction ({_RULE}).")
    return reasons + _preprocessing_reasons(stages)


# ---------------------------------------------------------------------------------------------
# The standard examples (METRICS #5 and the course), name -> (stages, expected answer)
# ---------------------------------------------------------------------------------------------

def _cnn(name, **kw):
    return Stage(name, deep=True, trained_jointly=True, predicts=True, **kw)


EXAMPLES: dict[str, tuple[list[Stage], bool]] = {
    # METRICS Example #1: 2D (single frame), 2.5D (stacked frames) and 3D CNNs on angiography videos
    "CNN on 2D / 2.5D / 3D video frames": ([
        Stage("frame extraction and cropping", preprocessing=True),
        _cnn("Xception / stacked-Xception / Inception-3D, pretrained, fine-tuned on the frames"),
        Stage("rule: class change before vs after thrombectomy = reperfusion", reads="predictions",
              predicts=True),
    ], True),
    # METRICS Example #2: DeepLabV3+ then a CNN classifier, losses weighted and optimised together
    "segmentation network then classifier, optimised jointly": ([
        _cnn("DeepLabV3+ (ResNet-101) lymph-node segmentation"),
        _cnn("CNN metastasis classifier on the segmented image"),
    ], True),
    # METRICS Example #3
    "ResNet-34 with sex as an extra input": ([
        _cnn("ResNet-34, ImageNet-pretrained, L1 loss on age", extra_inputs=("sex",)),
    ], True),
    # METRICS Example #4
    "transfer learning: early layers frozen, last layers fine-tuned": ([
        _cnn("DenseNet-121, ImageNet-pretrained, early layers frozen, new head", frozen="some"),
    ], True),
    # METRICS Example #5 (hypothetical "No")
    "hand-crafted features + SVM": ([
        Stage("pyradiomics features in the tumour ROI", hand_crafted=True, exports_tabular_features=True),
        Stage("SVM", reads="features", trained_jointly=True, predicts=True),
    ], False),
    # METRICS Example #6 (hypothetical "No")
    "ResNet-50 deep features + logistic regression": ([
        Stage("ResNet-50, ImageNet-pretrained, frozen feature extractor", deep=True, frozen="all",
              exports_tabular_features=True),
        Stage("logistic regression", reads="features", trained_jointly=True, predicts=True),
    ], False),
    # METRICS scoring advice: fused hand-crafted + deep features are a tabular method
    "hand-crafted + deep features fused in a tabular model": ([
        Stage("pyradiomics features", hand_crafted=True, exports_tabular_features=True),
        Stage("CNN penultimate-layer features", deep=True, trained_jointly=True, exports_tabular_features=True),
        Stage("feature selection (LASSO) + random forest", reads="features", trained_jointly=True, predicts=True),
    ], False),
    # METRICS scoring advice: any end-to-end DL component is enough
    "modular system with one end-to-end CNN": ([
        Stage("resampling to 1 mm, CT window", preprocessing=True),
        _cnn("3D U-Net lesion segmentation, trained end to end with Dice loss"),
        Stage("pyradiomics features in the predicted mask", hand_crafted=True, exports_tabular_features=True),
        Stage("Cox model on the features", reads="features", trained_jointly=True, predicts=True),
    ], True),
}
