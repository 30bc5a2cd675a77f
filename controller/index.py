"""What the controller knows of the cluster (:class:`Index`, records, not bodies) and the intake
of RotatingSecrets, ExternalStores and Rotor's Secrets into it (:class:`ObjectIntake`; kopf
event handlers call it; no I/O). Pods and workloads come in through :mod:`controller.intake`.

Each change marks the affected RotatingSecrets dirty (:mod:`controller.queue`); the controller's
own writes go into the index without marking anything (``own_secret``, ``own_rotating_secret``),
and their watch events, which carry the resourceVersion the write got, are recognised as echoes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from controller.model import (
    LABEL_SOURCE,
    PodInfo,
    RotatingSecretObs,
    SourceObs,
    ViewObs,
    Want,
    is_managed,
    meta,
    read_rotating_secret,
    read_source,
    read_view,
    source_label,
)
from rotor.errors import InvalidSpec
from rotor.layout import LABEL_SECRET, LABEL_VIEW_OF
from rotor.names import SecretRef
from rotor.spec import ExternalStoreSpec

if TYPE_CHECKING:
    from controller.operator import Controller


def _key_rv(obj: Mapping[str, Any]) -> tuple[tuple[str, str], str]:
    m = meta(obj)
    key = (str(m.get("namespace", "")), str(m.get("name", "")))
    return key, str(m.get("resourceVersion") or "")


def older_rv(resource_version: str, than: str) -> bool:
    """resourceVersions are opaque to clients, but every API server today hands out etcd
    revisions (integers); when both are integers an older one is not applied over a newer."""
    if resource_version.isdigit() and than.isdigit():
        return int(resource_version) < int(than)
    return False


@dataclass
class Index:
    """What the controller knows of the cluster, kept small (records, not bodies)."""

    rsecs: dict[SecretRef, RotatingSecretObs] = field(default_factory=dict)
    sources: dict[SecretRef, SourceObs] = field(default_factory=dict)
    source_keys: dict[SecretRef, tuple[str, ...]] = field(default_factory=dict)
    views: dict[str, dict[str, ViewObs]] = field(default_factory=dict)
    """source label -> consumer namespace -> view."""
    view_keys: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    pods: dict[tuple[str, str], PodInfo] = field(default_factory=dict)
    wants: dict[tuple[str, str, str], tuple[Want, ...]] = field(default_factory=dict)
    """(kind, namespace, name) of a workload or pod -> what it asks for."""
    wants_by_secret: dict[SecretRef, set[tuple[str, str, str]]] = field(default_factory=dict)
    stores: dict[tuple[str, str], ExternalStoreSpec | InvalidSpec] = field(default_factory=dict)
    """(namespace, name) of an ExternalStore -> its spec, or why it is invalid."""

    def all_wants(self) -> set[Want]:
        return {w for ws in self.wants.values() for w in ws}

    def wants_for(self, ref: SecretRef) -> set[Want]:
        out: set[Want] = set()
        for key in self.wants_by_secret.get(ref, ()):
            out.update(w for w in self.wants.get(key, ()) if w.secret == ref)
        return out

    def secrets_using(self, key: tuple[str, str]) -> list[SecretRef]:
        """The RotatingSecrets whose ``spec.externalStores`` name the ExternalStore ``key``."""
        return [
            r
            for r, o in self.rsecs.items()
            if o.spec and any((r.namespace, x.store) == key for x in o.spec.external_stores)
        ]


class ObjectIntake:
    """RotatingSecrets, ExternalStores and Rotor's Secrets into the index (no I/O)."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self._secret_rvs: dict[tuple[str, str], tuple[str, str]] = {}
        """(namespace, name) of a source Secret or view -> (uid, resourceVersion) last applied."""
        self._marked: dict[tuple[str, str], tuple[str, list[tuple[SecretRef, int]]]] = {}
        """(namespace, name) -> the resourceVersion of its last watch event and the marks it
        made that may be taken back."""

    def on_rotating_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event: into the index, the secret marked unless the event tells nothing new
        (:meth:`_apply_rotating_secret`)."""
        m = meta(obj)
        ref = SecretRef(str(m.get("namespace", "")), str(m.get("name", "")))
        if kind == "DELETED":
            self.ctl.index.rsecs.pop(ref, None)
            self.ctl.status.forget(ref)
        elif not self._apply_rotating_secret(obj):
            return
        self.ctl.mark([ref])

    def own_rotating_secret(self, obj: Mapping[str, Any]) -> None:
        """This controller's own write as the API answered it: into the index, nothing marked
        (the reconcile that wrote it goes on with it; its watch event is the echo)."""
        self._apply_rotating_secret(obj)

    def _apply_rotating_secret(self, obj: Mapping[str, Any]) -> bool:
        """Into the index; False when it tells nothing new: older than the version known, that
        version itself (the echo of this controller's own write, recognised by its
        resourceVersion; the status writer records the one its write got), or a change of the
        status alone."""
        index = self.ctl.index
        new = read_rotating_secret(obj)
        old = index.rsecs.get(new.ref)
        if old is not None and old.uid == new.uid:
            if older_rv(new.resource_version, old.resource_version):
                return False  # a watch event older than what this controller just wrote
            index.rsecs[new.ref] = new
            # Only this controller writes the status: a change of nothing else is its echo,
            # even when it arrives before the status writer recorded what its write got.
            return replace(new, resource_version=old.resource_version, status=old.status) != old
        index.rsecs[new.ref] = new
        if old is None and new.spec is not None:
            self.ctl.aclsync.wake()  # register the new secret with the ACL soon
        return True

    def on_external_store(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        index = self.ctl.index
        m = meta(obj)
        key = (str(m.get("namespace", "")), str(m.get("name", "")))
        if kind == "DELETED":
            self.ctl.stores.forget(key)
            index.stores.pop(key, None)
        else:
            self.ctl.stores.observe(key, obj)
            try:
                index.stores[key] = ExternalStoreSpec.from_dict(obj.get("spec"))
            except InvalidSpec as e:
                index.stores[key] = e
        self.ctl.mark(index.secrets_using(key))

    def on_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        """A watch event of one of Rotor's Secrets (or a write that others must act on, e.g. a
        value from Vault): into the index, the secrets it concerns marked, revocably: when the
        API's answer to this controller's own write arrives later with this resourceVersion,
        the event was its echo and the mark is taken back (:meth:`own_secret`)."""
        key, rv = _key_rv(obj)
        marks = [(ref, self.ctl.queue.mark_revocably(ref)) for ref in self._apply_secret(kind, obj)]
        revocable = [(ref, token) for ref, token in marks if token is not None]
        if revocable and kind != "DELETED":
            self._marked[key] = (rv, revocable)
        else:
            self._marked.pop(key, None)

    def own_secret(self, obj: Mapping[str, Any]) -> None:
        """This controller's own write (or read) of a Secret as the API answered it: into the
        index, nothing marked; the reconcile that wrote it goes on with it, and its watch event
        (the same resourceVersion) is recognised as the echo, before or after this answer."""
        key, rv = _key_rv(obj)
        marked = self._marked.pop(key, None)
        self._apply_secret("MODIFIED", obj)
        if marked is not None and rv and marked[0] == rv:  # the echo came first
            for ref, token in marked[1]:
                self.ctl.queue.unmark(ref, token)

    def _apply_secret(self, kind: str | None, obj: Mapping[str, Any]) -> list[SecretRef]:
        """Into the index; the RotatingSecrets it concerns (none when it tells nothing new)."""
        if not is_managed(obj):
            return []
        m = meta(obj)
        labels = m.get("labels") or {}
        ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
        # The answer to this controller's own patch (applied here too) can arrive after the watch
        # has brought a newer version (e.g. the writer's commit): applying it would roll the
        # index back, and with no further event nothing would be fanned out until the next
        # change. The soak (bench/soak.py) found such rotations held until the next one. The
        # version already applied (the echo of the controller's own write) changes nothing.
        seen = self._secret_rvs.get((ns, name))
        uid, rv = str(m.get("uid") or ""), str(m.get("resourceVersion") or "")
        if kind == "DELETED":
            self._secret_rvs.pop((ns, name), None)
        elif seen is not None and seen[0] == uid and (older_rv(rv, seen[1]) or rv == seen[1]):
            return []
        else:
            self._secret_rvs[(ns, name)] = (uid, rv)
        if labels.get(LABEL_VIEW_OF):
            label = str(labels.get(LABEL_SOURCE) or labels[LABEL_VIEW_OF])
            return self._on_view(kind, obj, label, ns)
        if labels.get(LABEL_SECRET):
            return self._on_source(kind, obj, SecretRef(ns, name))
        return []

    def _on_view(
        self, kind: str | None, obj: Mapping[str, Any], label: str, ns: str
    ) -> list[SecretRef]:
        index = self.ctl.index
        views = index.views.setdefault(label, {})
        if kind == "DELETED":
            views.pop(ns, None)
            index.view_keys.pop((label, ns), None)
        else:
            views[ns] = read_view(obj)
            index.view_keys[(label, ns)] = tuple((obj.get("data") or {}).keys())
        return [r for r in index.rsecs if source_label(r) == label]

    def _on_source(
        self, kind: str | None, obj: Mapping[str, Any], ref: SecretRef
    ) -> list[SecretRef]:
        index = self.ctl.index
        if kind == "DELETED":
            index.sources.pop(ref, None)
            index.source_keys.pop(ref, None)
        else:
            owner = index.rsecs.get(ref)
            index.sources[ref] = read_source(obj, owner.uid if owner else None)
            index.source_keys[ref] = tuple((obj.get("data") or {}).keys())
        return [ref]

    def set_wants(self, key: tuple[str, str, str], wants: tuple[Want, ...]) -> None:
        """What a workload or pod asks for (pods and workloads come in through
        :class:`controller.intake.Intake`)."""
        index = self.ctl.index
        old = index.wants.get(key, ())
        if wants:
            index.wants[key] = wants
        else:
            index.wants.pop(key, None)
        for w in old:
            index.wants_by_secret.get(w.secret, set()).discard(key)
        for w in wants:
            index.wants_by_secret.setdefault(w.secret, set()).add(key)
        if set(wants) - set(old):
            self.ctl.aclsync.wake()  # record the new request soon
        self.ctl.mark({w.secret for w in (*old, *wants)})
