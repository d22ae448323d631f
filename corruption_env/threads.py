"""How many torch CPU threads an environment may use in this process, and why forked workers get one.

A vector-env worker defaults to one thread (workers would otherwise fight for cores). A *forked*
worker gets one thread whatever was asked: GNU OpenMP (torch's CPU thread pool) deadlocks in a child
forked after its parent ran threaded work, and ``gym.make_vec(..., vectorization_mode="async")``
forks by default on Linux.
"""
from __future__ import annotations

import multiprocessing
import os
import warnings

import torch

_FORKED = False  # True in a process forked (not spawned) from one that imported this module


def _mark_forked() -> None:
    global _FORKED
    _FORKED = True


os.register_at_fork(after_in_child=_mark_forked)


def set_torch_threads(requested: int | None) -> None:
    """Apply ``EnvConfig.num_threads`` safely in this process (None: torch's default, or 1 in a worker)."""
    threads = requested
    if threads is None and multiprocessing.parent_process() is not None:
        threads = 1
    if _FORKED and threads is not None and threads > 1:
        warnings.warn(f"CorruptionEnv in a forked worker: torch limited to 1 thread instead of num_threads={threads}, "
                      "because OpenMP deadlocks after fork. For more threads per worker start workers with spawn: "
                      "gym.make_vec(..., vector_kwargs={'context': 'spawn'}) or "
                      "SubprocVecEnv(..., start_method='forkserver').", RuntimeWarning, stacklevel=3)
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
