"""A name -> object registry with the error message every registry in this package shares.

Datasets, encoders, decorruptors and reward definitions are each a :class:`Registry`; users add
to them with the matching ``register_*`` decorator, and an unknown name is a ``ValueError`` that
lists the valid ones.
"""
from __future__ import annotations

import inspect
import re
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind.

    :param kind: what an entry is, for error messages ("dataset", "reward", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding the decorated object under ``name`` (a later registration replaces it)."""

        def decorate(entry: T) -> T:
            self.entries[name] = entry
            return entry

        return decorate

    def register_named(self, name: str) -> Callable[[T], T]:
        """Class decorator: set the class's ``name`` to ``name`` (its messages say it) and register it."""

        def decorate(cls: T) -> T:
            cls.name = name  # type: ignore[attr-defined]
            return self.register(name)(cls)

        return decorate

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __getitem__(self, name: str) -> T:
        if name not in self.entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self.entries[name]


def doc_summary(entry: Any) -> str:
    """The first paragraph of an entry's docstring on one line, in Markdown (for the tables the docs are
    generated from): reST literals and roles become code spans, pipes are escaped."""
    text = " ".join((inspect.getdoc(entry) or "").split("\n\n")[0].split())
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    return text.replace("|", "\\|")
