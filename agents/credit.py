"""How far back a reward's credit reaches: the discount an agent uses by default.

Every reward definition here pays for what *this* step's update did (``neg_loss``, ``loss_rise``,
``rankme_advantage``, the default's moving average of loss changes, ...) or for a quantity measured
every K steps (``heldout_gain``, ``rankme_gain``, ...); it declares which through
``Reward.credit_horizon`` (1, or K). A per-step progress reward is a bandit signal, as in Graves et al.
(2017) and TSCL: discounting later rewards into an action's return only adds other actions' noise
(measured in "Do agents learn?": the default's return telescopes, and at gamma 0.9 an action's own
effect is a tenth of its return). So the agents' default discount is gamma = 1 - 1 / horizon:
0 (immediate credit) for per-step rewards, 0.96 for a reward measured every 25 steps. Passing
``gamma`` to an agent overrides it.
"""
from __future__ import annotations

from typing import Any


def env_attribute(env: Any, name: str) -> Any:
    """Attribute ``name`` of a CorruptionEnv, a wrapper of one, or (the first env of) an SB3 VecEnv of them;
    None for an environment that has none."""
    try:
        return (env.get_attr(name)[0] if hasattr(env, "get_attr")  # an SB3 VecEnv
                else getattr(getattr(env, "unwrapped", env), name, None))
    except AttributeError:  # a VecEnv of other environments
        return None


def credit_gamma(env: Any) -> float:
    """The discount matching the credit horizon of ``env``'s reward (a CorruptionEnv, a wrapper of one, or a
    VecEnv of them); 0.9 for an environment that does not say."""
    horizon = getattr(env_attribute(env, "reward_fn"), "credit_horizon", None)
    return 0.9 if horizon is None else 1.0 - 1.0 / max(int(horizon), 1)
