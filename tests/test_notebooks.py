"""Notebook conventions and execution (radlab.notebooks).

Every ``notebooks/*.ipynb`` runs top to bottom under ``RADLAB_PROFILE=quick`` with
nbclient. A module fixture runs the selected notebooks in parallel processes
(``RADLAB_NB_WORKERS``, default: 2 or the number of cores if fewer; each kernel
single-threaded), longest first by the last recorded times, and writes each wall
time to ``tests/notebook_times.json``. One test per notebook then fails on an
error output, a ✗ claim, more than 100 output lines in a cell, or more than 120 s.
"""
from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from radlab import notebooks as rnb

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMES = ROOT / "tests" / "notebook_times.json"
LIMIT_S = 120        # per notebook (DESIGN.md, profiles)
TOTAL_LIMIT_S = 900  # all notebooks together


# ---------------------------------------------------------------- the frame itself

def _good_notebook():
    return rnb.new_notebook([
        ("md", "# Demo\n\n**Learning goals**: x\n\n**Prerequisites**: none\n\n"
               "**Estimated time**: quick 1 min, standard 2 min, full 5 min"),
        ("code", "import radlab as rl\nP = rl.setup(seed=0)"),
        ("code", "ph = rl.phantoms.make_phantoms(P.n_train, size=P.size)\nlook = rl.phantoms.make_phantoms(3)"),
        ("md", "## Exercises"),
        ("code", "from radlab.exercises import nb00 as ex\nex.q1.check(...)"),
    ])


def test_skeleton_and_a_good_notebook_pass_the_check():
    assert rnb.check_notebook(rnb.skeleton("99_demo")) == []
    nb = _good_notebook()
    assert rnb.check_notebook(nb) == []
    assert nb.cells[0].source == rnb.SETUP_CELL and rnb.REPO_URL in rnb.SETUP_CELL
    nbformat.validate(nb)


def _break(nb, how):
    cells = nb.cells
    if how == "outputs":
        cells[2].outputs = [nbformat.v4.new_output("stream", text="hi\n")]
        cells[2].execution_count = 3
    elif how == "setup":
        cells[0].source = "import radlab"
    elif how == "goals":
        cells[1].source = cells[1].source.replace("Learning goals", "Aims")
    elif how == "time":
        cells[1].source = cells[1].source.replace("full 5 min", "")
    elif how == "rl.setup":
        cells[2].source = "import radlab as rl"
    elif how == "exercises_last":
        cells.append(nbformat.v4.new_markdown_cell("## Summary"))
    elif how == "exercises_import":
        cells[-1].source = "q1.check(...)"
    elif how == "literal_n":
        cells[3].source = "ph = rl.phantoms.make_phantoms(200, size=P.size)"
    elif how == "literal_kw":
        cells[3].source = "hist = rl.train.fit(model, ph, epochs=5)"
    return nb


@pytest.mark.parametrize("how, words", [
    ("outputs", "strip"), ("setup", "SETUP_CELL"), ("goals", "Learning goals"), ("time", "estimated time"),
    ("rl.setup", "rl.setup"), ("exercises_last", "titled 'Exercises'"), ("exercises_import", "radlab.exercises"),
    ("literal_n", "make_phantoms(200, ...) hard-codes n"), ("literal_kw", "epochs=5) hard-codes a size"),
])
def test_check_finds_each_broken_convention(how, words):
    problems = rnb.check_notebook(_break(_good_notebook(), how))
    assert any(words in p for p in problems), problems


def test_literal_sizes_heuristic():
    assert rnb.literal_sizes("make_phantoms(P.n_train, size=P.size)") == []
    assert rnb.literal_sizes("make_phantoms(4, modality='pet')") == []            # a few to look at
    assert rnb.literal_sizes("x = f(size=32)  # radlab: literal-ok") == []         # deliberate
    assert rnb.literal_sizes("%time\nmake_phantoms(n=64)") != []                     # magics skipped
    assert rnb.literal_sizes("rl.losses.dice_loss??\nrl.survival.cox_loss?") == []   # source look-ups
    assert "does not parse" in rnb.literal_sizes("def (")[0]


def test_strip_clears_outputs_counts_and_metadata(tmp_path):
    nb = _break(_good_notebook(), "outputs")
    nb.cells[2].metadata = {"tags": ["keep"], "execution": {"iopub.status.busy": "x"}}
    nb.metadata["widgets"] = {"state": "big"}
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, str(path))
    assert rnb.strip([path]) == [str(path)]
    assert rnb.strip([path]) == []  # idempotent
    clean = nbformat.read(str(path), as_version=4)
    assert rnb.check_notebook(clean) == []
    assert clean.cells[2].metadata == {"tags": ["keep"]} and "widgets" not in clean.metadata


@pytest.mark.parametrize("paths, error, match", [
    (["nope.ipynb"], FileNotFoundError, "not found"), (["x.txt"], ValueError, "expected .ipynb"),
])
def test_bad_paths_are_rejected(paths, error, match):
    with pytest.raises(error, match=match):
        rnb.check(paths)


def test_new_notebook_rejects_bad_cells():
    with pytest.raises(ValueError, match=r"cells\[0\]: expected"):
        rnb.new_notebook([("python", "1")])


def test_setup_cell_does_nothing_here_and_pip_installs_on_colab(monkeypatch):
    import importlib.util
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    exec(rnb.SETUP_CELL, {})
    assert calls == []  # not Colab: nothing installed
    monkeypatch.setitem(sys.modules, "google.colab", object())
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    exec(rnb.SETUP_CELL, {})
    assert calls and calls[0][:4] == [sys.executable, "-m", "pip", "install"]
    assert f"git+{rnb.REPO_URL}" in calls[0][-1] and not any("torch" in c or "numpy" in c for c in calls[0])


@pytest.mark.slow
def test_run_reports_failed_claims_errors_and_timeouts(tmp_path):
    cells = [("md", "# t"), ("code", "import radlab as rl\nrl.claim(True, 'fine')\nrl.claim(False, 'broken')")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(rnb.new_notebook(cells), str(path))
    report = rnb.run(path, timeout=60)
    assert not report.ok and report.failed_claims == ["cell 2: ✗ broken"]
    assert any("ClaimFailed" in e for e in report.errors), report.errors
    nbformat.write(rnb.new_notebook([("code", "import time\ntime.sleep(60)")]), str(path))
    report = rnb.run(path, timeout=8)
    assert report.timed_out and not report.ok and report.seconds < 30, str(report)


# ---------------------------------------------------------------- running every notebook

def _workers() -> int:
    return int(os.environ.get("RADLAB_NB_WORKERS", min(2, os.cpu_count() or 1)))


def _run_one(path: str) -> dict:
    report = rnb.run(path, timeout=LIMIT_S, profile="quick", threads=1)
    return {"path": report.path, "seconds": report.seconds, "problems": report.problems, "text": str(report)}


@pytest.fixture(scope="module")
def notebook_runs(request):
    """Run the selected notebooks in parallel processes, longest first; record wall times."""
    wanted = {item.callspec.params["path"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_notebook_runs"}
    last = json.loads(TIMES.read_text())["seconds"] if TIMES.exists() else {}
    order = sorted((p for p in NOTEBOOKS if p.name in wanted), key=lambda p: -last.get(p.name, LIMIT_S))
    start = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, no forked threads
    with cf.ProcessPoolExecutor(max_workers=_workers(), mp_context=ctx) as pool:
        results = dict(zip([p.name for p in order], pool.map(_run_one, map(str, order))))
    total = time.perf_counter() - start
    seconds = {**last, **{name: round(r["seconds"], 1) for name, r in results.items()}}
    TIMES.write_text(json.dumps({"workers": _workers(), "total_seconds": round(total, 1),
                                 "seconds": dict(sorted(seconds.items()))}, indent=1) + "\n")
    return results, total


@pytest.mark.notebook
@pytest.mark.parametrize("path", [p.name for p in NOTEBOOKS])
def test_notebook_runs(path, notebook_runs):
    results, total = notebook_runs
    result = results[path]
    assert not result["problems"], result["text"]
    assert total <= TOTAL_LIMIT_S, f"all notebooks took {total:.0f} s together, over {TOTAL_LIMIT_S} s"


@pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks in notebooks/ yet")
def test_all_notebooks_follow_the_conventions():
    proc = subprocess.run([sys.executable, "-m", "radlab.notebooks", "check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_command_line_new_check_and_strip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notebooks").mkdir()
    assert rnb.main(["new", "42_demo"]) == 0
    assert rnb.main(["check"]) == 0                                  # the skeleton follows the conventions
    with pytest.raises(FileExistsError, match="already exists"):
        rnb.main(["new", "42_demo"])
    nb = nbformat.read("notebooks/42_demo.ipynb", as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="x\n")]
    nbformat.write(nb, "notebooks/42_demo.ipynb")
    assert rnb.main(["check"]) == 1 and "strip" in capsys.readouterr().out
    assert rnb.main(["strip"]) == 0 and rnb.main(["check"]) == 0
