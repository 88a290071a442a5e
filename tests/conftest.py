"""Shared pytest set-up: Triton under the interpreter, the ``gpu`` marker, fixed seeds."""
import os

# Must happen before anything imports triton (or the kernel modules): without a GPU it makes
# the Triton kernels run on CPU tensors under the interpreter, so they stay testable; with
# one, the GPU tests run the compiled kernels. Importing torch does not import Triton.
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# In a worker of pytest-xdist (make check: two workers on two cores) Torch computes on one
# thread: with two threads per worker the workers' threads outnumber the cores, and a thread
# that waits for a descheduled one turns a 0.1 s test into 15 s. The tests hold for any thread
# count (CI has two, a workstation many).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

import random

import numpy as np
import pytest

SEED = 0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: more than ~10 s on a 2-core CPU, or a large case of a few seconds "
                                       "(make check leaves them out)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fixed_seeds():
    """Every test starts from the same random state (Python, NumPy, torch)."""
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    yield
