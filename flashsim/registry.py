"""One registry mechanism for everything a unit file or a recipe names by a string: unit kinds,
model types, transforms, feature kinds, optimizers and schedules. Adding one is one decorated class."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from flashsim.errors import UnitError

__all__ = ["Registry", "REGISTRIES", "suggest"]

T = TypeVar("T")


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or an empty string."""
    by_lower = {str(k).lower(): str(k) for k in known}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""


class Registry(Generic[T]):
    """Named classes of one family; ``@registry.register`` adds a class under its ``type`` attribute."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._entries: dict[str, T] = {}
        REGISTRIES[family] = self

    def register(self, entry: T) -> T:
        """Class decorator: register ``entry`` under ``entry.type``."""
        name = getattr(entry, "type", "")
        if not name or name in self._entries:
            raise TypeError(f"{self.family} {entry!r}: needs a unique non-empty 'type' (have {sorted(self._entries)})")
        self._entries[name] = entry
        return entry

    def get(self, name: str, where: str = "") -> T:
        """The entry named ``name``; a :class:`UnitError` naming ``where`` and the closest name otherwise."""
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise UnitError(f"{prefix}unknown {self.family} {name!r}{suggest(name, self._entries)} (known: {self.names()})")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())

    def __repr__(self) -> str:
        return f"Registry({self.family!r}, {self.names()})"


REGISTRIES: dict[str, Registry] = {}  # family -> registry, for `flashsim units --list-kinds`

