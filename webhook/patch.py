"""RFC 6902 JSON Patch operations, built against the object they will be applied to.

The only module that writes JSON pointers. Two rules that are easy to get wrong elsewhere:

* a pointer token escapes ``~`` as ``~0`` and ``/`` as ``~1`` (RFC 6901), so the annotation
  ``rotor.dev/status`` is ``/metadata/annotations/rotor.dev~1status``;
* appending to a list that is absent (or ``null``) must ``add`` the whole list: ``/-`` into a
  missing list is an error in the API server. The same holds for a missing map.

Hand-written rather than built with ``jsonpatch.make_patch`` (a diff of a deep copy): a diff
costs a deep copy and a tree walk per request, and its list diffs may replace items by index,
which is brittle against concurrent admission plug-ins. The tests apply every patch with the
``jsonpatch`` package.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, TypedDict


class Op(TypedDict):
    """One JSON Patch operation. Rotor only ever adds (or replaces a scalar)."""

    op: Literal["add", "replace"]
    path: str
    value: Any


def escape(token: str | int) -> str:
    """One RFC 6901 reference token."""
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """A JSON pointer from unescaped tokens: ``pointer("metadata", "labels", "a/b")``."""
    return "".join("/" + escape(t) for t in tokens)


class Patch:
    """Collects operations; each method looks at the current object to pick the right form."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def set(self, path: str, value: Any) -> None:
        """Set a member (``add`` replaces an existing member, so it also works for updates)."""
        self.ops.append({"op": "add", "path": path, "value": value})

    def extend(self, parent: Mapping[str, Any], key: str, path: str, items: Iterable[Any]) -> None:
        """Append ``items`` to the list ``parent[key]`` at ``path`` (the list's own pointer).

        An absent or ``null`` list is added whole; a present one gets one ``/-`` per item.
        """
        items = list(items)
        if not items:
            return
        if parent.get(key) is None:
            self.ops.append({"op": "add", "path": path, "value": items})
        else:
            end = path + "/-"
            self.ops.extend({"op": "add", "path": end, "value": item} for item in items)

    def put(
        self, parent: Mapping[str, Any], key: str, path: str, entries: Mapping[str, Any]
    ) -> None:
        """Set ``entries`` in the map ``parent[key]`` at ``path``; an absent map is added whole."""
        if not entries:
            return
        if parent.get(key) is None:
            self.ops.append({"op": "add", "path": path, "value": dict(entries)})
        else:
            for k, v in entries.items():
                self.ops.append({"op": "add", "path": path + "/" + escape(k), "value": v})
