"""The search over whole runs on Ray Tune (``engine="ray"``): each candidate a trial of one CPU, the optimiser's
ask/tell behind Tune's searcher interface. By successive halving, Tune's ``ASHAScheduler`` beside the searcher stops a
trial at a rung.

Everything Tune pickles (the trainable, the searcher) is defined at module level, so cloudpickle takes it by
reference, and holds no state of the live search: :class:`CandidateSearcher` keeps a token and reaches the live
:class:`~agents.search.WholeRunSearch` (with its progress bar, TensorBoard writer and callbacks, none of which can
be pickled) through :data:`LIVE`, in the driver process. Ray is an optional extra: this module is imported only
when a search runs on it.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from ray import tune
from ray.tune.search import Searcher

from agents.whole_run_agent import RESULT_KEYS, judge_candidates, judge_through_rungs

LIVE: dict[str, Any] = {}  # token -> the live search, in the driver (what the pickled searcher reaches)


# what a trial reports of a run besides ``updates`` (the scheduler's clock); judge_at stays with the trial
REPORTED = (*RESULT_KEYS, "rung", "updates_run", "seed_judges")


def candidate_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: one candidate's whole run (by successive halving: reported at each rung, where Ray
    Tune's ASHAScheduler stops it or lets it go on)."""
    settings, theta = config["settings"], np.asarray(config["candidate"]["theta"])
    if "rungs" not in settings:
        result = judge_candidates(settings, [theta])[0]
    else:
        def at_rung(rung: int, so_far: dict[str, Any]) -> bool:
            tune.report(reported({**so_far, "rung": rung, "updates_run": settings["rungs"][rung]}, settings))
            return True  # the scheduler, not the trial, stops it

        result = judge_through_rungs(settings, theta, at_rung)
    tune.report(reported(result, settings))


def reported(result: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A run's result as a trial reports it: ``updates`` is the scheduler's clock (the rung's run length)."""
    updates = settings["updates"] if result.get("rung") is None else settings["rungs"][result["rung"]]
    return {**{k: result.get(k) for k in REPORTED}, "updates": updates}


class CandidateSearcher(Searcher):
    """Ray Tune's side of the search: ``suggest`` hands out the open candidates of the current generation (and
    waits, returning None, until the generation is told), ``on_trial_complete`` records each run. The state is
    the live search's: only the token (and the trials running) are pickled."""

    def __init__(self, token: str) -> None:
        super().__init__(metric="judge", mode="max")
        self.token, self.running = token, {}

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        search = LIVE[self.token]
        if not search.generation_open and not search.next_generation():
            return Searcher.FINISHED if not self.running else None
        open_ = [i for i in search.open_candidates() if i not in self.running.values()]
        if search.stopped:
            return Searcher.FINISHED if not self.running else None
        if not open_:
            return None
        self.running[trial_id] = open_[0]
        return search.candidate(open_[0])

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        search = LIVE[self.token]
        index = self.running.pop(trial_id, None)
        if index is None:
            return
        if error or result is None:
            raise RuntimeError(f"the run of candidate {index} failed (its Ray Tune trial errored)")
        rungs = {k: result[k] for k in ("rung", "updates_run", "seed_judges") if result.get(k) is not None}  # halving
        search.finish(index, {k: result.get(k) for k in RESULT_KEYS} | rungs | {"judge_at": {}})
        if not search.open_candidates():
            search.end_generation()


# Tune's settings for the experiment, from the environment: Ctrl-C stops at once (finished runs are already kept);
# the console reporter whose verbose=0 is silent (the default one prints a table even then, with an infinite
# num_samples as 9223372036854775807 trials: the searcher, not a count, ends the search)
TUNE_ENVIRONMENT = {"TUNE_DISABLE_SIGINT_HANDLER": "1", "RAY_AIR_NEW_OUTPUT": "0"}


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set, restored afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def scheduler(search: Any) -> Any:
    """Ray Tune's ASHAScheduler at the search's rungs (None without successive halving: every trial runs whole)."""
    if not search.halving:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="updates", metric="judge", mode="max", grace_period=search.rung_updates[0],
                         max_t=search.rung_updates[-1], reduction_factor=search.reduction_factor)


def search_on_ray(search: Any, workers: int | None, storage: str | None) -> None:
    """The whole search as one Ray Tune experiment: :class:`CandidateSearcher` asks and tells, each candidate is a
    trial of one CPU (actors reused, so each worker loads CAM-Net once). Starts a local Ray of ``workers`` CPUs
    unless one is running in this process (or ``RAY_ADDRESS`` names a cluster). The experiment is kept in
    ``storage``; without one, in a temporary folder that is removed afterwards, unless the search failed (its trials'
    errors are there: the folder is named on stderr)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, num_cpus=None if os.environ.get("RAY_ADDRESS") else workers,
                 logging_level="ERROR")
    token = f"{id(search)}-{time.time_ns()}"
    LIVE[token] = search
    folder = Path(storage or tempfile.mkdtemp(prefix="cmaes_")).resolve()
    keep = storage is not None
    try:
        tuner = tune.Tuner(
            tune.with_resources(candidate_trial, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=CandidateSearcher(token), scheduler=scheduler(search),
                                        num_samples=-1, reuse_actors=True, max_concurrent_trials=workers),
            run_config=tune.RunConfig(name=f"search_{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(folder),
                                      verbose=0))
        with environment(TUNE_ENVIRONMENT):
            tuner.fit()
    except Exception:
        if not keep:
            print(f"the search's Ray Tune experiment (its trials' errors) is kept in {folder}", file=sys.stderr)
        keep = True
        raise
    finally:
        del LIVE[token]
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
        if started:
            ray.shutdown()
