"""Things that choose masks: RL agents and fixed corruptors, behind one registry.

``make_agent(name, env, **kwargs)`` builds a registered agent (``ppo``, ``a2c``, ``reinforce``,
``keep_all``, ``random``, ``cowmask``, ``oracle``) or, for ``"package.module:Class"``, any class importable at run
time: a stable-baselines3 on-policy algorithm gets the mask policy; any other class is called as
``Class(env=env, **kwargs)`` and must offer SB3's surface (learn, predict, save, load).
``register_agent(name, builder, agent_class)`` adds your own; ``load_agent`` reloads a saved one.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents.baselines import FixedCorruptor
from agents.reinforce import Reinforce
from agents.sb3 import check_budget, make_sb3


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent (``builder(env, **kwargs)``) and which class reloads it (``agent_class.load``)."""

    builder: Callable[..., BaseAlgorithm]
    agent_class: type
    learns: bool = True


_AGENTS: dict[str, AgentSpec] = {}


def register_agent(name: str, builder: Callable[..., BaseAlgorithm], agent_class: type | None = None,
                   learns: bool = True) -> None:
    """Make ``name`` buildable by :func:`make_agent`.

    :param builder: ``builder(env, **kwargs) -> agent``.
    :param agent_class: the class whose ``load(path, env=...)`` reloads a saved agent (default: the
        builder itself, when it is a class).
    :param learns: False for fixed corruptors (the CLIs skip their training budget checks).
    """
    cls = agent_class or builder
    if not isinstance(cls, type):
        raise TypeError(f"register_agent({name!r}): pass agent_class=... when the builder is not a class")
    _AGENTS[name] = AgentSpec(builder, cls, learns)


def available_agents() -> list[str]:
    return sorted(_AGENTS)


register_agent("ppo", lambda env, **kw: make_sb3(PPO, env, **kw), PPO)
register_agent("a2c", lambda env, **kw: make_sb3(A2C, env, **kw), A2C)
register_agent("reinforce", Reinforce)
register_agent("keep_all", lambda env, **kw: FixedCorruptor(env, kind="keep_all", **kw), FixedCorruptor, learns=False)
register_agent("random", lambda env, **kw: FixedCorruptor(env, kind="random", **kw), FixedCorruptor, learns=False)
register_agent("cowmask", lambda env, **kw: FixedCorruptor(env, kind="cowmask", **kw), FixedCorruptor, learns=False)
register_agent("oracle", lambda env, **kw: FixedCorruptor(env, kind="oracle", **kw), FixedCorruptor, learns=False)


def import_class(path: str) -> type:
    """Import ``"package.module:Class"``, explaining what went wrong if it cannot."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"{path!r} is neither a registered agent ({', '.join(available_agents())}) nor of the form "
                         f"'package.module:Class'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for --algo {path!r}: {exc}. Is the package installed "
                         f"(pip install ...) in this environment?") from exc
    try:
        cls = getattr(module, class_name)
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {class_name!r} (for --algo {path!r})") from exc
    if not isinstance(cls, type):
        raise ValueError(f"{path!r} is not a class")
    return cls


def agent_spec(name: str) -> AgentSpec:
    """The spec of a registered name or of a ``module:Class`` path."""
    if name in _AGENTS:
        return _AGENTS[name]
    if ":" not in name:
        raise ValueError(f"unknown agent {name!r}; available: {', '.join(available_agents())}, "
                         f"or 'package.module:Class' for any SB3-compatible class")
    cls = import_class(name)
    if issubclass(cls, OnPolicyAlgorithm):
        return AgentSpec(lambda env, **kw: make_sb3(cls, env, **kw), cls)
    for method in ("learn", "predict", "save", "load"):
        if not callable(getattr(cls, method, None)):
            raise ValueError(f"{name!r} lacks {method}(): agents need SB3's surface (learn, predict, save, load)")
    return AgentSpec(lambda env, **kw: cls(env=env, **kw), cls)


def make_agent(name: str, env: Any, **kwargs: Any) -> BaseAlgorithm:
    """Build agent ``name`` (a registered name or ``'package.module:Class'``) on ``env``."""
    spec = agent_spec(name)
    try:
        return spec.builder(env, **kwargs)
    except TypeError as exc:
        raise ValueError(f"agent {name!r} rejected its options {sorted(kwargs)}: {exc}") from exc


def load_agent(name: str, path: str, env: Any = None, **kwargs: Any) -> BaseAlgorithm:
    """Reload an agent saved by ``agent.save(path)``."""
    return agent_spec(name).agent_class.load(path, env=env, **kwargs)


__all__ = ["AgentSpec", "available_agents", "check_budget", "import_class", "load_agent", "make_agent",
           "register_agent"]
