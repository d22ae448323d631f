"""Stable-Baselines3 on-policy algorithms (PPO, A2C, or any other, e.g. sb3-contrib's TRPO) with the
per-image mask policy, and defaults suited to an environment whose step costs a SimCLR update.

SB3's defaults assume cheap steps (PPO collects 2048 per update); here a step costs about half a
second on a CPU, so rollouts are tens of steps long, minibatches divide ``n_steps * n_envs``, and
the learning rate is above SB3's because a short run has only a few hundred gradient steps: 1e-3 for
the Bernoulli masks of the binary action modes (3e-3 made PPO's keep fraction climb and fall back on
``neg_loss``; 1e-3 with 10 epochs held it at 1.00), 3e-3 for score actions (their Gaussian's small
standard deviation already makes each step count; a planted reward was learned in 512 steps at 3e-3, not
at 1e-3). The discount follows the reward's credit horizon unless given (``agents.credit``: 0 for
per-step rewards). A budget below one rollout still runs one whole rollout and one update (SB3's ``learn``
collects ``n_steps`` before it checks the budget): the CLIs say how many steps that makes.
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any

from gymnasium import spaces
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents.credit import credit_gamma
from agents.policies import MaskActorCriticPolicy, with_mask_net_defaults

DEFAULTS: dict[type, dict[str, Any]] = {
    PPO: dict(n_steps=32, batch_size=32, n_epochs=10, gae_lambda=0.9, ent_coef=1e-3),
    A2C: dict(n_steps=8, learning_rate=3e-3, gae_lambda=0.9, ent_coef=1e-3),
}
# any other on-policy class (TRPO, ...) gets these unless overridden
GENERIC_DEFAULTS: dict[str, Any] = dict(n_steps=32)


def make_sb3(algo_class: type[OnPolicyAlgorithm], env: Any, **kwargs: Any) -> OnPolicyAlgorithm:
    """``algo_class("MaskActorCriticPolicy", env, ...)`` with this project's defaults under ``kwargs``.

    A subclass of PPO or A2C inherits its defaults. ``batch_size`` (where the class has one, given or
    by default) is shrunk to divide ``n_steps * n_envs``, with a warning if you chose it.
    """
    if not (isinstance(algo_class, type) and issubclass(algo_class, OnPolicyAlgorithm)):
        raise TypeError(f"{algo_class!r} is not a stable-baselines3 on-policy algorithm class")
    defaults = next((DEFAULTS[c] for c in algo_class.__mro__ if c in DEFAULTS), GENERIC_DEFAULTS)
    binary = isinstance(getattr(env, "action_space", None), spaces.MultiBinary)
    params = {**defaults, "gamma": credit_gamma(env), **kwargs}
    params["policy_kwargs"] = with_mask_net_defaults(env, params.get("policy_kwargs"))
    if issubclass(algo_class, PPO):
        params.setdefault("learning_rate", 1e-3 if binary else 3e-3)
    if not isinstance(params["n_steps"], int) or params["n_steps"] < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {params['n_steps']!r}")
    batch = params.get("batch_size", _signature_default(algo_class, "batch_size"))
    if batch is not None:
        rollout = params["n_steps"] * getattr(env, "num_envs", 1)
        fitted = min(batch, rollout)
        while rollout % fitted:
            fitted -= 1
        if fitted != batch and "batch_size" in kwargs:
            warnings.warn(f"batch_size {batch} does not divide n_steps * n_envs = {rollout}; using {fitted}",
                          stacklevel=2)
        params["batch_size"] = fitted
    return algo_class(MaskActorCriticPolicy, env, **params)


def _signature_default(algo_class: type, name: str) -> Any:
    """The default of ``name`` in the first ``__init__`` along the MRO that declares it, else None."""
    for cls in algo_class.__mro__:
        param = inspect.signature(cls.__init__).parameters.get(name)
        if param is not None:
            return None if param.default is inspect.Parameter.empty else param.default
    return None
