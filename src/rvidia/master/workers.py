"""What the master knows about each worker, for the API and the dashboard (not for scheduling)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

from rvidia.protocol import messages as m


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class WorkerInfo:
    id: str
    name: str
    host: str
    os: str
    python: str
    cores: int
    memory_bytes: int
    slots: int
    speed: float
    allow_code: bool
    resources: dict[str, float]
    joined_at: float
    last_seen: float
    paused: bool = False
    drained: bool = False
    chunks_done: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    lost_at: float | None = None
    lost_reason: str | None = None
    token_name: str = ""  # which token it joined with: revoking that token disconnects it
    version: str = ""  # its RVIDIA release, when it said (one minor release apart is allowed)
    gpus: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "memory_bytes", "driver"}]
    outvoted: int = 0  # results of replicated chunks where it disagreed with the majority (flagged)

    @classmethod
    def from_hello(cls, wid: str, hello: m.Hello, host: str) -> "WorkerInfo":
        now = time.time()
        return cls(id=wid, name=hello.name, host=hello.host or host, os=hello.os, python=hello.python,
                   cores=hello.cores, memory_bytes=hello.memory_bytes, slots=hello.slots, speed=hello.speed,
                   allow_code=hello.allow_code, resources=dict(hello.resources), joined_at=now,
                   last_seen=now, version=hello.package_version,
                   gpus=[msgspec.structs.asdict(g) for g in hello.gpus])

    def seen(self) -> None:
        self.last_seen = time.time()

    def mark_lost(self, reason: str) -> None:
        self.lost_at = time.time()
        self.lost_reason = reason

    def state(self, running: int) -> str:
        if self.lost_at is not None:
            return "lost"
        if self.paused:
            return "paused"
        if running:
            return "busy"
        if self.drained:  # the API's "drained" flag tells a drained worker from a paused one
            return "paused"
        return "idle"

    def view(self, running: int) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "host": self.host, "state": self.state(running),
            "slots": self.slots, "running": running, "cores": self.cores,
            "memory_bytes": self.memory_bytes, "speed": self.speed, "chunks_done": self.chunks_done,
            "last_seen": _iso(self.last_seen), "os": self.os, "python": self.python,
            "allow_code": self.allow_code, "resources": self.resources, "drained": self.drained,
            "cpu_percent": self.cpu_percent, "memory_percent": self.memory_percent,
            "joined_at": _iso(self.joined_at), "lost_reason": self.lost_reason, "version": self.version,
            "gpus": self.gpus, "outvoted": self.outvoted, "flagged": self.outvoted > 0,
        }
