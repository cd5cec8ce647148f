"""Shared test set-up: one thread for torch (the CI machine has 2 cores and the notebook
tests run two kernels side by side), and deterministic seeds per test."""
import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("RADLAB_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
