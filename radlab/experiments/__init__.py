"""One module per notebook topic. Each experiment is a plain function returning a
result object with ``.table()`` (pandas DataFrame) and ``.plot()`` (matplotlib Figure);
the notebook, its widget Panel and the tests all call the same function."""
import importlib

_TOPICS = ("welcome", "end_to_end", "bias_variance", "volumetric", "symmetry", "gradient_flow", "losses", "survival")


def __getattr__(name):
    if name in _TOPICS:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'radlab.experiments' has no attribute {name!r}")
