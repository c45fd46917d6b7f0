"""Labels for the results of replicated chunks, so the scheduler can count votes without bytes.

Results that agree get the same label: bitwise equal, or equal for the kind's ``agree`` (a kind
whose results may differ in the last bits across machines declares its tolerance there). The
results themselves are already held by the runtime until the vote settles; this keeps references.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

ChunkKey = tuple[str, int, int]  # job id, stage, index
KEEP_ENDED = 1000  # ended jobs whose outvoted workers stay listed in their view (until a restart)


class ResultLabels:
    def __init__(self) -> None:
        self._seen: dict[ChunkKey, list[bytes]] = {}  # distinct results so far, by first arrival
        self.outvoted: OrderedDict[str, dict[str, int]] = OrderedDict()  # ended job -> worker -> count

    def label(self, key: ChunkKey, result: bytes, agree: Callable[[bytes, bytes], bool]) -> str:
        seen = self._seen.setdefault(key, [])
        for i, other in enumerate(seen):
            if other == result or agree(other, result):
                return str(i)
        seen.append(result)
        return str(len(seen) - 1)

    def forget(self, key: ChunkKey) -> None:
        self._seen.pop(key, None)

    def drop_job(self, job_id: str, outvoted: dict[str, int]) -> None:
        """The job ended: forget its results, keep who was outvoted in it (bounded)."""
        for key in [k for k in self._seen if k[0] == job_id]:
            del self._seen[key]
        if outvoted:
            self.outvoted[job_id] = dict(outvoted)
            while len(self.outvoted) > KEEP_ENDED:
                self.outvoted.popitem(last=False)
