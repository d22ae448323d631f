"""The base of agents over whole runs (``--algo cmaes``, ``--algo run_ppo``): what they share, in one place.

An agent over whole runs proposes parametric corruptors (``corruption_env.whole_run``: a point theta of a score
map or a cell rule), each judged by one whole SimCLR run; it never steps the task's env, whose config its runs use
(with ``run_batch`` images per batch). :class:`WholeRunAgent` holds what every such agent needs: the task's config
read through any wrapper or VecEnv, the checked options, the parametric corruptor (one instance for every env of
the task, whatever its batch), ``predict`` (the corruptor at the agent's current theta, on one observation or a
VecEnv's batch of them), SB3's callbacks told about each run as one step (``rewards``: the judge), the
known-answer fields the CLIs print, and :func:`settle_config`, which gives an agent that needs score actions the
action mode and keep budget it needs (and says so). :func:`judge_candidates` is the one function every engine of
the search calls to judge candidates.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import configure_logger

from agents.credit import env_attribute
from corruption_env import EnvConfig
from corruption_env.action_modes import ACTION_MODES
from corruption_env.whole_run import (RunResult, WholeRun, available_corruptors, check_judge, make_corruptor,
                                      resolve_corruptor)

RESULT_KEYS = ("judge", "keep_fraction", "keep_planted", "keep_other", "final_loss", "cpu_seconds", "diverged")
DEFAULT_KEEP_BUDGET = 0.75  # what an agent over whole runs sets where the task has none: the known-answer tasks'

# per process (a pool worker or a reused Ray actor serves row after row, search after search): the WholeRuns built
# so far, keyed by everything a WholeRun is made from (the runs' config, their length and the judge), the most
# recently used last; a few are kept (each holds an env: data, CAM-Net, an encoder)
_RUNS: OrderedDict[str, WholeRun] = OrderedDict()
_RUNS_KEPT = 4


def whole_run(config: EnvConfig, updates: int, judge: str) -> WholeRun:
    """The WholeRun of ``config``, ``updates`` and ``judge`` in this process, made once and reused (CAM-Net and the
    data are loaded once per process either way; the env is what is saved)."""
    key = json.dumps({"config": config.to_dict(), "updates": updates, "judge": judge}, sort_keys=True, default=str)
    if key not in _RUNS:
        _RUNS[key] = WholeRun(config, updates, judge)
        while len(_RUNS) > _RUNS_KEPT:
            _RUNS.popitem(last=False)
    _RUNS.move_to_end(key)
    return _RUNS[key]


def judge_candidates(settings: dict[str, Any], thetas: list[np.ndarray]) -> list[dict[str, Any]]:
    """Judge candidates in this process, each by one whole run: ``settings`` holds the runs' config (``run``),
    ``updates``, ``judge``, the parametric ``corruptor``, the run ``seed`` and torch ``threads``."""
    torch.set_num_threads(settings["threads"])
    runs = whole_run(EnvConfig.from_dict(settings["run"]), settings["updates"], settings["judge"])
    corruptor = make_corruptor(settings["corruptor"], runs.config)
    return [runs.judge_candidate(corruptor, np.asarray(theta), settings["seed"]).to_dict() for theta in thetas]


def judge_through_rungs(settings: dict[str, Any], theta: np.ndarray,
                        promote: Callable[[int, dict[str, Any]], bool]) -> dict[str, Any]:
    """One candidate of a search by successive halving (``settings``' ``rungs``: the run lengths, shortest first;
    ``final_seeds``): one run of the last rung's length on the run seed, judged at each earlier rung, where
    ``promote(rung, result)`` says whether it goes on (the rule of ASHA: the search's own in process, Ray Tune's
    scheduler on Ray); a run that reaches the last rung is judged on every final seed (:func:`over_seeds`). The
    result says the ``rung`` reached and the SimCLR updates its runs took (``updates_run``)."""
    torch.set_num_threads(settings["threads"])
    rungs = settings["rungs"]
    runs = whole_run(EnvConfig.from_dict(settings["run"]), rungs[-1], settings["judge"])
    corruptor = make_corruptor(settings["corruptor"], runs.config)
    theta = corruptor.check(np.asarray(theta))

    def act(obs: Any) -> np.ndarray:
        return corruptor.act(theta, obs)

    stopped: list[int] = []

    def until(updates: int, result: RunResult) -> bool:
        rung = rungs.index(updates)
        stopped.extend([] if promote(rung, result.to_dict()) else [rung])
        return not stopped

    first = runs.judge(act, settings["seed"], also_at=tuple(rungs[:-1]), until=until)
    if stopped or first.diverged:  # stopped at a rung (a diverged run: at the last rung it passed, its judge NaN)
        rung = stopped[0] if stopped else max([rungs.index(u) for u in first.judge_at] + [0])
        return {**first.to_dict(), "rung": rung, "updates_run": rungs[rung]}
    results = [first] + [runs.judge(act, seed) for seed in settings["final_seeds"][1:]]
    return {**over_seeds(results), "rung": len(rungs) - 1, "updates_run": rungs[-1] * len(results)}


def over_seeds(results: list[RunResult]) -> dict[str, Any]:
    """One candidate judged on several run seeds, as one result: the mean judge (NaN if any run diverged), the
    mean keep rates, the CPU time of all, each seed's judge (``seed_judges``); the rest the first run's."""
    judges = [r.judge for r in results]
    mean = lambda values: None if values[0] is None else float(np.mean(values))  # noqa: E731
    return {**results[0].to_dict(), "judge": float(np.mean(judges)), "seed_judges": judges,
            "keep_fraction": mean([r.keep_fraction for r in results]),
            "keep_planted": mean([r.keep_planted for r in results]),
            "keep_other": mean([r.keep_other for r in results]),
            "cpu_seconds": float(sum(r.cpu_seconds for r in results)),
            "diverged": any(r.diverged for r in results)}


def judge_keep_all(settings: dict[str, Any]) -> dict[str, Any]:
    """Keeping every cell judged as a candidate: one whole run like :func:`judge_candidates`' but in the runs' config
    without the keep budget, every cell scored to be kept (in a search by successive halving: at the last rung's
    length, on every final seed). A search compares its best candidate with it, so that "nothing here beats keeping
    everything" is an answer it can give."""
    torch.set_num_threads(settings["threads"])
    runs = whole_run(EnvConfig.from_dict(settings["run"]).without_budget(), settings["updates"], settings["judge"])
    keep = np.ones(runs.env.action_space.shape, dtype=np.float32)
    seeds = settings["final_seeds"] if "final_seeds" in settings else [settings["seed"]]
    results = [runs.judge(lambda obs: keep, seed) for seed in seeds]
    return results[0].to_dict() if len(results) == 1 else over_seeds(results)


def judge_confirmation(settings: dict[str, Any], thetas: list[np.ndarray], seed: int) -> dict[str, Any]:
    """The confirmation rung of a search on one run seed the search did not use: its finalists (``thetas``, best
    first) and keeping every cell (as :func:`judge_keep_all`), each judged by one whole run of
    ``settings['updates']`` updates by ``settings['judge']``, all on ``seed`` (paired: their judges differ by their
    masks alone)."""
    torch.set_num_threads(settings["threads"])
    runs = whole_run(EnvConfig.from_dict(settings["run"]), settings["updates"], settings["judge"])
    corruptor = make_corruptor(settings["corruptor"], runs.config)
    finalists = [runs.judge_candidate(corruptor, np.asarray(theta), seed).to_dict() for theta in thetas]
    return {"seed": seed, "finalists": finalists, "keep_all": judge_keep_all({**settings, "final_seeds": [seed]})}


def settle_config(config: EnvConfig, given: set[str] | frozenset[str] = frozenset()) -> tuple[EnvConfig, str | None]:
    """The config an agent over whole runs works in: score actions (``scores``, or ``shared_scores`` for a shared
    mode) and a keep budget (:data:`DEFAULT_KEEP_BUDGET` where there is none); with the one line that says what
    changed (None if nothing did). ``given``: the fields the user set, which are never changed (a ValueError
    names the flag to change instead)."""
    mode = ACTION_MODES[config.action_mode]
    changes: dict[str, Any] = {}
    if not mode.scores:
        changes["action_mode"] = "shared_scores" if mode.shared else "scores"
        if "action_mode" in given:
            raise ValueError(f"a parametric corruptor scores cells: it needs --env-kwargs action_mode:scores or "
                             f"action_mode:shared_scores, not {config.action_mode!r}")
    if config.keep_budget is None and "keep_budget" not in given:
        changes["keep_budget"] = DEFAULT_KEEP_BUDGET
    if not changes:
        return config, None
    said = " ".join(f"{k}:{v}" for k, v in changes.items())
    return config.replace(**changes), (f"a parametric corruptor scores cells and the env keeps each image's top "
                                       f"ones: running with --env-kwargs {said}")


def renamed_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options saved before the parametric corruptor was called so (``family``), under today's names."""
    return {("corruptor" if k == "family" else k): v for k, v in options.items()}


class WholeRunAgent:
    """What the agents over whole runs share (see the module's docstring); subclasses implement ``learn``,
    ``theta`` (the parameters they act with), ``save`` and ``load``.

    :param env: the task's CorruptionEnv (or a wrapper or VecEnv of one): its config is what the runs use.
    :param seed: the agent's seed.
    :param corruptor: the parametric corruptor (``score_map``, ``cell_rule``; ``auto``: the map in
        ``shared_scores`` mode, the rule in ``scores`` mode).
    :param judge: the periodic statistic read at each run's end, higher is better (``rankme``: label-free).
    :param run_updates: SimCLR updates per run.
    :param run_batch: images per batch in the runs.
    """

    trains_on_reward = False  # it is judged by whole runs: benchmark rows carry no training reward
    algo: ClassVar[str] = ""  # its --algo name, for messages

    def __init__(self, env: Any, seed: int, corruptor: str, judge: str, run_updates: int, run_batch: int,
                 tensorboard_log: str | None, verbose: int) -> None:
        if env is None:
            raise ValueError(f"{self.algo} needs an env: its runs use the env's config")
        cfg: EnvConfig = env_attribute(env, "config")
        if corruptor not in (*available_corruptors(), "auto"):
            raise ValueError(f"unknown corruptor {corruptor!r}; available: {', '.join(available_corruptors())}, auto")
        check_judge(judge)
        for name, value, low in (("run_updates", run_updates, 1), ("run_batch", run_batch, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.env, self.seed, self.cfg = env, seed, cfg
        self.corruptor_name, self.judge, self.run_updates, self.run_batch = corruptor, judge, run_updates, run_batch
        self.corruptor = make_corruptor(corruptor, cfg)
        self.run_config = cfg.replace(batch_size=run_batch, record_timings=False)
        self.tensorboard_log, self.verbose = tensorboard_log, verbose
        self.n_envs, self.num_timesteps = 1, 0
        self.callbacks = CallbackList([])

    @classmethod
    def config_for(cls, config: EnvConfig, given: set[str] | frozenset[str] = frozenset()) -> tuple[EnvConfig, str | None]:
        """What the CLIs call before building the env: :func:`settle_config`."""
        return settle_config(config, given)

    @property
    def resolved_corruptor(self) -> str:
        return resolve_corruptor(self.corruptor_name, self.cfg)

    # ------------------------------------------------------------------------------------------ learning

    def _begin(self, callback: Any, tb_log_name: str, reset_num_timesteps: bool, logger_verbose: int = 0) -> None:
        """Before learning: the logger (TensorBoard), SB3's callbacks, a batch in the task's env (for the image
        grids: the agent never steps it)."""
        self.logger = configure_logger(logger_verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        self.callbacks = CallbackList([c for c in (callback if isinstance(callback, list) else [callback])
                                       if isinstance(c, BaseCallback)])
        if hasattr(self.env, "reset"):
            self.env.reset()
        self.callbacks.init_callback(self)
        self.callbacks.on_training_start(locals(), globals())

    def _told_run(self, judge: float) -> bool:
        """SB3's callbacks see each run as one step whose reward is its judge; False if one stops learning."""
        self.callbacks.update_locals({"rewards": np.array([judge]), "infos": [{"judge": judge}]})
        return self.callbacks.on_step()

    # ------------------------------------------------------------------------------------------ SB3 surface

    def theta(self) -> np.ndarray:
        """The parameters the agent acts with."""
        raise NotImplementedError

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        theta = np.asarray(self.theta())
        if isinstance(observation, dict) and observation["images"].ndim == 5:  # a VecEnv's batch of observations
            return np.stack([self.corruptor.act(theta, {k: v[i] for k, v in observation.items()})
                             for i in range(observation["images"].shape[0])]), state
        return self.corruptor.act(theta, observation), state

    def get_env(self) -> Any:
        return self.env

    # ------------------------------------------------------------------------------------------ reporting

    @staticmethod
    def answer_fields(reached: tuple[int, float] | None, final_keep_planted: float, runs: int,
                      cpu_seconds: float) -> dict[str, Any]:
        """The known-answer fields the CLIs print and the benchmark records: the runs (and CPU minutes) until the
        answer was found and stayed found (None: not found), the final planted keep, the runs and CPU minutes."""
        return {"answer_runs": None if reached is None else reached[0],
                "answer_cpu_minutes": None if reached is None else round(reached[1] / 60, 1),
                "final_keep_planted": final_keep_planted, "search_runs": runs,
                "search_cpu_minutes": round(cpu_seconds / 60, 1)}
