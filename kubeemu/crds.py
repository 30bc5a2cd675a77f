"""CustomResourceDefinitions as the real API server serves them: declared to kmock (discovery,
verbs, subresources), each object validated against its version's ``openAPIV3Schema`` (with the
``jsonschema`` package, Draft 4 as OpenAPI v3 is), unknown fields pruned (or, under
``fieldValidation=Strict``, refused), and ``additionalPrinterColumns`` served as a Table
(``kubectl get``).

Not emulated: CEL rules (``x-kubernetes-validations``; Rotor's CRDs have none), defaults,
``x-kubernetes-list-type: map`` key uniqueness, conversion between versions.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kmock
import yaml

from kubeemu import writes
from rotor.crd import all_crds

Obj = dict[str, Any]
MAX_ERRORS = 10


@dataclass(frozen=True)
class Version:
    """One served version of a CRD: its kind, schema and printer columns."""

    kind: str
    group: str
    name: str
    schema: Obj
    columns: tuple[Obj, ...]
    validator: Any  # jsonschema.Draft4Validator

    @classmethod
    def of(cls, kind: str, group: str, version: Mapping[str, Any]) -> Version:
        schema = copy.deepcopy((version.get("schema") or {}).get("openAPIV3Schema") or {})
        validator = jsonschema.Draft4Validator(_as_json_schema(schema))
        columns = tuple(version.get("additionalPrinterColumns") or ())
        return cls(kind, group, str(version.get("name") or ""), schema, columns, validator)


def _as_json_schema(schema: Any) -> Any:
    """OpenAPI v3 -> JSON Schema: ``x-kubernetes-list-type: set`` items are unique."""
    if isinstance(schema, list):
        return [_as_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _as_json_schema(v) for k, v in schema.items()}
    if schema.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def crd_documents(directory: Path | None = None) -> list[Obj]:
    """Rotor's CRDs: from ``directory``'s YAML files, or (default) from :mod:`rotor.crd`, the
    source the shipped manifests are generated from."""
    if directory is None:
        return [copy.deepcopy(crd) for _, crd in sorted(all_crds().items())]
    docs: list[Obj] = []
    for f in sorted(directory.glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def register_crds(
    k8s: kmock.KubernetesEmulator, crds: Iterable[Mapping[str, Any]]
) -> dict[str, Version]:
    """Declare each CRD's served versions to the emulator (discovery, verbs, subresources);
    returns ``group/version/plural`` -> :class:`Version`."""
    out: dict[str, Version] = {}
    for crd in crds:
        spec = crd["spec"]
        names = spec["names"]
        for version in spec["versions"]:
            if not version.get("served", True):
                continue
            key = f"{spec['group']}/{version['name']}/{names['plural']}"
            k8s.resources[key] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular"),
                namespaced=spec["scope"] == "Namespaced",
                shortnames=set(names.get("shortNames", [])),
                verbs={"get", "list", "watch", "create", "patch", "delete", "update"},
                subresources=set(version.get("subresources") or {}),
            )
            out[key] = Version.of(names["kind"], spec["group"], version)
    return out


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _detail(error: Any) -> str:
    """One schema error as the real server words it (field path, then what is wrong)."""
    where = _path(error.absolute_path) or "<root>"
    value = error.instance
    if error.validator == "enum":
        supported = ", ".join(f'"{v}"' for v in error.validator_value)
        return f'{where}: Unsupported value: "{value}": supported values: {supported}'
    if error.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", error.message)
        field = f"{where}.{missing.group(1)}" if missing else where
        return f"{field.removeprefix('<root>.')}: Required value"
    if error.validator == "type":
        got = type(value).__name__.replace("str", "string").replace("int", "integer")
        must = f"{where} in body must be of type {error.validator_value}"
        return f'{where}: Invalid value: "{got}": {must}: "{got}"'
    if error.validator in ("oneOf", "anyOf"):
        return f'{where}: Invalid value: "object": matches none of the forms the schema allows'
    shown = value if isinstance(value, (int, float, bool)) else f'"{value}"'
    if isinstance(value, (dict, list)):
        shown = '"' + type(value).__name__.replace("dict", "object").replace("list", "array") + '"'
    return f"{where}: Invalid value: {shown}: {error.message}"


def schema_errors(version: Version, obj: Mapping[str, Any]) -> list[str]:
    """Every violation of the version's schema (the body of a 422), at most ``MAX_ERRORS``."""
    errors = sorted(version.validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    alternatives = ("oneOf", "anyOf")
    if any(e.validator not in alternatives for e in errors):  # the precise ones say it better
        errors = [e for e in errors if e.validator not in alternatives]
    return [_detail(e) for e in errors[:MAX_ERRORS]]


def prune(schema: Mapping[str, Any], obj: Any, where: str = "") -> list[str]:
    """Drop the fields the schema does not declare, as the real server prunes them (in place);
    returns their paths. ``metadata`` and ``x-kubernetes-preserve-unknown-fields`` are kept."""
    removed: list[str] = []
    if isinstance(obj, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(obj):
            here = f"{where}.{key}" if where else key
            if props is not None and key in props:
                if here != "metadata":
                    removed += prune(props[key], obj[key], here)
            elif isinstance(extra, dict):
                removed += prune(extra, obj[key], here)
            elif (
                props is not None
                and extra is not True
                and where + key not in ("apiVersion", "kind")
            ):
                del obj[key]
                removed.append(here)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            removed += prune(schema["items"], item, f"{where}[{i}]")
    return removed


def validated(version: Version, target: writes.Target, obj: Obj, *, strict: bool) -> list[str]:
    """A custom resource against its schema, as the API server checks it: unknown fields pruned
    (``strict``, i.e. ``fieldValidation=Strict`` as kubectl sends: a 400 instead), then a 422
    naming every invalid field. Returns the warnings (one per pruned field)."""
    removed = prune(version.schema, obj)
    if removed and strict:
        raise writes.Refused(
            400,
            "BadRequest",
            f'{target.kind} in version "{version.name}" cannot be handled as a '
            f'{target.kind}: strict decoding error: unknown field "{removed[0]}"',
        )
    errors = schema_errors(version, obj)
    if errors:
        detail = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        raise writes.invalid(target, str(obj["metadata"].get("name") or ""), detail)
    return [f'unknown field "{path}"' for path in removed]


# -- printer columns (kubectl get) ---------------------------------------------------------------
_FILTER = re.compile(r"^\[\?\(@\.([\w.]+)\s*==\s*[\"']([^\"']*)[\"']\)\]")
_STEP = re.compile(r"^\.([\w-]+)|^\[(\d+)\]")


def json_path(obj: Any, path: str) -> Any:
    """The value at a printer column's JSONPath: ``.a.b``, ``.a[0]``, ``.a[?(@.k=="v")].b``
    (the forms CRDs use); None where it leads nowhere."""
    rest, node = path.strip(), obj
    while rest and node is not None:
        if m := _FILTER.match(rest):
            key, want = m.groups()
            items = node if isinstance(node, list) else []
            node = next((i for i in items if str(json_path(i, "." + key)) == want), None)
        elif m := _STEP.match(rest):
            name, index = m.groups()
            if name is not None:
                node = node.get(name) if isinstance(node, dict) else None
            else:
                node = (
                    node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
                )
        else:
            return None
        rest = rest[m.end() :]
    return node


def _age(value: Any, now: datetime.datetime) -> str:
    try:
        then = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def table(version: Version, objects: Iterable[Mapping[str, Any]], rv: str) -> Obj:
    """The ``meta.k8s.io/v1`` Table ``kubectl get`` asks for: Name, then the CRD's columns."""
    now = datetime.datetime.now(datetime.UTC)
    columns = version.columns or (
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    )
    defs = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    defs += [
        {
            "name": c["name"],
            "type": "string" if c.get("type") == "date" else c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        cells: list[Any] = [(obj.get("metadata") or {}).get("name", "")]
        for c in columns:
            value = json_path(obj, c.get("jsonPath", ""))
            cells.append(
                _age(value, now) if c.get("type") == "date" and value is not None else value
            )
        meta = {"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata"}
        rows.append({"cells": cells, "object": {**meta, "metadata": obj.get("metadata") or {}}})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    """Whether the ``Accept`` header asks for a ``meta.k8s.io/v1`` Table before plain JSON
    (``kubectl get`` sends ``application/json;as=Table;v=v1;g=meta.k8s.io,...``)."""
    for media in accept.split(","):
        kind, *params = (p.strip() for p in media.split(";"))
        fields = dict(p.partition("=")[::2] for p in params)
        if fields.get("as") == "Table":
            if fields.get("g") == "meta.k8s.io" and fields.get("v") == "v1":
                return True
        elif kind in ("application/json", "*/*"):
            return False
    return False
