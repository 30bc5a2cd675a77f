"""Table tests of the engine's pure decisions (agent.schedule)."""

from __future__ import annotations

import pytest

from agent.schedule import recovery
from rotor.layout import SecretState
from rotor.protocol import backoff_delay, jitter_draw, needs_rotation, next_rotation_at, next_wakeup
from rotor.spec import RotatingSecretSpec

T0 = 1_700_000_000.0
HOUR = 3600.0


def spec(interval: str = "1h", overlap: str = "10m", suspend: bool = False) -> RotatingSecretSpec:
    return RotatingSecretSpec.from_dict(
        {
            "keys": [{"name": "pw", "generator": {"type": "password"}}],
            "rotation": {"interval": interval, "overlap": overlap},
            "suspend": suspend,
        }
    )


ACTIVE = SecretState(version=3, current={"pw": b"x" * 10}, rotated_at=T0)
EMPTY = SecretState()
PENDING = SecretState(
    version=3, phase="pending", current={"pw": b"a" * 10}, pending={"pw": b"b" * 10}, rotated_at=T0
)


@pytest.mark.parametrize(
    ("state", "spec_", "draw", "jitter", "expected"),
    [
        (ACTIVE, spec(), 0.0, 0.05, T0 + HOUR),
        (ACTIVE, spec(), 0.5, 0.05, T0 + HOUR * 0.975),
        (ACTIVE, spec(), 0.999, 0.1, T0 + HOUR * (1 - 0.0999)),
        (ACTIVE, spec(), 1.0, 0.0, T0 + HOUR),
        (ACTIVE, spec(interval="30s", overlap="0s"), 0.0, 0.05, T0 + 30),
        (EMPTY, spec(), 0.3, 0.05, None),
        (ACTIVE, spec(suspend=True), 0.3, 0.05, None),
        (SecretState(version=1, current={"pw": b"x" * 10}), spec(), 0.0, 0.05, None),
    ],
)
def test_next_rotation_at(
    state: SecretState,
    spec_: RotatingSecretSpec,
    draw: float,
    jitter: float,
    expected: float | None,
) -> None:
    got = next_rotation_at(state, spec_, draw, jitter)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("state", "spec_", "now", "draw", "requested", "expected"),
    [
        (EMPTY, spec(), T0, 0.0, False, "first-value"),
        (EMPTY, spec(suspend=True), T0, 0.0, False, "first-value"),
        (ACTIVE, spec(), T0 + 10, 0.0, False, None),
        (ACTIVE, spec(), T0 + HOUR - 1, 0.0, False, None),
        (ACTIVE, spec(), T0 + HOUR, 0.0, False, "due"),
        (ACTIVE, spec(), T0 + HOUR * 0.96, 1.0, False, "due"),  # jitter shortens only
        (ACTIVE, spec(), T0 + HOUR * 0.94, 1.0, False, None),
        (ACTIVE, spec(), T0 + 10, 0.0, True, "requested"),
        (ACTIVE, spec(suspend=True), T0 + 10 * HOUR, 0.0, False, None),
        (ACTIVE, spec(suspend=True), T0, 0.0, True, "requested"),
        (PENDING, spec(), T0 + 10 * HOUR, 0.0, True, None),  # recover first
        (
            SecretState(version=2, current={"other": b"x" * 10}, rotated_at=T0),
            spec(),
            T0,
            0.0,
            False,
            "keys-changed",
        ),
        (SecretState(version=2, current={"pw": b"x" * 10}), spec(), T0, 0.0, False, "due"),
    ],
)
def test_needs_rotation(
    state: SecretState,
    spec_: RotatingSecretSpec,
    now: float,
    draw: float,
    requested: bool,
    expected: str | None,
) -> None:
    assert needs_rotation(state, spec_, now, draw, 0.05, requested=requested) == expected


def two_keys() -> RotatingSecretSpec:
    return RotatingSecretSpec.from_dict(
        {
            "keys": [
                {"name": "pw", "generator": {"type": "password"}},
                {"name": "sig", "generator": {"type": "ed25519"}},
            ]
        }
    )


@pytest.mark.parametrize(
    ("state", "spec_", "hook", "expected"),
    [
        (PENDING, spec(), False, "commit"),
        (PENDING, spec(), True, "apply"),
        (PENDING, two_keys(), False, "abort"),  # pending lacks sig and sig.pub
        (ACTIVE, spec(), False, "abort"),
        (SecretState(phase="pending"), spec(), False, "abort"),
    ],
)
def test_recovery(state: SecretState, spec_: RotatingSecretSpec, hook: bool, expected: str) -> None:
    assert recovery(state, spec_, hook) == expected


@pytest.mark.parametrize(
    ("failures", "base", "maximum", "expected"),
    [
        (0, 2.0, 300.0, 0.0),
        (1, 2.0, 300.0, 2.0),
        (2, 2.0, 300.0, 4.0),
        (5, 2.0, 300.0, 32.0),
        (9, 2.0, 300.0, 300.0),
        (10_000, 2.0, 300.0, 300.0),
        (3, 0.5, 10.0, 2.0),
    ],
)
def test_backoff_delay(failures: int, base: float, maximum: float, expected: float) -> None:
    assert backoff_delay(failures, base, maximum) == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [((None, None), None), ((5.0, None, 3.0), 3.0), ((7.0,), 7.0), ((), None)],
)
def test_next_wakeup(times: tuple[float | None, ...], expected: float | None) -> None:
    assert next_wakeup(*times) == expected


def test_jitter_draw_is_stable_per_version_and_in_range() -> None:
    a = SecretState(version=1, current={"pw": b"first-value"})
    b = SecretState(version=2, current={"pw": b"second-value"})
    assert jitter_draw(a) == jitter_draw(SecretState(version=1, current={"pw": b"first-value"}))
    assert jitter_draw(a) != jitter_draw(b)
    assert 0.0 <= jitter_draw(a) < 1.0
    assert jitter_draw(EMPTY) == 0.0
