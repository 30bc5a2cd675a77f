"""The one builder of Kubernetes API paths (for the agent's, controller's and harness's clients).

``api`` is an object's ``apiVersion``: ``v1`` for the core group (``/api/v1``), ``group/version``
for the others (``/apis/group/version``). Namespaces and names are percent-quoted, so a name can
never add a path segment.
"""

from __future__ import annotations

from urllib.parse import quote

from rotor import API


def api_path(
    api: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    """``/api/v1/namespaces/ns/secrets/x`` or ``/apis/group/v/...``; ``sub`` a subresource."""
    parts = [f"/apis/{api}" if "/" in api else f"/api/{api}"]
    if namespace:
        parts.append(f"namespaces/{quote(namespace, safe='')}")
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if sub:
        parts.append(sub)
    return "/".join(parts)


def secret_path(namespace: str, name: str | None = None) -> str:
    """A Secret (or, without ``name``, the namespace's Secrets)."""
    return api_path("v1", "secrets", namespace, name)


def rotor_path(plural: str, namespace: str, name: str | None = None) -> str:
    """One of Rotor's own resources (``rotatingsecrets``, ``externalstores``)."""
    return api_path(API, plural, namespace, name)
