"""What the API server and its controllers do around deletion and namespaces, for the strict
emulator (:mod:`kubeemu.server`):

* a delete gets a fresh ``resourceVersion`` (so a watch from an older one sees it), and a
  collection is deleted object by object (``kubectl delete --all``, ``deletecollection``);
* garbage collection: after a delete, the dependents whose every owner is gone go
  (``ownerReferences``, background propagation; one with finalizers gets a deletionTimestamp);
* namespaces are objects: ``default``, ``kube-system``, ``kube-public`` and
  ``kube-node-lease`` exist from the start, a new one is ``Active`` and labelled
  ``kubernetes.io/metadata.name``, and deleting one deletes everything in it (at once; the
  real namespace controller does it while the namespace is ``Terminating``).
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp.web
import kmock

from kubeemu import writes

if TYPE_CHECKING:
    from kubeemu.server import StrictEmulator

NAMESPACES = kmock.resource("", "v1", "namespaces")
SECRETS = kmock.resource("", "v1", "secrets")
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACE = writes.Target("Namespace", namespaced=False, has_status=True)
Handler = Callable[[kmock.Request], Awaitable[aiohttp.web.StreamResponse]]


def on_create(resource: Any, obj: dict[str, Any]) -> None:
    """What the server adds to a new object of its own kinds (a Namespace's label and phase, a
    Secret's default type)."""
    if resource == SECRETS:
        obj["type"] = obj.get("type") or "Opaque"
    if resource != NAMESPACES:
        return
    meta = obj["metadata"]
    meta["labels"] = {**(meta.get("labels") or {}), "kubernetes.io/metadata.name": meta["name"]}
    spec = obj.setdefault("spec", {})
    spec.setdefault("finalizers", ["kubernetes"])
    obj["status"] = {"phase": "Active"}


def seed_namespaces(emu: StrictEmulator) -> None:
    """The namespaces every cluster starts with."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in SYSTEM_NAMESPACES:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        obj = writes.prepare_create(body, "", NAMESPACE, emu.next_rv(), now)
        on_create(NAMESPACES, obj)
        objects: Any = emu.objects
        objects[(NAMESPACES, None, name)] = obj


async def delete(
    emu: StrictEmulator, request: kmock.Request, handle: Handler
) -> aiohttp.web.StreamResponse:
    """A delete (kmock's ``handle``) with a fresh resourceVersion; a collection object by
    object; a namespace with its contents."""
    if request.name is None:
        return await _delete_collection(emu, request)
    key = (request.resource, request.namespace, request.name)
    objects: Any = emu.objects
    async with emu._rv_lock:
        if emu._stored(key) is not None:
            objects[key].patch({"metadata": {"resourceVersion": emu.next_rv()}})
    response = await handle(request)
    if request.resource == NAMESPACES and response.status < 300:
        await _delete_contents(emu, request.name)
    return response


async def _delete_collection(
    emu: StrictEmulator, request: kmock.Request
) -> aiohttp.web.StreamResponse:
    match = emu._selectors(request)
    objects: Any = emu.objects
    gone: list[dict[str, Any]] = []
    async with emu._lock:
        for (res, ns, _name), obj in list(objects.items()):
            if res != request.resource or obj.deleted:
                continue
            if request.namespace is not None and ns != request.namespace:
                continue
            if match is not None and not match(obj.raw):
                continue
            obj.patch({"metadata": {"resourceVersion": emu.next_rv()}})
            obj.delete()
            gone.append(obj.last.raw)
            await emu._buses[res].put({"type": "DELETED", "object": obj.last.raw})
    res = request.resource
    assert res is not None
    api = f"{res.group}/{res.version}" if res.group else str(res.version)
    body = {"apiVersion": api, "kind": "List", "metadata": {}, "items": gone}
    return aiohttp.web.json_response(body)


async def _delete_contents(emu: StrictEmulator, namespace: str) -> None:
    objects: Any = emu.objects
    async with emu._lock:
        for (res, ns, _name), obj in list(objects.items()):
            if ns == namespace and not obj.deleted:
                obj.patch({"metadata": {"resourceVersion": emu.next_rv()}})
                obj.delete()
                await emu._buses[res].put({"type": "DELETED", "object": obj.last.raw})


async def collect_garbage(emu: StrictEmulator, request: kmock.Request) -> None:
    """After a delete or an update: remove the dependents whose every owner is gone."""
    gone: list[str] = []
    key = (request.resource, request.namespace, request.name)
    objects: Any = emu.objects
    async with emu._lock:
        if key in objects and objects[key].deleted:
            uid = (objects[key].last.raw.get("metadata") or {}).get("uid")
            if uid:
                gone.append(str(uid))
        while gone:
            uid = gone.pop()
            for dkey, dep in list(objects.items()):
                if dep.deleted:
                    continue
                event = _release(emu, dep, uid, gone)
                if event is None:
                    continue
                emu.collected.append(f"{dkey[0].plural}/{dkey[1] or ''}/{dkey[2]}")
                await emu._buses[dkey[0]].put(event)


def _release(emu: StrictEmulator, dep: Any, uid: str, gone: list[str]) -> dict[str, Any] | None:
    """One dependent of the deleted owner ``uid``: its event (None: not a dependent)."""
    meta = dep.raw.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    if not any(r.get("uid") == uid for r in refs):
        return None
    alive = [r for r in refs if r.get("uid") != uid and _uid_alive(emu, r)]
    if alive:
        dep.patch({"metadata": {"ownerReferences": alive, "resourceVersion": emu.next_rv()}})
        return {"type": "MODIFIED", "object": dep.raw}
    if meta.get("finalizers"):
        if meta.get("deletionTimestamp"):
            return None
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        dep.patch({"metadata": {"deletionTimestamp": now, "resourceVersion": emu.next_rv()}})
        return {"type": "MODIFIED", "object": dep.raw}
    dep.patch({"metadata": {"resourceVersion": emu.next_rv()}})
    dep.delete()
    if meta.get("uid"):
        gone.append(str(meta["uid"]))
    return {"type": "DELETED", "object": dep.last.raw}


def _uid_alive(emu: StrictEmulator, ref: Any) -> bool:
    uid = ref.get("uid")
    objects: Any = emu.objects
    return any(
        not obj.deleted and (obj.raw.get("metadata") or {}).get("uid") == uid
        for _key, obj in objects.items()
    )
