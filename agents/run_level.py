"""RL over whole runs: SB3's PPO on :class:`~corruption_env.whole_run.WholeRunEnv`, where one step is one whole
SimCLR run with a fixed corruptor and the reward is the run's judge (RankMe of the held-out features).

It is the RL row beside the search over corruptors (``agents/search.py``): the same family, judge, run length
and batch, the same budget counted in SimCLR updates, but a Gaussian policy over theta learned by PPO from the
judges of its own samples instead of CMA-ES. Each episode is ``runs_per_episode`` runs on one run seed (common
random numbers within an episode, a new seed per episode); the reward of a run depends on its own corruptor
alone, so the discount is 0 (a bandit: each run is credited with its own judge). ``predict`` acts with the
policy's mean theta through the family.

:class:`RunLevelPPO` is the agent (``--algo run_ppo``); its env is the task's CorruptionEnv, whose config the
runs use (``run_batch`` images per batch).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.utils import configure_logger

from agents.callbacks import settled_window
from agents.credit import env_attribute
from corruption_env import EnvConfig
from corruption_env.whole_run import WholeRunEnv, make_family


class _RunLog(BaseCallback):
    """Each run's judge and planted keep, and the outer callbacks' view of a run as ``run_updates`` steps."""

    def __init__(self, owner: "RunLevelPPO", outer: list[BaseCallback]) -> None:
        super().__init__()
        self.owner, self.outer = owner, outer

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        self.owner.runs.append({**{k: info.get(k) for k in ("judge", "keep_planted", "keep_other")},
                                "cpu_seconds": self.owner.run_env.last_result.cpu_seconds})
        self.owner.num_timesteps = self.owner.start_timesteps + len(self.owner.runs) * self.owner.run_updates
        keep_going = True
        for callback in self.outer:
            callback.update_locals({"rewards": np.array([info["judge"]]),
                                    "infos": [{"judge": info["judge"], "candidate_keep_planted": info.get("keep_planted")}]})
            keep_going &= callback.on_step()
        return keep_going

    def _on_rollout_start(self) -> None:
        for callback in self.outer:
            callback.on_rollout_start()

    def _on_rollout_end(self) -> None:
        for callback in self.outer:
            callback.on_rollout_end()


class RunLevelPPO:
    """``--algo run_ppo``: PPO over whole runs (one action = one corruptor's parameters, one reward = its judge).

    :param env: the task's CorruptionEnv (or a VecEnv of one).
    :param seed: seed of PPO and of the run-level env's episodes.
    :param family: the corruptor family (``score_map``, ``cell_rule``; ``auto``: the map in ``shared_scores``
        mode, the rule in ``scores`` mode).
    :param judge: the periodic statistic read at each run's end (``rankme``).
    :param run_updates: SimCLR updates per run.
    :param run_batch: images per batch in the runs.
    :param runs_per_episode: runs per episode of the run-level env (all on one run seed).
    :param n_steps: runs per PPO rollout (and minibatch).
    :param learning_rate: PPO's Adam learning rate.
    :param log_std_init: initial log standard deviation of the Gaussian over theta.
    :param ppo_options: any other PPO options.
    """

    trains_on_reward = False  # it is judged by whole runs: benchmark rows carry no training reward

    def __init__(self, env: Any, seed: int = 0, family: str = "auto", judge: str = "rankme",
                 run_updates: int = 50, run_batch: int = 64, runs_per_episode: int = 8, n_steps: int = 8,
                 learning_rate: float = 3e-3, log_std_init: float = 0.0, ppo_options: dict[str, Any] | None = None,
                 tensorboard_log: str | None = None, verbose: int = 0) -> None:
        if env is None:
            raise ValueError("run_ppo needs an env: its runs use the env's config")
        cfg: EnvConfig = env_attribute(env, "config")
        self.env, self.seed = env, seed
        self.options = {"family": family, "judge": judge, "run_updates": run_updates, "run_batch": run_batch,
                        "runs_per_episode": runs_per_episode, "n_steps": n_steps, "learning_rate": learning_rate,
                        "log_std_init": log_std_init, "ppo_options": dict(ppo_options or {})}
        self.family = make_family(family, env.envs[0].unwrapped if hasattr(env, "envs") else env.unwrapped)
        self.run_env = WholeRunEnv(cfg.replace(batch_size=run_batch, record_timings=False), family, run_updates, judge,
                                   runs_per_episode)
        self.run_env.reset(seed=seed)
        self.ppo = PPO("MlpPolicy", self.run_env, n_steps=n_steps, batch_size=n_steps, gamma=0.0, gae_lambda=1.0,
                       learning_rate=learning_rate, seed=seed, verbose=0, tensorboard_log=tensorboard_log,
                       policy_kwargs={"log_std_init": log_std_init, "net_arch": [32]}, **self.options["ppo_options"])
        self.run_updates, self.tensorboard_log, self.verbose = run_updates, tensorboard_log, verbose
        self.n_envs, self.n_steps = 1, n_steps * run_updates  # a rollout, in SimCLR updates (for the CLIs)
        self.num_timesteps = self.start_timesteps = 0
        self.runs: list[dict[str, Any]] = []

    def learn(self, total_timesteps: int, callback: Any = None, tb_log_name: str = "run_ppo",
              reset_num_timesteps: bool = True, progress_bar: bool = False, **_: Any) -> "RunLevelPPO":
        """Train on ``total_timesteps / run_updates`` runs (whole rollouts, at least one)."""
        outer = [c for c in (callback if isinstance(callback, list) else [callback]) if isinstance(c, BaseCallback)]
        if hasattr(self.env, "reset"):
            self.env.reset()  # the run's image grids show a batch (this agent never steps the task's env)
        self.logger = configure_logger(self.verbose, self.tensorboard_log, tb_log_name, reset_num_timesteps)
        self.ppo.set_logger(self.logger)  # PPO's own train/ scalars go to the run's TensorBoard folder
        for c in outer:
            c.init_callback(self)
            c.on_training_start(locals(), globals())
        self.start_timesteps = self.num_timesteps - len(self.runs) * self.run_updates
        runs = max(1, -(-total_timesteps // self.run_updates))
        self.ppo.learn(runs, callback=_RunLog(self, outer), reset_num_timesteps=False)
        for c in outer:
            c.on_training_end()
        return self

    def mean_theta(self) -> np.ndarray:
        """The policy's mean parameters at an episode's start (the corruptor it acts with)."""
        obs = np.zeros(self.run_env.observation_space.shape, dtype=np.float32)
        return self.ppo.predict(obs, deterministic=True)[0]

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False):
        theta = self.mean_theta()
        if isinstance(observation, dict) and observation["images"].ndim == 5:
            return np.stack([self.family.act(theta, {k: v[i] for k, v in observation.items()})
                             for i in range(observation["images"].shape[0])]), state
        return self.family.act(theta, observation), state

    def known_answer(self) -> dict[str, Any]:
        """On a known-answer task: the runs (and their CPU minutes) until the planted keep of the runs, averaged
        over each episode, dropped to ``ANSWER_KEEP`` and stayed there."""
        if not self.runs or self.runs[0].get("keep_planted") is None:
            return {}
        runs, means = settled_window([r["keep_planted"] for r in self.runs], self.options["runs_per_episode"])
        cpu = np.cumsum([r["cpu_seconds"] for r in self.runs])
        return {"answer_runs": runs, "answer_cpu_minutes": None if runs is None else round(float(cpu[max(runs - 1, 0)]) / 60, 1),
                "final_keep_planted": means[-1], "search_runs": len(self.runs),
                "search_cpu_minutes": round(float(cpu[-1]) / 60, 1)}

    def get_env(self) -> Any:
        return self.env

    def set_random_seed(self, seed: int | None = None) -> None:
        self.ppo.set_random_seed(seed)

    def save(self, path: str | Path) -> None:
        torch.save({"options": self.options, "seed": self.seed, "runs": self.runs, "num_timesteps": self.num_timesteps,
                    "policy": self.ppo.policy.state_dict(), "optimizer": self.ppo.policy.optimizer.state_dict(),
                    "ppo_timesteps": self.ppo.num_timesteps}, path)

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> "RunLevelPPO":
        saved = torch.load(path, weights_only=False)
        agent = cls(env, seed=saved["seed"], **{**saved["options"], **kwargs})
        agent.ppo.policy.load_state_dict(saved["policy"])
        agent.ppo.policy.optimizer.load_state_dict(saved["optimizer"])
        agent.ppo.num_timesteps, agent.runs, agent.num_timesteps = saved["ppo_timesteps"], saved["runs"], saved["num_timesteps"]
        return agent
