"""What the command-line tools share: ``key:value`` options and the one way they report a bad input.

Values of ``--env-kwargs``/``--hyperparams`` are Python literals when they parse as one (``32``,
``1e-3``, ``True``, ``{'beta': 0.5}``, ``[1, 2]``) and plain strings otherwise (``reward:heldout_gain``).
A bad input is a :class:`UsageError`, raised while validating and before anything is written; a CLI
built on :class:`ArgumentParser` and :func:`usage_errors` prints it as one line, ``error: <message>``,
on stderr and exits with status 2 (argparse's own convention), without a traceback.
"""
from __future__ import annotations

import argparse
import ast
import functools
import signal
import sys
import threading
from typing import Any, Callable, NoReturn


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


def positive(cast: type) -> Callable[[str], Any]:
    """An argparse ``type``: ``cast(text)`` if it is > 0; else the parser's one-line error says what it got."""

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            kind = "an integer" if cast is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = f"positive {cast.__name__}"
    return parse


class UsageError(ValueError):
    """A problem with the command line that the user can fix; the message names the problem and the fix."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose own errors (unknown option, bad int, bad choice) are one line like every other
    :class:`UsageError`, instead of the usage block plus an error line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def answer_ctrl_c() -> None:
    """Make Ctrl-C raise KeyboardInterrupt (so runs save and say how to resume) even in a process that
    inherited SIGINT ignored: a non-interactive shell starts background jobs that way, and Python then
    leaves it ignored. Call from the main thread of a CLI."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)


def usage_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a CLI's ``main``: a :class:`UsageError` becomes ``error: <message>`` on stderr and status 2;
    Ctrl-C is answered (:func:`answer_ctrl_c`)."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> int:
        answer_ctrl_c()
        try:
            return main(*args, **kwargs)
        except UsageError as exc:
            print("error: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the message
            return 2

    return wrapper
