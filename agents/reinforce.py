"""REINFORCE with a leave-one-out baseline and an entropy bonus, on the shared mask network.

Read top to bottom: the policy (SB3's distribution for the env's action space: a Bernoulli over every
mask cell in the ``cells``/``shared`` modes, a Gaussian over cell scores in ``scores``/``shared_scores``,
a categorical per menu dimension in ``family``; logits or means from ``MaskNetwork``), then the update.
Each rollout of ``n_steps`` steps (per env) gives discounted returns G_i = sum_k gamma^k r_{i+k}, cut at
episode ends and at the rollout's end (no critic, so no bootstrap). Each of the n samples is compared with
the mean return of the *other* n - 1 (the leave-one-out baseline of Kool, van Hoof & Welling 2019, "Buy 4
REINFORCE samples, get a baseline for free!"), A_i = G_i - mean_{j != i} G_j, normalised over the update; the
loss is

    L = -mean_i[A_i * log pi(a_i | s_i)] - ent_coef * mean_i[H(pi(. | s_i))]

Williams (1992), "Simple statistical gradient-following algorithms for connectionist reinforcement learning".
Measured on a planted reward (``studies/planted_learning.py``, ``docs/results.md``): with a slow moving-average
baseline and 8 samples per update it learned in 3, 4 and 0 of 5 seeds (shared scores, per-image scores, cells);
as here, in 5 of 5 of each.
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
                             score_distribution_from, score_log_std, with_mask_net_defaults)
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
    """REINFORCE with a leave-one-out baseline and an entropy bonus.

    :param env: a CorruptionEnv (or a VecEnv of them).
    :param learning_rate: Adam learning rate.
    :param n_steps: environment steps per update (per env): the samples the baseline and the advantage
        normalisation are taken over.
    :param gamma: discount factor inside a rollout (None: from the reward's credit horizon, ``agents.credit``).
    :param ent_coef: weight of the entropy bonus.
    :param normalize_advantage: divide the advantages by their standard deviation over the update.
    :param max_grad_norm: gradient clipping.
    Other parameters are SB3's (``policy_kwargs`` go to :class:`MaskPolicy`).
    """

    policy_aliases = {"MaskPolicy": MaskPolicy}

    def __init__(self, env: Any, learning_rate: float = 3e-3, n_steps: int = 16, gamma: float | None = None,
                 ent_coef: float = 1e-3, normalize_advantage: bool = True, max_grad_norm: float = 1.0,
                 policy: Any = MaskPolicy, policy_kwargs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.gamma = credit_gamma(env) if gamma is None else gamma
        self.ent_coef, self.normalize_advantage, self.max_grad_norm = ent_coef, normalize_advantage, max_grad_norm
        super().__init__(policy, env, learning_rate=learning_rate, n_steps=n_steps,
                         policy_kwargs=with_mask_net_defaults(env, policy_kwargs), **kwargs)

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
        n = returns.numel()
        # leave-one-out baseline: each sample's is the mean return of the update's other samples, so it does not
        # depend on the sample's own action (unbiased) and follows the policy as it changes (Kool et al. 2019)
        advantage = (returns - returns.mean()) * n / (n - 1) if n > 1 else returns - returns
        if self.normalize_advantage and n > 1:
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

        self.logger.record("train/policy_loss", policy_loss.item())
        self.logger.record("train/entropy", entropy.mean().item())
        self.logger.record("train/mean_return", returns.mean().item())
        if isinstance(dist, BernoulliDistribution):
            self.logger.record("train/keep_probability", dist.distribution.probs.mean().item())
        elif isinstance(dist, DiagGaussianDistribution):
            self.logger.record("train/std", self.policy.log_std[0].exp().item())
