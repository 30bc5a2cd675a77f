"""The one backoff policy (rotor.backoff) and a loop's counter (rotor.retry): growth, bounds,
jitter range."""

from __future__ import annotations

import math

import pytest

from rotor.backoff import delay
from rotor.retry import Backoff


@pytest.mark.parametrize(
    ("failures", "base", "maximum", "expected"),
    [
        (0, 1.0, 60.0, 0.0),
        (-3, 1.0, 60.0, 0.0),
        (1, 1.0, 60.0, 1.0),
        (2, 1.0, 60.0, 2.0),
        (3, 1.0, 60.0, 4.0),
        (6, 1.0, 60.0, 32.0),
        (7, 1.0, 60.0, 60.0),  # capped
        (10_000, 0.2, 30.0, 30.0),  # no overflow however many failures
        (4, 0.05, 1.0, 0.4),
        (3, 0.5, math.inf, 2.0),  # uncapped (the canister's attempts)
    ],
)
def test_growth_and_cap(failures: int, base: float, maximum: float, expected: float) -> None:
    assert delay(failures, base, maximum) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("jitter", "draw", "expected"),
    [
        ((0.5, 1.0), 0.0, 2.0),  # the agent's watches: half to all of it
        ((0.5, 1.0), 0.999, 3.998),
        ((0.5, 1.5), 0.0, 2.0),  # the canister's attempts: half to one and a half
        ((0.5, 1.5), 0.5, 4.0),
        ((0.0, 1.0), 0.25, 1.0),  # full jitter (the ConfigMap's conflicts)
    ],
)
def test_jitter_range(jitter: tuple[float, float], draw: float, expected: float) -> None:
    assert delay(3, 1.0, 60.0, jitter=jitter, draw=draw) == pytest.approx(expected)


def test_a_loops_jitter_stays_within_its_range() -> None:
    seen = []
    for _ in range(200):
        b = Backoff(1.0, 10.0, (0.5, 1.0), failures=4)
        seen.append(b.next())
    assert all(5.0 <= s <= 10.0 for s in seen)
    assert len(set(seen)) > 1


def test_a_loop_counts_failures_and_a_success_resets() -> None:
    b = Backoff(0.2, 1.0)
    assert [b.next() for _ in range(5)] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    b.reset()
    assert b.next() == pytest.approx(0.2)
    assert b.next(hint=3.0) == pytest.approx(3.0)  # a Retry-After wins over the policy
    assert b.failures == 2


async def test_wait_sleeps_for_the_delay() -> None:
    b = Backoff(0.01, 0.01)
    assert await b.wait() == pytest.approx(0.01)
    assert b.failures == 1
