"""Shared fixtures: tiny datasets and a fixed torch thread count so tests are fast and repeatable."""
from __future__ import annotations

import os

import pytest
import torch

from corruption_env.data import load_dataset

# two threads in a single process; one per pytest-xdist worker (two workers on two cores: more threads than
# cores make torch's OpenMP workers wait on each other, measured 2x slower)
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_shapes():
    """(train, test) shapes with 512 / 256 images."""
    kw = dict(train_size=512, test_size=256)
    return load_dataset("shapes", split="train", **kw), load_dataset("shapes", split="test", **kw)


@pytest.fixture(autouse=True)
def row_cache_in_a_temporary_folder(tmp_path_factory, monkeypatch):
    """Evaluation rows cached by a test (and the CLIs it starts) go to a folder of its own, outside the
    test's ``tmp_path``: no test reads a row another test computed."""
    monkeypatch.setenv("CORRUPTION_ENV_CACHE", str(tmp_path_factory.mktemp("row-cache")))
