"""The rotation engine: one :class:`SecretRotator` per secret, driven by an injected clock.

Each step of a rotator reads the state from its :class:`~agent.store.SecretStore`, asks the pure
functions of :mod:`rotor.protocol` what to do, moves the state with the protocol's pure
transitions, writes it back with compare-and-swap, and then writes the files
(:class:`~agent.files.AtomicWriter`). A rotation is::

    generate (+ the target's values, e.g. the username) -> prepare (store: phase=pending)
             -> apply hook (if any; non-2xx -> abort, back off)
             -> target.apply (spec.target, e.g. ALTER ROLE; a failure aborts, back off)
             -> external stores -> commit (store: version+1, previous kept for `overlap`)
             -> files (with the metadata file .rotor.json) -> reload the app

* Aborts: the pending values are dropped, the reason is recorded on the stored state
  (``rotor.dev/last-abort``: ``<Reason>: <message>``, removed by the next commit), counted
  (``rotations_total{result="aborted"}``; target failures also by reason) and logged.
* Overlap end with a target: :meth:`agent.targets.Target.retire` (e.g. lock the retired role)
  runs before the previous value is dropped; a failure is counted and does not keep the value.

* Interval and jitter: the value is due at ``rotated_at + interval * (1 - jitter * draw)`` with
  ``draw`` in [0, 1) fixed per version (:func:`rotor.protocol.jitter_draw`).
* Overlap: ``<file>.previous`` is written beside each file until ``previous_expires``; then the
  state drops it (:func:`rotor.protocol.expire_previous`) and the files are rewritten without it.
* Rotate-now: :meth:`SecretRotator.request_rotation` (standalone: SIGUSR1 or ``POST /rotate``).
* Recovery: a rotation found pending (the agent stopped in the middle) is finished or aborted
  (:func:`rotor.protocol.recovery`).
* A conflict (someone else wrote the state first) is never overwritten: the step ends, the state
  is re-read at the next step.

The clock is a :class:`Clock`: tests pass a fake one and never sleep through an interval. The
loop sleeps until the next thing to do (at most :data:`MAX_SLEEP`, so a wall-clock jump or a
suspended laptop is noticed within a minute); it never polls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Protocol

from agent.delivery import Delivery, drain_notifications
from agent.files import AtomicWriter
from agent.generators import generate
from agent.hooks import ApplyHook, Reloader
from agent.metrics import AgentMetrics
from agent.store import SecretStore, Stored
from agent.targets import Target, TargetError
from rotor.errors import ConflictError, RotorError
from rotor.external import StoreRecord
from rotor.layout import SecretState
from rotor.logs import register_secret
from rotor.protocol import (
    Reason,
    abort,
    backoff_delay,
    commit,
    expire_previous,
    jitter_draw,
    needs_rotation,
    next_rotation_at,
    prepare,
    recovery,
    starts_rotation,
    wakeup_at,
)
from rotor.settings.agent import AgentSettings
from rotor.spec import RotatingSecretSpec

log = logging.getLogger("rotor.agent")

MAX_SLEEP = 60.0


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time, Unix seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class ExternalStep(Protocol):
    """Rotation step 3, between the apply hook and the commit (in-cluster: external stores)."""

    async def write(self, state: SecretState, now: float) -> None:
        """Put ``state.pending`` where it must be before the commit; raise a RotorError if not."""
        ...

    async def records(self, state: SecretState) -> Mapping[str, StoreRecord | None]:
        """For a rotation found pending: what each store holds now (for
        :func:`rotor.protocol.recovery`)."""
        ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SecretRotator:
    """Keeps one secret's value fresh in its store and its folder."""

    def __init__(
        self,
        name: str,
        spec: RotatingSecretSpec,
        store: SecretStore,
        files: AtomicWriter,
        *,
        settings: AgentSettings,
        metrics: AgentMetrics,
        clock: Clock,
        writer_id: str,
        apply_hook: ApplyHook | None = None,
        external: ExternalStep | None = None,
        reloader: Reloader | None = None,
        generator: Callable[[RotatingSecretSpec], dict[str, bytes]] = generate,
        target: Target | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.store = store
        self.delivery = Delivery(name, files, metrics, reloader)
        self.settings = settings
        self.metrics = metrics
        self.clock = clock
        self.writer_id = writer_id
        self.apply_hook = apply_hook
        self.external = external
        self.generator = generator
        self.target = target
        self.stored = Stored(SecretState())
        self.held_until: float | None = None
        """The grace of the previous value, counted from when its successor's files were swapped
        in (not from the commit): until then it is not retired and no scheduled rotation runs."""
        self.failures = 0
        self.retry_at: float | None = None
        self._requested = False
        self._request_open = False  # a requested rotation has not committed yet: retry it
        self._woken = False
        self._wake: asyncio.Event | None = None
        for result in ("success", "failure", "conflict", "aborted"):
            metrics.rotations.labels(name, result)
        metrics.apply_hook_failures.labels(name, "status")
        metrics.ready.labels(name).set(0)

    # -- what others ask -------------------------------------------------------------------------
    @property
    def state(self) -> SecretState:
        return self.stored.state

    @property
    def ready(self) -> bool:
        """True once the files of a committed value are in place."""
        return self.delivery.written and self.state.has_value

    @property
    def files(self) -> AtomicWriter:
        return self.delivery.files

    @property
    def reloader(self) -> Reloader | None:
        return self.delivery.reloader

    def request_rotation(self) -> None:
        """Rotate at the next step, even when not due (and even while backing off)."""
        self._requested = True
        if self._wake is not None:
            self._wake.set()

    def wake(self) -> None:
        """Step soon without asking for a rotation: the store was changed by someone else (the
        in-cluster agent calls it on each change of the source Secret), so re-read and decide."""
        self._woken = True
        if self._wake is not None:
            self._wake.set()

    def wakeup_at(self) -> float | None:
        """When the next step has something to do (``None``: nothing scheduled)."""
        at = wakeup_at(
            self.state,
            self.spec,
            self.clock.time(),
            jitter=self.settings.jitter,
            retry_at=self.retry_at,
            files_written=self.delivery.written,
            request_open=self._request_open,
        )
        held = self.held_until
        if at is None or held is None or self._request_open or not self.delivery.written:
            return at
        return max(at, held) if held > self.clock.time() else at

    def _held(self, now: float) -> bool:
        return self.held_until is not None and now < self.held_until

    # -- the loop --------------------------------------------------------------------------------
    async def run(self) -> None:
        """Step forever: at each wake-up time, and whenever a rotation is requested."""
        self._wake = asyncio.Event()
        while True:
            if not self._requested and not self._woken:
                at = self.wakeup_at()
                delay = MAX_SLEEP if at is None else max(0.0, at - self.clock.time())
                await self._sleep(min(delay, MAX_SLEEP))
            self._woken = False
            await self.step()

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(seconds))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (sleeper, waker):
                t.cancel()

    async def step(self) -> None:
        """Recover, expire, rotate if needed, write files, update metrics: one pass."""
        now = self.clock.time()
        stored = await self.store.read()
        if not self.delivery.written:
            # A start (or a crash between a commit and its files): the committed state's files
            # go in first, before anything retires or changes what they hold.
            self._sync_files(stored.state)
        try:
            if stored.state.phase == "pending":
                stored = await self._recover(stored, now)
            expired = stored.state if self._held(now) else expire_previous(stored.state, now)
            if expired is not stored.state:
                failure = await self._retire(stored.state)
                if failure is not None or expired.last_retire_failure:
                    expired = replace(expired, last_retire_failure=failure or "")
                stored = Stored(expired, await self.store.write(expired, stored.token))
                log.info("previous value dropped secret=%s version=%d", self.name, expired.version)
            fresh, self._requested = self._requested, False
            reason = needs_rotation(
                stored.state,
                self.spec,
                now,
                jitter_draw(stored.state),
                self.settings.jitter,
                requested=fresh or self._request_open,
            )
            if reason == "due" and self._held(now):
                reason = None  # the previous value's grace from its files swap is not over
            if reason is not None and starts_rotation(reason, now, self.retry_at, fresh):
                if reason == "requested":
                    self._request_open = True  # until a commit (an abort keeps it open)
                stored = await self._rotate(stored, reason, now)
        except ConflictError as e:
            self.metrics.rotations.labels(self.name, "conflict").inc()
            log.warning("state conflict secret=%s: %s; re-reading", self.name, e)
            self.stored = await self.store.read()
            self._failed(now)
        except OSError as e:  # the state could not be written (disk full, folder removed, ...)
            self.metrics.rotations.labels(self.name, "failure").inc()
            log.error("cannot write state secret=%s: %s", self.name, e)
            self._failed(now)
        else:
            self.stored = stored
        self._sync_files()
        self._update_metrics()

    # -- the parts of a step ---------------------------------------------------------------------
    def _failed(self, now: float) -> None:
        self.failures += 1
        self.retry_at = now + backoff_delay(
            self.failures, self.settings.backoff_base, self.settings.backoff_max
        )

    async def _generate(self) -> dict[str, bytes]:
        if any(k.generator.is_key_pair for k in self.spec.keys):
            values = await asyncio.to_thread(self.generator, self.spec)  # RSA takes a while
        else:
            values = self.generator(self.spec)
        for value in values.values():
            register_secret(value)
        return values

    async def _apply(self, state: SecretState) -> bool:
        """Call the apply hook for ``state.pending``; count and log a failure."""
        if self.apply_hook is None:
            return True
        result = await self.apply_hook.apply(
            self.name, state.version + 1, state.pending, state.current
        )
        if not result.ok:
            reason = "status" if result.reason.startswith("status:") else result.reason
            self.metrics.apply_hook_failures.labels(self.name, reason).inc()
            log.warning(
                "apply hook failed secret=%s version=%d answer=%s",
                self.name,
                state.version + 1,
                result.reason,
            )
        return result.ok

    async def _apply_target(self, state: SecretState) -> TargetError | None:
        """Make the pending values valid at the target; the error when that failed."""
        if self.target is None:
            return None
        try:
            await self.target.apply(state)
        except TargetError as e:
            self.metrics.target_failures.labels(self.name, "apply", e.reason).inc()
            log.warning(
                "target %s failed secret=%s version=%d: %s",
                self.target.kind,
                self.name,
                state.version + 1,
                e,
            )
            return e
        return None

    async def _retire(self, state: SecretState) -> str | None:
        """The previous value's overlap ended: the target may lock or drop it. A failure is
        counted, logged and returned as ``<Reason>: <message>`` (recorded on the state)."""
        if self.target is None or not state.previous:
            return None
        try:
            await self.target.retire(state)
        except TargetError as e:
            self.metrics.target_failures.labels(self.name, "retire", e.reason).inc()
            log.warning("target %s could not retire secret=%s: %s", self.target.kind, self.name, e)
            return f"{e.reason}: overlap end of version {state.version - 1}: {e}"
        return None

    async def _abort(self, stored: Stored, now: float, why: str, detail: str = "") -> Stored:
        aborted = abort(stored.state, detail or why, now)
        token = await self.store.write(aborted, stored.token)
        self.metrics.rotations.labels(self.name, "aborted").inc()
        self._failed(now)
        log.warning(
            "rotation aborted secret=%s version=%d reason=%s retry_in=%.0fs",
            self.name,
            aborted.version + 1,
            why,
            (self.retry_at or now) - now,
        )
        return Stored(aborted, token)

    async def _commit(self, stored: Stored, reason: str) -> Stored:
        committed = commit(stored.state, self.clock.time(), self.spec.rotation.overlap)
        committed = replace(committed, next_rotation=self._due(committed))
        token = await self.store.write(committed, stored.token)
        self.failures, self.retry_at = 0, None
        self._request_open = False
        log.info("rotated secret=%s version=%d reason=%s", self.name, committed.version, reason)
        return Stored(committed, token)

    async def _recover(self, stored: Stored, now: float) -> Stored:
        hooked = self.apply_hook is not None or self.target is not None
        action = recovery(stored.state, self.spec, hooked)
        if action != "abort" and self.external is not None:
            # the stores are read only when the spec alone does not abort: an unreachable
            # store must not delay that abort
            records = await self.external.records(stored.state)
            action = recovery(stored.state, self.spec, hooked, records)
        log.info(
            "pending rotation found secret=%s version=%d action=%s",
            self.name,
            stored.state.version + 1,
            action,
        )
        for value in stored.state.pending.values():
            register_secret(value)
        if action == "abort" or (action == "apply" and not await self._apply(stored.state)):
            return await self._abort(
                stored,
                now,
                "recovery",
                "RecoveryAborted: the pending "
                "values were not confirmed (apply hook or external store)",
            )
        if action == "apply":
            failed = await self._apply_target(stored.state)
            if failed is not None:
                return await self._abort(stored, now, "target", str(failed))
        stored = await self._commit(stored, "recovered")
        self.metrics.rotations.labels(self.name, "success").inc()
        return stored

    async def _rotate(self, stored: Stored, reason: Reason, now: float) -> Stored:
        started = time.perf_counter()
        try:
            values = await self._generate()
        except Exception:
            self.metrics.rotations.labels(self.name, "failure").inc()
            self._failed(now)
            log.exception("generating new values failed secret=%s", self.name)
            return stored
        if self.target is not None:
            values = self.target.values_for(stored.state, values)
        prepared = prepare(stored.state, values, now, self.writer_id)
        stored = Stored(prepared, await self.store.write(prepared, stored.token))
        if not await self._apply(prepared):
            return await self._abort(
                stored, now, "apply-hook", "ApplyHookFailed: the apply hook did not answer 2xx"
            )
        failed = await self._apply_target(prepared)
        if failed is not None:
            return await self._abort(stored, now, "target", str(failed))
        if self.external is not None:
            try:
                await self.external.write(prepared, now)
            except RotorError as e:
                log.warning("external store write failed secret=%s: %s", self.name, e)
                return await self._abort(stored, now, "external-store", f"ExternalStoreFailed: {e}")
        stored = await self._commit(stored, reason)
        self.stored = stored
        self._sync_files()
        self.metrics.rotations.labels(self.name, "success").inc()
        self.metrics.rotation_duration.labels(self.name).observe(time.perf_counter() - started)
        return stored

    def _sync_files(self, state: SecretState | None = None) -> None:
        """Write the files when they differ from what was last written (and reload the app).
        When the app is shown a new version that keeps a previous value, that value's grace
        (``held_until``) starts now: the app could not have read the new one before."""
        state = state if state is not None else self.state
        if not state.has_value:
            return
        # The time stored at the commit, as mirrors (replicas, RO consumers) see it too.
        due = state.next_rotation if state.next_rotation is not None else self._due(state)
        shown = self.delivery.shown_version()
        try:
            written = self.delivery.deliver(state, due)
        except OSError as e:
            log.error("cannot write files secret=%s folder=%s: %s", self.name, self.files.target, e)
            self._failed(self.clock.time())
            return
        if written and state.version != shown and state.previous:
            self.held_until = self.clock.time() + self.spec.rotation.overlap

    def _due(self, state: SecretState) -> float | None:
        return next_rotation_at(state, self.spec, jitter_draw(state), self.settings.jitter)

    def _update_metrics(self) -> None:
        state, m, n = self.state, self.metrics, self.name
        m.version.labels(n).set(state.version)
        m.last_rotation.labels(n).set(state.rotated_at or 0)
        due = next_rotation_at(state, self.spec, jitter_draw(state), self.settings.jitter)
        m.next_rotation.labels(n).set(due or 0)
        m.previous_expiry.labels(n).set((state.previous_expires or 0) if state.previous else 0)
        m.ready.labels(n).set(1 if self.ready else 0)


class Agent:
    """The rotators of one agent process."""

    def __init__(self, rotators: Iterable[SecretRotator]) -> None:
        self.rotators = {r.name: r for r in rotators}

    async def start(self) -> None:
        """One step of each rotator: after it, every secret that can have files has them."""
        for r in self.rotators.values():
            await r.step()

    async def run(self) -> None:
        await asyncio.gather(*(r.run() for r in self.rotators.values()))

    def readiness(self) -> dict[str, bool]:
        return {name: r.ready for name, r in self.rotators.items()}

    def request_rotation(self, name: str | None = None) -> list[str]:
        """Ask one secret (or all) to rotate now; raises KeyError for an unknown name."""
        names = [name] if name is not None else list(self.rotators)
        targets = [self.rotators[n] for n in names]
        for r in targets:
            r.request_rotation()
        return names

    async def close(self) -> None:
        await drain_notifications()
        for r in self.rotators.values():
            if r.apply_hook is not None:
                await r.apply_hook.close()
            if r.reloader is not None:
                await r.reloader.close()
            if r.target is not None:
                await r.target.close()
