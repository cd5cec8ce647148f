"""radlab: a teaching toolkit for end-to-end CNNs in radiomics.

    import radlab as rl
    P = rl.setup(seed=0)            # profile, device, seeds; prints one line
    ph = rl.phantoms.make_phantoms(P.n_train, size=P.size, modality="ct", seed=0)
    rl.claim(ph.p_true.mean() > 0.2, "the classes are not too imbalanced")

Submodules load on first use (``rl.survival``, ``rl.widgets``, ...), so
``import radlab`` costs little more than importing torch.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .profile import ClaimFailed, Profile, claim, setup

__version__ = "0.1.0"

_SUBMODULES = (
    "profile", "phantoms", "io", "datasets", "preprocess", "augment", "losses", "survival",
    "cost", "models", "train", "classical", "confounding", "explain", "e2e", "experiments",
    "widgets", "exercises", "notebooks",
)

__all__ = ["setup", "claim", "ClaimFailed", "Profile", "__version__", *_SUBMODULES]


def __getattr__(name: str):
    # Lazy submodules: `rl.survival` imports radlab.survival the first time it is used.
    if name in _SUBMODULES:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    raise AttributeError(f"module 'radlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_SUBMODULES))


if TYPE_CHECKING:  # for editors and type checkers only
    from . import (classical, cost, datasets, e2e, exercises, experiments, io, losses,  # noqa: F401
                   models, phantoms, preprocess, survival, train, widgets)
