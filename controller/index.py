"""What the controller knows of the cluster (:class:`Index`, records, not bodies) and the intake
of RotatingSecrets, ExternalStores and Rotor's Secrets into it (:class:`ObjectIntake`; kopf
event handlers call it; no I/O). Pods and workloads come in through :mod:`controller.intake`.

Each change marks the affected RotatingSecrets dirty (:mod:`controller.queue`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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

    def on_rotating_secret(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        index = self.ctl.index
        m = meta(obj)
        ref = SecretRef(str(m.get("namespace", "")), str(m.get("name", "")))
        if kind == "DELETED":
            index.rsecs.pop(ref, None)
            self.ctl.status.forget(ref)
        else:
            new = read_rotating_secret(obj)
            old = index.rsecs.get(ref)
            if (
                old is not None
                and old.uid == new.uid
                and older_rv(new.resource_version, old.resource_version)
            ):
                return  # a watch event older than what this controller just wrote
            index.rsecs[ref] = new
            if old is None and new.spec is not None:
                self.ctl.aclsync.wake()  # register the new secret with the ACL soon
        self.ctl.mark([ref])

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
        if not is_managed(obj):
            return
        m = meta(obj)
        labels = m.get("labels") or {}
        ns, name = str(m.get("namespace", "")), str(m.get("name", ""))
        # The answer to this controller's own patch (applied here too) can arrive after the watch
        # has brought a newer version (e.g. the writer's commit): applying it would roll the
        # index back, and with no further event nothing would be fanned out until the next
        # change. The soak (bench/soak.py) found such rotations held until the next one.
        seen = self._secret_rvs.get((ns, name))
        uid, rv = str(m.get("uid") or ""), str(m.get("resourceVersion") or "")
        if kind == "DELETED":
            self._secret_rvs.pop((ns, name), None)
        elif seen is not None and seen[0] == uid and older_rv(rv, seen[1]):
            return
        else:
            self._secret_rvs[(ns, name)] = (uid, rv)
        if labels.get(LABEL_VIEW_OF):
            self._on_view(kind, obj, str(labels.get(LABEL_SOURCE) or labels[LABEL_VIEW_OF]), ns)
        elif labels.get(LABEL_SECRET):
            self._on_source(kind, obj, SecretRef(ns, name))

    def _on_view(self, kind: str | None, obj: Mapping[str, Any], label: str, ns: str) -> None:
        index = self.ctl.index
        views = index.views.setdefault(label, {})
        if kind == "DELETED":
            views.pop(ns, None)
            index.view_keys.pop((label, ns), None)
        else:
            views[ns] = read_view(obj)
            index.view_keys[(label, ns)] = tuple((obj.get("data") or {}).keys())
        self.ctl.mark(r for r in index.rsecs if source_label(r) == label)

    def _on_source(self, kind: str | None, obj: Mapping[str, Any], ref: SecretRef) -> None:
        index = self.ctl.index
        if kind == "DELETED":
            index.sources.pop(ref, None)
            index.source_keys.pop(ref, None)
        else:
            owner = index.rsecs.get(ref)
            index.sources[ref] = read_source(obj, owner.uid if owner else None)
            index.source_keys[ref] = tuple((obj.get("data") or {}).keys())
        self.ctl.mark([ref])

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
