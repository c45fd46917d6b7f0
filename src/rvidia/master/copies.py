"""Where and since when each running copy of a chunk runs: what the chunk events need.

A chunk normally has one running copy; while a speculative backup runs it has two, and the copy
that finishes first is the one the timeline shows as done.
"""

from __future__ import annotations

ChunkKey = tuple[str, int, int]  # job id, stage, index


class RunningCopies:
    def __init__(self) -> None:
        self._by_chunk: dict[ChunkKey, dict[int, tuple[str, str]]] = {}  # -> {attempt: (worker, started)}

    def start(self, key: ChunkKey, attempt: int, worker: str, at: str) -> None:
        self._by_chunk.setdefault(key, {})[attempt] = (worker, at)

    def end(self, key: ChunkKey, attempt: int | None = None) -> tuple[str | None, int, str | None]:
        """Forget one copy (``attempt``, else the latest): its worker, attempt and start time."""
        copies = self._by_chunk.get(key)
        if not copies:
            return None, attempt or 0, None
        if attempt not in copies:
            attempt = max(copies)
        worker, started = copies.pop(attempt)
        if not copies:
            del self._by_chunk[key]
        return worker, attempt, started

    def drop_job(self, job_id: str) -> None:
        for key in [k for k in self._by_chunk if k[0] == job_id]:
            del self._by_chunk[key]
