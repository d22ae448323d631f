"""A Gymnasium environment in which an RL agent learns a corruption operator for contrastive learning.

``gymnasium.make("CorruptionEnv-v0", **overrides)`` builds :class:`CorruptionEnv` from an
:class:`EnvConfig`; the pieces it runs live in ``data`` (datasets), ``corruption`` (degradation and
masks), ``camnet`` (the frozen multimodal generator), ``views`` (mask -> two views), ``simclr`` (the
learner), ``rewards`` (reward definitions) and ``evaluation`` (kNN / linear-probe accuracy).
"""
import gymnasium

from corruption_env.config import EnvConfig
from corruption_env import config_checks  # noqa: F401  (registers what EnvConfig.validate checks)
from corruption_env.env import CorruptionEnv
from corruption_env import cell_scorer  # noqa: F401  (registers the parametric corruptor cell_scorer)
from corruption_env.rewards import Reward, StepStats, available_rewards, make_reward, register_reward

ENV_ID = "CorruptionEnv-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(ENV_ID, entry_point="corruption_env.env:CorruptionEnv")

__all__ = ["CorruptionEnv", "EnvConfig", "ENV_ID", "Reward", "StepStats", "available_rewards", "make_reward",
           "register_reward"]
__version__ = "0.1.0"
