"""A tiny name -> object registry used for tasks, tokenizers and objectives.

Adding an entry is one decorator (``@TOKENIZERS.register("bin")``) or one call
(``TASKS.add("name", spec)``); lookups of unknown names raise an error that lists
the valid names, so a typo on the command line tells the user what to type instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise print the repr of the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str, fallback: Callable[[str], T | None] | None = None):
        """``kind`` names what is registered (used in messages); ``fallback`` may build
        an entry on the fly for names not registered explicitly (returns None if it can't)."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._fallback = fallback
        self._fallback_names: Callable[[], list[str]] | None = None

    def add(self, name: str, obj: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            return self.add(name, obj)

        return deco

    def set_fallback(self, build: Callable[[str], T | None], names: Callable[[], list[str]]) -> None:
        self._fallback = build
        self._fallback_names = names

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if self._fallback is not None:
            obj = self._fallback(name)
            if obj is not None:
                return obj
        valid = self.names(include_fallback=True)
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}. Valid names: {', '.join(valid)}"
        )

    def names(self, include_fallback: bool = False) -> list[str]:
        names = list(self._entries)
        if include_fallback and self._fallback_names is not None:
            names += [n for n in self._fallback_names() if n not in self._entries]
        return names

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
