"""Finds the job kinds: every module of this package that defines ``KIND``."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from rvidia.kinds.base import Kind

_NOT_KINDS = {"base", "registry"}


@lru_cache(maxsize=1)
def all_kinds() -> dict[str, Kind]:
    """Name -> kind, imported once per process."""
    import rvidia.kinds as package

    found: dict[str, Kind] = {}
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name in _NOT_KINDS or module_info.name.startswith("_"):
            continue
        module = importlib.import_module(f"rvidia.kinds.{module_info.name}")
        kind = getattr(module, "KIND", None)
        if isinstance(kind, Kind):
            found[kind.name] = kind
    return dict(sorted(found.items()))


def get_kind(name: str) -> Kind | None:
    return all_kinds().get(name)
