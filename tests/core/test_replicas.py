"""The voting rule of replicated chunks (rvidia.core.replicas)."""

from __future__ import annotations

from rvidia.core.replicas import MAX_EXTRA_RUNS, Vote, decide


def votes(labels: str) -> list[Vote]:
    return [Vote(f"w{i}", 1, label) for i, label in enumerate(labels)]


def test_waits_for_every_copy() -> None:
    assert decide(votes("a"), 2, 0) is None
    assert decide(votes("ab"), 2, 1) is None


def test_unanimous_copies_are_accepted_with_nobody_outvoted() -> None:
    verdict = decide(votes("aaa"), 3, 0)
    assert verdict is not None and verdict.winner == Vote("w0", 1, "a") and verdict.outvoted == ()


def test_a_disagreement_asks_for_one_more_copy_even_with_a_majority() -> None:
    assert decide(votes("ab"), 2, 0).run_more  # type: ignore[union-attr]
    assert decide(votes("aab"), 3, 0).run_more  # type: ignore[union-attr]


def test_after_the_extra_copy_the_majority_wins_and_the_rest_are_outvoted() -> None:
    verdict = decide(votes("aba"), 2, 1)
    assert verdict is not None and verdict.winner == Vote("w0", 1, "a")
    assert verdict.outvoted == (Vote("w1", 1, "b"),)
    verdict = decide(votes("bab"), 2, 1)
    assert verdict is not None and verdict.winner == Vote("w0", 1, "b") and verdict.outvoted == (Vote("w1", 1, "a"),)


def test_no_majority_runs_more_then_fails_with_the_tally() -> None:
    assert decide(votes("abc"), 2, 1).run_more  # type: ignore[union-attr]
    verdict = decide(votes("abca"), 2, MAX_EXTRA_RUNS)
    assert verdict is not None and verdict.winner is None and verdict.error is not None
    assert "4 copies" in verdict.error and "2 x result a" in verdict.error
