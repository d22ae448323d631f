"""Things that choose masks: RL agents and fixed corruptors, behind one registry.

``make_agent(name, env, **kwargs)`` builds a registered agent (``ppo``, ``a2c``, ``reinforce``,
``keep_all``, ``random``, ``cowmask``, ``oracle``) or, for ``"package.module:Class"``, any class importable at run
time: a stable-baselines3 on-policy algorithm gets the mask policy; any other class is called as
``Class(env=env, **kwargs)`` and must offer SB3's surface (learn, predict, save, load).
``register_agent(name, builder, agent_class)`` adds your own; ``load_agent`` reloads a saved one.
"""
from __future__ import annotations

import difflib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents.baselines import FixedCorruptor
from agents.reinforce import Reinforce
from agents.sb3 import check_budget, make_sb3
from corruption_env.registry import Registry


@dataclass(frozen=True)
class AgentSpec:
    """How to build an agent (``builder(env, **kwargs)``) and which class reloads it (``agent_class.load``)."""

    builder: Callable[..., BaseAlgorithm]
    agent_class: type
    learns: bool = True


AGENTS: Registry[AgentSpec] = Registry("agent")


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
    AGENTS.register(name)(AgentSpec(builder, cls, learns))


def available_agents() -> list[str]:
    return AGENTS.names()


register_agent("ppo", lambda env, **kw: make_sb3(PPO, env, **kw), PPO)
register_agent("a2c", lambda env, **kw: make_sb3(A2C, env, **kw), A2C)
register_agent("reinforce", Reinforce)
register_agent("keep_all", lambda env, **kw: FixedCorruptor(env, kind="keep_all", **kw), FixedCorruptor, learns=False)
register_agent("random", lambda env, **kw: FixedCorruptor(env, kind="random", **kw), FixedCorruptor, learns=False)
register_agent("cowmask", lambda env, **kw: FixedCorruptor(env, kind="cowmask", **kw), FixedCorruptor, learns=False)
register_agent("oracle", lambda env, **kw: FixedCorruptor(env, kind="oracle", **kw), FixedCorruptor, learns=False)


def import_class(path: str) -> type:
    """Import ``"package.module:Class"`` (:func:`pkgutil.resolve_name`), explaining what went wrong if it cannot."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"{path!r} is neither a registered agent ({', '.join(available_agents())}) nor of the form "
                         f"'package.module:Class'")
    try:
        cls = pkgutil.resolve_name(path)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for --algo {path!r}: {exc}. Is it on the Python path (the "
                         f"current folder, or a package installed in this environment)?") from exc
    except AttributeError as exc:
        raise ValueError(f"module {module_name!r} has no attribute {class_name!r} (for --algo {path!r})") from exc
    if not isinstance(cls, type):
        raise ValueError(f"{path!r} is not a class")
    return cls


def agent_spec(name: str) -> AgentSpec:
    """The spec of a registered name or of a ``module:Class`` path."""
    if name in AGENTS:
        return AGENTS[name]
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


def agent_options(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword options ``cls(...)`` accepts, following ``**kwargs`` up the MRO; None if open-ended."""
    options: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                options.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return options
    return None


def check_options(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Raise a ValueError for an option ``cls`` does not have (with the close matches), or for text given
    where its default is a number (``gamma:abc``), before anything is built."""
    options = agent_options(cls)
    if options is None:
        return
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        hints = [f"{u!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(u, options, 1))
                 else repr(u) for u in unknown]
        raise ValueError(f"agent {name!r} has no option {', '.join(hints)}; its options: "
                         f"{', '.join(sorted(set(options) - {'env', 'policy', '_init_setup_model'}))}")
    for key, value in kwargs.items():
        default = options[key].default
        if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
            raise ValueError(f"agent {name!r}: option {key} takes a number (default {default}), got {value!r}")


def make_agent(name: str, env: Any, **kwargs: Any) -> BaseAlgorithm:
    """Build agent ``name`` (a registered name or ``'package.module:Class'``) on ``env``.

    :raises ValueError: an unknown agent, or an option its class does not have (with the close matches).
    Errors raised while the agent builds itself (a bad value) propagate as they are.
    """
    spec = agent_spec(name)
    check_options(name, spec.agent_class, kwargs)
    return spec.builder(env, **kwargs)


def load_agent(name: str, path: str, env: Any = None, **kwargs: Any) -> BaseAlgorithm:
    """Reload an agent saved by ``agent.save(path)``."""
    return agent_spec(name).agent_class.load(path, env=env, **kwargs)


__all__ = ["AGENTS", "AgentSpec", "agent_options", "agent_spec", "available_agents", "check_budget", "check_options",
           "import_class", "load_agent", "make_agent", "register_agent"]
