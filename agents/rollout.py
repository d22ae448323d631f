"""A minimal SB3 ``BaseAlgorithm`` whose ``learn`` steps the environment and drives callbacks and the
logger exactly like SB3's on-policy algorithms; subclasses say what to do with each rollout.

REINFORCE (``reinforce.py``) and the fixed corruptors (``baselines.py``) are built on it, so every
agent, learned or fixed, has SB3's surface (``learn``, ``predict``, ``save``, ``load``, callbacks,
TensorBoard under the same names as PPO's) and the CLIs treat them alike.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import MaybeCallback
from stable_baselines3.common.utils import safe_mean

SelfRolloutAgent = TypeVar("SelfRolloutAgent", bound="RolloutAgent")


@dataclass
class Rollout:
    """``n_steps`` transitions of ``n_envs`` environments; arrays are (n_steps, n_envs, ...)."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    episode_starts: np.ndarray  # True where the observation is the first of an episode
    dones: np.ndarray  # True where the step ended the episode


class RolloutAgent(BaseAlgorithm):
    """Steps the env ``n_steps`` at a time with ``self.policy`` and hands each rollout to :meth:`train`. Like SB3's
    on-policy algorithms it runs whole rollouts: a budget that is not a multiple of ``n_steps * n_envs`` is rounded
    up (the CLIs say how many steps that makes, from ``n_steps``).

    :param n_steps: environment steps per rollout (per env).
    Other parameters are SB3's ``BaseAlgorithm``'s.
    """

    def __init__(self, policy: Any, env: Any, learning_rate: float = 1e-3, n_steps: int = 16,
                 policy_kwargs: dict[str, Any] | None = None, tensorboard_log: str | None = None, verbose: int = 0,
                 seed: int | None = None, device: str = "auto", _init_setup_model: bool = True) -> None:
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        super().__init__(policy=policy, env=env, learning_rate=learning_rate, policy_kwargs=policy_kwargs,
                         tensorboard_log=tensorboard_log, verbose=verbose, device=device, seed=seed,
                         support_multi_env=True)
        self.n_steps = n_steps
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.policy = self.policy_class(self.observation_space, self.action_space, self.lr_schedule,
                                        **self.policy_kwargs).to(self.device)

    def set_random_seed(self, seed: int | None = None) -> None:
        """SB3's seeding, plus the policy's own mask generator where it has one (fixed corruptors)."""
        super().set_random_seed(seed)
        policy = getattr(self, "policy", None)  # set_random_seed runs once before the policy exists
        if isinstance(policy, torch.nn.Module) and hasattr(policy, "seed_masks"):
            policy.seed_masks(seed)

    def train(self, rollout: Rollout) -> None:
        """Learn from one rollout (nothing, for a fixed corruptor)."""

    def collect_rollout(self, callback: BaseCallback) -> Rollout | None:
        """Step every env ``n_steps`` times; None if a callback asked to stop."""
        callback.on_rollout_start()
        obs_seq, act_seq, rew_seq, start_seq, done_seq = [], [], [], [], []
        for _ in range(self.n_steps):
            actions, _ = self.policy.predict(self._last_obs, deterministic=False)
            new_obs, rewards, dones, infos = self.env.step(actions)
            self.num_timesteps += self.env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                return None
            self._update_info_buffer(infos, dones)
            obs_seq.append(self._last_obs)
            act_seq.append(actions)
            rew_seq.append(rewards)
            start_seq.append(self._last_episode_starts)
            done_seq.append(dones)
            self._last_obs, self._last_episode_starts = new_obs, dones
        callback.on_rollout_end()
        observations = {key: np.stack([o[key] for o in obs_seq]) for key in obs_seq[0]}
        return Rollout(observations, np.stack(act_seq), np.stack(rew_seq).astype(np.float32),
                       np.stack(start_seq), np.stack(done_seq))

    def learn(self: SelfRolloutAgent, total_timesteps: int, callback: MaybeCallback = None, log_interval: int = 1,
              tb_log_name: str = "run", reset_num_timesteps: bool = True, progress_bar: bool = False
              ) -> SelfRolloutAgent:
        total_timesteps, callback = self._setup_learn(total_timesteps, callback, reset_num_timesteps, tb_log_name,
                                                      progress_bar)
        callback.on_training_start(locals(), globals())
        iteration = 0
        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollout(callback)
            if rollout is None:
                break
            iteration += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            self.train(rollout)
            if log_interval and iteration % log_interval == 0:
                self.dump_logs(iteration)
        callback.on_training_end()
        return self

    def dump_logs(self, iteration: int) -> None:
        """The same entries as SB3's on-policy algorithms."""
        elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        self.logger.record("time/iterations", iteration, exclude="tensorboard")
        if self.ep_info_buffer:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        self.logger.record("time/fps", int((self.num_timesteps - self._num_timesteps_at_start) / elapsed))
        self.logger.record("time/time_elapsed", int(elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)


def torch_observations(observations: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """(T, N, ...) rollout observations -> (T*N, ...) tensors."""
    return {key: torch.as_tensor(value, device=device).flatten(0, 1) for key, value in observations.items()}
