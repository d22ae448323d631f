"""Where a sweep's runs execute: ``local`` (a process pool on this machine) or ``ray`` (Ray Tune, on a
local Ray or a cluster). Both call :func:`benchmarking.sweep.run_one` with the same settings and hand
each row to the same ``record`` function as soon as it exists, so they write the same files.

Local workers are spawned (never forked: OpenMP deadlocks after fork), ignore Ctrl-C (the parent
stops them at once, keeping every row that has arrived), and die with their parent even after a
SIGKILL (``PR_SET_PDEATHSIG`` on Linux, and a thread that watches the parent elsewhere).
"""
from __future__ import annotations

import concurrent.futures as futures
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from benchmarking.sweep import blank_row, config_id, run_one

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
            record(future.result(), pending[future])
            recorded.add(future)
    except BaseException:
        for future, settings in pending.items():  # rows that arrived while we were stopped
            if future not in recorded and future.done() and not future.cancelled() and future.exception() is None:
                record(future.result(), settings)
        raise
    finally:
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:  # a run can take hours: stop it now rather than wait for it
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=5)


# --------------------------------------------------------------------------------------------- ray

_LIVE: dict[str, "_RayBridge"] = {}  # the callbacks Tune pickles (and restores) find the live sweep here


class _RayBridge:
    """What the driver-side Tune callback reaches: records rows and failures of the live sweep."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.failed: set[str] = set()

    def on_row(self, row: dict[str, Any], settings: dict[str, Any]) -> None:
        if row["status"] == "failed":
            self.failed.add(row["run_id"])
        else:
            self.failed.discard(row["run_id"])
        self.record(row, settings)

    def on_error(self, settings: dict[str, Any], message: str) -> None:
        if settings["run_id"] not in self.failed:  # died without reporting its own error (a crash, a lost node)
            self.record({**blank_row(settings), "error": message}, settings)


def _ray_trial(config: dict[str, Any]) -> None:
    """One Tune trial: one run. A failed run is reported, then raised, so FailureConfig retries it."""
    from ray import tune

    from benchmarking.results import FINISHED, read_rows

    settings = config["run"]["settings"]
    if os.path.isdir(config["cwd"]):  # Tune moves each trial to its own folder; relative paths mean the user's
        os.chdir(config["cwd"])
    # a run recorded after the experiment state was last saved (the driver was killed then) is not redone
    done = [r for r in read_rows(Path(config["out"]) / "runs.csv")
            if r["run_id"] == settings["run_id"] and r["config_id"] == config_id(settings) and r["status"] in FINISHED]
    row = done[0] if done else run_one(settings, config["threads"], config["verbose"])
    tune.report({"row": json.dumps(row, default=float)})
    if row["status"] == "failed":
        raise RuntimeError(f"{settings['run_id']}: {row['error']}")


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _make_callback(token: str) -> Any:
    from ray import tune

    class RecordRows(tune.Callback):
        """Driver side: every reported row goes to the results folder at once."""

        def __init__(self, token: str) -> None:
            self.token = token

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if "row" in result:
                _LIVE[self.token].on_row(json.loads(result["row"]), trial.config["run"]["settings"])

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            try:
                message = str(trial.get_error()).strip().splitlines()[-1]
            except Exception:  # noqa: BLE001 - the message is a courtesy; the failure is recorded regardless
                message = f"trial errored; see {getattr(trial, 'error_file', 'its error.txt')}"
            _LIVE[self.token].on_error(trial.config["run"]["settings"], message[:500])

    return RecordRows(token)


def run_ray(trials: list[dict[str, Any]], record: Record, out: Path, cpus_per_trial: float,
            gpus_per_trial: float, max_failures: int, address: str | None = None,
            max_concurrent: int | None = None, verbose: bool = False) -> None:
    """Run ``trials`` as Ray Tune trials with ``--out`` as Tune's storage path.

    Joins the Ray at ``address`` (or ``RAY_ADDRESS``) or starts a local one (reuses one already
    started in this process). Restores the interrupted experiment of the same runs when there is one.

    :raises KeyboardInterrupt: when the sweep was interrupted (finished rows are recorded).
    """
    import logging

    import ray
    from ray import tune

    out = Path(out).resolve()
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                 logging_level=logging.INFO if verbose else logging.WARNING)
    if not verbose:
        logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # failures are in runs.csv and summary.md
    token = str(out)
    _LIVE[token] = _RayBridge(record)
    try:
        pointer = out / "ray_experiment.json"
        plan = {t["run_id"]: config_id(t) for t in trials}
        old = json.loads(pointer.read_text()) if pointer.is_file() else {}
        trainable = tune.with_resources(_ray_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        if old and plan.items() <= old["runs"].items() and tune.Tuner.can_restore(str(out / old["name"])):
            print(f"resuming the Ray Tune experiment {out / old['name']}", file=sys.stderr)
            tuner = tune.Tuner.restore(str(out / old["name"]), trainable=trainable, resume_errored=True)
        else:
            name = time.strftime("tune_%Y%m%d-%H%M%S")
            pointer.write_text(json.dumps({"name": name, "runs": plan}, indent=2) + "\n")
            tuner = tune.Tuner(
                trainable,
                param_space={"run": tune.grid_search([{"settings": t} for t in trials]),
                             "threads": max(1, int(cpus_per_trial)), "verbose": verbose, "cwd": os.getcwd(),
                             "out": str(out)},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(storage_path=str(out), name=name, verbose=1 if verbose else 0,
                                          failure_config=tune.FailureConfig(max_failures=max_failures),
                                          callbacks=[_make_callback(token)]))
        results = tuner.fit()
        finished = {json.loads(r.metrics["row"])["run_id"] for r in results if r.metrics and "row" in r.metrics}
        if any(r.error is None and not r.metrics for r in results) or not set(plan) <= finished | _LIVE[token].failed:
            raise KeyboardInterrupt  # Tune stopped early: Ctrl-C (it saved the experiment for a restore)
    finally:
        del _LIVE[token]
        if started:
            ray.shutdown()
