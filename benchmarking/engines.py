"""Where a sweep's runs execute: ``local`` (a process pool on this machine, here) or ``ray`` (Ray Tune,
on a local Ray or a cluster: :mod:`benchmarking.ray_engine`, which imports this module, never the reverse).
Both call :func:`benchmarking.sweep.run_one` with the same settings and hand each row to the same ``record``
function as soon as it exists, so they write the same files.

Local workers are spawned (never forked: OpenMP deadlocks after fork), ignore Ctrl-C (the parent
stops them at once, keeping every row that has arrived), and die with their parent even after a
SIGKILL (``PR_SET_PDEATHSIG`` on Linux, and a thread that watches the parent elsewhere).
"""
from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

from benchmarking.sweep import blank_row, run_one

Record = Callable[[dict[str, Any], dict[str, Any]], None]  # record(row, settings)


# ------------------------------------------------------------------------------------------- local

def _watch_parent(parent_pid: int) -> None:
    """Worker initializer: ignore Ctrl-C (the parent handles it) and die when the parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)

    def watch() -> None:  # also covers a parent that died before prctl, and non-Linux systems
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def run_local(trials: list[dict[str, Any]], record: Record, workers: int, threads: int | None,
              verbose: bool = False) -> None:
    """Run ``trials`` (settings dicts) on ``workers`` spawned processes, or in this one for ``workers=1``.

    :param threads: torch threads per run (None: this process's setting, only for ``workers=1``).
    :raises KeyboardInterrupt: after recording every row that had arrived and stopping the workers.
    """
    if workers == 1:
        for settings in trials:
            record(run_one(settings, threads, verbose), settings)
        return
    pool = futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_watch_parent, initargs=(os.getpid(),))
    recorded: set[futures.Future] = set()
    pending: dict[futures.Future, dict[str, Any]] = {}
    try:
        pending = {pool.submit(run_one, settings, threads, verbose): settings for settings in trials}
        for future in futures.as_completed(pending):
            record(_row(future, pending[future]), pending[future])
            recorded.add(future)
    except BaseException:
        try:
            for future, settings in pending.items():  # rows that arrived while we were stopped
                if future not in recorded and future.done() and not future.cancelled():
                    record(_row(future, settings), settings)
        finally:
            _stop(pool)
        raise
    pool.shutdown(wait=True)


def _row(future: futures.Future, settings: dict[str, Any]) -> dict[str, Any]:
    """The run's row; a worker that died (killed, out of memory) leaves a failed row naming why."""
    error = future.exception()
    if error is None:
        return future.result()
    return {**blank_row(settings), "error": f"{type(error).__name__}: {error}".replace("\n", " ")}


def _stop(pool: futures.ProcessPoolExecutor) -> None:
    """Stop the pool's workers now: a run can take hours, and Ctrl-C should not wait for it."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
