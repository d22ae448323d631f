"""Population-based search of the corruptor's direction: per-step rewards give the credit, a label-free judge
picks the direction (Ho et al. 2019's Population Based Augmentation, with RankMe in place of labelled
validation accuracy).

Every loss-based per-step reward is one-sided: ``reference_learner_rise`` pays for views that are harder than
a data-blind corruptor's, which is right for a shortcut and wrong for a distractor. Here a population of PPO
corruptors trains on the same reward with a direction knob, ``adversarial_weight`` lambda in [0, 1] (the
reward pays (2 lambda - 1) * rise), spread evenly over [0, 1] at the start. Each member trains in segments of
whole episodes; at an episode's last step its encoder is judged by RankMe of the held-out features
(:class:`EpisodeJudge`, any periodic statistic can judge). After every segment Ray Tune's
:class:`~ray.tune.schedulers.PopulationBasedTraining` (``synch=True``) copies the best members' checkpoints over
the worst and perturbs or resamples their lambda. Members share the env seed, so they see the same batches,
latent codes and augmentations (masks draw from streams of their own): their judges differ by their masks, not
by luck. A checkpoint (:meth:`Member.state_dict`) holds the policy and its optimizer, the env's whole state
(encoder, optimizer, reference learner, random streams) and the action RNG, so a restored member continues
exactly; a clone draws fresh actions.

:class:`PopulationSearch` is the agent (``--algo pbt``): ``learn`` runs the search (its budget counts every
member's steps) and ``predict`` acts with the member the judge ranked first at the end.
"""
from __future__ import annotations

import copy
import json
import math
import random
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv

from corruption_env import CorruptionEnv, EnvConfig
from corruption_env.statistics import STATISTICS, periodic_statistics

INNER_REWARD = "reference_learner_rise"  # the per-step reward whose direction the population searches
KNOB = "adversarial_weight"  # its direction knob, lambda


def member_ppo_options(n_steps: int, options: dict[str, Any] | None) -> dict[str, Any]:
    """A member's PPO options (and the acting policy's, which loads a member's weights): one rollout of
    ``n_steps`` as one minibatch, unless ``options`` says otherwise."""
    return {"n_steps": n_steps, "batch_size": n_steps, **(options or {})}


class EpisodeJudge(gym.Wrapper):
    """Adds ``info["judge"]`` at an episode's last step: the periodic statistic ``judge`` (default RankMe) of the
    encoder the episode trained, measured before a vector env resets it."""

    def __init__(self, env: gym.Env, judge: str = "rankme") -> None:
        super().__init__(env)
        self.judge = STATISTICS[judge](env.unwrapped)

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and not info.get("diverged"):
            info["judge"] = self.judge.measure()
        return obs, reward, terminated, truncated, info


class _SegmentLog(BaseCallback):
    """Collects the judge of each finished episode and the keep rate on the planted cells of each step."""

    def __init__(self) -> None:
        super().__init__()
        self.judges: list[float] = []
        self.keep_planted: list[float] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            if "judge" in info:
                self.judges.append(float(info["judge"]))
            if "keep_planted" in info:
                self.keep_planted.append(float(info["keep_planted"]))
        return True


def check_search(cfg: EnvConfig, judge: str, n_steps: int) -> None:
    """Clear errors for a search that cannot run, before anything is built."""
    if judge not in periodic_statistics():
        raise ValueError(f"judge must be a periodic statistic ({', '.join(sorted(periodic_statistics()))}), "
                         f"got {judge!r}")
    if cfg.episode_length % n_steps:
        raise ValueError(f"a population segment is whole episodes of whole PPO rollouts: episode_length "
                         f"{cfg.episode_length} is not a multiple of n_steps {n_steps}")


class Member:
    """One member: a PPO corruptor on its own env paying ``reference_learner_rise`` with direction ``lambda_``,
    trained one episode at a time."""

    def __init__(self, cfg: EnvConfig, lambda_: float, seed: int, judge: str = "rankme", n_steps: int = 40,
                 agent_options: dict[str, Any] | None = None) -> None:
        from agents import make_agent

        check_search(cfg, judge, n_steps)
        # members pay the inner reward and track nothing else (tracked rewards cost steps and nobody reads them)
        self.cfg = cfg.replace(reward=INNER_REWARD, reward_kwargs={**cfg.reward_kwargs, KNOB: lambda_}, track_rewards=[])
        self.venv = DummyVecEnv([lambda: EpisodeJudge(CorruptionEnv(self.cfg), judge)])
        self.venv.seed(seed)  # every member the same: the same batches, codes and augmentations
        self.agent = make_agent("ppo", self.venv, seed=seed, **member_ppo_options(n_steps, agent_options))
        self.lambda_ = lambda_

    @property
    def env(self) -> CorruptionEnv:
        return self.venv.envs[0].unwrapped

    def set_lambda(self, lambda_: float) -> None:
        self.lambda_ = float(lambda_)
        setattr(self.env.rewards.paid, KNOB, self.lambda_)

    def train_segment(self, episodes: int = 1) -> dict[str, float]:
        """Train ``episodes`` whole episodes; the judge (mean over their ends) and the planted keep rate."""
        log = _SegmentLog()
        start = time.time()
        self.agent.learn(episodes * self.cfg.episode_length, callback=log, reset_num_timesteps=False)
        result = {"judge": float(np.mean(log.judges)) if log.judges else float("nan"), "lambda": self.lambda_,
                  "member_steps": self.agent.num_timesteps, "seconds": time.time() - start}
        if log.keep_planted:
            result["keep_planted"] = float(np.mean(log.keep_planted[-64:]))
        return result

    def state_dict(self) -> dict[str, Any]:
        agent = self.agent  # copies, not views of the live tensors: the state stays what it was when taken
        return {"policy": copy.deepcopy(agent.policy.state_dict()),
                "optimizer": copy.deepcopy(agent.policy.optimizer.state_dict()),
                "num_timesteps": agent.num_timesteps, "n_updates": agent._n_updates,
                "last_obs": agent._last_obs, "last_episode_starts": agent._last_episode_starts,
                "env": self.env.snapshot(), "lambda": self.lambda_,
                "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "random": random.getstate()}}

    def load_state_dict(self, state: dict[str, Any], fresh_actions: int | None = None) -> None:
        """Continue from ``state``; ``fresh_actions``: a seed for the action RNG (a clone), else the saved one."""
        agent = self.agent
        agent.policy.load_state_dict(state["policy"])
        agent.policy.optimizer.load_state_dict(state["optimizer"])
        agent.num_timesteps, agent._n_updates = state["num_timesteps"], state["n_updates"]
        agent._last_obs, agent._last_episode_starts = state["last_obs"], state["last_episode_starts"]
        self.venv.reset()  # builds the env's streams, then the snapshot overwrites them
        self.env.restore(state["env"])
        self.set_lambda(state["lambda"])
        if fresh_actions is None:  # SB3 samples actions from torch's global RNG and minibatches from numpy's
            torch.set_rng_state(state["rng"]["torch"])
            np.random.set_state(state["rng"]["numpy"])
            random.setstate(state["rng"]["random"])
        else:
            set_random_seed(fresh_actions)


def _explore(config: dict[str, Any]) -> dict[str, Any]:
    """PBT's perturbations may push lambda out of [0, 1]: clip it back."""
    config[KNOB] = float(np.clip(config[KNOB], 0.0, 1.0))
    return config


HISTORY_FIELDS = ("trial_id", "segment", "judge", "lambda", "keep_planted", "member_steps", "seconds")


def _history_callback(rows: list[dict[str, Any]]) -> Any:
    """A Ray Tune callback, in the driver, appending every member's report of every segment to ``rows`` (a
    trial's own results table restarts when PBT copies another member over it, losing the segments before)."""
    from ray.tune import Callback

    class History(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            rows.append({k: result[k] for k in HISTORY_FIELDS if k in result})

    return History()


def _member_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: a member trained segment by segment, reporting the judge with a checkpoint."""
    from ray import tune

    search = config["search"]
    torch.set_num_threads(search["threads"])
    trial = tune.get_context().get_trial_id()
    member = Member(EnvConfig.from_dict(search["env"]), config[KNOB], search["seed"], search["judge"],
                    search["n_steps"], search["agent_options"])
    segment = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "member.pt", weights_only=False)
        clone = state["trial"] != trial
        fresh = zlib.crc32(f"{trial}/{state['segment']}".encode())  # not hash(): salted per process
        member.load_state_dict(state, fresh_actions=fresh if clone else None)
        member.set_lambda(config[KNOB])  # a clone's own (perturbed) lambda
        segment = state["segment"]
    while segment < search["segments"]:
        result = member.train_segment(search["episodes_per_segment"])
        segment += 1
        with tempfile.TemporaryDirectory() as folder:
            torch.save({**member.state_dict(), "segment": segment, "trial": trial}, Path(folder) / "member.pt")
            tune.report({**result, "segment": segment}, checkpoint=tune.Checkpoint.from_directory(folder))


class PopulationSearch:
    """``--algo pbt``: a population of PPO corruptors searching the direction of ``reference_learner_rise`` by a
    label-free judge, on Ray Tune's PopulationBasedTraining (``pip install -e ".[ray]"``).

    :param population: members (lambda starts evenly spread over [0, 1]).
    :param episodes_per_segment: episodes between two exploit/explore rounds.
    :param judge: a periodic statistic (default ``rankme``), higher is better.
    :param quantile_fraction: the share of members replaced each round by copies of the best (PBT's).
    :param resample_probability: the chance a clone's lambda is drawn afresh rather than perturbed (PBT's).
    :param member_n_steps: each member's PPO rollout (and minibatch); it must divide the episode length.
    :param member_options: each member's other PPO options.
    :param storage: the Ray Tune experiment folder (default: a temporary one).
    """

    def __init__(self, env: Any, seed: int = 0, population: int = 4, episodes_per_segment: int = 1,
                 judge: str = "rankme", quantile_fraction: float = 0.25, resample_probability: float = 0.25,
                 member_n_steps: int = 40, member_options: dict[str, Any] | None = None, storage: str | None = None,
                 tensorboard_log: str | None = None, verbose: int = 1) -> None:
        from agents import make_agent

        if env is None:
            raise ValueError("pbt needs an env: its members are built from the env's config")
        self.env, self.seed = env, seed
        self.cfg: EnvConfig = env.get_attr("config")[0] if hasattr(env, "get_attr") else env.unwrapped.config
        if population < 2:
            raise ValueError(f"population must be >= 2, got {population}")
        if episodes_per_segment < 1:
            raise ValueError(f"episodes_per_segment must be >= 1, got {episodes_per_segment}")
        check_search(self.cfg, judge, member_n_steps)
        self.population, self.episodes_per_segment, self.judge = population, episodes_per_segment, judge
        self.quantile_fraction, self.resample_probability = quantile_fraction, resample_probability
        self.member_n_steps, self.member_options = member_n_steps, dict(member_options or {})
        # SB3's vocabulary for the CLIs: a "rollout" is one segment of the whole population
        self.n_envs, self.n_steps = 1, population * episodes_per_segment * self.cfg.episode_length
        self.storage, self.tensorboard_log, self.verbose = storage, tensorboard_log, verbose
        self.num_timesteps = 0
        self.history: list[dict[str, Any]] = []  # every member's report of every segment
        self.best: dict[str, Any] | None = None  # the final best member's report
        # the acting policy: a PPO of the members' build on the caller's env, loaded with the best member's weights
        self.actor = make_agent("ppo", env, seed=seed, **member_ppo_options(member_n_steps, self.member_options))

    def segments_for(self, total_timesteps: int) -> int:
        """Whole segments of the population covering ``total_timesteps`` (at least one)."""
        return max(1, math.ceil(total_timesteps / self.n_steps))

    def learn(self, total_timesteps: int, callback: Any = None, tb_log_name: str = "population",
              reset_num_timesteps: bool = True, **_: Any) -> "PopulationSearch":
        """Run the search with about ``total_timesteps`` steps over the whole population (whole segments, at
        least one). SB3 callbacks are not called: Ray Tune reports progress and writes TensorBoard scalars
        (judge, lambda, keep_planted) per member under the experiment folder."""
        from ray import tune
        from ray.tune.schedulers import PopulationBasedTraining

        from stable_baselines3.common.utils import configure_logger

        segments = self.segments_for(total_timesteps)
        self.logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        callbacks = [c for c in (callback if isinstance(callback, list) else [callback]) if isinstance(c, BaseCallback)]
        for c in callbacks:  # the run's hooks (a final checkpoint, closing bars); per-step ones see no steps here
            c.init_callback(self)
            c.on_training_start(locals(), globals())
        search = {"env": self.cfg.replace(num_threads=1).to_dict(), "seed": self.seed, "judge": self.judge,
                  "n_steps": self.member_n_steps, "agent_options": self.member_options, "segments": segments,
                  "episodes_per_segment": self.episodes_per_segment, "threads": 1}
        lambdas = np.linspace(0.0, 1.0, self.population).tolist()
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=1, hyperparam_mutations={KNOB: tune.uniform(0, 1)},
            quantile_fraction=self.quantile_fraction, resample_probability=self.resample_probability,
            custom_explore_fn=_explore, synch=True)
        storage = Path(self.storage or tempfile.mkdtemp(prefix="pbt_")).resolve()
        history: list[dict[str, Any]] = []
        tuner = tune.Tuner(
            tune.with_resources(_member_trial, {"cpu": 1}),
            param_space={"search": search, KNOB: tune.grid_search(lambdas)},
            tune_config=tune.TuneConfig(scheduler=scheduler, metric="judge", mode="max", num_samples=1,
                                        reuse_actors=False),
            run_config=tune.RunConfig(name="population", storage_path=str(storage), verbose=self.verbose,
                                      callbacks=[_history_callback(history)],
                                      # PBT copies checkpoints between members: keep enough for a round
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=max(3, self.population))))
        results = tuner.fit()
        self.history = history
        best = results.get_best_result(metric="judge", mode="max", scope="last")
        with best.checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / "member.pt", weights_only=False)
        self._load_actor(state)
        self.best = {k: best.metrics.get(k) for k in ("judge", "lambda", "keep_planted", "segment")}
        self.num_timesteps += segments * self.n_steps
        self._log_history()
        for c in callbacks:
            c.on_training_end()
        return self

    def get_env(self) -> Any:
        return self.env

    def _by_segment(self):
        """(segment, that segment's member reports, best judge first), segment by segment."""
        for segment in sorted({int(r["segment"]) for r in self.history}):
            yield segment, sorted((r for r in self.history if int(r["segment"]) == segment), key=lambda r: -r["judge"])

    def _log_history(self) -> None:
        """TensorBoard: per segment, the best judge, the population's lambdas and the best member's planted keep."""
        for segment, rows in self._by_segment():
            step = segment * self.n_steps
            self.logger.record("population/best_judge", rows[0]["judge"])
            self.logger.record("population/best_lambda", rows[0]["lambda"])
            self.logger.record("population/mean_lambda", float(np.mean([r["lambda"] for r in rows])))
            if rows[0].get("keep_planted") is not None:
                self.logger.record("population/best_keep_planted", rows[0]["keep_planted"])
            self.logger.dump(step)

    def _load_actor(self, state: dict[str, Any]) -> None:
        self.actor.policy.load_state_dict(state["policy"])
        self.best_state = {"policy": state["policy"], "lambda": state["lambda"]}

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        return self.actor.predict(observation, state, episode_start, deterministic)

    def set_random_seed(self, seed: int) -> None:
        self.actor.set_random_seed(seed)

    def save(self, path: str | Path) -> None:
        torch.save({"options": self._options(), "best_state": getattr(self, "best_state", None), "best": self.best,
                    "history": self.history, "num_timesteps": self.num_timesteps}, path)

    def _options(self) -> dict[str, Any]:
        return {"seed": self.seed, "population": self.population, "episodes_per_segment": self.episodes_per_segment,
                "judge": self.judge, "quantile_fraction": self.quantile_fraction,
                "resample_probability": self.resample_probability, "member_n_steps": self.member_n_steps,
                "member_options": self.member_options}

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> "PopulationSearch":
        saved = torch.load(path, weights_only=False)
        agent = cls(env, **{**saved["options"], **kwargs})
        agent.history, agent.best, agent.num_timesteps = saved["history"], saved["best"], saved["num_timesteps"]
        if saved["best_state"] is not None:
            agent._load_actor(saved["best_state"])
        return agent

    def summary(self) -> str:
        """One line per segment: each member's lambda and judge, and the best member at the end."""
        lines = [f"segment {segment}: " + ", ".join(
            f"lambda {r['lambda']:.2f} judge {r['judge']:.1f}"
            + (f" keep_planted {r['keep_planted']:.2f}" if "keep_planted" in r else "") for r in rows)
            for segment, rows in self._by_segment()]
        if self.best:
            lines.append(f"best: {json.dumps(self.best)}")
        return "\n".join(lines)
