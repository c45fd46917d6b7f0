"""Fan-out of change events to ``/ws/events`` subscribers (dashboard, clients).

A subscriber that cannot keep up is not allowed to grow the master's memory: its queue is bounded
and, once full, it receives ``None`` and is dropped; it reconnects and reloads the state over REST.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any


class EventBus:
    def __init__(self, queue_size: int = 5000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[asyncio.Queue[str | None]] = set()

    @property
    def active(self) -> bool:
        return bool(self._subscribers)

    def subscribe(self) -> asyncio.Queue[str | None]:
        queue: asyncio.Queue[str | None] = asyncio.Queue(self.queue_size)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str | None]) -> None:
        self._subscribers.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        if not self._subscribers:
            return
        text = json.dumps(event, separators=(",", ":"))
        for queue in list(self._subscribers):
            if queue.qsize() >= self.queue_size - 1:
                self._subscribers.discard(queue)
                queue.put_nowait(None)  # the one free place: tells the reader to resync
            else:
                queue.put_nowait(text)
