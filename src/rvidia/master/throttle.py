"""Slows down an address that keeps failing to sign in, without ever locking out a valid token.

Only the failing answers wait: a right token is checked and answered at once, whatever the address
did before. The delay grows with the failures of the last minute and is capped, so a shared address
(a lab behind one NAT) is slowed, never blocked.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

FREE_FAILURES = 5  # failures per window answered without delay
WINDOW = 60.0
MAX_DELAY = 5.0


class FailureThrottle:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock or time.monotonic
        self._failures: dict[str, deque[float]] = {}

    def failed(self, source: str) -> float:
        """Record a failure; return how long to wait before answering it."""
        now = self._clock()
        recent = self._failures.setdefault(source, deque())
        while recent and recent[0] < now - WINDOW:
            recent.popleft()
        recent.append(now)
        if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
            self._failures = {source: recent}
        extra = len(recent) - FREE_FAILURES
        return 0.0 if extra <= 0 else min(MAX_DELAY, 0.25 * 2 ** (extra - 1))
