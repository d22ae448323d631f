"""REINFORCE with a moving-average baseline and an entropy bonus, on the shared mask network.

Read top to bottom: the policy (SB3's distribution for the env's action space: a Bernoulli over every
mask cell in the ``cells``/``shared`` modes, a Gaussian over cell scores in ``scores``/``shared_scores``,
a categorical per menu dimension in ``family``; logits or means from ``MaskNetwork``), then the update. Each rollout of ``n_steps`` steps gives discounted returns G_t = sum_k gamma^k r_{t+k},
cut at episode ends and at the rollout's end (no critic, so no bootstrap); the baseline b is a
moving average of past returns; the loss is

    L = -mean_t[(G_t - b) * log pi(a_t | s_t)] - ent_coef * mean_t[H(pi(. | s_t))]

with the advantage optionally divided by its standard deviation. Williams (1992), "Simple
statistical gradient-following algorithms for connectionist reinforcement learning".
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.distributions import (BernoulliDistribution, DiagGaussianDistribution, Distribution,
                                                    make_proba_distribution)
from stable_baselines3.common.policies import BasePolicy

from agents.credit import credit_gamma
from agents.policies import (SCORE_LOG_STD_INIT, MaskNetwork, MaskObservationExtractor, score_distribution,
                             score_distribution_from, score_log_std)
from agents.rollout import Rollout, RolloutAgent, torch_observations


class MaskPolicy(BasePolicy):
    """The action space's SB3 distribution (Bernoulli per mask cell, a diagonal Gaussian over cell scores
    with one learned log standard deviation, or one categorical per MultiDiscrete dimension) with
    logits or means from :class:`MaskNetwork`.

    :param mask_net_kwargs: options of :class:`MaskNetwork`.
    :param lr_schedule: SB3 learning-rate schedule of the Adam optimizer (None: 1e-3).
    :param log_std_init: initial log standard deviation of the score modes' Gaussian.
    """

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Space,
                 lr_schedule: Any = None, mask_net_kwargs: dict[str, Any] | None = None,
                 log_std_init: float = SCORE_LOG_STD_INIT) -> None:
        super().__init__(observation_space, action_space, features_extractor_class=MaskObservationExtractor)
        self.mask_net_kwargs, self.log_std_init = mask_net_kwargs or {}, log_std_init
        self.features_extractor = MaskObservationExtractor(observation_space)
        self.mask_net = MaskNetwork(observation_space, action_space, **self.mask_net_kwargs)
        if isinstance(action_space, gym.spaces.Box):
            self.action_dist = score_distribution(action_space, self.mask_net)
            self.log_std = score_log_std(log_std_init)
        else:
            self.action_dist = make_proba_distribution(action_space)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr_schedule(1) if lr_schedule else 1e-3)

    def distribution(self, obs: dict[str, torch.Tensor]) -> Distribution:
        features = self.features_extractor({k: v.to(self.device) for k, v in obs.items()})
        out = self.mask_net.forward_actor(features)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            return score_distribution_from(self.action_dist, self.mask_net, out, self.log_std)
        return self.action_dist.proba_distribution(action_logits=out)

    def _predict(self, observation: dict[str, torch.Tensor], deterministic: bool = False) -> torch.Tensor:
        return self.distribution(observation).get_actions(deterministic=deterministic)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(mask_net_kwargs=self.mask_net_kwargs, log_std_init=self.log_std_init)
        return data


class Reinforce(RolloutAgent):
    """REINFORCE with a moving-average baseline and an entropy bonus.

    :param env: a CorruptionEnv (or a VecEnv of them).
    :param learning_rate: Adam learning rate.
    :param n_steps: environment steps per update (per env).
    :param gamma: discount factor inside a rollout (None: from the reward's credit horizon, ``agents.credit``).
    :param baseline_decay: b <- decay * b + (1 - decay) * mean(G) after every update.
    :param ent_coef: weight of the entropy bonus.
    :param normalize_advantage: divide (G - b) by its standard deviation.
    :param max_grad_norm: gradient clipping.
    Other parameters are SB3's (``policy_kwargs`` go to :class:`MaskPolicy`).
    """

    policy_aliases = {"MaskPolicy": MaskPolicy}

    def __init__(self, env: Any, learning_rate: float = 1e-2, n_steps: int = 8, gamma: float | None = None,
                 baseline_decay: float = 0.9, ent_coef: float = 1e-3, normalize_advantage: bool = True,
                 max_grad_norm: float = 1.0, policy: Any = MaskPolicy, **kwargs: Any) -> None:
        self.gamma = credit_gamma(env) if gamma is None else gamma
        self.baseline_decay, self.ent_coef = baseline_decay, ent_coef
        self.normalize_advantage, self.max_grad_norm = normalize_advantage, max_grad_norm
        self.baseline: float | None = None
        super().__init__(policy, env, learning_rate=learning_rate, n_steps=n_steps, **kwargs)

    def discounted_returns(self, rollout: Rollout) -> np.ndarray:
        """G_t within the rollout, restarting after every step that ended an episode."""
        returns = np.zeros_like(rollout.rewards)
        running = np.zeros(rollout.rewards.shape[1], dtype=np.float32)
        for t in reversed(range(rollout.rewards.shape[0])):
            running = rollout.rewards[t] + self.gamma * running * (1.0 - rollout.dones[t])
            returns[t] = running
        return returns

    def train(self, rollout: Rollout) -> None:
        returns = torch.as_tensor(self.discounted_returns(rollout), device=self.device).flatten()
        baseline = float(returns.mean()) if self.baseline is None else self.baseline
        advantage = returns - baseline
        if self.normalize_advantage and advantage.numel() > 1:
            advantage = advantage / (advantage.std() + 1e-8)

        dist = self.policy.distribution(torch_observations(rollout.observations, self.device))
        actions = torch.as_tensor(rollout.actions, device=self.device).flatten(0, 1).float()
        log_prob = dist.log_prob(actions)  # summed over cells / menu dimensions
        entropy = dist.entropy()
        policy_loss = -(advantage * log_prob).mean()
        loss = policy_loss - self.ent_coef * entropy.mean()

        self._update_learning_rate(self.policy.optimizer)
        self.policy.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self.baseline = self.baseline_decay * baseline + (1 - self.baseline_decay) * float(returns.mean())

        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/entropy", entropy.mean().item())
        self.logger.record("train/baseline", self.baseline)
        if isinstance(dist, BernoulliDistribution):
            self.logger.record("train/keep_probability", dist.distribution.probs.mean().item())
        elif isinstance(dist, DiagGaussianDistribution):
            self.logger.record("train/std", self.policy.log_std[0].exp().item())
