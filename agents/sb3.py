"""Stable-Baselines3 on-policy algorithms (PPO, A2C, or any other, e.g. sb3-contrib's TRPO) with the
per-image mask policy, and defaults suited to an environment whose step costs a SimCLR update.

SB3's defaults assume cheap steps (PPO collects 2048 per update); here a step costs about half a
second on a CPU, so rollouts are tens of steps long, minibatches divide ``n_steps * n_envs``, and
the learning rate is 10x SB3's (3e-3) because a 15-minute run has only a few hundred gradient steps.
SB3 does no update at all when ``total_timesteps`` is below one rollout: :func:`check_budget` warns.
"""
from __future__ import annotations

import warnings
from typing import Any

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents.policies import MaskActorCriticPolicy

DEFAULTS: dict[type, dict[str, Any]] = {
    PPO: dict(n_steps=32, batch_size=32, n_epochs=4, learning_rate=3e-3, gamma=0.9, gae_lambda=0.9, ent_coef=1e-3),
    A2C: dict(n_steps=8, learning_rate=3e-3, gamma=0.9, gae_lambda=0.9, ent_coef=1e-3),
}
# any other on-policy class (TRPO, ...) gets these unless overridden
GENERIC_DEFAULTS: dict[str, Any] = dict(n_steps=32, gamma=0.9)


def make_sb3(algo_class: type[OnPolicyAlgorithm], env: Any, **kwargs: Any) -> OnPolicyAlgorithm:
    """``algo_class("MaskActorCriticPolicy", env, ...)`` with this project's defaults under ``kwargs``.

    ``batch_size`` (where the class has one) is shrunk to divide ``n_steps * n_envs``.
    """
    if not (isinstance(algo_class, type) and issubclass(algo_class, OnPolicyAlgorithm)):
        raise TypeError(f"{algo_class!r} is not a stable-baselines3 on-policy algorithm class")
    params = {**DEFAULTS.get(algo_class, GENERIC_DEFAULTS), **kwargs}
    n_envs = getattr(env, "num_envs", 1)
    if "batch_size" in params:
        rollout = params["n_steps"] * n_envs
        batch = min(params["batch_size"], rollout)
        while rollout % batch:
            batch -= 1
        if batch != params["batch_size"]:
            warnings.warn(f"batch_size {params['batch_size']} does not divide n_steps * n_envs = {rollout}; using {batch}",
                          stacklevel=2)
        params["batch_size"] = batch
    return algo_class(MaskActorCriticPolicy, env, **params)


def check_budget(agent: BaseAlgorithm, total_timesteps: int) -> None:
    """Warn when SB3 would finish before its first update (total_timesteps < n_steps * n_envs)."""
    n_steps = getattr(agent, "n_steps", None)
    if n_steps is None:
        return
    rollout = n_steps * agent.n_envs
    if total_timesteps < rollout:
        warnings.warn(f"total_timesteps={total_timesteps} is less than one rollout (n_steps * n_envs = {rollout}): "
                      f"the agent will not update at all. Raise --total-timesteps or lower n_steps.", stacklevel=2)
