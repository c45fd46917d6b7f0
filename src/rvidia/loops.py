"""The event loop the master and the workers run on: uvloop where installed, else asyncio's."""

from __future__ import annotations

import asyncio
from typing import Callable


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # Windows, or not installed
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]
