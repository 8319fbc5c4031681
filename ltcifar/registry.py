"""Name -> function registries, so params.yaml picks methods by the names it validates against."""

from collections.abc import Callable
from typing import Any


class Registry(dict):
    """A dict of named builders whose lookup error lists the valid names.

    Adding a method is one function plus one ``@REGISTRY.register("name")`` line; the params
    validator reads ``sorted(registry)`` so the allowed choices never drift from the code.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            if name in self:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def __missing__(self, name: str) -> Any:
        raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self))}")
