"""Which access requests the controller records in the ACL, bounded, and how, batched: pure.

Any tenant who can create a Deployment writes what it asks for (``rotor.dev/rw``/``ro`` on a pod
template), and every ask that is neither granted nor asked yet becomes a pending request in the
ACL. Unbounded, a tenant could grow the ACL document until every ACL read is slow (and, for the
ConfigMap backend, until the ConfigMap reaches the API server's 1 MiB limit and every write
fails). So :func:`to_record` caps what is recorded:

* at most :data:`MAX_PENDING_PER_PRINCIPAL` pending requests per service account,
* at most :data:`MAX_PENDING_PER_NAMESPACE` pending requests per principal namespace,
* at most :data:`MAX_NEW_PER_SYNC` new requests per ACL sync.

Requests over a cap are not recorded (the workload's status says ``pending`` all the same; the
log names the principal); once an admin approves or denies some, the next ones are recorded.
:func:`record` writes the chosen ones in one batch where the backend can (``request_many``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rotor.acl import AclBackend, AclSnapshot
from rotor.errors import NotFoundError
from rotor.names import SecretRef

MAX_PENDING_PER_PRINCIPAL = 32
MAX_PENDING_PER_NAMESPACE = 256
MAX_NEW_PER_SYNC = 512


@dataclass(frozen=True)
class Selection:
    """What to record now, and how many asks a cap held back."""

    record: tuple[Any, ...]
    """``Want``-like (``secret``, ``principal``, ``mode``), sorted."""
    held_back: int = 0
    principals_held: tuple[str, ...] = ()
    """The principals (``ns/sa``) at least one of whose asks a cap held back, sorted."""


def to_record(
    snap: AclSnapshot,
    wants: Iterable[Any],
    known: frozenset[SecretRef] | set[SecretRef],
    *,
    per_principal: int = MAX_PENDING_PER_PRINCIPAL,
    per_namespace: int = MAX_PENDING_PER_NAMESPACE,
    per_sync: int = MAX_NEW_PER_SYNC,
) -> Selection:
    """The asks of ``wants`` to record as pending requests, within the caps."""
    asked = {(r.secret, r.principal, r.mode) for r in snap.requests}
    pending = [r for r in snap.requests if r.state == "pending"]
    by_principal = Counter(r.principal for r in pending)
    by_namespace = Counter(r.principal.namespace for r in pending)
    out: list[Any] = []
    held = 0
    held_by: set[str] = set()
    for w in sorted(set(wants)):
        if w.secret not in known or (w.secret, w.principal, w.mode) in asked:
            continue
        if snap.allows(w.secret, w.principal, w.mode):
            continue  # granted already (a writer reads what it writes: the ACL's one rule)
        if (
            len(out) >= per_sync
            or by_principal[w.principal] >= per_principal
            or by_namespace[w.principal.namespace] >= per_namespace
        ):
            held += 1
            held_by.add(str(w.principal))
            continue
        out.append(w)
        asked.add((w.secret, w.principal, w.mode))
        by_principal[w.principal] += 1
        by_namespace[w.principal.namespace] += 1
    return Selection(tuple(out), held, tuple(sorted(held_by)))


async def record(backend: AclBackend, items: Iterable[Any]) -> bool:
    """Record the requests; True when anything was written. One batch when the backend has
    ``request_many`` (the ConfigMap: one read and one write for all of them), else one call
    each (an unknown secret is skipped)."""
    todo = list(items)
    if not todo:
        return False
    many = getattr(backend, "request_many", None)
    if many is not None:
        await many([(w.secret, w.principal, w.mode) for w in todo])
        return True
    for w in todo:
        try:
            await backend.request_access(w.secret, w.principal, w.mode)
        except NotFoundError:
            continue
    return True
