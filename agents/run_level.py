"""RL over whole runs: SB3's PPO on :class:`~corruption_env.whole_run.WholeRunEnv`, where one step is one whole
SimCLR run with a fixed corruptor and the reward is the run's judge (RankMe of the held-out features).

It is the RL row beside the search over corruptors (``agents/search.py``): the same parametric corruptor, judge, run
length and batch, the same budget counted in SimCLR updates, but a Gaussian policy over theta learned by PPO from the
judges of its own samples instead of CMA-ES. Each episode is ``runs_per_episode`` runs on one run seed (common
random numbers within an episode, a new seed per episode); the reward of a run depends on its own corruptor
alone, so the discount is 0 (a bandit: each run is credited with its own judge). ``predict`` acts with the
policy's mean theta through the corruptor.

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

from agents.callbacks import settled_window
from agents.whole_run_agent import WholeRunAgent, renamed_options
from corruption_env.whole_run import WholeRunEnv


class _RunLog(BaseCallback):
    """Each run's judge and planted keep, and the outer callbacks' view of a run as ``run_updates`` steps."""

    def __init__(self, owner: "RunLevelPPO") -> None:
        super().__init__()
        self.owner = owner

    def _on_step(self) -> bool:
        info = self.locals["infos"][0]
        self.owner.runs.append({**{k: info.get(k) for k in ("judge", "keep_planted", "keep_other")},
                                "cpu_seconds": self.owner.run_env.last_result.cpu_seconds})
        self.owner.num_timesteps = self.owner.start_timesteps + len(self.owner.runs) * self.owner.run_updates
        return self.owner._told_run(info["judge"])

    def _on_rollout_start(self) -> None:
        self.owner.callbacks.on_rollout_start()

    def _on_rollout_end(self) -> None:
        self.owner.callbacks.on_rollout_end()


class RunLevelPPO(WholeRunAgent):
    """``--algo run_ppo``: PPO over whole runs (one action = one corruptor's parameters, one reward = its judge).

    :param env: the task's CorruptionEnv (or a VecEnv of one).
    :param seed: seed of PPO and of the run-level env's episodes.
    :param corruptor, judge, run_updates, run_batch: see :class:`~agents.whole_run_agent.WholeRunAgent`.
    :param runs_per_episode: runs per episode of the run-level env (all on one run seed).
    :param n_steps: runs per PPO rollout (and minibatch).
    :param learning_rate: PPO's Adam learning rate.
    :param log_std_init: initial log standard deviation of the Gaussian over theta.
    :param ppo_options: any other PPO options.
    """

    algo = "run_ppo"

    def __init__(self, env: Any, seed: int = 0, corruptor: str = "auto", judge: str = "rankme",
                 run_updates: int = 50, run_batch: int = 64, runs_per_episode: int = 8, n_steps: int = 8,
                 learning_rate: float = 3e-3, log_std_init: float = 0.0, ppo_options: dict[str, Any] | None = None,
                 tensorboard_log: str | None = None, verbose: int = 0) -> None:
        super().__init__(env, seed, corruptor, judge, run_updates, run_batch, tensorboard_log, verbose)
        self.options = {"corruptor": corruptor, "judge": judge, "run_updates": run_updates, "run_batch": run_batch,
                        "runs_per_episode": runs_per_episode, "n_steps": n_steps, "learning_rate": learning_rate,
                        "log_std_init": log_std_init, "ppo_options": dict(ppo_options or {})}
        self.run_env = WholeRunEnv(self.run_config, self.corruptor, run_updates, judge, runs_per_episode)
        self.run_env.reset(seed=seed)
        self.ppo = PPO("MlpPolicy", self.run_env, n_steps=n_steps, batch_size=n_steps, gamma=0.0, gae_lambda=1.0,
                       learning_rate=learning_rate, seed=seed, verbose=0, tensorboard_log=tensorboard_log,
                       policy_kwargs={"log_std_init": log_std_init, "net_arch": [32]}, **self.options["ppo_options"])
        self.n_steps = n_steps * run_updates  # a rollout, in SimCLR updates (for the CLIs)
        self.start_timesteps = 0
        self.runs: list[dict[str, Any]] = []

    def learn(self, total_timesteps: int, callback: Any = None, tb_log_name: str = "run_ppo",
              reset_num_timesteps: bool = True, progress_bar: bool = False, **_: Any) -> "RunLevelPPO":
        """Train on ``total_timesteps / run_updates`` runs (whole rollouts, at least one)."""
        self._begin(callback, tb_log_name, reset_num_timesteps, logger_verbose=self.verbose)
        self.ppo.set_logger(self.logger)  # PPO's own train/ scalars go to the run's TensorBoard folder
        self.start_timesteps = self.num_timesteps - len(self.runs) * self.run_updates
        runs = max(1, -(-total_timesteps // self.run_updates))
        self.ppo.learn(runs, callback=_RunLog(self), reset_num_timesteps=False)
        self.callbacks.on_training_end()
        return self

    def theta(self) -> np.ndarray:
        """The policy's mean parameters at an episode's start (the corruptor it acts with)."""
        obs = np.zeros(self.run_env.observation_space.shape, dtype=np.float32)
        return self.ppo.predict(obs, deterministic=True)[0]

    mean_theta = theta

    def known_answer(self) -> dict[str, Any]:
        """On a known-answer task: the runs (and their CPU minutes) until the planted keep of the runs, averaged
        over each episode, dropped to ``ANSWER_KEEP`` and stayed there."""
        if not self.runs or self.runs[0].get("keep_planted") is None:
            return {}
        runs, means = settled_window([r["keep_planted"] for r in self.runs], self.options["runs_per_episode"])
        cpu = np.cumsum([r["cpu_seconds"] for r in self.runs])
        reached = None if runs is None else (runs, float(cpu[max(runs - 1, 0)]))
        return self.answer_fields(reached, means[-1], len(self.runs), float(cpu[-1]))

    def set_random_seed(self, seed: int | None = None) -> None:
        self.ppo.set_random_seed(seed)

    def save(self, path: str | Path) -> None:
        torch.save({"options": self.options, "seed": self.seed, "runs": self.runs, "num_timesteps": self.num_timesteps,
                    "policy": self.ppo.policy.state_dict(), "optimizer": self.ppo.policy.optimizer.state_dict(),
                    "ppo_timesteps": self.ppo.num_timesteps}, path)

    @classmethod
    def load(cls, path: str | Path, env: Any = None, **kwargs: Any) -> "RunLevelPPO":
        saved = torch.load(path, weights_only=False)
        agent = cls(env, seed=saved["seed"], **{**renamed_options(saved["options"]), **kwargs})
        agent.ppo.policy.load_state_dict(saved["policy"])
        agent.ppo.policy.optimizer.load_state_dict(saved["optimizer"])
        agent.ppo.num_timesteps, agent.runs, agent.num_timesteps = saved["ppo_timesteps"], saved["runs"], saved["num_timesteps"]
        return agent
