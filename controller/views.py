"""The view writer: the RO views ``rotor.<ns>.<name>`` of a secret in each granted consumer
namespace, written and deleted as :func:`controller.decide.plan_fanout` says, concurrently."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from controller import decide
from controller.kube import path
from controller.model import SourceObs, ViewObs, read_view, source_label
from rotor.errors import NotFoundError
from rotor.layout import SecretState
from rotor.names import SecretRef

if TYPE_CHECKING:
    from controller.operator import Controller


class ViewWriter:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl

    async def fanout(
        self,
        ref: SecretRef,
        source: SourceObs | None,
        plan: decide.FanoutPlan,
        views: dict[str, ViewObs],
    ) -> dict[str, ViewObs]:
        """Write the views in ``plan.upsert`` and delete those in ``plan.delete``, concurrently.
        Returns the views as they now are (for the status)."""
        if not plan.upsert and not plan.delete:
            return views
        start = time.monotonic()
        state = source.state if source else None
        out = dict(views)

        async def upsert(ns: str) -> None:
            assert state is not None
            out[ns] = await self._write(ref, state, ns, ns in views)
            before = views.get(ns)
            if before is None or before.version != out[ns].version:
                self.ctl.env_restarts.view_changed(ref, ns, out[ns].version)

        async def delete(ns: str) -> None:
            await self.ctl.kube.adelete(path("v1", "secrets", ns, views[ns].name))
            out.pop(ns, None)

        results = await asyncio.gather(
            *(upsert(ns) for ns in plan.upsert),
            *(delete(ns) for ns in plan.delete),
            return_exceptions=True,
        )
        metrics = self.ctl.metrics
        metrics.fanout_seconds.observe(time.monotonic() - start)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            metrics.errors.labels("fanout").inc(len(errors))
            raise errors[0]
        return out

    async def _write(self, ref: SecretRef, state: SecretState, ns: str, exists: bool) -> ViewObs:
        """Patch the view in ``ns`` (stale keys nulled) or create it; into the index."""
        kube = self.ctl.kube
        body = decide.view_body(ref, state, ns)
        url = path("v1", "secrets", ns, body["metadata"]["name"])
        if exists:
            old = self.ctl.index.view_keys.get((source_label(ref), ns), ())
            try:
                result = await kube.apatch(url, decide.view_patch(ref, state, ns, old))
            except NotFoundError:
                result = await kube.acreate(path("v1", "secrets", ns), body)
        else:
            result = await kube.aapply(path("v1", "secrets", ns), body)
        self.ctl.objects.own_secret(result)
        self.ctl.metrics.views_written.inc()
        return read_view(result)

    async def delete_all(self, ref: SecretRef) -> None:
        """Every view of ``ref`` (the RotatingSecret is going away)."""
        views = self.ctl.index.views.get(source_label(ref), {})
        for ns, view in list(views.items()):
            await self.ctl.kube.adelete(path("v1", "secrets", ns, view.name))
            views.pop(ns, None)
