"""Bodies sent as ``application/vnd.kubernetes.protobuf``, decoded into their JSON form.

client-go sends built-in types as protobuf: typed ``kubectl create secret|configmap|
serviceaccount|namespace|role|rolebinding|clusterrole|clusterrolebinding|token``, ``kubectl auth
can-i`` (``--list``) and ``kubectl auth whoami``. It never falls back to JSON on a 415 (only
from CBOR), so the emulator decodes them. The wire format is ~30 lines; the field numbers of
the ~20 messages those commands send are below, from Kubernetes' ``generated.proto`` files
(``k8s.io/api``, ``k8s.io/apimachinery``). A kind not listed is :class:`Unsupported` (a 415
that names it and says to send JSON). Server-owned fields (timestamps, managedFields) are
skipped: the server sets them.
"""

from __future__ import annotations

import base64
from typing import Any, Union

MAGIC = b"k8s\x00"
MAX_DEPTH = 16

Kind = Union[str, "Schema", tuple[str, Any]]
Schema = dict[int, tuple[str, Kind]]
"""field number -> (JSON name, kind): ``str``, ``bytes`` (base64 in JSON), ``int``, ``bool``,
a nested schema, ``("list", kind)`` or ``("map", value kind)``."""


class Unsupported(ValueError):
    """A protobuf body the emulator cannot decode (the message says which and what to do)."""


def _strs(*names: str) -> Schema:
    return {n + 1: (name, "str") for n, name in enumerate(names) if name}


OWNER_REF: Schema = {
    1: ("kind", "str"),
    3: ("name", "str"),
    4: ("uid", "str"),
    5: ("apiVersion", "str"),
    6: ("controller", "bool"),
    7: ("blockOwnerDeletion", "bool"),
}
META: Schema = {
    1: ("name", "str"),
    2: ("generateName", "str"),
    3: ("namespace", "str"),
    5: ("uid", "str"),
    6: ("resourceVersion", "str"),
    11: ("labels", ("map", "str")),
    12: ("annotations", ("map", "str")),
    13: ("ownerReferences", ("list", OWNER_REF)),
    14: ("finalizers", ("list", "str")),
}
RULE: Schema = {
    1: ("verbs", ("list", "str")),
    2: ("apiGroups", ("list", "str")),
    3: ("resources", ("list", "str")),
    4: ("resourceNames", ("list", "str")),
    5: ("nonResourceURLs", ("list", "str")),
}
BINDING: Schema = {
    1: ("metadata", META),
    2: ("subjects", ("list", _strs("kind", "apiGroup", "name", "namespace"))),
    3: ("roleRef", _strs("apiGroup", "kind", "name")),
}
RESOURCE_ATTRS = _strs("namespace", "verb", "group", "version", "resource", "subresource", "name")
REVIEW_SPEC: Schema = {
    1: ("resourceAttributes", RESOURCE_ATTRS),
    2: ("nonResourceAttributes", _strs("path", "verb")),
    3: ("user", "str"),
    4: ("groups", ("list", "str")),
    6: ("uid", "str"),
}
KINDS: dict[str, Schema] = {
    "Secret": {
        1: ("metadata", META),
        2: ("data", ("map", "bytes")),
        3: ("type", "str"),
        4: ("stringData", ("map", "str")),
        5: ("immutable", "bool"),
    },
    "ConfigMap": {
        1: ("metadata", META),
        2: ("data", ("map", "str")),
        3: ("binaryData", ("map", "bytes")),
        4: ("immutable", "bool"),
    },
    "ServiceAccount": {
        1: ("metadata", META),
        2: ("secrets", ("list", _strs("kind", "namespace", "name", "uid", "apiVersion"))),
        3: ("imagePullSecrets", ("list", _strs("name"))),
        4: ("automountServiceAccountToken", "bool"),
    },
    "Namespace": {1: ("metadata", META), 2: ("spec", {1: ("finalizers", ("list", "str"))})},
    "Role": {1: ("metadata", META), 2: ("rules", ("list", RULE))},
    "ClusterRole": {1: ("metadata", META), 2: ("rules", ("list", RULE))},
    "RoleBinding": BINDING,
    "ClusterRoleBinding": BINDING,
    "TokenRequest": {
        1: ("metadata", META),
        2: (
            "spec",
            {
                1: ("audiences", ("list", "str")),
                3: ("boundObjectRef", _strs("kind", "apiVersion", "name", "uid")),
                4: ("expirationSeconds", "int"),
            },
        ),
    },
    "SelfSubjectAccessReview": {1: ("metadata", META), 2: ("spec", REVIEW_SPEC)},
    "SubjectAccessReview": {1: ("metadata", META), 2: ("spec", REVIEW_SPEC)},
    "SelfSubjectRulesReview": {1: ("metadata", META), 2: ("spec", _strs("namespace"))},
    "SelfSubjectReview": {1: ("metadata", META)},
}


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The fields of one message, in order: (number, varint value or length-delimited bytes)."""
    out: list[tuple[int, int | bytes]] = []
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            if i >= len(data) or shift > 63:
                raise Unsupported("a truncated or malformed protobuf body")
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.append((number, varint()))
        elif wire == 2:
            n = varint()
            if i + n > len(data):
                raise Unsupported("a truncated or malformed protobuf body")
            out.append((number, data[i : i + n]))
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise Unsupported(f"protobuf wire type {wire} is not supported")
    return out


def _value(kind: Kind, raw: int | bytes, depth: int) -> Any:
    if isinstance(raw, int):
        return bool(raw) if kind == "bool" else raw
    if kind == "str":
        return raw.decode("utf-8", "replace")
    if kind == "bytes":
        return base64.b64encode(raw).decode()
    if isinstance(kind, dict):
        return decode_message(raw, kind, depth + 1)
    return None


def decode_message(data: bytes, schema: Schema, depth: int = 0) -> dict[str, Any]:
    """One message as its JSON object (fields not in ``schema`` are skipped)."""
    if depth > MAX_DEPTH:
        raise Unsupported("a protobuf body nested too deeply")
    out: dict[str, Any] = {}
    for number, raw in _fields(data):
        if number not in schema:
            continue
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_value(kind[1], raw, depth))
        elif isinstance(kind, tuple) and kind[0] == "map" and isinstance(raw, bytes):
            entry = dict(_fields(raw))
            key, value = entry.get(1, b""), entry.get(2, b"")
            out.setdefault(name, {})[_value("str", key, depth)] = _value(kind[1], value, depth)
        else:
            value = _value(kind, raw, depth)
            if value not in ("", 0, False, None) or isinstance(value, dict):
                out[name] = value  # zero values are absent, as JSON's omitempty leaves them
    return out


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf body (``runtime.Unknown``: typeMeta, raw) as the JSON object it encodes."""
    if not body.startswith(MAGIC):
        raise Unsupported("a protobuf body without the k8s\\0 prefix")
    unknown = dict(_fields(body[len(MAGIC) :]))
    type_meta = unknown.get(1)
    tm = (
        decode_message(type_meta, _strs("apiVersion", "kind"))
        if isinstance(type_meta, bytes)
        else {}
    )
    kind = str(tm.get("kind") or "")
    schema = KINDS.get(kind)
    if schema is None:
        raise Unsupported(
            f"the emulator does not decode protobuf bodies of kind {kind or '(none)'!r}; "
            "send it as JSON (kubectl create -f FILE, or a client with "
            "Content-Type: application/json)"
        )
    raw = unknown.get(2)
    obj = decode_message(raw if isinstance(raw, bytes) else b"", schema)
    return {"apiVersion": tm.get("apiVersion", ""), "kind": kind, **obj}
