"""The JSON-patch helper (pointer escaping, absent vs present lists and maps) and the JSON codec."""

from __future__ import annotations

import jsonpatch
import pytest

from webhook import _json
from webhook.patch import Patch, escape, pointer


@pytest.mark.parametrize(
    ("token", "escaped"),
    [("rotor.dev/status", "rotor.dev~1status"), ("a~b", "a~0b"), ("~/", "~0~1"), (3, "3")],
)
def test_pointer_tokens_are_escaped(token, escaped):
    assert escape(token) == escaped


def test_escaped_pointers_address_the_right_keys():
    doc = {"metadata": {"labels": {"x": "1"}}}
    p = Patch()
    p.put(doc["metadata"], "labels", pointer("metadata", "labels"), {"a/b": "1", "c~d": "2"})
    assert jsonpatch.apply_patch(doc, p.ops)["metadata"]["labels"] == {
        "x": "1",
        "a/b": "1",
        "c~d": "2",
    }


@pytest.mark.parametrize("present", [None, [], ["old"]])
def test_extend_adds_a_missing_list_whole_and_appends_to_a_present_one(present):
    doc: dict = {} if present is None else {"items": list(present)}
    p = Patch()
    p.extend(doc, "items", "/items", ["a", "b"])
    if present is None:
        assert p.ops == [{"op": "add", "path": "/items", "value": ["a", "b"]}]
    else:
        assert [o["path"] for o in p.ops] == ["/items/-", "/items/-"]
    assert jsonpatch.apply_patch(doc, p.ops)["items"] == [*(present or []), "a", "b"]


def test_null_list_and_map_are_replaced_whole():
    doc = {"items": None, "labels": None}
    p = Patch()
    p.extend(doc, "items", "/items", [1])
    p.put(doc, "labels", "/labels", {"k": "v"})
    assert jsonpatch.apply_patch(doc, p.ops) == {"items": [1], "labels": {"k": "v"}}


def test_nothing_to_add_adds_no_operation():
    p = Patch()
    p.extend({}, "items", "/items", [])
    p.put({}, "labels", "/labels", {})
    assert p.ops == []


@pytest.mark.parametrize("fast", [True, False])
def test_json_codec_with_and_without_orjson(monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(_json, "orjson", None)
    assert _json.loads(_json.dumps({"a": ["é", 1, None]})) == {"a": ["é", 1, None]}
    for broken in (b"{", b"\xff"):
        with pytest.raises(ValueError):  # noqa: PT011 - the codec promises only ValueError
            _json.loads(broken)
