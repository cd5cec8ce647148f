"""Notebook frame: the shared set-up cell, a builder, convention checks, strip and run.

Every notebook in ``notebooks/`` has the same shape (DESIGN.md, "Notebooks"):

1. ``SETUP_CELL`` — the identical first cell. On Colab it installs radlab from
   ``REPO_URL`` when ``import radlab`` fails (lower bounds only, so Colab's torch
   and numpy stay as they are); anywhere else it does nothing.
2. A markdown cell with the title, **Learning goals**, **Prerequisites** and the
   estimated time per profile (quick / standard / full).
3. ``import radlab as rl`` and ``P = rl.setup(seed=0)``; every size comes from ``P``.
4. One idea per cell, claims checked with ``rl.claim``.
5. A last section titled "Exercises" that uses ``from radlab.exercises import nbXX as ex``.

Command line (run from the repository root)::

    python -m radlab.notebooks check [PATHS]    # conventions; exit 1 on a problem
    python -m radlab.notebooks strip [PATHS]    # clear outputs and execution counts
    python -m radlab.notebooks run PATH...      # execute under RADLAB_PROFILE=quick, report
    python -m radlab.notebooks new NAME         # a skeleton notebooks/NAME.ipynb

PATHS default to ``notebooks/*.ipynb``.

Hard-coded sizes (the heuristic ``check`` uses, see :func:`literal_sizes`): in a
code cell, an integer literal given to a size keyword (``size=``, ``n_train=``,
``n_test=``, ``epochs=``, ``repeats=``, ``batch_size=``, ``n=``) is flagged, and
so is a literal patient count above ``MAX_LITERAL_N`` as the first argument of
``make_phantoms`` / ``PhantomDataset``. A handful of patients to *look at*
(``make_phantoms(3, ...)``) is fine. Append ``# radlab: literal-ok`` to a line
that must keep its literal on purpose.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Sequence

REPO_URL = "https://github.com/radlab-course/radlab"

# Plain Python (no `!pip`), so it runs the same under nbclient, JupyterLab and Colab.
# The URL is spelled out because radlab is not importable yet when this cell runs.
SETUP_CELL = """\
# Set-up (the same in every notebook): on Colab, install radlab if it is missing.
# Lower bounds only, so Colab's own torch and numpy are kept. Elsewhere this does nothing.
import importlib, importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("radlab") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                    "radlab @ git+https://github.com/radlab-course/radlab"], check=True)
    importlib.invalidate_caches()"""

assert REPO_URL in SETUP_CELL  # the one URL, kept in one place

HEADER_WORDS = ("Learning goals", "Prerequisites")
PROFILE_WORDS = ("quick", "standard", "full")
SIZE_FUNCTIONS = ("make_phantoms", "PhantomDataset")
SIZE_KEYWORDS = ("size", "n_train", "n_test", "epochs", "repeats", "batch_size", "n")
MAX_LITERAL_N = 8           # a few patients to look at may be a literal
LITERAL_OK = "radlab: literal-ok"
MAX_OUTPUT_LINES = 100      # text lines per cell (STYLE.md, complaint 6)
DEFAULT_GLOB = "notebooks/*.ipynb"


# ---------------------------------------------------------------- building

def new_notebook(cells: Sequence[tuple[str, str]]):
    """An nbformat v4 notebook: ``SETUP_CELL`` first, then ``cells`` as ``("md"|"code", text)``."""
    import nbformat.v4 as v4

    nb = v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                  "name": "python3"},
                   "language_info": {"name": "python"}}
    nb.cells.append(v4.new_code_cell(SETUP_CELL))
    for i, cell in enumerate(cells):
        if not (isinstance(cell, tuple) and len(cell) == 2 and cell[0] in ("md", "code")
                and isinstance(cell[1], str)):
            raise ValueError(f"cells[{i}]: expected ('md' | 'code', text), got {cell!r:.80}")
        kind, text = cell
        nb.cells.append(v4.new_markdown_cell(text) if kind == "md" else v4.new_code_cell(text))
    for cell in nb.cells:  # deterministic files: no random cell ids in diffs
        cell.pop("id", None)
    nb.nbformat_minor = 4
    return nb


def skeleton(name: str):
    """The starting cells of a new notebook called ``name`` (e.g. ``"07_survival"``)."""
    nbxx = "nb" + name.split("_")[0]
    return new_notebook([
        ("md", f"# {name}\n\n**Learning goals**\n- ...\n\n**Prerequisites**: ...\n\n"
               "**Estimated time**: quick ~1 min · standard ~5 min · full ~20 min (GPU)"),
        ("code", "import radlab as rl\nP = rl.setup(seed=0)"),
        ("md", "## Exercises"),
        ("code", f"from radlab.exercises import {nbxx} as ex\nex.q1"),
        ("code", "answer = ...  # your answer here\nex.q1.check(answer)"),
    ])


# ---------------------------------------------------------------- checking

def _read(path):
    import nbformat

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: expected a notebook file, got {str(path)!r} (not found)")
    return nbformat.read(path, as_version=4)


def _python_only(source: str) -> str:
    # IPython magics, shell escapes and `obj??` source look-ups are not Python; blank them
    # so ast can parse the rest.
    def ipython(line: str) -> bool:
        return line.lstrip().startswith(("%", "!")) or line.rstrip().endswith("?")
    return "\n".join("" if ipython(line) else line for line in source.splitlines())


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _is_int_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int


def literal_sizes(source: str) -> list[str]:
    """Hard-coded sizes in one code cell's ``source`` (heuristic described in the module docstring)."""
    try:
        tree = ast.parse(_python_only(source))
    except SyntaxError as err:
        return [f"does not parse: {err.msg} (line {err.lineno})"]
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or LITERAL_OK in lines[node.lineno - 1]:
            continue
        name = _call_name(node)
        if (name in SIZE_FUNCTIONS and node.args and _is_int_literal(node.args[0])
                and node.args[0].value > MAX_LITERAL_N):
            found.append(f"{name}({node.args[0].value}, ...) hard-codes n; read it from the profile P")
        for kw in node.keywords:
            if kw.arg in SIZE_KEYWORDS and _is_int_literal(kw.value):
                found.append(f"{name}(..., {kw.arg}={kw.value.value}) hard-codes a size; read it from P")
    return found


def _has_outputs(cell) -> bool:
    return cell.cell_type == "code" and (bool(cell.get("outputs")) or cell.get("execution_count") is not None)


def check_notebook(nb) -> list[str]:
    """Convention problems of one notebook (an nbformat node); an empty list means it is fine."""
    problems = []
    cells = nb.cells
    dirty = [i for i, c in enumerate(cells) if _has_outputs(c)]
    if dirty:
        problems.append(f"cells {dirty} have outputs or execution counts: run `python -m radlab.notebooks strip`")
    if not cells or cells[0].cell_type != "code" or cells[0].source.strip() != SETUP_CELL.strip():
        problems.append("cell 0 must be radlab.notebooks.SETUP_CELL (the shared set-up cell)")
    header = cells[1].source if len(cells) > 1 and cells[1].cell_type == "markdown" else ""
    for word in HEADER_WORDS:
        if word.lower() not in header.lower():
            problems.append(f"cell 1 must be markdown naming the {word!r}")
    if not ("time" in header.lower() and all(p in header.lower() for p in PROFILE_WORDS)):
        problems.append("cell 1 must give the estimated time per profile (quick / standard / full)")
    code = [c.source for c in cells if c.cell_type == "code"]
    if not any("import radlab as rl" in s and "rl.setup(" in s for s in code):
        problems.append("a code cell must `import radlab as rl` and call `P = rl.setup(seed=...)`")
    problems += _check_exercises(cells)
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and i > 0:
            problems += [f"cell {i}: {p}" for p in literal_sizes(cell.source)]
    return problems


def _check_exercises(cells) -> list[str]:
    headings = [(i, line) for i, c in enumerate(cells) if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("#")]
    if not headings or "exercises" not in headings[-1][1].lower():
        return ["the last section (last markdown heading) must be titled 'Exercises'"]
    after = "\n".join(c.source for c in cells[headings[-1][0] + 1:] if c.cell_type == "code")
    if not re.search(r"from radlab\.exercises import nb\w+|radlab\.exercises", after):
        return ["the Exercises section must use `from radlab.exercises import nbXX as ex`"]
    if ".check(" not in after:
        return ["the Exercises section must call at least one `ex.qN.check(...)`"]
    return []


def _paths(paths: Iterable[str | os.PathLike] | None) -> list[Path]:
    paths = [Path(p) for p in (paths or sorted(glob.glob(DEFAULT_GLOB)))]
    for p in paths:
        if p.suffix != ".ipynb":
            raise ValueError(f"paths: expected .ipynb files, got {str(p)!r}")
        if not p.is_file():
            raise FileNotFoundError(f"paths: notebook {str(p)!r} not found")
    return paths


def check(paths=None) -> dict[str, list[str]]:
    """Check the conventions of each notebook; returns ``{path: [problems]}`` (empty lists if fine)."""
    return {str(p): check_notebook(_read(p)) for p in _paths(paths)}


# ---------------------------------------------------------------- stripping

def strip_notebook(nb):
    """Clear outputs, execution counts and volatile metadata in place; returns ``nb``."""
    for cell in nb.cells:
        cell.metadata = {k: v for k, v in cell.metadata.items() if k == "tags"}
        cell.pop("id", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    keep = {"kernelspec", "language_info"}
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in keep}
    if "language_info" in nb.metadata:
        nb.metadata["language_info"] = {"name": nb.metadata["language_info"].get("name", "python")}
    nb.nbformat_minor = 4
    return nb


def strip(paths=None) -> list[str]:
    """Strip each notebook file in place; returns the paths that changed."""
    import nbformat

    changed = []
    for p in _paths(paths):
        before = p.read_text(encoding="utf-8")
        nb = strip_notebook(nbformat.reads(before, as_version=4))
        after = nbformat.writes(nb) + "\n"
        if after != before:
            p.write_text(after, encoding="utf-8")
            changed.append(str(p))
    return changed


# ---------------------------------------------------------------- running

@dataclasses.dataclass
class RunReport:
    """What executing one notebook showed: wall time, failed claims, errors, long outputs."""

    path: str
    seconds: float
    limit: float
    failed_claims: list[str]
    errors: list[str]
    long_outputs: list[str]
    timed_out: bool = False

    @property
    def problems(self) -> list[str]:
        over = [f"took {self.seconds:.1f} s, over the {self.limit:.0f} s limit"] if self.seconds > self.limit else []
        return ([*over, *self.errors, *(f"failed claim: {c}" for c in self.failed_claims),
                 *self.long_outputs])

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        head = f"{'ok  ' if self.ok else 'FAIL'} {self.path}: {self.seconds:.1f} s"
        return "\n".join([head, *(f"     {p}" for p in self.problems)])


@contextlib.contextmanager
def _environ(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _text_of(output) -> str:
    if output.output_type == "stream":
        return output.text
    if output.output_type in ("execute_result", "display_data"):
        return output.get("data", {}).get("text/plain", "") if "text/html" not in output.get("data", {}) else ""
    return ""


def scan_outputs(nb) -> tuple[list[str], list[str], list[str]]:
    """``(failed_claims, errors, long_outputs)`` found in an executed notebook's outputs."""
    claims, errors, long_outputs = [], [], []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        lines = []
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(f"cell {i}: {out.ename}: {out.evalue}"[:300])
            lines += _text_of(out).splitlines()
        claims += [f"cell {i}: {line.strip()}" for line in lines if line.lstrip().startswith("✗")]
        if len(lines) > MAX_OUTPUT_LINES:
            long_outputs.append(f"cell {i}: {len(lines)} output lines (> {MAX_OUTPUT_LINES})")
    return claims, errors, long_outputs


def run(path, timeout: float = 120, *, profile: str = "quick", output=None, threads: int = 1) -> RunReport:
    """Execute notebook ``path`` top to bottom with nbclient under ``RADLAB_PROFILE=profile``.

    The whole notebook gets ``timeout`` seconds (each cell gets what is left).
    Returns a :class:`RunReport`; writes the executed notebook to ``output`` if given.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    path = Path(path)
    nb = _read(path)
    start = time.perf_counter()
    deadline = start + timeout
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                            timeout_func=lambda cell: max(1, int(deadline - time.perf_counter()) + 1),
                            interrupt_on_timeout=True)
    crash, timed_out = [], False
    env = dict(RADLAB_PROFILE=profile, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               MPLBACKEND="module://matplotlib_inline.backend_inline", PYDEVD_DISABLE_FILE_VALIDATION="1")
    with _environ(**env):
        try:
            client.execute()
        except CellTimeoutError as err:
            timed_out = True
            crash.append(f"timed out: {str(err).splitlines()[0]}")
        except CellExecutionError:
            pass  # the error output is in the cell; scan_outputs reports it
        except DeadKernelError as err:
            crash.append(f"kernel died: {err}")
    seconds = time.perf_counter() - start
    timed_out = timed_out or seconds >= timeout  # an interrupted cell shows up as KeyboardInterrupt
    if output is not None:
        nbformat.write(nb, str(output))
    claims, errors, long_outputs = scan_outputs(nb)
    return RunReport(str(path), seconds, float(timeout), claims, crash + errors, long_outputs, timed_out)


# ---------------------------------------------------------------- command line

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radlab.notebooks", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("check", "strip", "run"):
        cmd = sub.add_parser(name)
        cmd.add_argument("paths", nargs="*", help=f"notebooks (default {DEFAULT_GLOB})")
        if name == "run":
            cmd.add_argument("--timeout", type=float, default=120)
            cmd.add_argument("--profile", default="quick")
            cmd.add_argument("--output", help="write the executed notebook here (one path only)")
    sub.add_parser("new").add_argument("name", help="e.g. 07_survival")
    args = parser.parse_args(argv)

    if args.command == "check":
        results = check(args.paths)
        for path, problems in results.items():
            print(f"{'ok  ' if not problems else 'FAIL'} {path}")
            for p in problems:
                print(f"     {p}")
        return int(any(results.values()))
    if args.command == "strip":
        changed = strip(args.paths)
        print(f"stripped {len(changed)} notebook(s)" + "".join(f"\n  {c}" for c in changed))
        return 0
    if args.command == "run":
        reports = [run(p, args.timeout, profile=args.profile, output=args.output) for p in _paths(args.paths)]
        for r in reports:
            print(r)
        return int(not all(r.ok for r in reports))
    target = Path("notebooks") / f"{args.name}.ipynb"
    if target.exists():
        raise FileExistsError(f"name: {str(target)!r} already exists")
    import nbformat
    nbformat.write(skeleton(args.name), str(target))
    print(f"created {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
