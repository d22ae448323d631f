"""Search over corruptors judged by whole runs: an ask/tell optimiser proposes, whole SimCLR runs judge.

A candidate is a point theta of a parametric corruptor (``corruption_env.whole_run``: one shared score map, or a
position-free rule that reads each cell). Each generation, the optimiser (``agents/optimisers.py``: CMA-ES with
IPOP restarts by default, Hansen & Ostermeier 2001, Auger & Hansen 2005; sep-CMA-ES; Optuna's TPE) proposes its
candidates; each is judged by one whole SimCLR run of ``run_updates`` updates at batch ``run_batch`` from
scratch (:meth:`WholeRun.judge`), all of them on the same run seed (common random numbers: their judges differ by
their masks alone), in this process (``engine="local"``) or as Ray Tune trials of one CPU each, up to ``workers``
at once (on a cluster, as many as it has: ``agents/search_on_ray.py``). The optimiser is told the judges. This is
label-free augmentation search as SelfAugment (Reed et al. 2021) does it: a self-supervised evaluation scores
whole training runs, a search proposes. With ``rungs`` > 1 a candidate is judged by successive halving (ASHA, Li et
al. 2020): its run is read at geometric lengths and stopped at a rung where it falls below the top share of those
judged there before it; only candidates that reach the last rung, judged on several run seeds, can be the pick.
The pick is then **confirmed** at a length that predicts the outcome: it (with the first stage's next best, up to
``confirm_finalists``) and keeping every cell are judged by runs of ``confirm_updates`` on ``confirm_seeds`` run
seeds the search did not use, paired, and the search keeps every cell unless the best of them wins there (the best
of many short-run judges beats keeping everything by selection alone, and short runs' judges favour masking where
the long run does not: ``studies/confirmation.py``).

The search's state (the optimiser's, every candidate's result, the best so far) is part of the agent: it is
saved by ``save`` and by ``train_agent.py``'s checkpoints at generation boundaries, and the results of a
generation's finished candidates are kept as they arrive, so Ctrl-C and ``--resume`` lose nothing and a resumed
search continues exactly as the uninterrupted one (a candidate's judge on a seed is deterministic).

:class:`WholeRunSearch` is the agent (``--algo cmaes``): ``learn`` runs the search (its budget counts every
candidate's SimCLR updates), ``predict`` acts with the best candidate found.
"""
from __future__ import annotations

import inspect
import math
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from agents.callbacks import ANSWER_KEEP
from agents.optimisers import CMAES, OPTIMISERS, Optimiser
from agents.whole_run_agent import (WholeRunAgent, judge_candidates, judge_confirmation, judge_keep_all,
                                   judge_through_rungs, renamed_options)
from corruption_env import EnvConfig
from corruption_env.statistics import STATISTICS, periodic_statistics
from corruption_env.whole_run import check_judge

ENGINES = ("ray", "local")
# the search's defaults before the fidelity study chose its judge and rungs: what its earlier results ran with
DEFAULTS_BEFORE_FIDELITY = {"judge": "rankme", "run_updates": 50, "rungs": 1, "confirm_updates": 0}
# what the optimiser is told of a candidate judged by successive halving: RUNG_SPAN x the rung it reached + its judge
# there, so that reaching a later rung ranks above any judge at an earlier one (judges at different lengths are not
# on one scale), and judges at one rung keep their order and gaps (every judge here is far below it in size)
RUNG_SPAN = 1e6
# the options every optimiser of the CMA-ES kind takes, given to the search (``--hyperparams sigma0:0.5``)
OPTIMISER_OPTIONS = {"sigma0": 1.0, "restart_factor": 2.0, "patience": 3, "lr_adapt": False}


def run_seed(seed: int, i: int = 0) -> int:
    """The run seed every candidate of a search with agent seed ``seed`` is judged on (``i`` > 0: the further
    seeds of the last rung): derived, so that it is not the evaluation's own seed (the corruptor found is judged by
    kNN on batches it was not chosen on)."""
    return int(np.random.SeedSequence([seed, 7, *([i] if i else [])]).generate_state(1)[0] % 2**31)


def confirm_seed(seed: int, i: int) -> int:
    """The ``i``-th run seed of the confirmation of a search with agent seed ``seed``: none of the search's own."""
    return int(np.random.SeedSequence([seed, 11, i]).generate_state(1)[0] % 2**31)


def rung_lengths(run_updates: int, reduction_factor: int, rungs: int) -> list[int]:
    """The run lengths (updates) a candidate is judged at: ``run_updates`` x ``reduction_factor`` ** k per rung k."""
    return [run_updates * reduction_factor ** k for k in range(rungs)]


def make_optimiser(name: str, dim: int, scale: float, population: int, seed: int,
                   options: dict[str, Any]) -> Optimiser:
    """Optimiser ``name`` with the search's optimiser options it takes; an option it does not take, set to other
    than its default, is an error."""
    cls = OPTIMISERS[name]
    takes = inspect.signature(cls.__init__).parameters
    unused = [k for k, v in options.items() if k not in takes and v != OPTIMISER_OPTIONS.get(k)]
    if unused:
        raise ValueError(f"optimizer {name!r} takes no option {', '.join(unused)}")
    return cls(dim, scale, population, seed, **{k: v for k, v in options.items() if k in takes})


class WholeRunSearch(WholeRunAgent):
    """``--algo cmaes``: an ask/tell optimiser over a parametric corruptor, each candidate judged by a whole run.

    :param env: the CorruptionEnv (or VecEnv of one) whose task is searched; runs use its config with
        ``run_batch`` images per batch. Its action mode must take scores (``shared_scores`` or ``scores``).
    :param seed: seed of the search (the optimiser's samples) and of the run seed every candidate is judged on.
    :param corruptor, judge: see :class:`~agents.whole_run_agent.WholeRunAgent`.
    :param run_updates: SimCLR updates per candidate run (with ``rungs`` > 1: at the first rung).
    :param run_batch: images per batch in candidate runs.
    The defaults of the judge and its lengths (alpha-ReQ after 25 updates, the top half on to 50 on two run seeds:
    ``judge="alpha_req", run_updates=25, rungs=2, reduction_factor=2``, ~25 CPU seconds a candidate on 2 cores)
    are the fidelity study's choice on its development split, by a rule stated before its units ran: the lowest
    mean regret of the pick in kNN at the evaluation length, then the cheapest within half of keep_all's seed sd
    (regret 0.012 there; RankMe after 50 updates, the search's judge before it, 0.037:
    ``studies/fidelity.py``, ``docs/results/fidelity/fidelity.md``).
    :param optimizer: the optimiser (``agents.optimisers``: ``cmaes``, ``sep_cmaes``, ``optuna_tpe``, or one you
        register).
    :param population: candidates per generation (before restarts enlarge it).
    :param sigma0: the initial step size, in units of the corruptor's parameter scale (CMA-ES kinds).
    :param restart_factor: population growth at each restart (IPOP; 1 keeps it).
    :param patience: generations without a better judge before a restart.
    :param lr_adapt: CMA-ES's learning-rate adaptation (``cmaes`` only).
    :param rungs: successive halving (ASHA, Li et al. 2020): with ``rungs`` > 1, each candidate's run is judged
        at ``run_updates`` x ``reduction_factor`` ** k updates for k < ``rungs`` and goes on past a rung only if
        its judge there is not below the top 1 / ``reduction_factor`` of the judges recorded at that rung so far
        (ASHA's rule; on Ray, Ray Tune's ``ASHAScheduler`` applies it); only candidates that reach the last rung can
        be the search's pick, and keeping every cell is judged there. 1: every candidate judged at ``run_updates``.
    :param reduction_factor: the rungs' spacing and the share (1 / it) that goes on past each.
    :param final_seeds: run seeds a candidate reaching the last rung is judged on (its judge their mean; default:
        1 with one rung, 2 with several); keeping every cell is judged on the same.
    :param keep_all_candidate: also judge keeping every cell (one more run, without the keep budget, on the same run
        seed); when no candidate's judge beats it, the search's answer is to keep everything
        (:attr:`keeps_everything`), and its corruptor is evaluated without the budget.
    :param confirm_updates: the confirmation rung's length (0: none): once the budget is spent, the pick and keeping
        every cell are each judged by a run of this many updates on every confirmation seed, and the search keeps
        every cell (:attr:`keeps_everything`) unless the pick's mean paired judge there is above keeping
        everything's. Its runs come on top of the budget (their CPU is in ``search_cpu_minutes``). The defaults
        (500 updates, RankMe, 2 seeds) are the confirmation study's choice on the fidelity study's development split
        (``studies/confirmation.py``: the fewest picks worse than keeping everything, then the most answers kept).
    :param confirm_judge: the confirmation's judge (a periodic statistic, higher is better).
    :param confirm_seeds: run seeds of the confirmation (none of them a seed the search used).
    :param confirm_finalists: how many of the first stage's best (distinct candidates that out-judged keeping every
        cell there, the pick first) go to the confirmation; the one with the highest mean judge there is the
        search's answer if it beats keeping every cell. The default (2) is ``studies/confirmation.py``'s choice on
        the fidelity study's development split with four run seeds, by a rule written before the fourth was run (at
        most 10 % of picks worse than keep_all − one sd, then the most answers kept, then the fewest): emulated
        there with the two-seed confirmation, answers kept 48 -> 66 of 72, picks worse 4 -> 6 of 96 (the first
        stage's pick is often a partial answer with the answer ranked next to it).
    :param first_stage_keep: with a corruptor that searches its own keep level (``cell_scorer``): the kept fraction
        every candidate of the first stage is judged at (its keep level held there, the rest searched); its finalists
        are confirmed at it against keeping every cell, so the keep level is chosen by the confirmation's long runs
        alone. Short runs' judges favour keeping less where the outcome does not (the fidelity study's free-level
        part: RankMe after 50 updates picks the anti-answer at 30 % kept in 11 of 16 cases, RankMe after 500 the
        oracle in 16; ``docs/results.md``). None: the keep level searched with the rest. A corruptor without a keep
        level ignores it.
    :param engine: ``ray`` (each candidate a Ray Tune trial; ``pip install -e ".[ray]"``) or ``local`` (in this
        process, one after the other).
    :param workers: Ray Tune trials at once (default: this machine's CPUs).
    :param storage: the Ray Tune experiment folder, kept (default: a temporary one, removed once the search is done).
    :param tensorboard_log: TensorBoard folder (``search/`` scalars per generation).
    :param verbose: print one line per generation.
    """

    algo = "cmaes"

    def __init__(self, env: Any, seed: int = 0, corruptor: str = "auto", judge: str = "alpha_req",
                 run_updates: int = 25, run_batch: int = 64, optimizer: str = "cmaes", population: int = 16,
                 sigma0: float = 1.0, restart_factor: float = 2.0, patience: int = 3, lr_adapt: bool = False,
                 rungs: int = 2, reduction_factor: int = 2, final_seeds: int | None = None,
                 keep_all_candidate: bool = True, confirm_updates: int = 500, confirm_judge: str = "rankme",
                 confirm_seeds: int = 2, confirm_finalists: int = 2, first_stage_keep: float | None = 0.75,
                 engine: str = "ray", workers: int | None = None,
                 storage: str | None = None, tensorboard_log: str | None = None, verbose: int = 1) -> None:
        super().__init__(env, seed, corruptor, judge, run_updates, run_batch, tensorboard_log, verbose)
        if optimizer not in OPTIMISERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; available: {', '.join(OPTIMISERS.names())}")
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if workers is not None and (not isinstance(workers, int) or workers < 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if engine == "ray":
            try:
                import ray  # noqa: F401
            except ImportError:
                raise ValueError('engine "ray" needs Ray Tune: pip install -e ".[ray]" (or engine:local)') from None
        self.optimizer_name, self.population = optimizer, population
        self.optimizer_options = {"sigma0": sigma0, "restart_factor": restart_factor, "patience": patience,
                                  "lr_adapt": lr_adapt}
        self.engine, self.workers, self.storage = engine, workers, storage
        self.keep_all_candidate = bool(keep_all_candidate)
        self.keep_all: dict[str, Any] | None = None  # keeping every cell, judged as a candidate (once: one run seed)
        for name, value, low in (("rungs", rungs, 1), ("reduction_factor", reduction_factor, 2),
                                 ("final_seeds", 1 if final_seeds is None else final_seeds, 1),
                                 ("confirm_updates", confirm_updates, 0), ("confirm_seeds", confirm_seeds, 1),
                                 ("confirm_finalists", confirm_finalists, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        self.rungs, self.reduction_factor = rungs, reduction_factor
        self.final_seeds = final_seeds if final_seeds is not None else (1 if rungs == 1 else 2)
        self.rung_updates = rung_lengths(run_updates, reduction_factor, rungs)
        self.settings = {"run": self.run_config.replace(num_threads=1).to_dict(), "updates": run_updates,
                         "judge": judge, "corruptor": self.resolved_corruptor, "seed": run_seed(seed), "threads": 1}
        if self.halving:  # one run of the last rung's length per candidate, judged at each rung
            self.settings.update(updates=self.rung_updates[-1], rungs=self.rung_updates,
                                 final_seeds=[run_seed(seed, i) for i in range(self.final_seeds)])
        check_judge(confirm_judge)
        self.confirm_updates, self.confirm_judge, self.confirm_seeds = confirm_updates, confirm_judge, confirm_seeds
        self.confirm_finalists = confirm_finalists
        if first_stage_keep is not None and (isinstance(first_stage_keep, bool)
                                             or not isinstance(first_stage_keep, (int, float))
                                             or not 0 < first_stage_keep <= 1):
            raise ValueError(f"first_stage_keep must be a kept fraction in (0, 1] or None, got {first_stage_keep!r}")
        self.first_stage_keep = first_stage_keep  # with_kept_fraction checks it against the corruptor's range
        self.holds_level = first_stage_keep is not None and self.corruptor.with_kept_fraction(
            np.zeros(self.corruptor.dim), first_stage_keep) is not None
        self.confirm_settings = {**{k: self.settings[k] for k in ("run", "corruptor", "threads")},
                                 "updates": confirm_updates, "judge": confirm_judge}
        self.confirmation: dict[str, Any] | None = None  # the finalists confirmed: their thetas, each seed's runs
        self.optimizer = make_optimiser(optimizer, self.corruptor.dim, self.corruptor.scale, population, seed,
                                        self.optimizer_options)
        self.n_steps = population * run_updates  # SB3's vocabulary for the CLIs: a "rollout" is one generation
        self.history: list[dict[str, Any]] = []  # every judged candidate: generation, restart, theta, result
        self.pending: dict[int, dict[str, Any]] = {}  # this generation's finished candidates (by index)
        self.asked: list[np.ndarray] | None = None  # this generation's candidates, once asked
        self.best: dict[str, Any] | None = None  # the best candidate so far: theta and its result
        self.generation_start, self.generation_open, self.stopped = 0, False, False

    @classmethod
    def check_options_for(cls, config: EnvConfig, options: dict[str, Any]) -> None:
        """Raise the ValueError that building the search with ``options`` on an env of ``config`` raises, without
        the env (a search reads nothing of it but its config): ``make_agent``'s own check, for a caller that has
        no env yet (the benchmark, before its first run). Nothing is run or written."""
        cls(SimpleNamespace(config=config), **options)

    # ------------------------------------------------------------------------------------------ the search

    def learn(self, total_timesteps: int, callback: Any = None, tb_log_name: str = "search",
              reset_num_timesteps: bool = True, progress_bar: bool = False, **_: Any) -> "WholeRunSearch":
        """Run whole generations until ``total_timesteps`` SimCLR updates (over every candidate) are spent
        (at least one generation), or the optimiser stops."""
        self._begin(callback, tb_log_name, reset_num_timesteps)  # TensorBoard only: one line per generation
        self.target, self.stopped = self.num_timesteps + max(total_timesteps, 1), False
        if self.keep_all_candidate and self.keep_all is None:
            self.keep_all = judge_keep_all(self.settings)
            self.logger.record("search/keep_all_judge", self.keep_all["judge"])
        try:
            if self.engine == "local":
                while self.next_generation():
                    for index in self.open_candidates():
                        result = (judge_through_rungs(self.settings, self.asked[index], self.promote) if self.halving
                                  else judge_candidates(self.settings, [self.asked[index]])[0])
                        if not self.finish(index, result):
                            break
                    self.end_generation()
            else:
                from agents.search_on_ray import search_on_ray

                search_on_ray(self, self.workers, self.storage)
        except KeyboardInterrupt:  # the generation is not done: its finished runs wait in pending, counted on resume
            self.num_timesteps, self.generation_open = self.generation_start, False
            raise
        self.confirm()  # a Ctrl-C in it keeps the seeds done (saved with the search) and resumes at the next
        if self.confirmation_margin() is not None:
            self.logger.record("search/confirmation_margin", self.confirmation_margin())
            self.logger.dump(self.num_timesteps)
        self.callbacks.on_training_end()
        if self.verbose and self.against_keep_all():
            print(self.against_keep_all(), flush=True)
        return self

    def next_generation(self) -> bool:
        """Open the next generation (False once the budget is spent, the optimiser stopped, or a callback stopped
        the search). Its candidates judged before an interruption count now, without running again."""
        if self.stopped or self.num_timesteps >= self.target or self.optimizer.stop:
            return False
        self.callbacks.on_rollout_start()
        self.generation_start, self.generation_open = self.num_timesteps, True
        if self.asked is None:  # the optimiser keeps its own copies: a held keep level is not its business
            self.asked = [self.corruptor.with_kept_fraction(theta, self.first_stage_keep) if self.holds_level
                          else theta for theta in self.optimizer.ask()]
        cached, self.pending = self.pending, {}
        for index, result in cached.items():
            self.finish(index, result)
        return not self.stopped

    def open_candidates(self) -> list[int]:
        return [i for i in range(len(self.asked)) if i not in self.pending]

    def candidate(self, index: int) -> dict[str, Any]:
        """What a Ray Tune trial of candidate ``index`` of this generation gets."""
        return {"settings": self.settings, "candidate": {"index": index, "theta": self.asked[index].tolist()}}

    @property
    def halving(self) -> bool:
        """Whether candidates are judged by successive halving (several rungs, or several final seeds)."""
        return self.rungs > 1 or self.final_seeds > 1

    def promote(self, rung: int, result: dict[str, Any]) -> bool:
        """ASHA's rule, as Ray Tune's ``ASHAScheduler`` applies it: a run goes on past ``rung`` unless its judge
        there is below the (1 - 1/reduction_factor) quantile of the judges recorded at that rung by the candidates
        judged before it (the first always goes on). The record is read from the candidates kept, so a resumed
        search decides as the uninterrupted one."""
        updates = self.rung_updates[rung]
        recorded = [r["judge_at"][updates] for r in (*self.history, *self.pending.values())
                    if updates in r.get("judge_at", {})]
        cutoff = np.nanpercentile(recorded, (1 - 1 / self.reduction_factor) * 100) if recorded else None
        return cutoff is None or not result["judge"] < cutoff

    @property
    def confirms(self) -> bool:
        """Whether the pick goes to the confirmation rung: there is one, and a pick that out-judged keeping every
        cell in the search (else the answer is already to keep everything)."""
        return (self.confirm_updates > 0 and self.keep_all is not None and self.best is not None
                and np.isfinite(self.keep_all["judge"]) and self.best["judge"] > self.keep_all["judge"])

    def finalists(self) -> list[dict[str, Any]]:
        """What goes to the confirmation rung: the pick, then the next best distinct candidates that reached the
        last rung and out-judged keeping every cell, up to ``confirm_finalists`` in all."""
        rows = [self.best]
        for row in self.ranked():
            if len(rows) >= self.confirm_finalists or not row["judge"] > self.keep_all["judge"]:
                break
            if all(row["theta"] != r["theta"] for r in rows):
                rows.append(row)
        return rows

    def ranked(self) -> list[dict[str, Any]]:
        """The candidates judged that reached the last rung (those that can be the pick), best judge first; a
        diverged run's (NaN) left out."""
        return sorted((r for r in self.history if self.reached_last_rung(r) and np.isfinite(r["judge"])),
                      key=lambda r: -r["judge"])

    def confirm(self) -> None:
        """The confirmation rung (see ``confirm_updates``): the finalists and keeping every cell, paired on each
        confirmation seed not yet run for them. Each seed's runs are kept as they finish."""
        if not self.confirms:
            return
        thetas = [row["theta"] for row in self.finalists()]
        if self.confirmation is None or self.confirmation["thetas"] != thetas:
            self.confirmation = {"thetas": thetas, "seeds": []}
        for i in range(len(self.confirmation["seeds"]), self.confirm_seeds):
            self.confirmation["seeds"].append(judge_confirmation(self.confirm_settings, [np.asarray(t) for t in thetas],
                                                                 confirm_seed(self.seed, i)))
        if self.verbose:
            print(self.confirmed_line(), flush=True)

    def confirmation_margins(self) -> list[float] | None:
        """Each finalist's mean judge minus keeping every cell's at the confirmation rung, paired by seed (NaN if a
        run diverged); None where there was none, or it is not finished (or was run for other finalists)."""
        runs = (self.confirmation or {}).get("seeds", [])
        if (not self.confirms or len(runs) < self.confirm_seeds
                or self.confirmation["thetas"] != [row["theta"] for row in self.finalists()]):
            return None
        return [float(np.mean([r["finalists"][i]["judge"] - r["keep_all"]["judge"] for r in runs]))
                for i in range(len(self.confirmation["thetas"]))]

    def confirmation_margin(self) -> float | None:
        """The best finalist's margin at the confirmation rung (:meth:`confirmation_margins`; NaN where none is
        finite)."""
        margins = self.confirmation_margins()
        if margins is None:
            return None
        finite = [m for m in margins if np.isfinite(m)]
        return max(finite) if finite else math.nan

    @property
    def confirmed(self) -> bool | None:
        """Whether a finalist won the confirmation (its mean judge above keeping every cell's, paired by seed; a
        diverged run loses); None where there was none, or it is not finished."""
        margin = self.confirmation_margin()
        return None if margin is None else bool(np.isfinite(margin) and margin > 0)

    @property
    def pick(self) -> dict[str, Any] | None:
        """The candidate the search answers with (unless it keeps every cell): the finalist that won the
        confirmation, else the first stage's best."""
        margins = self.confirmation_margins() if self.confirmed else None
        if not margins:
            return self.best
        return self.finalists()[int(np.nanargmax(margins))]

    def confirmed_line(self) -> str:
        margin = self.confirmation_margin()
        if margin is None:
            return "the pick had no confirmation"
        rank = self.finalists().index(self.pick) + 1 if self.confirmed else None
        which = ("the pick" if len(self.confirmation["thetas"]) == 1 else
                 f"the best of {len(self.confirmation['thetas'])} finalists"
                 + (f" (the first stage's #{rank})" if rank else ""))
        return (f"confirmation ({self.confirm_judge} after {self.confirm_updates} updates, {self.confirm_seeds} fresh "
                f"run seeds): {which} {'beats' if self.confirmed else 'does not beat'} keeping every cell by "
                f"{margin:+.4g}" + ("" if self.confirmed else ": its answer is to keep every cell"))

    def reached_last_rung(self, row: dict[str, Any]) -> bool:
        """Whether a judged candidate reached the last rung (every candidate does without successive halving)."""
        return row.get("rung", self.rungs - 1) == self.rungs - 1

    def finish(self, index: int, result: dict[str, Any]) -> bool:
        """A candidate's run is judged: keep it, count its updates, tell the callbacks; False if one stops."""
        self.pending[index] = result
        self.num_timesteps += result.get("updates_run", self.run_updates)
        self.stopped = self.stopped or not self._told_run(result["judge"])
        return not self.stopped

    def end_generation(self) -> None:
        """Tell the optimiser the generation's judges; keep the best; log."""
        missing = self.open_candidates()
        if missing and self.stopped:  # a callback stopped the search inside the generation: it stays for the next
            self.num_timesteps, self.generation_open = self.generation_start, False  # learn(), counted then
            return
        if missing:
            raise RuntimeError(f"the runs of candidates {missing} of generation {self.optimizer.generation} failed "
                               f"(see the Ray Tune trial errors under {self.storage or 'the temporary experiment folder'})")
        generation, restart = self.optimizer.generation, self.optimizer.restarts
        results = [self.pending[i] for i in range(len(self.asked))]
        for theta, result in zip(self.asked, results):
            self.history.append({"generation": generation, "restart": restart, "theta": theta.tolist(), **result})
            if (self.reached_last_rung(result) and np.isfinite(result["judge"])
                    and (self.best is None or result["judge"] > self.best["judge"])):
                self.best = {"theta": theta.tolist(), **result, "generation": generation}
        self.optimizer.tell([RUNG_SPAN * r["rung"] + r["judge"] if "rung" in r else r["judge"] for r in results])
        self._log_generation(generation, [r["judge"] if self.reached_last_rung(r) else math.nan for r in results])
        self.n_steps = self.optimizer.population * self.run_updates
        self.asked, self.pending, self.generation_open = None, {}, False
        self.callbacks.on_rollout_end()

    # ------------------------------------------------------------------------------------------ reporting

    def _log_generation(self, generation: int, judges: list[float]) -> None:
        finite = np.array([j for j in judges if j is not None and np.isfinite(j)])
        generation_best = float(finite.max()) if finite.size else math.nan
        self.logger.record("search/generation_best_judge", generation_best)
        self.logger.record("search/best_judge", self.best["judge"] if self.best else math.nan)
        self.logger.record("search/judge_spread", float(finite.std()) if finite.size else math.nan)
        self.logger.record("search/population", len(judges))
        for name, value in self.optimizer.scalars().items():
            if name != "population":
                self.logger.record(f"search/{name}", value)
        if self.best and self.best.get("keep_planted") is not None:
            self.logger.record("search/best_keep_planted", self.best["keep_planted"])
        self.logger.dump(self.num_timesteps)
        if self.verbose:
            best = self.history[-len(judges):][int(np.argmax([j if np.isfinite(j) else -np.inf for j in judges]))]
            planted = "" if best.get("keep_planted") is None else f", its keep on planted cells {best['keep_planted']:.2f}"
            scalars = "".join(f"; {k} {v:.2f}" for k, v in self.optimizer.scalars().items()
                              if k not in ("population", "restarts"))
            went_on = (f"; {int(np.isfinite(judges).sum())} of {len(judges)} reached the last rung ("
                       f"{self.rung_updates[-1]} updates)" if self.rungs > 1 else "")
            so_far = math.nan if self.best is None else self.best["judge"]
            print(f"generation {generation}: best judge {generation_best:.2f}{planted}; best so far "
                  f"{so_far:.2f}{scalars}{went_on}; runs {len(self.history)}", flush=True)

    def known_answer(self) -> dict[str, Any]:
        """On a known-answer task: the candidate runs (and their CPU minutes) until the best candidate so far
        dropped the planted cells (keep <= ANSWER_KEEP) and stayed such; the final answer's planted keep (1 when it
        keeps everything)."""
        if not self.history or self.history[0].get("keep_planted") is None:
            return {}
        confirming = sum(run["cpu_seconds"] for r in (self.confirmation or {}).get("seeds", [])
                         for run in (*r["finalists"], r["keep_all"]))
        if self.keeps_everything:
            cpu = sum(row["cpu_seconds"] for row in self.history) + self.keep_all["cpu_seconds"] + confirming
            return {**self.answer_fields(None, 1.0, len(self.history) + 1, cpu), "best_judge": self.keep_all["judge"]}
        best, reached, cpu = -math.inf, None, confirming
        for n, row in enumerate(self.history, start=1):
            cpu += row["cpu_seconds"]
            if self.reached_last_rung(row) and np.isfinite(row["judge"]) and row["judge"] > best:
                best = row["judge"]
                found = row["keep_planted"] <= ANSWER_KEEP
                reached = (n, cpu) if found and reached is None else (reached if found else None)
        return {**self.answer_fields(reached, self.pick["keep_planted"], len(self.history), cpu),
                "best_judge": self.best["judge"]}

    def judges(self) -> dict[str, float]:
        """For the records: the judges of the best candidate and of keeping every cell (where it was judged), and
        the best candidate's parameters by name (``theta/<name>``)."""
        out = {} if self.best is None else {"best_candidate_judge": self.best["judge"]}
        if self.keep_all is not None:
            out["keep_all_judge"] = self.keep_all["judge"]
        if self.confirmation_margin() is not None:
            out.update(confirmation_margin=self.confirmation_margin(), confirmed=float(self.confirmed))
            if self.confirmed:  # which of the finalists won (1: the first stage's pick)
                out["confirmed_finalist"] = float(self.finalists().index(self.pick) + 1)
        if self.best is not None:
            out.update({f"theta/{name}": float(value) for name, value in
                        zip(self.corruptor.parameter_names(), self.pick["theta"])})
        return out

    def against_keep_all(self) -> str | None:
        """One line: the best candidate against keeping every cell, in the search's own judge (None where keeping
        everything was not judged)."""
        judges = self.judges()
        if "keep_all_judge" not in judges or "best_candidate_judge" not in judges:
            return None
        best, keep = judges["best_candidate_judge"], judges["keep_all_judge"]
        if not best > keep:
            return (f"no candidate beat keeping every cell in the search's own judge ({self.judge}: best candidate "
                    f"{best:.4g}, keeping everything {keep:.4g}): its answer is to keep every cell")
        return (f"the best candidate beats keeping every cell in the search's own judge ({self.judge}: {best:.4g} "
                f"against {keep:.4g})" + ("" if self.confirmed is None else f"; {self.confirmed_line()}"))

    def summary(self) -> str:
        """One line per generation: its candidates' planted keep -> judge, best first."""
        lines = []
        for generation in sorted({r["generation"] for r in self.history}):
            rows = sorted((r for r in self.history if r["generation"] == generation),
                          key=lambda r: (-r.get("rung", 0), -r["judge"]))
            lines.append(f"generation {generation}: " + ", ".join(
                (f"{r['keep_planted']:.2f}: " if r.get("keep_planted") is not None else "") + f"{r['judge']:.2f}"
                + ("" if self.reached_last_rung(r) else f" (stopped at rung {r['rung']})") for r in rows))
        return "\n".join(lines)

    # ------------------------------------------------------------------------------------------ SB3 surface

    def theta(self) -> np.ndarray:
        if self.best is None:
            raise RuntimeError("the search has not judged any candidate yet: call learn() first")
        return np.asarray(self.pick["theta"])

    @property
    def keeps_everything(self) -> bool:
        """Whether the search's answer is to keep every cell: keeping everything was judged at least as high as
        every candidate, or the pick lost its confirmation. Its corruptor is then evaluated without the keep budget
        (``evaluate_agent``)."""
        return (self.keep_all is not None and self.best is not None and np.isfinite(self.keep_all["judge"])
                and (self.keep_all["judge"] >= self.best["judge"] or self.confirmed is False))

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        if not self.keeps_everything:
            return super().predict(observation, state, episode_start, deterministic)
        scores = super().predict(observation, state, episode_start, deterministic)[0]
        return np.full_like(scores, 1.0), state  # every cell scores above 0: all kept where there is no budget

    def set_random_seed(self, seed: int | None = None) -> None:
        """Nothing to reseed: the search's own streams are part of its saved state (a resumed search continues)."""

    STATE = ("history", "pending", "asked", "best", "keep_all", "confirmation", "num_timesteps", "n_steps")
    # what a search saved before an option existed ran with: one length (the defaults are now two rungs), no
    # confirmation, one finalist, the keep level searched in the first stage
    SAVED_WITHOUT = {"rungs": 1, "confirm_updates": 0, "confirm_finalists": 1, "first_stage_keep": None}

    def save(self, path: str | Path) -> None:
        state = {"options": self._options(), "optimizer": self.optimizer.state(),
                 **{k: getattr(self, k) for k in self.STATE}}
        with open(path, "wb") as f:
            pickle.dump(state, f)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "corruptor": self.corruptor_name, "judge": self.judge,
                "run_updates": self.run_updates, "run_batch": self.run_batch, "optimizer": self.optimizer_name,
                "population": self.population, **self.optimizer_options, "rungs": self.rungs,
                "reduction_factor": self.reduction_factor, "final_seeds": self.final_seeds,
                "keep_all_candidate": self.keep_all_candidate, "confirm_updates": self.confirm_updates,
                "confirm_judge": self.confirm_judge, "confirm_seeds": self.confirm_seeds,
                "confirm_finalists": self.confirm_finalists, "first_stage_keep": self.first_stage_keep,
                "engine": self.engine,
                "workers": self.workers}

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> "WholeRunSearch":
        with open(path, "rb") as f:
            state = pickle.load(f)
        agent = cls(env, **{**cls.SAVED_WITHOUT, **renamed_options(state["options"]), **kwargs})
        if "generations_before" in state:  # saved before the optimiser seam
            agent.optimizer = CMAES.from_search_before_the_seam(state, agent.corruptor.dim, agent.corruptor.scale)
        else:
            agent.optimizer = state["optimizer"]["class"].from_state(state["optimizer"])
        for key in cls.STATE:
            setattr(agent, key, state.get(key))  # keep_all: None in a search saved before it was a candidate
        if agent.confirmation and "theta" in agent.confirmation:  # saved before finalists: its one finalist
            agent.confirmation = {"thetas": [agent.confirmation["theta"]], "seeds": [
                {"seed": r["seed"], "finalists": [r["finalist"]], "keep_all": r["keep_all"]}
                for r in agent.confirmation["seeds"]]}
        return agent


def label_judges() -> list[str]:
    """The judges that read labels (periodic statistics with ``uses_labels``): what the label-judged ceiling takes."""
    return sorted(name for name in periodic_statistics() if STATISTICS[name].uses_labels)


class LabelJudgedSearch(WholeRunSearch):
    """``--algo cmaes_labels``: the same search, corruptor and budget, each candidate judged by kNN accuracy *with
    labels* on the training split's held-out images (``probe_accuracy``: half of them the labelled bank, half the
    queries), which no batch and no evaluation query is drawn from. It is the **label-judged ceiling**: its judge reads
    the labels the outcome is scored by, after the search's run length, so it bounds what the parametric corruptor
    can reach only as far as that length predicts the evaluation's (``studies/fidelity.py`` measures how far).
    Labels reach only this agent's judge; its rows are never a label-free result.

    :param judge: a judge that reads labels (:func:`label_judges`); a label-free one is ``--algo cmaes``'s.
    :param confirm_judge: the confirmation's judge (default: ``judge``), one that reads labels too.
    :param first_stage_keep: as :class:`WholeRunSearch`'s, but by default None: the ceiling searches a free keep
        level with the rest, as the space has it (kNN with labels after 50 updates does not favour keeping less as
        the short label-free judges do: regret 0.026 in the fidelity study's free-level part, RankMe's 0.093).
    :param options: :class:`WholeRunSearch`'s.
    """

    algo = "cmaes_labels"

    def __init__(self, env: Any, seed: int = 0, judge: str = "probe_accuracy", confirm_judge: str | None = None,
                 first_stage_keep: float | None = None, **options: Any) -> None:
        confirm_judge = judge if confirm_judge is None else confirm_judge  # its confirmation reads labels too
        for name, value in (("judge", judge), ("confirm_judge", confirm_judge)):
            if value not in label_judges():  # else its rows would pass a label-free search off as the ceiling
                raise ValueError(f"{self.algo}, the label-judged ceiling, takes a {name.replace('_', ' ')} that reads "
                                 f"labels ({', '.join(label_judges())}), not {value!r}; for a search judged without "
                                 f"labels use --algo cmaes")
        super().__init__(env, seed, judge=judge, confirm_judge=confirm_judge, first_stage_keep=first_stage_keep,
                         **options)
