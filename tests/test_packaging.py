"""The repository's set-up files agree with each other: pyproject (lower bounds only),
environment.yml (same dependencies), constraints.txt (exact tested pins, torch 2.13.0),
the Makefile's two commands and CI."""
import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # PyPI name -> conda-forge name where they differ


def _requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def _name_and_bound(req):
    m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", req.strip())
    return m.group(1).lower(), m.group(2).replace(" ", "")


def _environment_yml():
    """(conda deps, pip deps) of environment.yml, parsed without a YAML library."""
    conda, pip, in_pip = [], [], False
    text = (ROOT / "environment.yml").read_text()
    for line in text[text.index("dependencies:"):].splitlines():
        item = re.match(r"^(\s*)- (.+)$", line.split("#")[0].rstrip())
        if not item:
            continue
        indent, value = len(item.group(1)), item.group(2).strip()
        if value == "pip:":
            in_pip = True
        elif in_pip and indent > 2:
            pip.append(value)
        elif indent == 2:
            in_pip = False
            conda.append(value)
    return conda, pip


def test_runtime_dependencies_are_lower_bounds_only():
    runtime, extras = _requirements()
    for req in runtime + [r for group in extras.values() for r in group]:
        name, bound = _name_and_bound(req)
        assert bound.startswith(">=") and "," not in bound and "==" not in bound, (
            f"pyproject: {req!r} must be a lower bound only (exact pins belong in constraints.txt)")
    names = {_name_and_bound(r)[0] for r in runtime}
    assert {"torch", "numpy", "scipy", "pandas", "matplotlib", "ipywidgets", "jupyterlab", "nibabel",
            "scikit-learn", "captum", "tqdm"} <= names
    assert {"test", "bench"} <= set(extras)


def test_environment_yml_matches_pyproject():
    runtime, extras = _requirements()
    conda, pip = _environment_yml()
    conda_deps = dict(_name_and_bound(d) for d in conda if not d.startswith(("python", "pip")))
    expected = {CONDA_NAMES.get(n, n): b for n, b in map(_name_and_bound, runtime)}
    assert conda_deps == expected, "environment.yml's conda dependencies drifted from pyproject's runtime list"
    pip_deps = dict(_name_and_bound(d) for d in pip if not d.startswith("-e"))
    assert pip_deps == dict(map(_name_and_bound, extras["test"])), "environment.yml's pip list drifted from the test extra"
    assert "-e ." in pip


def test_constraints_pin_every_requirement_and_torch_2_13():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    assert pins["torch"] == "2.13.0"
    runtime, extras = _requirements()
    for req in runtime + extras["test"] + extras["bench"]:
        name = _name_and_bound(req)[0].replace("_", "-")
        assert name in pins, f"constraints.txt has no pin for {name}"
    assert "torchvision" not in pins, "torchvision fails to import beside torch 2.13.0 CPU"


def test_makefile_commands_and_ci():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "-c constraints.txt" in makefile
    assert "jupyter lab" in makefile and "notebooks" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert readme.index("make lab") < readme.index("Colab") and "make test" in readme
