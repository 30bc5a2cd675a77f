"""The ConfigMap ACL backend: the access-control list as YAML in one ConfigMap.

Data key ``acl.yaml`` (see docs/acl.md)::

    version: 7                       # grows by one on every change the controller makes
    secrets: [shop/db-password]      # RotatingSecrets the ACL knows
    grants:                          # who may do what; an admin adds or removes entries
      - {secret: shop/db-password, principal: shop/api, mode: rw}
    requests:                        # asked for by annotated workloads, waiting for an admin
      - {secret: shop/db-password, principal: shop/web, mode: ro, state: pending}

Two ConfigMaps of that format, so the controller's own identity cannot grant: ``<name>`` holds
the grants and only ACL admins may write it (the chart gives the controller ``get`` on it, no
more); ``<name>-requests`` holds the secrets the ACL knows and the requests, written by the
controller (and by admins: ``rotor acl approve`` adds the grant to ``<name>``, then drops the
request here). Grants found in ``<name>-requests`` are ignored; requests and secrets found in
``<name>`` (an ACL from before the split, an admin's edit) are read as well. An admin approves a
request by adding it to ``grants`` of ``<name>``, denies it by setting ``state: denied`` in
``<name>-requests``, and revokes a grant by deleting it. Every write made here is a JSON merge patch
carrying the ``metadata.resourceVersion`` it read, so a concurrent edit (an admin's, another
controller's) is never lost: the API server answers 409 and the change is re-applied to the fresh
copy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import yaml
from kubernetes import client

from controller.kube import MERGE_PATCH, mapped_errors
from rotor import backoff
from rotor.acl import AccessRequest, AclSnapshot, Grant, Mode
from rotor.errors import ConflictError, InvalidSpec, NotFoundError, UnavailableError
from rotor.names import Principal, SecretRef

log = logging.getLogger("rotor.controller")

DATA_KEY = "acl.yaml"
README_KEY = "README"
README = """\
Rotor access-control list (ConfigMap backend): grants in <name>, requests in <name>-requests.
- approve a request: add it to `grants` of <name> (drop the `state` field);
- deny a request: set its `state: denied` in <name>-requests;
- revoke: delete the entry from `grants` of <name>. Grants in <name>-requests are ignored.
Modes: rw (writes the secret; its own namespace only), ro (reads a view in its namespace).
The controller applies changes within one ACL poll (ROTOR_ACL_POLL, default 30s).
"""
MAX_DOCUMENT_BYTES = 900 * 1024
"""The API server refuses a ConfigMap over 1 MiB; requests that would grow ``acl.yaml`` past this
are not recorded (grants, denials and revocations always are)."""
MAX_ATTEMPTS = 20
BACKOFF = 0.02  # seconds; the jittered wait grows with each conflict
BACKOFF_MAX = BACKOFF * MAX_ATTEMPTS  # the longest wait, as before the one policy
MODES: tuple[Mode, ...] = ("rw", "ro")
REQUESTS_SUFFIX = "-requests"
"""The requests ConfigMap is ``<grants ConfigMap>-requests``."""

Document = dict[str, Any]

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc]  # PyYAML has no types
    """A safe loader that refuses a key given twice in one mapping: PyYAML keeps the last, so a
    second ``grants:`` (e.g. smuggled in through a name) would replace the first one silently."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int) and key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# The document the controller writes, read back without YAML. Every ACL read parses the whole
# document, and a tenant can make it long (10,000 pending requests: 760 KiB): PyYAML takes about
# 2 s for that even with libyaml (its object construction is Python), this about 0.03 s
# (bench/acl_revocation.py). Only the exact form render_document writes takes this path; anything
# an admin wrote in another YAML style goes through PyYAML, and a test checks both readings agree.
_REF = r"[a-z0-9][a-z0-9.-]*/[a-z0-9][a-z0-9.-]*"  # always a YAML string: it has a '/'
_GRANT_LINE = re.compile(rf"- \{{secret: ({_REF}), principal: ({_REF}), mode: (rw|ro)\}}")
_REQUEST_LINE = re.compile(
    rf"- \{{secret: ({_REF}), principal: ({_REF}), mode: (rw|ro), state: (pending|denied)\}}"
)
_VERSION_LINE = re.compile(r"version: (0|[1-9][0-9]{0,17})")
_SECRETS_LINE = re.compile(rf"secrets: \[((?:{_REF})(?:, {_REF})*)?\]")


def _fast_load(text: str) -> Document | None:
    """The document as ``yaml.safe_load`` reads it, for the form :func:`render_document` writes;
    None for any other text."""
    lines = text.split("\n")
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) < 4:
        return None
    version, secrets = _VERSION_LINE.fullmatch(lines[0]), _SECRETS_LINE.fullmatch(lines[1])
    if version is None or secrets is None:
        return None
    doc: Document = {
        "version": int(version.group(1)),
        "secrets": secrets.group(1).split(", ") if secrets.group(1) else [],
    }
    i = 2
    for key, pattern, fields in (
        ("grants", _GRANT_LINE, ("secret", "principal", "mode")),
        ("requests", _REQUEST_LINE, ("secret", "principal", "mode", "state")),
    ):
        if i >= len(lines):
            return None
        if lines[i] == f"{key}: []":
            doc[key] = []
            i += 1
            continue
        if lines[i] != f"{key}:":
            return None
        i += 1
        entries = []
        while i < len(lines) and lines[i].startswith("- "):
            m = pattern.fullmatch(lines[i])
            if m is None:
                return None
            entries.append(dict(zip(fields, m.groups(), strict=True)))
            i += 1
        if not entries:
            return None
        doc[key] = entries
    return doc if i == len(lines) else None


def _order(e: Grant | AccessRequest) -> tuple[str, ...]:
    """The dataclasses' own order (secret, principal, mode[, state]) as a tuple of strings:
    sorting 10,000 requests by it takes 0.02 s, by the dataclass comparisons 1.2 s."""
    key = (e.secret.namespace, e.secret.name, e.principal.namespace, e.principal.service_account)
    return (*key, e.mode, e.state) if isinstance(e, AccessRequest) else (*key, e.mode)


def _grant(r: AccessRequest) -> Grant:
    return Grant(r.secret, r.principal, r.mode)


def _field(where: str, i: int, key: str) -> str:
    return f"{where}[{i}].{key}"


def _mode(value: object, field: str) -> Mode:
    if value not in MODES:
        raise InvalidSpec(field, f"{value!r} is not a mode", "use rw or ro")
    return value


def _load(text: str, origin: str) -> object:
    """The YAML document (the fast path first); a syntax error names the line."""
    try:
        doc = _fast_load(text)
        if doc is None:
            doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a safe loader
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidSpec(
            origin, f"has a {e.problem}{where}", "give each key once (merge the two lists)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidSpec(origin, f"is not valid YAML{where}", "fix the YAML syntax") from None
    return doc


def _check_top(doc: object, origin: str) -> int:
    """The document's shape; returns its version."""
    if not isinstance(doc, dict):
        raise InvalidSpec(origin, "expected a mapping", "write version, secrets, grants, requests")
    extra = sorted(set(doc) - {"version", "secrets", "grants", "requests"})
    if extra:
        raise InvalidSpec(
            f"{origin}.{extra[0]}", "unknown field", "use version, secrets, grants and requests"
        )
    version = doc.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidSpec(f"{origin}.version", f"{version!r} is not a version", "use an integer")
    return version


def _entries(doc: Mapping[str, Any], key: str, origin: str) -> list[Mapping[str, Any]]:
    raw = doc.get(key) or []
    if not isinstance(raw, list):
        raise InvalidSpec(f"{origin}.{key}", "expected a list", "")
    for i, e in enumerate(raw):
        if not isinstance(e, dict):
            raise InvalidSpec(
                f"{origin}.{key}[{i}]",
                "expected a mapping",
                "write {secret: ns/name, principal: ns/sa, mode: rw|ro}",
            )
    return raw


def _secrets(doc: Mapping[str, Any], origin: str) -> set[SecretRef]:
    raw_secrets = doc.get("secrets") or []
    if not isinstance(raw_secrets, list):
        raise InvalidSpec(f"{origin}.secrets", "expected a list of ns/name", "")
    return {
        SecretRef.parse(str(s), None, f"{origin}.secrets[{i}]") for i, s in enumerate(raw_secrets)
    }


def _triple(e: Mapping[str, Any], where: str, i: int) -> tuple[SecretRef, Principal, Mode]:
    secret = SecretRef.parse(str(e.get("secret", "")), None, _field(where, i, "secret"))
    principal = Principal.parse(str(e.get("principal", "")), _field(where, i, "principal"))
    mode = _mode(e.get("mode"), _field(where, i, "mode"))
    if mode == "rw" and principal.namespace != secret.namespace:
        raise InvalidSpec(
            _field(where, i, "principal"),
            f"{principal} cannot write {secret} (another namespace)",
            "a writer must be in the secret's namespace; use mode ro",
        )
    return secret, principal, mode


def _requests(doc: Mapping[str, Any], origin: str, grants: set[Grant]) -> list[AccessRequest]:
    """The requests not granted already (a request for a grant is moot)."""
    requests: list[AccessRequest] = []
    for i, entry in enumerate(_entries(doc, "requests", origin)):
        s, p, m = _triple(entry, f"{origin}.requests", i)
        state = entry.get("state", "pending")
        if state not in ("pending", "denied"):
            raise InvalidSpec(
                _field(f"{origin}.requests", i, "state"),
                f"{state!r} is not a request state",
                "use pending or denied; to approve, move the entry to grants",
            )
        if Grant(s, p, m) not in grants:
            requests.append(AccessRequest(s, p, m, state))
    return requests


def parse_document(text: str | None, origin: str) -> AclSnapshot:
    """Read ``acl.yaml``; every error names the entry, e.g. ``<origin>.grants[2].mode``."""
    if not text or not text.strip():
        return AclSnapshot(version=0)
    doc = _load(text, origin)
    if doc is None:
        return AclSnapshot(version=0)
    version = _check_top(doc, origin)
    assert isinstance(doc, dict)
    secrets = _secrets(doc, origin)
    grants = {
        Grant(*_triple(entry, f"{origin}.grants", i))
        for i, entry in enumerate(_entries(doc, "grants", origin))
    }
    requests = _requests(doc, origin, grants)
    return AclSnapshot(
        version=version,
        grants=frozenset(grants),
        requests=tuple(sorted(set(requests), key=_order)),
        secrets=frozenset(secrets | {g.secret for g in grants}),
    )


def snapshot_document(snap: AclSnapshot) -> Document:
    """The ACL as plain data, sorted: the ConfigMap's document and ``rotor-controller acl list
    --json``."""
    return {
        "version": snap.version,
        "secrets": sorted(str(s) for s in snap.secrets),
        "grants": [
            {"secret": str(g.secret), "principal": str(g.principal), "mode": g.mode}
            for g in sorted(snap.grants, key=_order)
        ],
        "requests": [
            {
                "secret": str(r.secret),
                "principal": str(r.principal),
                "mode": r.mode,
                "state": r.state,
            }
            for r in sorted(snap.requests, key=_order)
        ],
    }


def render_document(snap: AclSnapshot) -> str:
    """The YAML an admin reads and edits: sorted, one flow mapping per entry.

    Written by hand, not by ``yaml.dump`` (1.2 s for 10,000 requests, against 0.02 s): every
    value is a validated ``namespace/name``, a mode or a state, none of which YAML needs quoted,
    so the form is fixed; a test checks that PyYAML reads it as :func:`snapshot_document`."""
    doc = snapshot_document(snap)
    bad = _not_plain(doc)
    if bad is not None:  # never spliced into the text: it could add keys or entries
        raise InvalidSpec(
            "acl.yaml", f"{bad!r} is not a namespace/name", "check the serviceAccountName"
        )
    out = [f"version: {doc['version']}", f"secrets: [{', '.join(doc['secrets'])}]"]
    for key in ("grants", "requests"):
        entries = doc[key]
        if not entries:
            out.append(f"{key}: []")
            continue
        out.append(f"{key}:")
        out += ["- {" + ", ".join(f"{k}: {v}" for k, v in e.items()) + "}" for e in entries]
    return "\n".join(out) + "\n"


_PLAIN_REF = re.compile(_REF)


def _not_plain(doc: Document) -> str | None:
    """A reference in ``doc`` that is not a plain ``namespace/name`` (rotor/names.py rules make
    every one plain; one made from an unchecked pod field may not be), or None."""
    refs = [*doc["secrets"]]
    for key in ("grants", "requests"):
        refs += [v for e in doc[key] for v in (e["secret"], e["principal"])]
    return next((r for r in refs if not _PLAIN_REF.fullmatch(r)), None)


Change = Callable[[AclSnapshot], AclSnapshot | None]
"""Return the new ACL, or None when nothing needs to change."""


def _new_requests(
    s: AclSnapshot, asks: list[tuple[SecretRef, Principal, Mode]]
) -> list[AccessRequest]:
    """The asks ``s`` records neither as a request nor as a grant, for secrets it knows."""
    have = {(r.secret, r.principal, r.mode) for r in s.requests}
    return [
        AccessRequest(secret, principal, mode, "pending")
        for secret, principal, mode in dict.fromkeys(asks)
        if secret in s.secrets
        and (secret, principal, mode) not in have
        and Grant(secret, principal, mode) not in s.grants
    ]


def _with_requests(s: AclSnapshot, new: list[AccessRequest]) -> tuple[AclSnapshot | None, int]:
    """``s`` with as many of ``new`` as fit in :data:`MAX_DOCUMENT_BYTES` (None if none), and
    how many."""
    if not new:
        return None, 0
    room = max(0, MAX_DOCUMENT_BYTES - len(render_document(s).encode()))
    empty = len(render_document(AclSnapshot(0)).encode())
    per_entry = max(
        len(render_document(AclSnapshot(0, requests=(r,))).encode()) - empty for r in new[:8]
    )
    fit = min(len(new), room // max(1, per_entry))
    while True:
        out = AclSnapshot(
            s.version + 1,
            s.grants,
            tuple(sorted((*s.requests, *new[:fit]), key=_order)),
            s.secrets,
        )
        if fit == 0 or len(render_document(out).encode()) <= MAX_DOCUMENT_BYTES:
            break
        fit = fit * 9 // 10
    return (out if fit else None), fit


class ConfigMapAclBackend:
    """:class:`rotor.acl.AclBackend` over a ConfigMap ``namespace/name``."""

    name = "configmap"

    def __init__(self, core_v1: client.CoreV1Api, namespace: str, name: str) -> None:
        self.core_v1 = core_v1
        self.namespace = namespace
        self.configmap = name
        self.requests_configmap = name + REQUESTS_SUFFIX

    def _origin(self, name: str) -> str:
        return f"configmap {self.namespace}/{name} data[{DATA_KEY}]"

    @property
    def origin(self) -> str:
        return self._origin(self.configmap)

    # -- blocking edges --------------------------------------------------------------------------
    def _read(self, name: str | None = None) -> tuple[str | None, str | None]:
        """(text, resourceVersion) of ConfigMap ``name`` (the grants by default); (None, None)
        when it does not exist."""
        name = name or self.configmap
        try:
            with mapped_errors(self._origin(name)):
                # the raw JSON: the client's model deserialisation of a 760 KiB ConfigMap costs
                # about 0.5 s, json.loads a few milliseconds (bench/acl_revocation.py)
                raw = self.core_v1.read_namespaced_config_map(
                    name, self.namespace, _preload_content=False
                )
                cm = json.loads(raw.data)  # type: ignore[arg-type]  # a urllib3 response here
        except NotFoundError:
            return None, None
        except ValueError as e:
            raise UnavailableError(
                f"{self._origin(name)}: the API server sent no JSON ({e})"
            ) from None
        data = cm.get("data") or {}
        rv = (cm.get("metadata") or {}).get("resourceVersion")
        text = data.get(DATA_KEY)
        return (text if isinstance(text, str) else None), (str(rv) if rv is not None else None)

    def _write(self, text: str, resource_version: str | None, name: str) -> None:
        with mapped_errors(self._origin(name)):
            if resource_version is None:
                body = client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(
                        name=name,
                        namespace=self.namespace,
                        labels={"app.kubernetes.io/managed-by": "rotor"},
                    ),
                    data={DATA_KEY: text, README_KEY: README},
                )
                self.core_v1.create_namespaced_config_map(self.namespace, body)
            else:
                patch = {
                    "metadata": {"resourceVersion": resource_version},
                    "data": {DATA_KEY: text},
                }
                self.core_v1.patch_namespaced_config_map(
                    name, self.namespace, patch, _content_type=MERGE_PATCH
                )

    def _both(self) -> tuple[AclSnapshot, AclSnapshot]:
        text, _ = self._read(self.configmap)
        grants = parse_document(text, self.origin)
        text, _ = self._read(self.requests_configmap)
        return grants, parse_document(text, self._origin(self.requests_configmap))

    def _read_all(self) -> AclSnapshot:
        """The ACL: grants from the grants ConfigMap only; requests and secrets from both."""
        grants, asked = self._both()
        return AclSnapshot(
            grants.version + asked.version,
            grants.grants,
            tuple(
                sorted(
                    {
                        r
                        for r in (*grants.requests, *asked.requests)
                        if _grant(r) not in grants.grants
                    },
                    key=_order,
                )
            ),
            grants.secrets | asked.secrets,
        )

    def _change(self, change: Change, requests: bool = False) -> None:
        """Apply ``change`` to one ConfigMap (re-read and re-applied on a conflict). The
        requests ConfigMap (``requests``) gets the requests and secrets of the result only,
        never its grants; the change sees the grants of the grants ConfigMap."""
        name = self.requests_configmap if requests else self.configmap
        for attempt in range(MAX_ATTEMPTS):
            text, rv = self._read(name)
            current = parse_document(text, self._origin(name))
            if requests:
                granted = parse_document(self._read()[0], self.origin).grants
                current = AclSnapshot(current.version, granted, current.requests, current.secrets)
            new = change(current)
            if new is None:
                return
            if requests:
                new = AclSnapshot(new.version, frozenset(), new.requests, new.secrets)
            try:
                self._write(render_document(new), rv, name)
                return
            except ConflictError:  # someone else wrote in between: re-read, re-apply
                draw = random.random()  # noqa: S311 - jitter
                time.sleep(
                    backoff.delay(attempt + 1, BACKOFF, BACKOFF_MAX, jitter=(0, 1), draw=draw)
                )
        raise ConflictError(f"{self.origin}: still changing after {MAX_ATTEMPTS} attempts")

    # -- AclBackend ------------------------------------------------------------------------------
    async def snapshot(self) -> AclSnapshot:
        return await asyncio.to_thread(self._read_all)

    async def register_secret(self, secret: SecretRef) -> None:
        def change(s: AclSnapshot) -> AclSnapshot | None:
            if secret in s.secrets:
                return None
            return AclSnapshot(s.version + 1, s.grants, s.requests, s.secrets | {secret})

        await asyncio.to_thread(self._change, change, True)

    async def request_access(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        def change(s: AclSnapshot) -> AclSnapshot | None:
            if secret not in s.secrets:
                raise NotFoundError(f"{secret} is not known to the ACL; register it first")
            if Grant(secret, principal, mode) in s.grants or any(
                (r.secret, r.principal, r.mode) == (secret, principal, mode) for r in s.requests
            ):
                return None  # granted stays granted; pending and denied stay as they are
            req = AccessRequest(secret, principal, mode, "pending")
            return AclSnapshot(
                s.version + 1, s.grants, tuple(sorted((*s.requests, req), key=_order)), s.secrets
            )

        await asyncio.to_thread(self._change, change, True)

    async def request_many(self, asks: list[tuple[SecretRef, Principal, Mode]]) -> int:
        """Record many pending requests with one read and one write; returns how many were new.

        Asks for secrets the ACL does not know are skipped; once the document would pass
        :data:`MAX_DOCUMENT_BYTES` the rest are not recorded (a warning says how many)."""
        recorded = 0

        def change(s: AclSnapshot) -> AclSnapshot | None:
            nonlocal recorded
            new = _new_requests(s, asks)
            out, recorded = _with_requests(s, new)
            if recorded < len(new):
                log.warning(
                    "%s: %d access requests not recorded: the ConfigMap would pass %d bytes "
                    "(approve or deny pending requests to make room)",
                    self.origin,
                    len(new) - recorded,
                    MAX_DOCUMENT_BYTES,
                )
            return out

        await asyncio.to_thread(self._change, change, True)
        return recorded

    def _without_request(
        self, s: AclSnapshot, secret: SecretRef, principal: Principal, mode: Mode
    ) -> tuple[AccessRequest, ...]:
        return tuple(
            r for r in s.requests if (r.secret, r.principal, r.mode) != (secret, principal, mode)
        )

    async def approve(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        """The grant into the grants ConfigMap, then the request out of both."""
        grant = Grant(secret, principal, mode)

        def add(s: AclSnapshot) -> AclSnapshot | None:
            rest = self._without_request(s, secret, principal, mode)
            if grant in s.grants and rest == s.requests:
                return None
            return AclSnapshot(s.version + 1, s.grants | {grant}, rest, s.secrets)

        def drop(s: AclSnapshot) -> AclSnapshot | None:
            rest = self._without_request(s, secret, principal, mode)
            known = s.secrets | {secret}
            return (
                None
                if rest == s.requests and known == s.secrets
                else replace(s, version=s.version + 1, requests=rest, secrets=known)
            )

        await asyncio.to_thread(self._change, add)
        await asyncio.to_thread(self._change, drop, True)

    async def deny(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        """The grant out of the grants ConfigMap, the request denied in the requests one."""
        denied = AccessRequest(secret, principal, mode, "denied")

        def ungrant(s: AclSnapshot) -> AclSnapshot | None:
            rest = self._without_request(s, secret, principal, mode)
            grants = s.grants - {_grant(denied)}
            if grants == s.grants and rest == s.requests:
                return None
            return AclSnapshot(s.version + 1, grants, rest, s.secrets)

        def mark(s: AclSnapshot) -> AclSnapshot | None:
            if denied in s.requests:
                return None
            rest = self._without_request(s, secret, principal, mode)
            return replace(
                s, version=s.version + 1, requests=tuple(sorted((*rest, denied), key=_order))
            )

        await asyncio.to_thread(self._change, ungrant)
        await asyncio.to_thread(self._change, mark, True)

    async def revoke(self, secret: SecretRef, principal: Principal, mode: Mode) -> None:
        grant = Grant(secret, principal, mode)

        def change(s: AclSnapshot) -> AclSnapshot | None:
            if grant not in s.grants:
                return None
            return AclSnapshot(s.version + 1, s.grants - {grant}, s.requests, s.secrets)

        await asyncio.to_thread(self._change, change)
