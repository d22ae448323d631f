"""Search over corruptors judged by whole runs: CMA-ES proposes, whole SimCLR runs judge, Ray Tune runs them.

A candidate is a point theta of a corruptor family (``corruption_env.whole_run``: one shared score map, or a
position-free rule that reads each cell). Each generation, CMA-ES (Hansen & Ostermeier 2001, through the
``cmaes`` library's ask/tell) proposes ``population`` candidates; each is judged by one whole SimCLR run of
``run_updates`` updates at batch ``run_batch`` from scratch (:meth:`WholeRun.judge`), all of them on the same
run seed (common random numbers: their judges differ by their masks alone), as Ray Tune trials of one CPU each,
up to ``workers`` at once (on a cluster, as many as it has), or in this process (``engine="local"``). CMA-ES is
told minus the judges (it minimises). When a generation's judges are all equal (every candidate made the same
masks: under a keep budget only the order of scores matters, so the landscape is flat between steps) or CMA-ES
asks to stop, the search restarts from a fresh random mean with ``restart_factor`` times the population
(IPOP-CMA-ES, Auger & Hansen 2005), keeping the best candidate found. This is label-free augmentation search as
SelfAugment (Reed et al. 2021) does it: a self-supervised evaluation scores whole training runs, a search
proposes.

The search's state (the CMA-ES object, every candidate's result, the best so far) is part of the agent: it is
saved by ``save`` and by ``train_agent.py``'s checkpoints at generation boundaries, and the results of a
generation's finished candidates are kept as they arrive, so Ctrl-C and ``--resume`` lose nothing and a resumed
search continues exactly as the uninterrupted one (a candidate's judge on a seed is deterministic).

:class:`WholeRunSearch` is the agent (``--algo cmaes``): ``learn`` runs the search (its budget counts every
candidate's SimCLR updates), ``predict`` acts with the best candidate found.
"""
from __future__ import annotations

import copy
import math
import pickle
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.utils import configure_logger

from agents.callbacks import ANSWER_KEEP
from agents.credit import env_attribute
from corruption_env import EnvConfig
from corruption_env.whole_run import WholeRun, available_families, check_judge, make_family

ENGINES = ("ray", "local")
RESULT_KEYS = ("judge", "keep_fraction", "keep_planted", "keep_other", "final_loss", "cpu_seconds", "diverged")

_RUNS: dict[str, WholeRun] = {}  # per process (a reused Ray actor too): one WholeRun per run config


def run_seed(seed: int) -> int:
    """The run seed every candidate of a search with agent seed ``seed`` is judged on: derived, so that it is not
    the evaluation's own seed (the corruptor found is judged by kNN on batches it was not chosen on)."""
    return int(np.random.SeedSequence([seed, 7]).generate_state(1)[0] % 2**31)


def judge_candidates(settings: dict[str, Any], thetas: list[np.ndarray]) -> list[dict[str, Any]]:
    """Judge candidates in this process: each one whole run (the one function every engine calls)."""
    torch.set_num_threads(settings["threads"])
    key = repr(sorted(settings["run"].items()))
    if key not in _RUNS:
        _RUNS[key] = WholeRun(EnvConfig.from_dict(settings["run"]), settings["updates"], settings["judge"])
    runs = _RUNS[key]
    family = make_family(settings["family"], runs.env)
    return [runs.judge_candidate(family, np.asarray(theta), settings["seed"]).to_dict() for theta in thetas]


def _candidate_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: one candidate's whole run."""
    from ray import tune

    candidate = config["candidate"]
    result = judge_candidates(config["settings"], [np.asarray(candidate["theta"])])[0]
    tune.report({k: result[k] for k in RESULT_KEYS})


_LIVE: dict[str, "WholeRunSearch"] = {}  # what the searcher Tune may pickle reaches the live search through


def cma_searcher(token: str) -> Any:
    """Ray Tune's searcher for the live search registered under ``token`` (its class is made here, on first use:
    Ray is an optional extra)."""
    from ray.tune.search import Searcher

    class CMASearcher(Searcher):
        """Ray Tune's side of the search: ``suggest`` hands out the open candidates of the current generation (and
        waits, returning None, until the generation is told), ``on_trial_complete`` records each run; the state
        is the live :class:`WholeRunSearch`'s (only its key is pickled)."""

        def __init__(self, token: str) -> None:
            super().__init__(metric="judge", mode="max")
            self.token, self.running = token, {}

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            search = _LIVE[self.token]
            if not search.generation_open and not search._next_generation():
                return Searcher.FINISHED if not self.running else None
            open_ = [i for i in search._open_candidates() if i not in self.running.values()]
            if search.stopped:
                return Searcher.FINISHED if not self.running else None
            if not open_:
                return None
            self.running[trial_id] = open_[0]
            return {"settings": search.settings, "candidate": {"index": open_[0], "theta": search.asked[open_[0]].tolist()}}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            search = _LIVE[self.token]
            index = self.running.pop(trial_id, None)
            if index is None:
                return
            if error or result is None:
                raise RuntimeError(f"the run of candidate {index} failed (its Ray Tune trial errored)")
            search._finish(index, {k: result.get(k) for k in RESULT_KEYS} | {"judge_at": {}})
            if not search._open_candidates():
                search._end_generation()

    return CMASearcher(token)


def optimizer_state(optimizer: Any) -> dict[str, Any]:
    """CMA-ES's whole state, exactly. The ``cmaes`` object's own pickle is lossy: it stores the covariance as one
    triangle (a matrix symmetric only to 1e-16 comes back exactly symmetric, and its eigenvectors can flip, so a
    resumed search asked other candidates: measured) and leaves out its random stream (drawing a fresh one)."""
    state = {k: v for k, v in vars(optimizer).items() if k != "_rng"}
    return {"class": type(optimizer), "attributes": copy.deepcopy(state), "rng": optimizer._rng.get_state()}


def optimizer_from(state: dict[str, Any]) -> Any:
    optimizer = state["class"].__new__(state["class"])
    optimizer.__dict__.update(copy.deepcopy(state["attributes"]))
    optimizer._rng = np.random.RandomState()
    optimizer._rng.set_state(state["rng"])
    return optimizer


class WholeRunSearch:
    """``--algo cmaes``: CMA-ES over a corruptor family, each candidate judged by a whole SimCLR run.

    :param env: the CorruptionEnv (or VecEnv of one) whose task is searched; runs use its config with
        ``run_batch`` images per batch. Its action mode must take scores (``shared_scores`` or ``scores``).
    :param seed: seed of the search (CMA-ES's samples) and of the run seed every candidate is judged on.
    :param family: the corruptor family searched (``score_map``: one shared score per cell; ``cell_rule``: a
        position-free rule that scores each cell from its pixels; ``auto``: the map in ``shared_scores`` mode, the
        rule in ``scores`` mode).
    :param judge: the periodic statistic read at each run's end, higher is better (``rankme``: label-free).
    :param run_updates: SimCLR updates per candidate run.
    :param run_batch: images per batch in candidate runs. The defaults (50 updates of 64 images, ~8 CPU seconds
        a run with bf16) are the cheapest setting measured at which the judge ranked the known answer above every
        random map and random masks in 3 of 3 seeds on both fixed tasks, and rose with the number of planted cells
        dropped on both (``bench/judge_budget.py``, ``docs/results/whole_run/judge_budget.md``).
    :param population: candidates per generation (before restarts enlarge it).
    :param sigma0: CMA-ES's initial step size, in units of the family's parameter scale.
    :param restart_factor: population growth at each restart (IPOP; 1 keeps it).
    :param engine: ``ray`` (each candidate a Ray Tune trial; ``pip install -e ".[ray]"``) or ``local`` (in this
        process, one after the other).
    :param workers: Ray Tune trials at once (default: this machine's CPUs).
    :param storage: the Ray Tune experiment folder (default: a temporary one).
    :param tensorboard_log: TensorBoard folder (``search/`` scalars per generation).
    :param verbose: print one line per generation.
    """

    trains_on_reward = False  # it is judged by whole runs: benchmark rows carry no training reward

    def __init__(self, env: Any, seed: int = 0, family: str = "auto", judge: str = "rankme",
                 run_updates: int = 50, run_batch: int = 64, population: int = 16, sigma0: float = 1.0,
                 restart_factor: float = 2.0, patience: int = 3, lr_adapt: bool = False, engine: str = "ray", workers: int | None = None,
                 storage: str | None = None, tensorboard_log: str | None = None, verbose: int = 1) -> None:
        if env is None:
            raise ValueError("cmaes needs an env: its candidates run in the env's config")
        cfg: EnvConfig = env_attribute(env, "config")
        if family not in (*available_families(), "auto"):
            raise ValueError(f"unknown family {family!r}; available: {', '.join(available_families())}")
        check_judge(judge)
        for name, value, low in (("run_updates", run_updates, 1), ("run_batch", run_batch, 2),
                                 ("population", population, 2)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not sigma0 > 0 or not restart_factor >= 1:
            raise ValueError(f"sigma0 must be > 0 and restart_factor >= 1, got {sigma0!r} and {restart_factor!r}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if engine == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError('engine "ray" needs Ray Tune: pip install -e ".[ray]" (or engine:local)') from None
        self.env, self.seed, self.cfg = env, seed, cfg
        self.family_name, self.judge, self.run_updates, self.run_batch = family, judge, run_updates, run_batch
        self.population, self.sigma0, self.restart_factor, self.patience = population, sigma0, restart_factor, patience
        self.lr_adapt = lr_adapt
        self.engine, self.workers, self.storage = engine, workers, storage
        self.tensorboard_log, self.verbose = tensorboard_log, verbose
        self.family = make_family(family, env.envs[0].unwrapped if hasattr(env, "envs") else env.unwrapped)
        self.settings = {"run": cfg.replace(batch_size=run_batch, num_threads=1, record_timings=False).to_dict(),
                         "updates": run_updates, "judge": judge, "family": family, "seed": run_seed(seed),
                         "threads": 1}
        # SB3's vocabulary for the CLIs: a "rollout" is one generation of candidate runs
        self.n_envs, self.n_steps = 1, population * run_updates
        self.num_timesteps = 0
        self.rng = np.random.default_rng(seed)
        self.optimizer = self._new_optimizer(np.zeros(self.family.dim), population)
        self.history: list[dict[str, Any]] = []  # every judged candidate: generation, restart, theta, result
        self.pending: dict[int, dict[str, Any]] = {}  # this generation's finished candidates (by index)
        self.asked: list[np.ndarray] | None = None  # this generation's candidates, once asked
        self.restarts = self.generations_before = 0  # generations of the optimizers before the current one
        self.stale, self.restart_best = 0, -math.inf  # generations without a better judge since this (re)start
        self.best: dict[str, Any] | None = None  # the best candidate so far: theta and its result
        self.generation_start, self.generation_open, self.callbacks = 0, False, CallbackList([])

    # ------------------------------------------------------------------------------------------ the search

    def _new_optimizer(self, mean: np.ndarray, population: int) -> Any:
        from cmaes import CMA

        return CMA(mean=mean.astype(float), sigma=self.sigma0 * self.family.scale, population_size=population,
                   seed=int(self.rng.integers(2**31)), lr_adapt=self.lr_adapt)

    def learn(self, total_timesteps: int, callback: Any = None, tb_log_name: str = "search",
              reset_num_timesteps: bool = True, progress_bar: bool = False, **_: Any) -> "WholeRunSearch":
        """Run whole generations until ``total_timesteps`` SimCLR updates (over every candidate) are spent
        (at least one generation)."""
        # TensorBoard only: the terminal gets one line per generation (verbose), not SB3's table
        self.logger = configure_logger(0, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        self.callbacks = CallbackList([c for c in (callback if isinstance(callback, list) else [callback])
                                       if isinstance(c, BaseCallback)])
        if hasattr(self.env, "reset"):
            self.env.reset()  # the run's image grids show a batch (the search never steps this env)
        self.callbacks.init_callback(self)
        self.callbacks.on_training_start(locals(), globals())
        self.target, self.stopped = self.num_timesteps + max(total_timesteps, 1), False
        try:
            if self.engine == "local":
                while self._next_generation():
                    for index in self._open_candidates():
                        if not self._finish(index, judge_candidates(self.settings, [self.asked[index]])[0]):
                            break
                    self._end_generation()
            else:
                self._search_on_ray()
        except KeyboardInterrupt:  # the generation is not done: its finished runs wait in pending, counted on resume
            self.num_timesteps, self.generation_open = self.generation_start, False
            raise
        self.callbacks.on_training_end()
        return self

    def _next_generation(self) -> bool:
        """Open the next generation (False once the budget is spent or a callback stopped the search). Its
        candidates judged before an interruption count now, without running again."""
        if self.stopped or self.num_timesteps >= self.target:
            return False
        self.callbacks.on_rollout_start()
        self.generation_start, self.generation_open = self.num_timesteps, True
        if self.asked is None:
            self.asked = [self.optimizer.ask() for _ in range(self.optimizer.population_size)]
        cached, self.pending = self.pending, {}
        for index, result in cached.items():
            self._finish(index, result)
        return not self.stopped

    def _open_candidates(self) -> list[int]:
        return [i for i in range(len(self.asked)) if i not in self.pending]

    def _finish(self, index: int, result: dict[str, Any]) -> bool:
        """A candidate's run is judged: keep it, count its updates, tell the callbacks; False if one stops."""
        self.pending[index] = result
        self.num_timesteps += self.run_updates
        info = {"judge": result["judge"], "candidate_keep_planted": result["keep_planted"]}
        self.callbacks.update_locals({"rewards": np.array([result["judge"]]), "infos": [info]})
        self.stopped = self.stopped or not self.callbacks.on_step()
        return not self.stopped

    def _end_generation(self) -> None:
        """Tell CMA-ES the generation's judges; keep the best; restart on a flat generation or CMA-ES's stop."""
        generation = self.optimizer.generation + self.generations_before
        missing = self._open_candidates()
        if missing and self.stopped:  # a callback stopped the search inside the generation: it stays for the next
            self.num_timesteps, self.generation_open = self.generation_start, False  # learn(), counted then
            return
        if missing:
            raise RuntimeError(f"the runs of candidates {missing} of generation {generation} failed (see the Ray Tune "
                               f"trial errors under {self.storage or 'the temporary experiment folder'})")
        results = [self.pending[i] for i in range(len(self.asked))]
        judges = np.array([r["judge"] if r["judge"] is not None and np.isfinite(r["judge"]) else -np.inf
                           for r in results])
        for theta, result in zip(self.asked, results):
            self.history.append({"generation": generation, "restart": self.restarts, "theta": theta.tolist(), **result})
            if np.isfinite(result["judge"]) and (self.best is None or result["judge"] > self.best["judge"]):
                self.best = {"theta": theta.tolist(), **result, "generation": generation}
        finite = judges[np.isfinite(judges)]
        worst = float(finite.min()) if finite.size else 0.0
        self.optimizer.tell([(theta, -float(j) if np.isfinite(j) else -worst + 1.0)
                             for theta, j in zip(self.asked, judges)])
        self._log_generation(generation, judges, results)
        improved = finite.size and finite.max() > self.restart_best + 1e-9
        self.restart_best = max(self.restart_best, float(finite.max()) if finite.size else -math.inf)
        self.stale = 0 if improved else self.stale + 1
        flat = finite.size > 1 and np.ptp(finite) < 1e-9
        if flat or self.stale >= self.patience or self.optimizer.should_stop():
            self.restarts += 1
            self.generations_before = generation + 1
            population = int(round(self.optimizer.population_size * self.restart_factor))
            mean = self.rng.uniform(-self.family.scale, self.family.scale, self.family.dim)
            self.optimizer = self._new_optimizer(mean, population)
            self.n_steps = population * self.run_updates
            self.stale, self.restart_best = 0, -math.inf
        self.asked, self.pending, self.generation_open = None, {}, False
        self.callbacks.on_rollout_end()

    def _search_on_ray(self) -> None:
        """The whole search as one Ray Tune experiment: :class:`_CMASearcher` asks and tells, each candidate is a
        trial of one CPU (actors reused, so each worker loads CAM-Net once)."""
        import os

        import ray
        from ray import tune

        started = not ray.is_initialized()
        if started:
            ray.init(include_dashboard=False, log_to_driver=False, num_cpus=self.workers, logging_level="ERROR")
        token = f"{id(self)}-{time.time_ns()}"
        _LIVE[token] = self
        sigint = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Ctrl-C stops at once: finished runs are already kept
        try:
            storage = Path(self.storage or tempfile.mkdtemp(prefix="cmaes_")).resolve()
            tuner = tune.Tuner(
                tune.with_resources(_candidate_trial, {"cpu": 1}),
                tune_config=tune.TuneConfig(search_alg=cma_searcher(token), num_samples=-1, reuse_actors=True,
                                            max_concurrent_trials=self.workers),
                run_config=tune.RunConfig(name=f"search_{time.strftime('%Y%m%d-%H%M%S')}", storage_path=str(storage),
                                          verbose=0))
            tuner.fit()
        finally:
            del _LIVE[token]
            if sigint is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = sigint
            if started:
                ray.shutdown()

    # ------------------------------------------------------------------------------------------ reporting

    def _log_generation(self, generation: int, judges: np.ndarray, results: list[dict[str, Any]]) -> None:
        finite = judges[np.isfinite(judges)]
        if not finite.size:
            finite = np.array([math.nan])
        best = results[int(np.argmax(judges))]
        self.logger.record("search/generation_best_judge", float(finite.max()) if finite.size else math.nan)
        self.logger.record("search/best_judge", self.best["judge"] if self.best else math.nan)
        self.logger.record("search/judge_spread", float(finite.std()) if finite.size else math.nan)
        self.logger.record("search/sigma", float(self.optimizer._sigma))
        self.logger.record("search/population", len(results))
        self.logger.record("search/restarts", self.restarts)
        if self.best and self.best.get("keep_planted") is not None:
            self.logger.record("search/best_keep_planted", self.best["keep_planted"])
        self.logger.dump(self.num_timesteps)
        if self.verbose:
            planted = "" if best.get("keep_planted") is None else f", its keep on planted cells {best['keep_planted']:.2f}"
            print(f"generation {generation}: best judge {finite.max():.2f}{planted}; best so far "
                  f"{self.best['judge']:.2f}; sigma {self.optimizer._sigma:.2f}; runs {len(self.history)}", flush=True)

    def known_answer(self) -> dict[str, Any]:
        """On a known-answer task: the candidate runs (and their CPU minutes) until the best candidate so far
        dropped the planted cells (keep <= ANSWER_KEEP) and stayed such; the final best's planted keep."""
        if not self.history or self.history[0].get("keep_planted") is None:
            return {}
        best, reached, cpu = -math.inf, None, 0.0
        for n, row in enumerate(self.history, start=1):
            cpu += row["cpu_seconds"]
            if np.isfinite(row["judge"]) and row["judge"] > best:
                best = row["judge"]
                found = row["keep_planted"] <= ANSWER_KEEP
                reached = (n, cpu) if found and reached is None else (reached if found else None)
        return {"answer_runs": None if reached is None else reached[0],
                "answer_cpu_minutes": None if reached is None else round(reached[1] / 60, 1),
                "final_keep_planted": self.best["keep_planted"], "search_runs": len(self.history),
                "search_cpu_minutes": round(cpu / 60, 1), "best_judge": self.best["judge"]}

    def summary(self) -> str:
        """One line per generation: its candidates' planted keep -> judge, best first."""
        lines = []
        for generation in sorted({r["generation"] for r in self.history}):
            rows = sorted((r for r in self.history if r["generation"] == generation), key=lambda r: -r["judge"])
            lines.append(f"generation {generation}: " + ", ".join(
                (f"{r['keep_planted']:.2f}: " if r.get("keep_planted") is not None else "") + f"{r['judge']:.2f}"
                for r in rows))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------ SB3 surface

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        if self.best is None:
            raise RuntimeError("the search has not judged any candidate yet: call learn() first")
        if isinstance(observation, dict) and observation["images"].ndim == 5:  # a VecEnv's batch of observations
            return np.stack([self.family.act(np.asarray(self.best["theta"]), {k: v[i] for k, v in observation.items()})
                             for i in range(observation["images"].shape[0])]), state
        return self.family.act(np.asarray(self.best["theta"]), observation), state

    def get_env(self) -> Any:
        return self.env

    def set_random_seed(self, seed: int | None = None) -> None:
        """Nothing to reseed: the search's own streams are part of its saved state (a resumed search continues)."""

    def save(self, path: str | Path) -> None:
        state = {"options": self._options(), "optimizer": optimizer_state(self.optimizer), "rng": self.rng,
                 "history": self.history,
                 "pending": self.pending, "asked": self.asked, "restarts": self.restarts, "best": self.best,
                 "num_timesteps": self.num_timesteps, "n_steps": self.n_steps, "stale": self.stale,
                 "restart_best": self.restart_best,
                 "generations_before": self.generations_before}
        with open(path, "wb") as f:
            pickle.dump(state, f)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "family": self.family_name, "judge": self.judge, "run_updates": self.run_updates,
                "run_batch": self.run_batch, "population": self.population, "sigma0": self.sigma0,
                "restart_factor": self.restart_factor, "patience": self.patience, "lr_adapt": self.lr_adapt,
                "engine": self.engine,
                "workers": self.workers}

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> "WholeRunSearch":
        with open(path, "rb") as f:
            state = pickle.load(f)
        agent = cls(env, **{**state["options"], **kwargs})
        agent.optimizer, agent.rng, agent.history = optimizer_from(state["optimizer"]), state["rng"], state["history"]
        agent.pending, agent.asked, agent.restarts = state["pending"], state["asked"], state["restarts"]
        agent.best, agent.num_timesteps, agent.n_steps = state["best"], state["num_timesteps"], state["n_steps"]
        agent.generations_before, agent.stale, agent.restart_best = (state["generations_before"], state["stale"],
                                                                      state["restart_best"])
        return agent
