"""The ``ray`` engine: each run a Ray Tune trial (current Ray 2.x API: ``tune.Tuner``, ``tune.RunConfig``,
``tune.report``), on a local Ray or a cluster, with ``--out`` as Tune's storage path.

Per-trial resources come from ``--cpus-per-trial`` / ``--gpus-per-trial`` through ``tune.with_resources``;
inside a trial torch uses exactly that many CPU threads (set explicitly: Ray's OMP_NUM_THREADS handling
has changed between versions), the agent's env is SB3's DummyVecEnv, and nothing forks. A run that
fails is reported (so its error is recorded) and then raised, so ``FailureConfig`` retries it.
Rerunning the same command restores the interrupted experiment (``Tuner.can_restore`` /
``Tuner.restore``); a trial whose run is already recorded reports that row instead of running again.
Everything Tune pickles into its experiment state (trainable, callback) is module-level and holds no
state: the callback reaches the live sweep through :data:`_LIVE`.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import ray
from ray import tune

from benchmarking.engines import Record
from benchmarking.reaper import TOKEN_VARIABLE
from benchmarking.results import FINISHED, read_rows
from benchmarking.sweep import blank_row, config_id, run_one
from corruption_env.files import atomic_write_json

_LIVE: dict[str, "_RayBridge"] = {}  # the callbacks Tune pickles (and restores) find the live sweep here


class _RayBridge:
    """What the driver-side Tune callback reaches: records rows and failures of the live sweep."""

    def __init__(self, record: Record) -> None:
        self.record = record
        self.failed: set[str] = set()
        self.reported: set[str] = set()

    def on_row(self, row: dict[str, Any], settings: dict[str, Any]) -> None:
        self.reported.add(row["run_id"])
        if row["status"] == "failed":
            self.failed.add(row["run_id"])
        else:
            self.failed.discard(row["run_id"])
        self.record(row, settings)

    def on_error(self, settings: dict[str, Any], message: str) -> None:
        self.reported.add(settings["run_id"])
        if settings["run_id"] not in self.failed:  # died without reporting its own error (a crash, a lost node)
            self.record({**blank_row(settings), "error": message}, settings)


def _ray_trial(config: dict[str, Any]) -> None:
    """One Tune trial: one run. A failed run is reported, then raised, so FailureConfig retries it."""
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


class RecordRows(tune.Callback):
    """Driver side: every reported row goes to the results folder at once.

    :param token: the key of the live sweep in :data:`_LIVE` (the results folder).
    """

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


def run_ray(trials: list[dict[str, Any]], record: Record, out: Path, cpus_per_trial: float,
            gpus_per_trial: float, max_failures: int, address: str | None = None,
            max_concurrent: int | None = None, verbose: bool = False) -> None:
    """Run ``trials`` as Ray Tune trials with ``--out`` as Tune's storage path.

    Joins the Ray at ``address`` (or ``RAY_ADDRESS``) or starts a local one (reuses one already
    started in this process). Restores the interrupted experiment of the same runs when there is one.

    :raises KeyboardInterrupt: on Ctrl-C, with every finished row recorded.
    """
    out = Path(out).resolve()
    started = not ray.is_initialized()
    reaper = _start_reaper() if started and not (address or os.environ.get("RAY_ADDRESS")) else None
    token = str(out)
    _LIVE[token] = _RayBridge(record)
    sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    try:
        if started:
            ray.init(address=address, include_dashboard=False, log_to_driver=verbose,
                     logging_level=logging.INFO if verbose else logging.WARNING)
        if not verbose:
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)  # failures are in runs.csv and summary.md
        plan = {t["run_id"]: config_id(t) for t in trials}
        trainable = tune.with_resources(_ray_trial, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
        tuner = _tuner(trials, plan, trainable, out, token, cpus_per_trial, max_failures, max_concurrent, verbose)
        # Ctrl-C stops at once (Tune's own handler waits ~10 s for trials to wind down): every finished row
        # is already recorded, and the experiment state Tune saved is what a rerun restores from
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        tuner.fit()
        if not set(plan) <= _LIVE[token].reported:  # a restored trial Tune had finished but never reported to us
            (out / "ray_experiment.json").unlink()  # the next command starts a fresh experiment for what is missing
    finally:
        del _LIVE[token]
        _restore_variable("TUNE_DISABLE_SIGINT_HANDLER", sigint)
        if started and ray.is_initialized():
            ray.shutdown()
        if reaper is not None:
            reaper[0].terminate()
            reaper[0].wait()
            _restore_variable(TOKEN_VARIABLE, reaper[1])


def _tuner(trials: list[dict[str, Any]], plan: dict[str, str], trainable: Any, out: Path, token: str,
           cpus_per_trial: float, max_failures: int, max_concurrent: int | None, verbose: bool) -> Any:
    """The interrupted experiment of the same runs, restored, or a new one (named in ``ray_experiment.json``)."""
    pointer = out / "ray_experiment.json"
    old = json.loads(pointer.read_text()) if pointer.is_file() else {}
    if old and plan.items() <= old["runs"].items() and tune.Tuner.can_restore(str(out / old["name"])):
        print(f"resuming the Ray Tune experiment {out / old['name']}", file=sys.stderr)
        return tune.Tuner.restore(str(out / old["name"]), trainable=trainable, resume_errored=True)
    name = time.strftime("tune_%Y%m%d-%H%M%S")
    atomic_write_json(pointer, {"name": name, "runs": plan})
    return tune.Tuner(
        trainable,
        param_space={"run": tune.grid_search([{"settings": t} for t in trials]),
                     "threads": max(1, int(cpus_per_trial)), "verbose": verbose, "cwd": os.getcwd(), "out": str(out)},
        tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(storage_path=str(out), name=name, verbose=1 if verbose else 0,
                                  failure_config=tune.FailureConfig(max_failures=max_failures),
                                  callbacks=[RecordRows(token)]))


def _start_reaper() -> tuple[subprocess.Popen, str | None] | None:
    """A local Ray we start must not outlive us, even after a SIGKILL (see benchmarking.reaper): every process it
    starts inherits a token of ours, so the reaper finds late and orphaned ones too. Returns the reaper and the
    token it replaced (None without /proc)."""
    if not Path("/proc/self/stat").is_file():
        return None
    outer_token = os.environ.get(TOKEN_VARIABLE)
    os.environ[TOKEN_VARIABLE] = f"{os.getpid()}-{time.time_ns()}"  # our own, even under another reaper
    reaper = subprocess.Popen([sys.executable, "-m", "benchmarking.reaper", str(os.getpid()), os.environ[TOKEN_VARIABLE]],
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    return reaper, outer_token


def _restore_variable(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
