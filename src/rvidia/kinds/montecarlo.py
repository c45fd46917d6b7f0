"""Monte Carlo estimate of pi: points in the unit square that fall inside the quarter circle.

Each chunk draws from its own stream, ``SeedSequence(seed, spawn_key=(index,))``, and chunk sizes
are fixed by ``chunk_samples``, so the count is identical whatever the number of workers.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from rvidia.kinds.base import Done, JobContext, Kind, Plan, RunContext

_BATCH = 1 << 20  # draw at most this many points at once: bounded memory whatever chunk_samples is


class MonteCarloParams(msgspec.Struct, forbid_unknown_fields=True):
    samples: Annotated[int, msgspec.Meta(ge=1, le=10**13, description="Points to draw in all")]
    seed: Annotated[int, msgspec.Meta(ge=0, description="Seed of the random streams")] = 0
    chunk_samples: Annotated[
        int, msgspec.Meta(ge=1000, le=10**10, description="Points per chunk (fixes chunk boundaries)")
    ] = 1_000_000


def count_inside(seed: int, index: int, n: int) -> int:
    """Points of chunk ``index`` inside the quarter circle; the single-process reference too."""
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
    inside = 0
    left = n
    buf_x = np.empty(min(n, _BATCH))
    buf_y = np.empty(min(n, _BATCH))
    while left > 0:
        m = min(left, _BATCH)
        x = rng.random(out=buf_x[:m])
        y = rng.random(out=buf_y[:m])
        np.multiply(x, x, out=x)
        np.multiply(y, y, out=y)
        np.add(x, y, out=x)
        inside += int(np.count_nonzero(x <= 1.0))
        left -= m
    return inside


class MonteCarlo(Kind):
    name = "montecarlo"
    description = "Estimate pi by Monte Carlo sampling"
    Params = MonteCarloParams

    def plan(self, ctx: JobContext) -> Plan:
        p: MonteCarloParams = ctx.params
        return Plan(n_chunks=-(-p.samples // p.chunk_samples))

    def chunk(self, ctx: JobContext, index: int) -> bytes:
        p: MonteCarloParams = ctx.params
        n = min(p.chunk_samples, p.samples - index * p.chunk_samples)
        return msgspec.msgpack.encode([index, n])

    def run(self, params: Any, payload: bytes, ctx: RunContext) -> bytes:
        index, n = msgspec.msgpack.decode(payload, type=tuple[int, int])
        return msgspec.msgpack.encode(count_inside(params.seed, index, n))

    def new_acc(self, ctx: JobContext) -> int:
        return 0

    def merge(self, ctx: JobContext, acc: int, index: int, result: bytes) -> int:
        return acc + msgspec.msgpack.decode(result, type=int)

    def finish_stage(self, ctx: JobContext, acc: int) -> Done:
        samples = ctx.params.samples
        return Done(result={"pi": 4.0 * acc / samples, "samples": samples, "inside": acc})


KIND = MonteCarlo()
