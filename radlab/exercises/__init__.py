"""Exercises with ``.check(answer)``, ``.hint()`` and ``.solution()`` (the Kaggle learntools pattern).

Each notebook has a module ``radlab/exercises/nbXX.py`` defining ``q1``, ``q2``, ...
from the classes here; its Exercises section reads::

    from radlab.exercises import nb00 as ex
    ex.q1                      # shows the question
    answer = ...               # the starter: checking it says "not attempted yet"
    ex.q1.check(answer)        # ✓ / ✗ with a specific message, returns True / False
    ex.q1.hint()               # ex.q1.hint(2) for the next hint
    ex.q1.solution()           # only on request

Kinds: :class:`FunctionExercise` calls the student's function on hidden inputs
and compares with a reference; :class:`NumberExercise` compares a number within
a tolerance; :class:`ChoiceExercise` checks one option; :class:`ThoughtExercise`
has no check, its ``.solution()`` gives the discussion. Each can register common
wrong answers with the message that explains them; generic messages cover the rest
(returns None, wrong shape or dtype, off by a constant factor, wrong sign, units).
A message never contains the solution.
"""
from __future__ import annotations

import ast
import inspect
import math
import textwrap
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["NotAttempted", "Incorrect", "Exercise", "FunctionExercise", "NumberExercise",
           "ChoiceExercise", "ThoughtExercise", "exercises_in"]


class NotAttempted(Exception):
    """The answer is still the starter value (``...``, ``None`` or a stub function)."""


class Incorrect(Exception):
    """The answer is wrong; the message says what to fix, never the solution."""


def _is_starter(answer: Any) -> bool:
    return answer is Ellipsis or answer is None


class Exercise:
    """One question: ``check(answer)`` prints ✓/✗ and returns a bool; ``hint()``; ``solution()``."""

    kind = "exercise"

    def __init__(self, name: str, prompt: str, *, hints: Sequence[str] = (), solution: str | Callable = ""):
        if not (isinstance(name, str) and name.isidentifier()):
            raise ValueError(f"name: expected an identifier such as 'q1', got {name!r}")
        self.name, self.prompt, self.hints = name, inspect.cleandoc(prompt), list(hints)
        self._solution = solution
        self.last_message = ""  # what the last check printed (tests read it)

    # The three calls a student makes.
    def check(self, answer: Any = Ellipsis) -> bool:
        """Check ``answer``; prints a ✓/✗ line (or "not attempted") and returns whether it is right."""
        try:
            if _is_starter(answer):
                raise NotAttempted(f"replace the `...` with your answer, then run ex.{self.name}.check(answer)")
            self._check(answer)
        except NotAttempted as why:
            return self._say(f"○ {self.name}: not attempted yet: {why}", False)
        except Incorrect as why:
            return self._say(f"✗ {self.name}: not yet. {why}", False)
        return self._say(f"✓ {self.name}: correct.", True)

    def hint(self, level: int = 1) -> None:
        """Print hint number ``level`` (1 = gentlest)."""
        if not self.hints:
            print(f"{self.name}: no hint for this one; try ex.{self.name}.solution()")
            return
        if not (isinstance(level, int) and level >= 1):
            raise ValueError(f"level: expected an int >= 1, got {level!r}")
        level = min(level, len(self.hints))
        more = f" (more: ex.{self.name}.hint({level + 1}))" if level < len(self.hints) else ""
        print(f"Hint {level}/{len(self.hints)} for {self.name}: {self.hints[level - 1]}{more}")

    def solution(self) -> None:
        """Print the solution (code is shown as source)."""
        body = self._solution
        if callable(body):
            body = textwrap.dedent(inspect.getsource(body))
        print(f"Solution to {self.name}:\n{textwrap.dedent(body).strip()}")

    # For subclasses and tests.
    def _check(self, answer: Any) -> None:
        raise NotImplementedError

    def examples(self) -> tuple[Any, list[tuple[Any, str]]]:
        """``(an answer that passes, [(a known wrong answer, words its message contains)])``."""
        raise NotImplementedError

    def _say(self, message: str, ok: bool) -> bool:
        self.last_message = message
        print(message)
        return ok

    def __repr__(self) -> str:
        return (f"{self.name}: {self.prompt}\n"
                f"(check: ex.{self.name}.check(answer) · hint: ex.{self.name}.hint() · "
                f"solution: ex.{self.name}.solution())")


# ---------------------------------------------------------------- comparing values

def _describe(value: Any) -> str:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, np.ndarray) and value.size == 1 or isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())  # a 0-d or one-element tensor counts as a number
    return None


def _constant_relation(got: np.ndarray, expected: np.ndarray) -> str | None:
    # A constant ratio or offset means the idea is right and one constant is off.
    nonzero = np.abs(expected) > 1e-12
    if nonzero.sum() >= 1:
        ratio = got[nonzero] / expected[nonzero]
        if np.ptp(ratio) <= 1e-4 * max(1.0, abs(ratio.mean())) and not np.isclose(ratio.mean(), 1.0):
            c = float(ratio.mean())
            if np.isclose(c, -1.0):
                return "the values have the wrong sign"
            return f"the values are off by a constant factor of {c:.3g}"
    offset = got - expected
    if offset.size > 1 and np.ptp(offset) <= 1e-6 * max(1.0, np.abs(expected).max()):
        return f"the values are off by a constant {float(offset.mean()):.3g}"
    return None


def compare(got: Any, expected: Any, *, rtol: float = 1e-4, atol: float = 1e-6, what: str = "your result") -> str | None:
    """``None`` if ``got`` matches ``expected``, else a message saying how it differs (not the value)."""
    if got is None and expected is not None:
        return f"{what} is None: did you forget `return`?"
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            return f"{what} should be a {type(expected).__name__} of {len(expected)} items, got {_describe(got)}"
        for i, (g, e) in enumerate(zip(got, expected)):
            if (msg := compare(g, e, rtol=rtol, atol=atol, what=f"item {i} of {what}")) is not None:
                return msg
        return None
    if isinstance(expected, torch.Tensor) and expected.numel() > 1 or isinstance(expected, np.ndarray) and expected.size > 1:
        return _compare_arrays(got, expected, rtol, atol, what)
    e = _as_number(expected)
    if e is not None:
        g = _as_number(got)
        if g is None:
            return f"{what} should be a single number, got {_describe(got)}"
        if math.isnan(g):
            return f"{what} is NaN: a division by zero or an empty selection?"
        if math.isclose(g, e, rel_tol=rtol, abs_tol=atol):
            return None
        relation = _constant_relation(np.array([g]), np.array([e]))
        return f"{what}: {relation}" if relation else f"{what} is not the expected number"
    return None if got == expected else f"{what} is not what was expected"


def _compare_arrays(got: Any, expected: Any, rtol: float, atol: float, what: str) -> str | None:
    want_tensor = isinstance(expected, torch.Tensor)
    if want_tensor and isinstance(got, np.ndarray):
        return f"{what} is a numpy array; return a torch tensor (torch.as_tensor, or use torch functions)"
    if not isinstance(got, (torch.Tensor, np.ndarray)):
        return f"{what} should be a {type(expected).__name__}, got {_describe(got)}"
    g = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    e = expected.detach().cpu().numpy() if want_tensor else np.asarray(expected)
    if g.shape != e.shape:
        extra = " (same number of elements: a missing reshape or squeeze?)" if g.size == e.size else ""
        return f"{what} has shape {tuple(g.shape)}, expected {tuple(e.shape)}{extra}"
    if e.dtype == bool and g.dtype != bool:
        return f"{what} has dtype {got.dtype}, expected a boolean mask (use a comparison such as x > t)"
    if np.issubdtype(e.dtype, np.floating) and not np.issubdtype(g.dtype, np.floating):
        return f"{what} has dtype {got.dtype}, expected floating point (integer division or a cast too early?)"
    if np.issubdtype(g.dtype, np.floating) and not np.isfinite(g).all() and np.isfinite(e).all():
        return f"{what} contains NaN or infinity: a division by zero (an empty mask, a zero std)?"
    if np.allclose(g.astype(float), e.astype(float), rtol=rtol, atol=atol, equal_nan=True):
        return None
    relation = _constant_relation(g.astype(float).ravel(), e.astype(float).ravel())
    if relation:
        return f"{what}: {relation}"
    return f"{what} differs from the reference (largest difference {np.abs(g.astype(float) - e).max():.3g})"


# ---------------------------------------------------------------- the four kinds

def _is_stub(fn: Callable) -> bool:
    # A body of only a docstring, `...`, `pass` or `raise NotImplementedError` is the starter.
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return False
    func = next((n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Lambda))), None)
    if not isinstance(func, ast.FunctionDef):
        return False
    for stmt in func.body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.dump(stmt):
            continue
        return False
    return True


def _clone(args: tuple) -> tuple:
    return tuple(a.clone() if isinstance(a, torch.Tensor) else a.copy() if isinstance(a, np.ndarray) else a
                 for a in args)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return True


class FunctionExercise(Exercise):
    """Write a function: it is called on hidden ``inputs()`` and compared with ``reference``.

    ``inputs`` returns a list of argument tuples; ``wrong`` lists ``(wrong_function,
    message)`` pairs: if the student's outputs match a known mistake, its message is shown.
    """

    kind = "function"

    def __init__(self, name: str, prompt: str, *, reference: Callable, inputs: Callable[[], list[tuple]],
                 wrong: Sequence[tuple[Callable, str]] = (), rtol: float = 1e-4, atol: float = 1e-6,
                 hints: Sequence[str] = (), solution: str | Callable | None = None):
        super().__init__(name, prompt, hints=hints, solution=reference if solution is None else solution)
        self.reference, self.inputs, self.wrong, self.rtol, self.atol = reference, inputs, list(wrong), rtol, atol

    def _check(self, fn: Any) -> None:
        if not callable(fn):
            raise Incorrect(f"expected a function (def ...), got {_describe(fn)}")
        if _is_stub(fn):
            raise NotAttempted("write the body of your function, then check it again")
        for args in self.inputs():
            expected = self.reference(*_clone(args))
            mine = _clone(args)
            try:
                got = fn(*mine)
            except NotImplementedError:
                raise NotAttempted("your function still raises NotImplementedError") from None
            except Exception as err:  # the student's bug: report it, do not crash the notebook
                shapes = ", ".join(_describe(a) for a in args)
                raise Incorrect(f"your function raised {type(err).__name__}: {err} (inputs: {shapes})") from None
            if not all(_same(a, b) for a, b in zip(mine, args)):
                raise Incorrect("your function changed its input in place; work on a copy instead")
            if (msg := compare(got, expected, rtol=self.rtol, atol=self.atol)) is not None:
                for wrong_fn, wrong_msg in self.wrong:
                    if compare(got, wrong_fn(*_clone(args)), rtol=self.rtol, atol=self.atol) is None:
                        raise Incorrect(wrong_msg)
                raise Incorrect(msg)

    def examples(self):
        return self.reference, [(fn, msg) for fn, msg in self.wrong]


class NumberExercise(Exercise):
    """Give a number: right within ``rtol``/``atol`` of ``answer`` (a value, or a function computing it)."""

    kind = "number"

    def __init__(self, name: str, prompt: str, *, answer: float | Callable[[], float], rtol: float = 1e-2,
                 atol: float = 0.0, wrong: Sequence[tuple[float, str]] = (), hints: Sequence[str] = (),
                 solution: str | Callable = ""):
        super().__init__(name, prompt, hints=hints, solution=solution)
        self._answer, self.rtol, self.atol, self.wrong = answer, rtol, atol, list(wrong)

    @property
    def answer(self) -> float:
        if callable(self._answer):  # computed once, on first use
            self._answer = float(self._answer())
        return float(self._answer)

    def _close(self, a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=self.rtol, abs_tol=self.atol)

    def _check(self, answer: Any) -> None:
        x = _as_number(answer)
        if x is None:
            raise Incorrect(f"expected a single number, got {_describe(answer)} {answer!r:.40}")
        if math.isnan(x) or math.isinf(x):
            raise Incorrect(f"expected a finite number, got {x}")
        if self._close(x, self.answer):
            return
        for value, message in self.wrong:
            if self._close(x, value):
                raise Incorrect(message)
        if self.answer != 0 and self._close(-x, self.answer):
            raise Incorrect("the magnitude looks right but the sign is wrong")
        for k in (1, 2, 3):
            for factor in (10.0 ** k, 10.0 ** -k):
                if self._close(x / factor, self.answer):
                    raise Incorrect(f"{x:.4g} is off by a factor of {factor:g}: check the units "
                                    "(mm or cm, percent or fraction)")
        raise Incorrect(f"{x:.4g} is too {'high' if x > self.answer else 'low'}")

    def examples(self):
        return self.answer, [(value, msg) for value, msg in self.wrong]


def _norm(text: Any) -> str:
    return str(text).strip().strip("()").strip().lower()


class ChoiceExercise(Exercise):
    """Pick one of ``options`` (``{"a": "text", ...}``); ``why`` explains each wrong option."""

    kind = "choice"

    def __init__(self, name: str, prompt: str, *, options: dict[str, str], answer: str,
                 why: dict[str, str] | None = None, hints: Sequence[str] = (), solution: str = ""):
        if answer not in options:
            raise ValueError(f"answer: expected one of {list(options)}, got {answer!r}")
        super().__init__(name, prompt, hints=hints, solution=solution)
        self.options, self.answer, self.why = dict(options), answer, dict(why or {})

    def _label(self, answer: Any) -> str:
        by_text = {_norm(text): label for label, text in self.options.items()}
        key = _norm(answer)
        label = next((lab for lab in self.options if _norm(lab) == key), by_text.get(key))
        if label is None:
            raise Incorrect(f"expected one of {', '.join(repr(k) for k in self.options)}, got {answer!r:.40}")
        return label

    def _check(self, answer: Any) -> None:
        label = self._label(answer)
        if label != self.answer:
            raise Incorrect(self.why.get(label, f"({label}) is not the best answer; reread the question"))

    def examples(self):
        return self.answer, [(label, msg) for label, msg in self.why.items()]

    def __repr__(self) -> str:
        options = "\n".join(f"  ({label}) {text}" for label, text in self.options.items())
        return super().__repr__().replace("\n(check", f"\n{options}\n(check", 1)


class ThoughtExercise(Exercise):
    """A question to think about: no automatic check; ``solution()`` gives the discussion."""

    kind = "thought"

    def check(self, answer: Any = Ellipsis) -> bool:
        return self._say(f"○ {self.name} has no automatic check: think it through, then compare with "
                         f"ex.{self.name}.solution()", False)

    def examples(self):
        return None, []

    def __repr__(self) -> str:
        return f"{self.name}: {self.prompt}\n(no automatic check: think it through, then ex.{self.name}.solution())"


def exercises_in(module) -> list[Exercise]:
    """All exercises defined in a notebook's exercise module, in order of their names."""
    found = [v for v in vars(module).values() if isinstance(v, Exercise)]
    return sorted(found, key=lambda ex: (len(ex.name), ex.name))
