"""rotor.protocol: the rotation protocol's decisions and transitions, one table of cases each
(no I/O): when to rotate, the transitions, the step 3 plan, the one recovery rule, when a value
may be published, the Secret patch."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rotor.errors import ConflictError
from rotor.external import RotorMetadata, StoreRecord
from rotor.layout import SecretState, checksum
from rotor.protocol import (
    ProtocolError,
    Reason,
    abort,
    backoff_delay,
    cas_version,
    commit,
    expire_previous,
    holds,
    jitter_draw,
    merge_data,
    needs_rotation,
    next_rotation_at,
    next_wakeup,
    plan_store_write,
    prepare,
    publishable,
    recovery,
    secret_patch,
    starts_rotation,
    wakeup_at,
)
from rotor.spec import RotatingSecretSpec

T0 = 1_700_000_000.0
HOUR = 3600.0
A, B, C = {"pw": b"aaaaaaaaaa"}, {"pw": b"bbbbbbbbbb"}, {"pw": b"cccccccccc"}
V1 = commit(prepare(SecretState(), A, T0, "w"), T0, 60)
V2_PENDING = prepare(V1, B, T0 + 10, "w")


# -- step 0: when to rotate -----------------------------------------------------------------------
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


@pytest.mark.parametrize(
    ("reason", "now", "retry_at", "fresh", "expected"),
    [
        ("due", T0, None, False, True),
        ("due", T0, T0 + 2, False, False),  # backing off
        ("due", T0 + 2, T0 + 2, False, True),  # the backoff has ended
        ("requested", T0, T0 + 2, True, True),  # a new rotate-now goes at once
        ("requested", T0, T0 + 2, False, False),  # an open request waits for the backoff
        ("first-value", T0, T0 + 2, True, False),
        ("keys-changed", T0, None, False, True),
    ],
)
def test_starts_rotation(
    reason: Reason, now: float, retry_at: float | None, fresh: bool, expected: bool
) -> None:
    assert starts_rotation(reason, now, retry_at, fresh) is expected


OVERLAPPING = SecretState(
    version=3,
    current={"pw": b"x" * 10},
    previous={"pw": b"y" * 10},
    rotated_at=T0,
    previous_expires=T0 + 600,
)


@pytest.mark.parametrize(
    ("state", "now", "retry_at", "written", "request_open", "expected"),
    [
        (ACTIVE, T0 + 10, None, True, False, T0 + HOUR),  # the value's due time
        (ACTIVE, T0 + 10, T0 + 2 * HOUR, True, False, T0 + 2 * HOUR),  # not before the backoff
        (ACTIVE, T0 + 10, None, False, False, T0 + 10),  # files not written yet: at once
        (EMPTY, T0 + 10, None, True, False, T0 + 10),  # no value yet: at once
        (EMPTY, T0 + 10, T0 + 30, True, False, T0 + 30),  # ... after the backoff
        (PENDING, T0 + 10, None, True, False, T0 + 10),  # a pending rotation: recover at once
        (ACTIVE, T0 + 10, T0 + 12, True, True, T0 + 12),  # a failed rotate-now: after backoff
        (ACTIVE, T0 + 10, None, True, True, T0 + 10),
        (OVERLAPPING, T0 + 10, None, True, False, T0 + 600),  # the overlap ends first
        (SecretState(version=1, current={"pw": b"x" * 10}), T0, None, True, False, None),
    ],
)
def test_wakeup_at(
    state: SecretState,
    now: float,
    retry_at: float | None,
    written: bool,
    request_open: bool,
    expected: float | None,
) -> None:
    got = wakeup_at(
        state,
        spec(),
        now,
        jitter=0.0,
        retry_at=retry_at,
        files_written=written,
        request_open=request_open,
    )
    assert got == expected


def test_jitter_draw_is_stable_per_version_and_in_range() -> None:
    a = SecretState(version=1, current={"pw": b"first-value"})
    b = SecretState(version=2, current={"pw": b"second-value"})
    assert jitter_draw(a) == jitter_draw(SecretState(version=1, current={"pw": b"first-value"}))
    assert jitter_draw(a) != jitter_draw(b)
    assert 0.0 <= jitter_draw(a) < 1.0
    assert jitter_draw(EMPTY) == 0.0


# -- transitions: prepare (1), commit (4), abort (A), expire_previous (9) --------------------------
def test_full_rotation_cycle() -> None:
    s0 = SecretState()
    s1 = commit(prepare(s0, A, T0, "w"), T0, overlap=60)
    assert (s1.version, s1.phase, s1.current, s1.previous) == (1, "committed", A, {})
    assert s1.previous_expires is None  # nothing to keep on the first value
    p = prepare(s1, B, T0 + 100, "w")
    assert (p.phase, p.pending, p.current, p.pending_since, p.writer) == (
        "pending",
        B,
        A,
        T0 + 100,
        "w",
    )
    s2 = commit(p, T0 + 101, overlap=60)
    assert (s2.version, s2.current, s2.previous, s2.pending) == (2, B, A, {})
    assert (s2.rotated_at, s2.previous_expires, s2.pending_since) == (T0 + 101, T0 + 161, None)
    assert expire_previous(s2, T0 + 160) is s2
    s3 = expire_previous(s2, T0 + 161)
    assert (s3.previous, s3.previous_expires, s3.current) == ({}, None, B)


def test_commit_without_overlap_keeps_no_previous() -> None:
    s1 = commit(prepare(SecretState(), A, T0, "w"), T0, 0)
    s2 = commit(prepare(s1, B, T0, "w"), T0, 0)
    assert (s2.previous, s2.previous_expires) == ({}, None)


def test_abort_keeps_current() -> None:
    s1 = commit(prepare(SecretState(), A, T0, "w"), T0, 60)
    aborted = abort(prepare(s1, C, T0 + 5, "w"))
    assert (aborted.version, aborted.phase, aborted.current, aborted.pending) == (
        1,
        "committed",
        A,
        {},
    )
    assert aborted.pending_since is None


@pytest.mark.parametrize(
    ("make", "field", "problem"),
    [
        (
            lambda: prepare(prepare(SecretState(), A, T0, "w"), B, T0, "w"),
            "phase",
            "a rotation is already pending",
        ),
        (lambda: prepare(SecretState(), {}, T0, "w"), "values", "no values to prepare"),
        (lambda: commit(SecretState(), T0, 60), "phase", "nothing is pending"),
        (lambda: commit(SecretState(phase="pending"), T0, 60), "phase", "nothing is pending"),
    ],
)
def test_transitions_refuse_the_wrong_phase(make: object, field: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as e:
        make()  # type: ignore[operator]
    assert (e.value.field, e.value.problem) == (field, problem)


@pytest.mark.parametrize(
    ("move", "expected"),
    [
        # prepare: pending values, phase pending, the writer and when
        (
            lambda: prepare(V1, B, T0 + 10, "w2"),
            (1, "pending", A, {}, B, "w2", T0 + 10, None),
        ),
        # commit with an overlap: previous kept until now + overlap; without: dropped
        (lambda: commit(V2_PENDING, T0 + 20, 60), (2, "committed", B, A, {}, "w", None, T0 + 80)),
        (lambda: commit(V2_PENDING, T0 + 20, 0), (2, "committed", B, {}, {}, "w", None, None)),
        # abort: back to committed, current kept; the reason recorded only when given
        (lambda: abort(V2_PENDING), (1, "committed", A, {}, {}, "w", None, None)),
        (
            lambda: abort(V2_PENDING, "ApplyHookFailed: 500", T0 + 11),
            (1, "committed", A, {}, {}, "w", None, None),
        ),
        # expire_previous: before, at and after the end of the overlap
        (
            lambda: expire_previous(commit(V2_PENDING, T0 + 20, 60), T0 + 79),
            (2, "committed", B, A, {}, "w", None, T0 + 80),
        ),
        (
            lambda: expire_previous(commit(V2_PENDING, T0 + 20, 60), T0 + 80),
            (2, "committed", B, {}, {}, "w", None, None),
        ),
        (lambda: expire_previous(V1, T0 + 10 * HOUR), (1, "committed", A, {}, {}, "w", None, None)),
    ],
)
def test_transition_table(move: Callable[[], SecretState], expected: tuple[object, ...]) -> None:
    s = move()
    got = (s.version, s.phase, s.current, s.previous, s.pending, s.writer, s.pending_since)
    assert (*got, s.previous_expires) == expected


@pytest.mark.parametrize(
    ("state", "why", "last_abort"),
    [
        (V2_PENDING, "", ""),
        (V2_PENDING, "ExternalStoreFailed: vault: 503", "ExternalStoreFailed: vault: 503"),
        (abort(V2_PENDING, "ApplyHookFailed: x", T0), "", "ApplyHookFailed: x"),  # kept
    ],
)
def test_abort_records_its_reason_until_a_commit(
    state: SecretState, why: str, last_abort: str
) -> None:
    aborted = abort(state, why, T0 + 30)
    assert aborted.last_abort == last_abort
    assert aborted.abort_reason == last_abort.partition(":")[0]
    again = commit(prepare(aborted, C, T0 + 40, "w"), T0 + 41, 60)
    assert (again.last_abort, again.last_abort_at) == ("", None)


# -- step 3: each external store, check-and-set ----------------------------------------------------
OLD = {"password": b"old-value-1"}
NEW = {"password": b"new-value-2"}
THEIRS = {"password": b"set-by-a-person"}


def committed() -> SecretState:
    return commit(prepare(SecretState(), OLD, T0, "w"), T0, 60)


def pending() -> SecretState:
    return prepare(committed(), NEW, T0 + 10, "w")


def meta(values: dict[str, bytes], rotor_version: int = 2) -> RotorMetadata:
    return RotorMetadata(rotor_version, checksum(values), "shop/api-1", T0, "shop/db")


def rec(values: dict[str, bytes], version: int = 3, rotor: bool = False) -> StoreRecord:
    return StoreRecord(version, checksum(values), meta(values) if rotor else None)


# -- cas_version ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "record", "expected"),
    [
        (committed(), None, 0),  # nothing stored: create only
        (committed(), rec(OLD, 3), 3),  # holds the current value
        (pending(), rec(NEW, 4), 4),  # holds the pending value (a retry)
        (committed(), rec(NEW, 5, rotor=True), 5),  # Rotor's own aborted write
        (SecretState(), rec(THEIRS, 2), 2),  # first value: Rotor takes the path over
        (committed(), StoreRecord(8, checksum({}), None, deleted=True), 8),  # deleted: no loss
    ],
)
def test_cas_version(state, record, expected):
    assert cas_version(state, record, "secret/shop/db") == expected


def test_cas_version_refuses_to_overwrite_a_persons_change():
    with pytest.raises(ConflictError, match="written outside Rotor"):
        cas_version(committed(), rec(THEIRS, 6), "secret/shop/db")


def test_holds():
    assert holds(rec(NEW), checksum(NEW))
    assert not holds(StoreRecord(3, checksum({}), None, deleted=True), checksum({}))
    assert not holds(rec(OLD), checksum(NEW))
    assert not holds(None, checksum(NEW))


def test_plan_store_write():
    assert plan_store_write(pending(), None, "p") == 0
    assert plan_store_write(pending(), rec(OLD, 3), "p") == 3
    assert plan_store_write(pending(), rec(NEW, 4), "p") is None  # already there: no new version
    with pytest.raises(ConflictError):
        plan_store_write(pending(), rec(THEIRS, 5), "p")
    with pytest.raises(ProtocolError):
        plan_store_write(committed(), None, "p")


# -- R: recovery at start, the one rule ------------------------------------------------------------
PW = spec()
PASSWORD = RotatingSecretSpec.from_dict(
    {"keys": [{"name": "password", "generator": {"type": "password"}}]}
)


@pytest.mark.parametrize(
    ("state", "spec_", "hook", "records", "expected"),
    [
        # no external store: the spec and the apply hook decide
        (PENDING, PW, False, None, "commit"),
        (PENDING, PW, True, None, "apply"),
        (PENDING, two_keys(), False, None, "abort"),  # pending lacks sig and sig.pub
        (PENDING, two_keys(), True, None, "abort"),
        (SecretState(phase="pending"), PW, False, None, "abort"),  # nothing to commit
        # with external stores: every store must hold the pending values
        (pending(), PASSWORD, False, {}, "commit"),  # no external store: nothing to wait for
        (pending(), PASSWORD, False, {"vault:a": rec(NEW)}, "commit"),
        (pending(), PASSWORD, False, {"vault:a": rec(NEW), "vault:b": rec(NEW, 9)}, "commit"),
        (pending(), PASSWORD, True, {"vault:a": rec(NEW)}, "apply"),
        (pending(), PASSWORD, False, {"vault:a": None}, "abort"),  # crashed before the write
        (pending(), PASSWORD, False, {"vault:a": rec(OLD)}, "abort"),  # still the old value
        (pending(), PASSWORD, True, {"vault:a": rec(OLD)}, "abort"),  # no apply: abort
        (
            pending(),
            PASSWORD,
            False,
            {"vault:a": rec(NEW), "vault:b": rec(OLD)},
            "abort",
        ),  # one of two written
        (pending(), PASSWORD, False, {"vault:a": rec(THEIRS)}, "abort"),  # a person wrote after us
        (
            pending(),
            PASSWORD,
            False,
            {"vault:a": StoreRecord(4, checksum({}), None, deleted=True)},
            "abort",
        ),  # deleted meanwhile
        (pending(), PW, False, {"vault:a": rec(NEW)}, "abort"),  # the spec's files changed
    ],
)
def test_recovery(
    state: SecretState,
    spec_: RotatingSecretSpec,
    hook: bool,
    records: dict[str, StoreRecord | None] | None,
    expected: str,
) -> None:
    assert recovery(state, spec_, hook, records) == expected


@pytest.mark.parametrize("state", [ACTIVE, committed()])
def test_recovery_needs_a_pending_rotation(state: SecretState) -> None:
    with pytest.raises(ProtocolError):
        recovery(state, PW, False, {})


# -- step 6: when a value may be published -------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "annotation", "expected"),
    [
        (V1, V1.checksum, True),
        (V1, "", False),  # the checksum annotation does not match the data
        (V1, V2_PENDING.checksum + "x", False),
        (V2_PENDING, V2_PENDING.checksum, False),  # a rotation in flight
        (SecretState(), SecretState().checksum, False),  # no value yet
        (None, "", False),  # the Secret does not decode
    ],
)
def test_publishable(state: SecretState | None, annotation: str, expected: bool) -> None:
    assert publishable(state, annotation) is expected


# -- the Secret patch ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "old", "expected"),
    [
        ({"pw": "YQ=="}, ["pw", "pw.pending"], {"pw": "YQ==", "pw.pending": None}),
        ({"pw": "YQ==", "pw.previous": "Yg=="}, ["pw"], {"pw": "YQ==", "pw.previous": "Yg=="}),
        ({}, ["pw"], {"pw": None}),
        ({"pw": "YQ=="}, [], {"pw": "YQ=="}),
    ],
)
def test_merge_data_nulls_vanished_keys(
    data: dict[str, str], old: list[str], expected: dict[str, str | None]
) -> None:
    assert merge_data(data, old) == expected


def test_secret_patch_of_a_commit_deletes_the_pending_keys() -> None:
    committed = commit(V2_PENDING, T0 + 20, 60)
    patch = secret_patch(
        committed,
        V2_PENDING.secret_data(),
        annotations={"rotor.dev/rotate-handled": "1"},
        resource_version="42",
    )
    assert patch["metadata"]["resourceVersion"] == "42"
    assert patch["metadata"]["annotations"] == {
        **committed.annotations(),
        "rotor.dev/rotate-handled": "1",
    }
    assert patch["data"] == {**committed.secret_data(), "pw.pending": None}
    assert "resourceVersion" not in secret_patch(committed, ())["metadata"]
