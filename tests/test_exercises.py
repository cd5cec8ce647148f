"""Exercise base classes (radlab.exercises) and every notebook's exercises.

For each exercise in ``radlab/exercises/nb*.py``: the reference answer passes, the
starter value is "not attempted", each registered wrong answer fails with its own
message, and no message gives the solution away.
"""
import importlib
import pkgutil

import numpy as np
import pytest
import torch

import radlab.exercises as rex
from radlab.exercises import (ChoiceExercise, FunctionExercise, NumberExercise, ThoughtExercise,
                              compare, exercises_in)


# ---------------------------------------------------------------- a small demo set

def _normalise(x):
    return (x - x.mean()) / x.std()


def _inputs():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 5, generator=g) * 3 + 2,), (torch.rand(2, 3, 3, generator=g),)]


demo_fn = FunctionExercise(
    "q1", "Write normalise(x): subtract the mean, divide by the standard deviation.",
    reference=_normalise, inputs=_inputs,
    wrong=[(lambda x: x - x.mean(), "you subtracted the mean but did not divide by the standard deviation")],
    hints=["x.mean() and x.std()", "(x - mean) / std"])
demo_num = NumberExercise(
    "q2", "Volume of a 10 x 10 x 10 voxel cube at 2 mm spacing, in mL?", answer=8.0,
    wrong=[(1.0, "that is the volume at 1 mm spacing: multiply by the voxel volume")],
    solution="1000 voxels x 8 mm³ = 8000 mm³ = 8 mL")
demo_choice = ChoiceExercise(
    "q3", "Which window shows lung parenchyma best?",
    options={"a": "-100..250 HU", "b": "-1000..200 HU", "c": "-200..1200 HU"}, answer="b",
    why={"a": "soft-tissue window: air and lung saturate to black", "c": "bone window: lung is nearly black"})
demo_thought = ThoughtExercise("q4", "Why is a 5 mm slice spacing a problem for 3D CNNs?",
                               solution="Voxels are anisotropic ...")


def _stub(x):
    """Normalise x."""
    ...


def _not_implemented(x):
    raise NotImplementedError("your code here")


def _forgot_return(x):
    y = (x - x.mean()) / x.std()  # noqa: F841


def test_function_exercise_reference_passes(capsys):
    assert demo_fn.check(_normalise)
    assert capsys.readouterr().out.startswith("✓ q1")


@pytest.mark.parametrize("starter", [..., None, _stub, _not_implemented])
def test_function_exercise_starter_is_not_attempted(starter, capsys):
    assert demo_fn.check(starter) is False
    out = capsys.readouterr().out
    assert out.startswith("○ q1: not attempted") and "✗" not in out


@pytest.mark.parametrize("answer, words", [
    (lambda x: x - x.mean(), "did not divide by the standard deviation"),
    (_forgot_return, "did you forget `return`"),
    (lambda x: 2 * (x - x.mean()) / x.std(), "constant factor of 2"),
    (lambda x: -(x - x.mean()) / x.std(), "wrong sign"),
    (lambda x: ((x - x.mean()) / x.std()).flatten(), "missing reshape or squeeze"),
    (lambda x: ((x - x.mean()) / x.std()).numpy(), "numpy array"),
    (lambda x: ((x - x.mean()) / x.std()).long(), "expected floating point"),
    (lambda x: (x - x.mean()) / (x - x).std(), "NaN"),
    (lambda x: x.sub_(x.mean()).div_(x.std()), "in place"),
    (lambda x: x[99], "raised IndexError"),
    (lambda x: torch.tanh((x - x.mean()) / x.std()), "differs from the reference"),
    (3.0, "expected a function"),
])
def test_function_exercise_wrong_answers_get_specific_messages(answer, words, capsys):
    assert demo_fn.check(answer) is False
    out = capsys.readouterr().out
    assert out.startswith("✗ q1") and words in out, out


def test_number_exercise():
    assert demo_num.check(8.0) and demo_num.check(torch.tensor(8.02)) and demo_num.check(np.float32(8))
    assert demo_num.check(...) is False and "not attempted" in demo_num.last_message
    for answer, words in [(1.0, "1 mm spacing"), (8000.0, "factor of 1000"), (-8.0, "sign"),
                          (9.5, "too high"), (2.0, "too low"), ("8", "expected a single number"),
                          (float("nan"), "finite"), (True, "single number"), (torch.ones(3), "single number")]:
        assert demo_num.check(answer) is False, answer
        assert words in demo_num.last_message, (answer, demo_num.last_message)
        assert "8 mL" not in demo_num.last_message


def test_number_exercise_computes_a_callable_answer_once():
    calls = []
    ex = NumberExercise("q9", "?", answer=lambda: calls.append(1) or 0.5, rtol=0.01)
    assert ex.check(0.501) and ex.check(0.5) and len(calls) == 1


def test_choice_exercise(capsys):
    for right in ("b", "B", " (b) ", "-1000..200 HU"):
        assert demo_choice.check(right), right
    assert demo_choice.check("a") is False and "soft-tissue" in demo_choice.last_message
    assert demo_choice.check("e") is False and "expected one of 'a', 'b', 'c'" in demo_choice.last_message
    assert "(b) -1000..200 HU" in repr(demo_choice)
    with pytest.raises(ValueError, match="answer: expected one of"):
        ChoiceExercise("q", "?", options={"a": "x"}, answer="z")


def test_thought_exercise_has_no_check_but_a_solution(capsys):
    assert demo_thought.check("anything") is False
    assert "no automatic check" in capsys.readouterr().out
    demo_thought.solution()
    assert "anisotropic" in capsys.readouterr().out


def test_hints_and_solution_are_printed_on_request(capsys):
    demo_fn.hint()
    assert "Hint 1/2" in capsys.readouterr().out
    demo_fn.hint(5)
    assert "Hint 2/2" in capsys.readouterr().out
    demo_fn.solution()
    assert "def _normalise" in capsys.readouterr().out  # a reference function is shown as source
    with pytest.raises(ValueError, match="level: expected an int >= 1"):
        demo_fn.hint(0)


@pytest.mark.parametrize("bad, match", [("1q", "name: expected an identifier"), (3, "name: expected")])
def test_bad_names_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        NumberExercise(bad, "?", answer=1.0)


def test_compare_scalars_and_sequences():
    assert compare(torch.tensor(0.5), 0.5) is None
    assert "single number" in compare("x", 0.5)
    assert "2 items" in compare((1.0,), (1.0, 2.0))
    assert "item 1" in compare((1.0, 3.0), (1.0, 2.0))
    assert "boolean mask" in compare(torch.ones(3), torch.ones(3, dtype=torch.bool))


# ---------------------------------------------------------------- every notebook's exercises

def _notebook_exercises():
    for info in pkgutil.iter_modules(rex.__path__):
        if info.name.startswith("nb"):
            module = importlib.import_module(f"radlab.exercises.{info.name}")
            for ex in exercises_in(module):
                yield pytest.param(ex, id=f"{info.name}.{ex.name}")


@pytest.mark.parametrize("ex", list(_notebook_exercises()))
def test_notebook_exercise(ex, capsys):
    ex.hint()
    ex.solution()
    assert repr(ex).startswith(ex.name)
    assert ex.check(...) is False
    if isinstance(ex, ThoughtExercise):
        return
    assert "not attempted" in ex.last_message
    reference, wrongs = ex.examples()
    assert ex.check(reference), ex.last_message
    assert wrongs, f"{ex.name}: register at least one common wrong answer with its message"
    for answer, message in wrongs:
        assert ex.check(answer) is False
        assert message in ex.last_message
        if isinstance(ex, NumberExercise):
            assert f"{ex.answer:.4g}" not in ex.last_message  # never gives the value away


def test_nb00_accepts_equivalent_answers():
    from radlab import preprocess
    from radlab.exercises import nb00
    assert nb00.q1.check(preprocess.ct_window(torch.tensor(150.0)))              # a 0-d tensor is a number
    assert nb00.q3.check(lambda x, mask: (x - x[mask].mean()) / x[mask].std())   # unbiased std is fine too
    assert nb00.q3.check(lambda x, mask: preprocess.zscore(x, mask)) is False    # zeroes the air: says so
    assert "differs" in nb00.q3.last_message or "constant" in nb00.q3.last_message
    assert nb00.q5.check("ph.p_true")
