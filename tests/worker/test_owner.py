"""Owner-first rules without processes or clocks: the policy, lending hours, what counts as RVIDIA."""

from __future__ import annotations

from datetime import datetime

import pytest

from rvidia.worker import owner
from rvidia.worker.owner import OwnerPolicy, Windows


def run(policy: OwnerPolicy, samples: list[tuple[float, float]], lending: bool = True) -> list[owner.Plan]:
    return [policy.step(t, cpu, lending) for t, cpu in samples]


def test_pauses_only_after_the_busy_window_and_stops_the_chunks() -> None:
    policy = OwnerPolicy(50, vacate_after=60, windows=Windows(busy=5, calm=30))
    plans = run(policy, [(0, 90), (2, 90), (4.9, 90)])
    assert not any(p.paused for p in plans)
    plan = policy.step(5.0, 90)
    assert plan.paused and plan.suspended and not plan.vacate and "above 50%" in plan.reason


def test_a_short_burst_does_not_pause() -> None:
    policy = OwnerPolicy(50, vacate_after=60, windows=Windows(busy=5, calm=30))
    plans = run(policy, [(0, 90), (3, 90), (4, 10), (5, 90), (9, 90)])
    assert not any(p.paused for p in plans)
    assert policy.step(10, 90).paused


def test_vacates_once_after_vacate_after_then_resumes_after_the_calm_window() -> None:
    policy = OwnerPolicy(50, vacate_after=60, windows=Windows(busy=5, calm=30))
    run(policy, [(0, 90), (5, 90)])
    assert not policy.step(64, 90).vacate
    assert policy.step(65, 90).vacate
    assert not policy.step(66, 90).vacate  # once per pause
    calm = run(policy, [(70, 10), (99, 10)])
    assert all(p.paused for p in calm)
    back = policy.step(100, 10)
    assert not back.paused and not back.suspended
    run(policy, [(200, 90), (205, 90)])  # a new pause may vacate again
    assert policy.step(265, 90).vacate


def test_a_high_sample_during_the_calm_window_restarts_it() -> None:
    policy = OwnerPolicy(50, vacate_after=600, windows=Windows(busy=1, calm=10))
    run(policy, [(0, 90), (1, 90), (2, 10), (8, 10), (9, 95), (10, 10)])
    assert policy.step(19, 10).paused
    assert not policy.step(20, 10).paused


def test_outside_the_lending_hours_pause_without_stopping_the_chunks() -> None:
    policy = OwnerPolicy(50, vacate_after=1)
    plan = policy.step(0, None, lending=False)
    assert plan.paused and not plan.suspended and not plan.vacate and "lending hours" in plan.reason
    assert not policy.step(100, None, lending=True).paused


@pytest.mark.parametrize("text, inside, outside", [
    ("18:00-08:00", ["18:00", "23:59", "00:00", "07:59"], ["08:00", "12:00", "17:59"]),
    ("12:00-13:30", ["12:00", "13:29"], ["11:59", "13:30"]),
    ("9-17,20:00-21:00", ["09:00", "16:59", "20:30"], ["17:00", "21:00", "08:59"]),
    ("00:00-24:00", ["00:00", "23:59"], []),
])
def test_hours(text: str, inside: list[str], outside: list[str]) -> None:
    ranges = owner.parse_hours(text)

    def at(hhmm: str) -> bool:
        return owner.lending_now(ranges, datetime.strptime(f"2026-12-04 {hhmm}", "%Y-%m-%d %H:%M"))

    assert all(at(t) for t in inside) and not any(at(t) for t in outside)


@pytest.mark.parametrize("text, words", [
    ("18:00", "not a range"), ("25:00-08:00", "not a time of day"), ("18:00-18:00", "same time"),
    ("6pm-8am", "not a time"), ("18:7-20:00", "not a time"),
])
def test_bad_hours_say_why(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        owner.parse_hours(text)


def test_no_hours_means_always() -> None:
    assert owner.parse_hours(None) == [] and owner.parse_hours("") == []
    assert owner.in_hours([], 3 * 60)


@pytest.mark.parametrize("cmdline, ours", [
    (["rvidia", "worker"], True),
    (["/venv/bin/rvidia", "master"], True),
    (["python3", "-m", "rvidia", "worker"], True),
    (["/usr/bin/python3.11", "-X", "utf8", "-m", "rvidia.worker.child"], True),
    (["python", "-mrvidia", "up"], True),
    (["python3", "/venv/bin/rvidia", "up"], True),
    (["vim", "src/rvidia/cli.py"], False),
    (["python3", "train.py", "--name", "rvidia"], False),
    (["python3", "-c", "import rvidia"], False),
    (["python3", "-m", "rvidiax"], False),
    ([], False),
])
def test_what_counts_as_rvidia(cmdline: list[str], ours: bool) -> None:
    assert owner.is_rvidia_cmdline(cmdline) is ours


def test_windows_from_the_environment() -> None:
    assert owner.windows_from_env({}) == Windows()
    got = owner.windows_from_env({owner.ENV_BUSY: "1", owner.ENV_CALM: "2.5", owner.ENV_SAMPLE: "0.1"})
    assert got == Windows(busy=1, calm=2.5, sample=0.1)
    with pytest.raises(ValueError, match=owner.ENV_CALM):
        owner.windows_from_env({owner.ENV_CALM: "0"})


def test_the_owner_cpu_sample_is_a_percentage() -> None:
    sampler = owner.OwnerCpu()
    value = sampler.sample()
    assert 0.0 <= value <= 100.0
