"""Packing a function and its items for the ``map`` kind (the submitter's side)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import cloudpickle
import msgspec


def pack_map(fn: Callable[..., Any], items: list[Any], chunksize: int) -> tuple[bytes, bytes]:
    """The function blob, and the items blob: a msgpack list of pickled batches, one per chunk.

    Only workers unpickle these; the master slices the list without looking inside.
    """
    _ship_module_by_value(fn)
    batches = [cloudpickle.dumps(items[i : i + chunksize]) for i in range(0, len(items), chunksize)]
    return cloudpickle.dumps(fn), msgspec.msgpack.encode(batches)


def _ship_module_by_value(fn: Callable[..., Any]) -> None:
    """Pickle the function's own module by value when workers could not import it.

    cloudpickle pickles functions of importable modules by reference; a user's project module (a
    script's helper file, a test module) is not installed on the workers, so it travels by value.
    """
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] == "rvidia":
        return
    origin = getattr(module, "__file__", None)
    if not origin:
        return
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    where = Path(origin).resolve()
    if any(root in where.parents for root in installed) or "site-packages" in where.parts:
        return
    cloudpickle.register_pickle_by_value(module)
