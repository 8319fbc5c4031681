"""Name -> function registries, so params.yaml picks methods by the names it validates against."""

from collections.abc import Callable, Iterable
from typing import Any


class Registry(dict):
    """A dict of named builders whose lookup error lists the valid names.

    Adding a method is one function with ``@REGISTRY.register("name")``, plus an entry in
    ``ltcifar/catalog.py`` naming the settings it reads. Only catalogued names register, so the
    torch-free catalogue that params.yaml is validated against never drifts from the code.
    """

    def __init__(self, kind: str, catalog: Iterable[str]) -> None:
        super().__init__()
        self.kind, self.catalog = kind, frozenset(catalog)

    def register(self, name: str) -> Callable[[Any], Any]:
        if name not in self.catalog:
            raise KeyError(f"{self.kind} {name!r} is not in ltcifar/catalog.py; add it there")

        def deco(obj: Any) -> Any:
            if name in self:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self[name] = obj
            return obj

        return deco

    def __missing__(self, name: str) -> Any:
        raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(sorted(self))}")
