"""Things that choose masks: RL agents and fixed corruptors, behind one registry.

``make_agent(name, env, **kwargs)`` builds a registered agent (``ppo``, ``a2c``, ``reinforce``, ``cmaes``,
``cmaes_labels``, ``run_ppo``, ``keep_all``, ``random``, ``cowmask``, ``oracle``) or, for ``"package.module:Class"``, any class importable at run
time: a stable-baselines3 on-policy algorithm gets the mask policy; any other class is called as
``Class(env=env, **kwargs)`` and must offer SB3's surface (learn, predict, save, load).
``register_agent(name, builder, agent_class)`` adds your own; ``load_agent`` reloads a saved one.
"""
from __future__ import annotations

import difflib
import inspect
import json
import numbers
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from stable_baselines3 import A2C, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from agents.baselines import FixedCorruptor
from agents.reinforce import Reinforce
from agents.run_level import RunLevelPPO
from agents.search import LabelJudgedSearch, WholeRunSearch
from agents.sb3 import DEFAULTS, make_sb3
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
register_agent("cmaes", WholeRunSearch)
register_agent("cmaes_labels", LabelJudgedSearch)
register_agent("run_ppo", RunLevelPPO)
register_agent("keep_all", lambda env, **kw: FixedCorruptor(env, kind="keep_all", **kw), FixedCorruptor, learns=False)
register_agent("random", lambda env, **kw: FixedCorruptor(env, kind="random", **kw), FixedCorruptor, learns=False)
register_agent("cowmask", lambda env, **kw: FixedCorruptor(env, kind="cowmask", **kw), FixedCorruptor, learns=False)
register_agent("oracle", lambda env, **kw: FixedCorruptor(env, kind="oracle", **kw), FixedCorruptor, learns=False)


def trains_on_reward(name: str) -> bool:
    """Whether agent ``name`` learns from the env's per-step reward (False for searches judged by whole runs,
    whose class says ``trains_on_reward = False``)."""
    return getattr(agent_spec(name).agent_class, "trains_on_reward", True)


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
    if issubclass(cls, OffPolicyAlgorithm):
        raise ValueError(f"{name!r} is an off-policy stable-baselines3 algorithm; the mask policy plugs into on-policy "
                         f"ones (PPO, A2C, sb3_contrib:TRPO, sb3_contrib:RecurrentPPO, ...)")
    for method in ("learn", "predict", "save", "load"):
        if not callable(getattr(cls, method, None)):
            raise ValueError(f"{name!r} lacks {method}(): agents need SB3's surface (learn, predict, save, load)")
    return AgentSpec(lambda env, **kw: cls(env=env, **kw), cls)


SET_BY_CALLER = frozenset({"env", "policy", "seed"})  # what make_agent's callers pass themselves, not user options
NOT_A_RESULT = frozenset({"verbose", "tensorboard_log"})  # options that change what is printed or logged, not learned


def agent_options(cls: type) -> dict[str, inspect.Parameter] | None:
    """The keyword options ``cls(...)`` accepts, following ``**kwargs`` up the MRO; None if open-ended.
    Private ones (``_init_setup_model``) are left out."""
    options: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self" and not p.name.startswith("_"):
                options.setdefault(p.name, p)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return options
    return None


def project_default(cls: type, name: str, default: Any) -> Any:
    """The default an option has here: this project's for SB3's on-policy algorithms (``agents.sb3.DEFAULTS``,
    e.g. PPO's ``n_steps`` 32, not SB3's 2048), else the signature's."""
    for klass in cls.__mro__:
        if klass in DEFAULTS:
            return DEFAULTS[klass].get(name, default)
    return default


def optional_annotation(annotation: Any) -> bool:
    """Whether a parameter's annotation (a string under ``from __future__ import annotations``) lets it be None."""
    return "None" in str(annotation) or "Optional" in str(annotation)


def expected_value(default: Any, value: Any, optional: bool = False) -> str | None:
    """What an option with this default takes, if ``value`` cannot be it (text for a number: ``gamma:abc``);
    None if it can. A float option also takes a callable (an SB3 schedule); an ``optional`` one (annotated
    ``... | None``) also None."""
    if optional and value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "True or False"
    if isinstance(default, (int, float)):
        number = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return None if number or (isinstance(default, float) and callable(value)) else (
            "a number or None" if optional else "a number")
    return None


@dataclass
class OptionProblems:
    """What is wrong with options given to an agent class (see :func:`option_problems`)."""

    unknown: dict[str, str | None]  # option -> the closest valid name, if any
    bad_values: dict[str, tuple[Any, str]]  # option -> (its default, what it takes)
    valid: list[str]  # the options a user may set

    def __bool__(self) -> bool:
        return bool(self.unknown or self.bad_values)


def option_problems(cls: type, kwargs: dict[str, Any], callers_own: frozenset[str] = frozenset()) -> OptionProblems:
    """The one check of agent options (``make_agent``, ``train_agent.py`` and the benchmark's ``--hyperparams``
    all use it): unknown names with their close matches, and values of the wrong kind. ``callers_own``: names
    of :data:`SET_BY_CALLER` the caller may pass itself (``make_agent``: all of them; a user: none)."""
    options = agent_options(cls)
    if options is None:
        return OptionProblems({}, {}, [])
    valid = sorted(set(options) - SET_BY_CALLER)
    unknown = {u: next(iter(difflib.get_close_matches(u, valid, 1)), None)
               for u in sorted(set(kwargs) - set(valid) - (callers_own & set(options)))}
    bad = {k: (project_default(cls, k, options[k].default), e) for k, v in kwargs.items()
           if k in options and (e := expected_value(options[k].default, v, optional_annotation(options[k].annotation)))
           is not None}
    return OptionProblems(unknown, bad, valid)


def agent_defaults(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The values agent ``name`` takes for the options not ``given`` (this project's defaults, ``project_default``):
    with the given ones, all that its options make of a run, so that a benchmark row is keyed by them and a changed
    default is a changed run. Options that do not change what it learns (its seed is the row's own, ``verbose``,
    ``tensorboard_log``) and values with no JSON form are left out."""
    cls = agent_spec(name).agent_class
    out = {}
    for option, parameter in (agent_options(cls) or {}).items():
        if option in given or option in SET_BY_CALLER | NOT_A_RESULT or parameter.default is parameter.empty:
            continue
        value = project_default(cls, option, parameter.default)
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[option] = value
    return out


def check_options(name: str, cls: type, kwargs: dict[str, Any]) -> None:
    """Raise a ValueError for an option ``cls`` does not have (with the close matches), or for a value of the
    wrong kind, before anything is built."""
    problems = option_problems(cls, kwargs, callers_own=SET_BY_CALLER)
    if problems.unknown:
        hints = [f"{u!r} (did you mean {close!r}?)" if close else repr(u) for u, close in problems.unknown.items()]
        raise ValueError(f"agent {name!r} has no option {', '.join(hints)}; its options: {', '.join(problems.valid)}")
    for key, (default, expected) in problems.bad_values.items():
        raise ValueError(f"agent {name!r}: option {key} takes {expected} (default {default}), got {kwargs[key]!r}")


def build_error(name: str, options: dict[str, Any], exc: Exception, owner: str = "") -> str:
    """The one line a CLI prints when agent ``name`` cannot be built with the user's ``options``: the message of
    :func:`check_options` as it is, anything else the agent raised with the options it was given (``owner``: how the
    command line names whose option it is, ``cmaes.`` in the benchmark's ``--hyperparams``)."""
    if isinstance(exc, ValueError) and str(exc).startswith(f"agent {name!r}"):  # from check_options
        return f"--hyperparams: {exc}"
    given = " ".join(f"{owner}{k}:{v!r}" for k, v in options.items()) or "(none)"
    return f"agent {name!r} cannot be built with --hyperparams {given}: {type(exc).__name__}: {exc}"


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


__all__ = ["AGENTS", "AgentSpec", "agent_defaults", "agent_options", "trains_on_reward", "agent_spec", "option_problems", "available_agents", "check_options",
           "build_error", "import_class", "load_agent", "make_agent", "register_agent"]
