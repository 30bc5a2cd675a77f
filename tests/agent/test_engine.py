"""The rotation engine with a fake clock: schedule, overlap, rotate-now, apply hook, reload,
recovery and conflicts. Hooks and reloads go to a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from agent.delivery import drain_notifications
from agent.engine import Agent, SecretRotator
from agent.files import AtomicWriter
from agent.hooks import ApplyHook, Reloader, find_processes
from agent.metrics import AgentMetrics
from agent.store import FileStore, SecretStore, Stored
from agent.targets import R_UNREACHABLE, TargetError
from agent.writer import ExternalStores
from rotor.annotations import parse_reload
from rotor.errors import ConflictError
from rotor.layout import SecretState
from rotor.names import SecretRef
from rotor.protocol import jitter_draw, prepare
from rotor.settings.agent import AgentSettings
from rotor.spec import ExternalStoreRef, RotatingSecretSpec
from tests.agent.fakes import FakeClock, app_server
from tests.conftest import free_port, until
from tests.doubles import MemoryKVStore, MemoryStateStore

SPEC = RotatingSecretSpec.from_dict(
    {
        "keys": [{"name": "password", "generator": {"type": "password", "length": 16}}],
        "rotation": {"interval": "1h", "overlap": "10m"},
    }
)
SETTINGS = AgentSettings(jitter=0.0, backoff_base=2.0, backoff_max=60.0)
T = 1_700_000_000.0  # FakeClock's start


def make(
    tmp_path: Path,
    clock: FakeClock,
    *,
    store: SecretStore | None = None,
    spec: RotatingSecretSpec = SPEC,
    hook: ApplyHook | None = None,
    reloader: Reloader | None = None,
) -> tuple[SecretRotator, CollectorRegistry]:
    registry = CollectorRegistry()
    r = SecretRotator(
        "db",
        spec,
        store or MemoryStateStore(),
        AtomicWriter(tmp_path / "db"),
        settings=SETTINGS,
        metrics=AgentMetrics(registry),
        clock=clock,
        writer_id="test",
        apply_hook=hook,
        reloader=reloader,
    )
    return r, registry


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"secret": "db", **labels})


def read(tmp_path: Path, name: str) -> bytes:
    return (tmp_path / "db" / name).read_bytes()


async def test_first_value_interval_overlap_and_expiry(tmp_path: Path) -> None:
    clock = FakeClock()
    r, reg = make(tmp_path, clock)
    await r.step()
    first = read(tmp_path, "password")
    assert len(first) == 16
    assert r.ready
    assert metric(reg, "rotor_agent_secret_version") == 1
    assert metric(reg, "rotor_agent_next_rotation_timestamp_seconds") == clock.now + 3600

    await clock.advance(3599)
    await r.step()
    assert r.state.version == 1

    await clock.advance(1)
    await r.step()
    assert r.state.version == 2
    assert read(tmp_path, "password") != first
    assert read(tmp_path, "password.previous") == first
    assert metric(reg, "rotor_agent_previous_expiry_timestamp_seconds") == clock.now + 600
    assert metric(reg, "rotor_agent_rotations_total", result="success") == 2

    await clock.advance(600)
    await r.step()
    assert not (tmp_path / "db" / "password.previous").exists()
    assert r.state.version == 2
    assert metric(reg, "rotor_agent_previous_expiry_timestamp_seconds") == 0


async def test_run_loop_sleeps_until_due_and_rotate_now_wakes_it(tmp_path: Path) -> None:
    clock = FakeClock()
    r, _ = make(tmp_path, clock)
    await r.step()
    task = asyncio.create_task(r.run())
    try:
        for _ in range(50):
            if clock.sleeping:
                break
            await asyncio.sleep(0)
        await clock.advance(1800)
        assert r.state.version == 1
        await clock.advance(1800)
        assert r.state.version == 2
        r.request_rotation()
        for _ in range(200):
            if r.state.version == 3:
                break
            await asyncio.sleep(0)
        assert r.state.version == 3
        assert (tmp_path / "db" / "password.previous").exists()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_apply_hook_commits_on_2xx_and_gets_the_pending_value(tmp_path: Path) -> None:
    clock = FakeClock()
    async with app_server() as app:
        hook = ApplyHook(app.url + "/apply", timeout=5)
        r, _ = make(tmp_path, clock, hook=hook)
        try:
            await r.step()
            await clock.advance(3600)
            await r.step()
        finally:
            await hook.close()
    assert [a["version"] for a in app.applied] == [1, 2]
    assert app.applied[1]["secret"] == "db"
    assert app.applied[1]["values"]["password"].encode() == read(tmp_path, "password")
    assert app.applied[1]["current"]["password"].encode() == read(tmp_path, "password.previous")


async def test_apply_hook_failure_aborts_backs_off_and_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    async with app_server() as app:
        hook = ApplyHook(app.url + "/apply", timeout=5)
        r, reg = make(tmp_path, clock, hook=hook)
        try:
            await r.step()
            first = read(tmp_path, "password")
            app.status = 500
            await clock.advance(3600)
            await r.step()
            assert r.state.version == 1
            assert r.state.phase == "committed"
            assert not r.state.pending
            assert read(tmp_path, "password") == first
            assert r.retry_at == clock.now + 2
            await clock.advance(1)
            await r.step()  # still backing off: no call
            assert len(app.applied) == 2
            await clock.advance(1)
            await r.step()
            assert len(app.applied) == 3
            assert r.retry_at == clock.now + 4  # exponential
            assert metric(reg, "rotor_agent_apply_hook_failures_total", reason="status") == 2
            assert metric(reg, "rotor_agent_rotations_total", result="aborted") == 2
            app.status = 204
            await clock.advance(4)
            await r.step()
            assert r.state.version == 2
            assert r.failures == 0
            assert read(tmp_path, "password.previous") == first
        finally:
            await hook.close()


async def test_rotate_now_that_fails_is_retried_after_the_backoff(tmp_path: Path) -> None:
    """A rotate-now whose rotation aborts is not lost: the run loop retries it once the backoff
    ends (not at once, not only at the next interval), and stops asking once it commits."""
    clock = FakeClock()
    async with app_server() as app:
        hook = ApplyHook(app.url + "/apply", timeout=5)
        r, _ = make(tmp_path, clock, hook=hook)
        await r.step()
        assert r.state.version == 1
        task = asyncio.create_task(r.run())
        try:
            await until(lambda: clock.sleeping > 0)
            app.status = 503
            r.request_rotation()
            await until(lambda: len(app.applied) == 2 and clock.sleeping > 0)
            assert r.state.version == 1  # the refused rotate-now was aborted
            assert r.wakeup_at() == r.retry_at == clock.now + 2  # not the 1 h interval
            await clock.advance(1)
            await asyncio.sleep(0.05)
            assert len(app.applied) == 2  # still backing off: no hot loop
            app.status = 204
            await clock.advance(1)
            await until(lambda: r.state.version == 2)
            assert len(app.applied) == 3
            # the request is done: the next wake-up drops .previous, no retry is scheduled
            assert r.wakeup_at() == r.state.previous_expires == clock.now + 600
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await hook.close()


async def test_apply_hook_unreachable_aborts(tmp_path: Path) -> None:
    hook = ApplyHook(f"http://127.0.0.1:{free_port()}/apply", timeout=5)
    r, reg = make(tmp_path, FakeClock(), hook=hook)
    try:
        await r.step()
    finally:
        await hook.close()
    assert not r.state.has_value
    assert not r.ready
    assert metric(reg, "rotor_agent_apply_hook_failures_total", reason="connection") == 1
    assert not (tmp_path / "db" / "password").exists()


async def test_http_reload_after_each_rotation_names_files_only(tmp_path: Path) -> None:
    clock = FakeClock()
    async with app_server() as app:
        reloader = Reloader(parse_reload(app.url + "/reload"), timeout=5)
        r, reg = make(tmp_path, clock, reloader=reloader)
        try:
            await r.step()  # first value: the app is only starting, nothing to reload
            r.request_rotation()
            await r.step()
            await drain_notifications()
        finally:
            await reloader.close()
    assert app.reloads == [
        {"secret": "db", "version": 2, "files": ["password", "password.previous"]}
    ]
    assert (
        metric(reg, "rotor_agent_reload_notifications_total", method="http", result="success") == 1
    )


async def test_signal_reload_reaches_the_app_process(tmp_path: Path) -> None:
    marker = tmp_path / "got-hup"
    code = (
        "import signal, sys, pathlib, time\n"
        f"signal.signal(signal.SIGHUP, lambda *a: pathlib.Path({str(marker)!r}).touch())\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as app:
        assert app.stdout is not None
        assert app.stdout.readline().strip() == "ready"
        reloader = Reloader(parse_reload("signal:HUP"), pid=app.pid)
        r, reg = make(tmp_path, FakeClock(), reloader=reloader)
        await r.step()
        r.request_rotation()
        await r.step()
        await drain_notifications()
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert marker.exists()
        assert metric(
            reg, "rotor_agent_reload_notifications_total", method="signal", result="success"
        )
        app.kill()


def test_find_processes_by_comm_or_argv0(tmp_path: Path) -> None:
    for pid, comm, argv in [
        (10, "nginx", b"nginx: master\0"),
        (11, "python3", b"/usr/bin/myapp\0--serve\0"),
        (12, "bash", b"bash\0"),
        (13, "nginx", b"nginx\0"),
    ]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        (tmp_path / str(pid) / "cmdline").write_bytes(argv)
    (tmp_path / "self").mkdir()
    assert find_processes("nginx", tmp_path, exclude=13) == [10]
    assert find_processes("myapp", tmp_path, exclude=0) == [11]
    assert find_processes("absent", tmp_path, exclude=0) == []
    assert os.getpid() not in find_processes(Path(sys.executable).name)


async def test_signal_reload_with_no_such_process_is_a_counted_failure(tmp_path: Path) -> None:
    reloader = Reloader(parse_reload("signal:HUP"), process="no-such-app-xyz")
    r, reg = make(tmp_path, FakeClock(), reloader=reloader)
    await r.step()
    r.request_rotation()
    await r.step()
    await drain_notifications()
    assert metric(reg, "rotor_agent_reload_notifications_total", method="signal", result="failure")


async def test_jitter_from_settings_shortens_the_interval(tmp_path: Path) -> None:
    clock = FakeClock()
    r, reg = make(tmp_path, clock)
    r.settings = AgentSettings(jitter=0.5)
    await r.step()
    draw = jitter_draw(r.state)
    due = r.state.rotated_at + 3600 * (1 - 0.5 * draw)  # type: ignore[operator]
    assert 0.0 < draw < 1.0
    assert metric(reg, "rotor_agent_next_rotation_timestamp_seconds") == pytest.approx(due)
    await clock.advance(due - clock.now - 1)
    await r.step()
    assert r.state.version == 1
    await clock.advance(1.01)  # just past due (not exactly: float sums may round down)
    await r.step()
    assert r.state.version == 2


@pytest.mark.parametrize(
    ("status", "version", "phase"), [(200, 2, "committed"), (500, 1, "committed")]
)
async def test_pending_rotation_is_recovered_on_start(
    tmp_path: Path, status: int, version: int, phase: str
) -> None:
    store = FileStore(tmp_path / "state.json")
    clock = FakeClock()
    base = SecretState(version=1, current={"password": b"o" * 16}, rotated_at=clock.now)
    token = await store.write(base, "")
    await store.write(prepare(base, {"password": b"n" * 16}, clock.now, "old-writer"), token)
    async with app_server() as app:
        app.status = status
        hook = ApplyHook(app.url + "/apply", timeout=5)
        r, _ = make(tmp_path, clock, store=store, hook=hook)
        try:
            await r.step()
        finally:
            await hook.close()
    assert app.applied[0]["values"] == {"password": "n" * 16}
    stored = (await store.read()).state
    assert (stored.version, stored.phase) == (version, phase)
    assert not stored.pending
    assert read(tmp_path, "password") == (b"n" * 16 if status == 200 else b"o" * 16)


async def test_pending_without_hook_is_committed(tmp_path: Path) -> None:
    store = MemoryStateStore()
    clock = FakeClock()
    base = SecretState(version=4, current={"password": b"o" * 16}, rotated_at=clock.now)
    token = await store.write(base, "")
    await store.write(prepare(base, {"password": b"n" * 16}, clock.now, "w"), token)
    r, _ = make(tmp_path, clock, store=store)
    await r.step()
    assert r.state.version == 5
    assert read(tmp_path, "password") == b"n" * 16
    assert read(tmp_path, "password.previous") == b"o" * 16


class RacingStore(MemoryStateStore):
    """Someone else writes between our read and our first write."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    async def write(self, state: SecretState, token: str) -> str:
        if not self.raced:
            self.raced = True
            other = SecretState(version=7, current={"password": b"theirs-value"}, rotated_at=1.0)
            await super().write(other, (await self.read()).token)
        return await super().write(state, token)


async def test_conflict_never_overwrites_and_counts(tmp_path: Path) -> None:
    store = RacingStore()
    clock = FakeClock()
    r, reg = make(tmp_path, clock, store=store)
    await r.step()
    assert r.state.version == 7  # theirs, re-read; ours was not written
    assert read(tmp_path, "password") == b"theirs-value"
    assert metric(reg, "rotor_agent_rotations_total", result="conflict") == 1


async def test_no_generated_value_in_log_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    spec = RotatingSecretSpec.from_dict(
        {
            "keys": [
                {"name": "password", "generator": {"type": "password"}},
                {"name": "sig", "generator": {"type": "ed25519"}},
            ],
            "rotation": {"interval": "1m", "overlap": "10s"},
        }
    )
    r, _ = make(tmp_path, clock, spec=spec)
    agent = Agent([r])
    values: list[bytes] = []
    await agent.start()
    for _ in range(5):
        values += r.state.current.values()
        await clock.advance(60)
        await r.step()
    assert len(set(values)) == 15
    assert "rotated secret=db version=6" in caplog.text
    for v in values:
        assert v.decode() not in caplog.text
        for line in v.decode().splitlines():  # no line of a PEM key either
            assert line.startswith("-----") or line not in caplog.text


async def test_file_store_cas_mode_and_bad_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s" / "db.json")
    assert await store.read() == Stored(SecretState(), "")
    t1 = await store.write(SecretState(version=1, current={"k": b"v" * 9}, rotated_at=1.0), "")
    assert oct((tmp_path / "s" / "db.json").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "s").stat().st_mode & 0o777) == "0o700"
    with pytest.raises(ConflictError):
        await store.write(SecretState(version=2), "")
    t2 = await store.write(SecretState(version=2, current={"k": b"w" * 9}, rotated_at=2.0), t1)
    with pytest.raises(ConflictError):
        await store.write(SecretState(version=3), t1)
    got = await store.read()
    assert got.token == t2
    assert got.state.version == 2
    assert got.state.current == {"k": b"w" * 9}
    (tmp_path / "s" / "db.json").write_text("{not json")
    with pytest.raises(Exception, match=r"db.json: is not a Rotor agent state file; remove"):
        await store.read()


async def test_jitter_never_shortens_an_interval_by_more_than_it_says(tmp_path: Path) -> None:
    """Rotations at a 10 s interval with the default 5 % jitter come 9.5-10 s apart, also when
    the state goes through the file store and rotations fall at fractions of a second (they
    were 8.9-9.1 s apart when the stored rotated-at was cut to whole seconds)."""
    spec = RotatingSecretSpec.from_dict(
        {
            "keys": [{"name": "password", "generator": {"type": "password", "length": 16}}],
            "rotation": {"interval": "10s", "overlap": "2s"},
        }
    )
    clock = FakeClock(1_700_000_000.9)
    r, _ = make(tmp_path, clock, store=FileStore(tmp_path / "state.json"), spec=spec)
    r.settings = AgentSettings()  # the default jitter, 0.05
    committed: dict[int, float] = {}
    step = 0.05
    while len(committed) < 8:
        await r.step()
        committed.setdefault(r.state.version, clock.now)
        await clock.advance(step)
    gaps = [committed[v + 1] - committed[v] for v in sorted(committed)[:-1]]
    assert min(gaps) >= 10 * 0.95 - 1e-6, gaps
    assert max(gaps) <= 10 + step + 1e-6, gaps


class DownTarget:
    """A target whose database does not answer (the PostgreSQL target's own error)."""

    kind = "down"

    def values_for(self, state: SecretState, generated: Mapping[str, bytes]) -> dict[str, bytes]:
        return dict(generated)

    async def apply(self, state: SecretState) -> None:
        raise TargetError(R_UNREACHABLE, "cannot connect to PostgreSQL pg.shop.svc:5432/postgres")

    async def retire(self, state: SecretState) -> None:
        return None

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("apply-hook", "ApplyHookFailed"),
        ("external-store", "ExternalStoreFailed"),
        ("target", "DatabaseUnreachable"),
        ("recovery", "RecoveryAborted"),
    ],
)
async def test_every_abort_is_counted_and_recorded_on_the_source_with_its_reason(
    tmp_path: Path, cause: str, reason: str
) -> None:
    """Each cause of an abort reaches the writer's two reports: the counter and the reason
    recorded in the stored state (``rotor.dev/last-abort``, which the controller turns into
    ``Rotated=False`` and an Event: tests/controller/test_target_abort.py)."""
    clock = FakeClock()
    store = MemoryStateStore()
    vault = MemoryKVStore()
    async with app_server() as app:
        hook = ApplyHook(app.url + "/apply", timeout=5)
        r, reg = make(tmp_path, clock, store=store, hook=hook)
        try:
            if cause == "recovery":  # a writer stopped mid-rotation; the app refuses it now
                base = SecretState(version=1, current={"password": b"o" * 16}, rotated_at=T)
                token = await store.write(base, "")
                await store.write(prepare(base, {"password": b"n" * 16}, T, "gone"), token)
                app.status = 500
            else:
                await r.step()
                assert r.state.version == 1
                await clock.advance(3600)
            if cause == "apply-hook":
                app.status = 500
            elif cause == "external-store":
                refs = (ExternalStoreRef("vault", "shop/db"),)
                r.external = ExternalStores(SecretRef("shop", "db"), refs, {"vault": vault}, "w")
                vault.unavailable = True
            elif cause == "target":
                r.target = DownTarget()
            await r.step()
        finally:
            await hook.close()
    assert metric(reg, "rotor_agent_rotations_total", result="aborted") == 1
    stored = (await store.read()).state
    assert (stored.version, stored.phase, stored.pending) == (1, "committed", {})
    assert stored.abort_reason == reason
    assert stored.last_abort_at == clock.now
    assert r.retry_at is not None  # backs off, then tries again


class SlowSwap(AtomicWriter):
    """Files that take ``delay`` seconds of the fake clock to swap in (a loaded node)."""

    def __init__(self, target: Path, clock: FakeClock, delay: float) -> None:
        super().__init__(target)
        self.clock, self.delay = clock, delay

    def write(self, files: Mapping[str, bytes]) -> None:
        self.clock.now += self.delay
        super().write(files)


async def test_the_previous_value_gets_the_whole_overlap_from_its_files_swap(
    tmp_path: Path,
) -> None:
    """Issue 24: the grace counted from the commit; under load the app got 0.54 s of 0.8 s.
    It counts from the swap now: nothing retires the previous value before."""
    clock = FakeClock()
    r = SecretRotator(
        "db", SPEC, MemoryStateStore(), SlowSwap(tmp_path / "db", clock, 30.0),
        settings=SETTINGS, metrics=AgentMetrics(CollectorRegistry()), clock=clock,
        writer_id="test",
    )  # fmt: skip
    await r.step()
    await clock.advance(3600)
    await r.step()
    swapped_at = clock.now  # the commit was 30 s earlier
    assert read(tmp_path, "password.previous")
    assert r.wakeup_at() == swapped_at + 600
    await clock.advance(600 - 30)  # the overlap counted from the commit is over
    await r.step()
    assert (tmp_path / "db" / "password.previous").exists()
    await clock.advance(30)
    await r.step()
    assert not (tmp_path / "db" / "password.previous").exists()
