"""Parsing the ``key:value`` options the command-line tools share (``--env-kwargs``, ``--hyperparams``).

Values are Python literals when they parse as one (``32``, ``1e-3``, ``True``, ``{'beta': 0.5}``,
``[1, 2]``) and plain strings otherwise (``reward:heldout_gain``).
"""
from __future__ import annotations

import ast
from typing import Any


def parse_value(raw: str) -> Any:
    """A Python literal if ``raw`` is one, else ``raw`` itself."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["batch_size:32", "reward_kwargs:{'beta': 0.5}"]`` -> ``{"batch_size": 32, "reward_kwargs": {"beta": 0.5}}``.

    :param items: the raw ``key:value`` strings.
    :param option: the option's name, for the error message (e.g. ``"--env-kwargs"``).
    :raises ValueError: an item without a colon or with an empty key, naming the item and the form expected.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition(":")
        if not sep or not key:
            raise ValueError(f"{option} expects key:value pairs (e.g. batch_size:32), got {item!r}")
        out[key] = parse_value(raw)
    return out
