"""ACL sync: read the ACL every ``acl_poll`` (sooner when woken) and apply it at once, keep the
last good ACL when the backend fails, and register the secrets and record the access requests
the ACL lacks (bounded and batched by :mod:`controller.aclrequests`), beside the reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from controller import aclrequests, decide
from rotor import status as st
from rotor.acl import AclSnapshot, SkippedEntry
from rotor.errors import InvalidSpec, RotorError
from rotor.names import SecretRef

if TYPE_CHECKING:
    from controller.operator import Controller

log = logging.getLogger("rotor.controller")

MAX_WAIT_EVENTS = 20
"""Events on waiting workloads per recorded batch (the batch itself is capped)."""
API_VERSIONS = {"Job": "batch/v1", "Pod": "v1"}


class AclSync:
    """The ACL in use (:attr:`acl`, ``None`` until the first good read) and its staleness."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.acl: AclSnapshot | None = None
        self.acl_ok_at: float | None = None
        self.acl_failing = False
        self.acl_error = ""
        self._skipped_reported: set[SkippedEntry] = set()  # warned about and Evented once
        self._held_reported: tuple[str, ...] = ()
        """The principals whose asks a cap held back, as last logged."""
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Read the ACL soon (a new secret or a new request)."""
        self._wake.set()

    async def loop(self) -> None:
        """Read the ACL every ``acl_poll`` (sooner when woken); the writes it leads to (new
        secrets, new requests) run beside the loop, one batch at a time, so a slow or large write
        never delays the next read: a revocation takes effect within one poll."""
        writes: asyncio.Task[None] | None = None
        try:
            while True:
                snap = await self.read_acl()
                if snap is not None and (writes is None or writes.done()):
                    writes = asyncio.create_task(self.record_acl_requests(snap))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.ctl.settings.acl_poll)
                self._wake.clear()
        finally:
            if writes is not None:
                writes.cancel()

    async def sync_acl(self) -> None:
        """One whole round: read and apply the ACL, then register secrets and record the
        requests it lacks (and read it again if that changed anything)."""
        snap = await self.read_acl()
        if snap is not None:
            await self.record_acl_requests(snap)

    async def read_acl(self) -> AclSnapshot | None:
        """Read the ACL and apply it at once; on failure keep the last good ACL (``None``).
        Every secret is resynced against what is then known."""
        ctl = self.ctl
        start = time.monotonic()
        snap: AclSnapshot | None = None
        try:
            snap = await ctl.backend.snapshot()
            await self._report_skipped(snap)
            self._install_acl(snap)
        except Exception as e:  # any failure: keep the last good ACL, report staleness
            self.acl_failing = True
            self.acl_error = str(e) or type(e).__name__
            ctl.metrics.errors.labels("acl").inc()
            log.warning("ACL sync failed (keeping the last good ACL): %s", self.acl_error)
        finally:
            ctl.metrics.acl_sync_seconds.observe(time.monotonic() - start)
        stale = self.staleness()
        ctl.metrics.acl_stale.set(1 if stale.stale else 0)
        ctl.metrics.acl_staleness.set(0 if stale.age == float("inf") else stale.age)
        self._grant_metrics()
        ctl.mark(ctl.index.rsecs)
        return snap

    async def record_acl_requests(self, snap: AclSnapshot) -> None:
        """Register the secrets ``snap`` lacks and record the requests it lacks, bounded and in
        one batch (:mod:`controller.aclrequests`); read the ACL again when anything changed."""
        ctl = self.ctl
        try:
            changed = False
            for ref, obs in list(ctl.index.rsecs.items()):
                if obs.spec is not None and not obs.deleting and ref not in snap.secrets:
                    await ctl.backend.register_secret(ref)
                    changed = True
            known = snap.secrets | {r for r, o in ctl.index.rsecs.items() if o.spec is not None}
            chosen = aclrequests.to_record(snap, ctl.index.all_wants(), known)
            if chosen.held_back and chosen.principals_held != self._held_reported:
                log.warning(  # once per change of who is held back, not every poll
                    "%d access requests not recorded (over a cap of pending requests per "
                    "principal, namespace or sync) from %s",
                    chosen.held_back,
                    ", ".join(chosen.principals_held[:5])
                    + (" and others" if len(chosen.principals_held) > 5 else ""),
                )
            self._held_reported = chosen.principals_held
            recorded = await aclrequests.record(ctl.backend, chosen.record)
            changed = recorded or changed
            if recorded:
                await self._tell_workloads(chosen.record)
        except Exception as e:  # the ACL read is still good; the next round tries again
            ctl.metrics.errors.labels("acl").inc()
            log.warning("recording ACL requests failed: %s", str(e) or type(e).__name__)
            return
        if changed:
            await self.read_acl()

    async def _tell_workloads(self, recorded: tuple[Any, ...]) -> None:
        """An Event on each workload whose request was just recorded as pending: its pods wait
        for the grant; the exact command that approves it (at most ``MAX_WAIT_EVENTS``)."""
        ctl = self.ctl
        if ctl.intake is None:
            return
        told = 0
        for w in ctl.intake.workloads.values():
            for want in (x for x in w.wants if x in set(recorded)):
                if told >= MAX_WAIT_EVENTS:
                    return
                told += 1
                message = (
                    f"its pods ask {want.mode} access to {want.secret} as {want.principal}; the "
                    "request awaits an admin's approval, and with rotor.dev/wait: true (the "
                    "default) the app does not start until it is granted: rotor acl approve "
                    f"{want.secret} {want.principal} {want.mode}"
                )
                with contextlib.suppress(RotorError):
                    await ctl.events.post(
                        w.namespace,
                        w.kind,
                        w.name,
                        w.uid,
                        "AwaitingApproval",
                        message,
                        "Normal",
                        API_VERSIONS.get(w.kind, "apps/v1"),
                    )

    async def _report_skipped(self, snap: AclSnapshot) -> None:
        """Entries the backend left out as unusable: a metric for each, and once each a
        warning and an Event on the RotatingSecret it names (when there is one); the
        AccessGranted condition of that secret names them too (decide.secret_status)."""
        ctl = self.ctl
        ctl.metrics.acl_skipped.clear()
        for e in snap.skipped:
            ctl.metrics.acl_skipped.labels(e.where, e.secret).set(1)
        for e in sorted(set(snap.skipped) - self._skipped_reported):
            log.warning("ACL entry left out (the rest of the ACL applies): %s", e)
            try:
                obs = ctl.index.rsecs.get(SecretRef.parse(e.secret, None, "secret"))
            except InvalidSpec:
                obs = None
            if obs is not None:
                with contextlib.suppress(RotorError):
                    await ctl.events.event(obs, st.R_ACL_ENTRY_SKIPPED, str(e))
        self._skipped_reported = set(snap.skipped)

    def _install_acl(self, snap: AclSnapshot) -> None:
        self.acl = snap
        self.acl_ok_at = self.ctl.clock()
        self.acl_failing = False
        self.acl_error = ""

    def _grant_metrics(self) -> None:
        acl = self.acl
        counts = {(s, m): 0 for s in ("granted", "pending", "denied") for m in ("rw", "ro")}
        if acl is not None:
            for g in acl.grants:
                counts[("granted", g.mode)] += 1
            for r in acl.requests:
                counts[(r.state, r.mode)] = counts.get((r.state, r.mode), 0) + 1
        for (s, m), n in counts.items():
            self.ctl.metrics.grants.labels(s, m).set(n)

    def staleness(self) -> decide.Staleness:
        ctl = self.ctl
        return decide.staleness(ctl.clock(), self.acl_ok_at, self.acl_failing, ctl.settings)
