"""One small registry per swept name (activation, judge, dataset recipe, ...).

Names resolve with a "did you mean" error, in the manner of lm-evaluation-harness's task registry.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from seal_ray.errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._entries)}; "
                f"allowed: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
