"""Repeated failed sign-ins from one address are slowed, never locked out."""

from __future__ import annotations

from rvidia.master.throttle import FREE_FAILURES, MAX_DELAY, WINDOW, FailureThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_first_failures_are_free_then_the_delay_grows_to_a_cap() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock)
    delays = [throttle.failed("10.0.0.1") for _ in range(FREE_FAILURES + 8)]
    assert delays[:FREE_FAILURES] == [0.0] * FREE_FAILURES
    grown = delays[FREE_FAILURES:]
    assert grown == sorted(grown) and grown[0] > 0 and grown[-1] == MAX_DELAY


def test_addresses_are_counted_apart_and_failures_age_out() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock)
    for _ in range(FREE_FAILURES + 2):
        throttle.failed("a")
    assert throttle.failed("b") == 0.0
    clock.now += WINDOW + 1
    assert throttle.failed("a") == 0.0
