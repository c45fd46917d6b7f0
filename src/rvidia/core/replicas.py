"""Result checking for untrusted workers: how the copies of a replicated chunk vote.

A job with ``replicas`` R >= 2 runs each chunk on R different workers. The master labels each copy's
result (equal results get the same label: bitwise, or within the kind's tolerance) and the rule here,
pure like the scheduler that applies it, decides:

- all R agree: accept;
- any disagreement: one more copy runs on yet another worker; then the label held by a strict
  majority of all copies wins and the workers that returned anything else are outvoted (flagged);
- still no majority after ``MAX_EXTRA_RUNS`` extra copies: the chunk fails the job, with the votes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

MAX_EXTRA_RUNS = 2


@dataclass(frozen=True, slots=True)
class Vote:
    worker_id: str
    attempt: int
    label: str  # copies whose results agree carry the same label


@dataclass(frozen=True, slots=True)
class Verdict:
    winner: Vote | None = None  # accept this copy's result
    outvoted: tuple[Vote, ...] = ()  # copies whose results disagree with the winner's
    run_more: bool = False  # no majority yet: one more copy decides
    error: str | None = None  # no majority even after the extra copies


def decide(votes: list[Vote], replicas: int, extra_runs: int) -> Verdict | None:
    """The verdict once every copy asked for (``replicas + extra_runs``) has voted, else None."""
    if len(votes) < replicas + extra_runs:
        return None
    label, count = Counter(v.label for v in votes).most_common(1)[0]
    if count == len(votes) or (extra_runs > 0 and 2 * count > len(votes)):
        winner = next(v for v in votes if v.label == label)
        return Verdict(winner=winner, outvoted=tuple(v for v in votes if v.label != label))
    if extra_runs < MAX_EXTRA_RUNS:
        return Verdict(run_more=True)
    tally = ", ".join(f"{n} x result {lab}" for lab, n in Counter(v.label for v in votes).most_common())
    return Verdict(error=f"its {len(votes)} copies on different workers disagree ({tally})")
