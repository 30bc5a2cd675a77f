"""A bounded Candid decoder for the canister's answers: linear in the answer's bytes, with a
step budget, a nesting limit and no value built for what it skips.

Hand-written because ic-py 1.0.1 (the last release, 2022) cannot be bounded: its reader copies
the rest of the buffer at every read (quadratic in the answer's size) and a ``vec null`` of
length 2^62 costs nothing on the wire but loops for ever (24 bytes hung the controller). The
Candid spec ("Deserialisation") lets a decoder refuse what exceeds its limits; the reference
(Rust) decoder counts a decoding quota the same way. Expected types are ic-py's (``Types``), so
candid.py keeps one description of canister/acl.did for encoding and decoding; values come out
as ic-py's would (record: dict, variant: {case: value}, opt: [] or [value], vec: list).
Records follow the subtyping rules: a field the wire adds is skipped, an ``opt``, ``null`` or
``reserved`` field it lacks is read as absent.
"""

from __future__ import annotations

import struct
from typing import Any

from ic.candid import TypeIds
from ic.utils import labelHash

# Candid type opcodes as plain ints (an Enum's .value is slow in the inner loop)
NULL = TypeIds.Null.value
BOOL = TypeIds.Bool.value
NAT = TypeIds.Nat.value
INT = TypeIds.Int.value
NAT8 = TypeIds.Nat8.value
NAT16 = TypeIds.Nat16.value
NAT32 = TypeIds.Nat32.value
NAT64 = TypeIds.Nat64.value
INT8 = TypeIds.Int8.value
INT16 = TypeIds.Int16.value
INT32 = TypeIds.Int32.value
INT64 = TypeIds.Int64.value
FLOAT32 = TypeIds.Float32.value
FLOAT64 = TypeIds.Float64.value
TEXT = TypeIds.Text.value
RESERVED = TypeIds.Reserved.value
EMPTY = TypeIds.Empty.value
OPT = TypeIds.Opt.value
VEC = TypeIds.Vec.value
RECORD = TypeIds.Record.value
VARIANT = TypeIds.Variant.value
FUNC = TypeIds.Func.value
SERVICE = TypeIds.Service.value
PRINCIPAL = TypeIds.Principal.value

MAX_TYPES = 256  # entries of the type table (acl.did needs about ten)
MAX_FIELDS = 64  # fields of one record or variant on the wire
MAX_DEPTH = 64  # values nested in values
STEPS_PER_BYTE = 8  # the step budget: this many values read per byte of the answer, plus
STEPS_FLOOR = 4096  # this many (an empty vec, a null, a record header: one step each)

_FIXED = {  # bytes per value
    BOOL: 1,
    NAT8: 1,
    NAT16: 2,
    NAT32: 4,
    NAT64: 8,
    INT8: 1,
    INT16: 2,
    INT32: 4,
    INT64: 8,
    FLOAT32: 4,
    FLOAT64: 8,
}
_STRUCT = {
    BOOL: "<?",
    NAT8: "<B",
    NAT16: "<H",
    NAT32: "<I",
    NAT64: "<Q",
    INT8: "<b",
    INT16: "<h",
    INT32: "<i",
    INT64: "<q",
    FLOAT32: "<f",
    FLOAT64: "<d",
}
_COMPOUND = {OPT, VEC, RECORD, VARIANT}


class CandidLimit(ValueError):
    """The answer is not Candid, or exceeds a bound; the message says which."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.steps = STEPS_FLOOR + STEPS_PER_BYTE * len(data)

    def take(self, n: int) -> memoryview:
        if n > len(self.data) - self.pos:
            raise CandidLimit("unexpected end of the answer")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def step(self, n: int = 1) -> None:
        self.steps -= n
        if self.steps < 0:
            raise CandidLimit(
                f"it takes more than {STEPS_PER_BYTE} values per byte to read "
                "(e.g. a vec of nulls with a huge length)"
            )

    def leb(self) -> int:
        value = shift = 0
        while True:
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value
            if shift > 70:
                raise CandidLimit("a number longer than 10 bytes")

    def sleb(self) -> int:
        start = self.pos
        value = self.leb()
        bits = 7 * (self.pos - start)
        return value - (1 << bits) if value & (1 << (bits - 1)) else value


class _Decoder:
    def __init__(self, data: bytes) -> None:
        self.r = _Reader(data)
        if bytes(self.r.take(4)) != b"DIDL":
            raise CandidLimit("no DIDL header")
        self.table = [self._entry() for _ in range(self._count(MAX_TYPES, "types"))]
        for entry in self.table:
            for ref in entry[1]:
                self._check_ref(ref)
        self.args = [self._ref() for _ in range(self._count(MAX_TYPES, "values"))]
        self.labels: dict[int, dict[int, tuple[str, Any]]] = {}
        self.ids: dict[int, int] = {}

    def _id(self, want: Any) -> int:
        found = self.ids.get(id(want))
        if found is None:
            found = self.ids[id(want)] = int(want.id)
        return found

    def _fields(self, want: Any) -> dict[int, tuple[str, Any]]:
        """The fields of an expected record or variant by label hash (once per type)."""
        found = self.labels.get(id(want))
        if found is None:
            fields = getattr(want, "_fields", {})
            found = {labelHash(name): (name, typ) for name, typ in fields.items()}
            self.labels[id(want)] = found
        return found

    def _count(self, limit: int, what: str) -> int:
        n = self.r.leb()
        if n > limit:
            raise CandidLimit(f"{n} {what} (at most {limit})")
        return n

    def _ref(self) -> int:
        return self._check_ref(self.r.sleb())

    def _check_ref(self, ref: int) -> int:
        if ref >= len(self.table) or (ref < 0 and ref not in _PRIMITIVES):
            raise CandidLimit(f"type {ref} is not a known Candid type")
        return ref

    def _entry(self) -> tuple[int, list[int], list[int]]:
        """(opcode, referenced types, label hashes) of one type-table entry."""
        op = self.r.sleb()
        if op in (OPT, VEC):
            return op, [self.r.sleb()], []
        if op in (RECORD, VARIANT):
            n = self._count(MAX_FIELDS, "fields")
            pairs = [(self.r.leb(), self.r.sleb()) for _ in range(n)]
            if [h for h, _ in pairs] != sorted({h for h, _ in pairs}):
                raise CandidLimit("record or variant fields not in order")
            return op, [t for _, t in pairs], [h for h, _ in pairs]
        raise CandidLimit(f"type {op} is not expected in an answer (func, service, unknown)")

    def wire(self, ref: int) -> tuple[int, list[int], list[int]]:
        return self.table[ref] if ref >= 0 else (ref, [], [])

    def value(self, want: Any, ref: int, depth: int = 0) -> Any:
        """The value of wire type ``ref`` as ``want`` (an ic-py type; None: skip it)."""
        r = self.r
        r.step()
        if depth > MAX_DEPTH:
            raise CandidLimit(f"values nested deeper than {MAX_DEPTH}")
        op, refs, hashes = self.wire(ref)
        wanted = None if want is None else self._id(want)
        if wanted == RESERVED:
            want = wanted = None
        if wanted is not None and wanted != op:
            raise CandidLimit(f"{want.name} expected, the answer has {_name(op)}")
        if op in _COMPOUND:
            return self._compound(want, op, refs, hashes, depth)
        return self._primitive(want, op)

    def _primitive(self, want: Any, op: int) -> Any:
        r = self.r
        if op in _FIXED:
            raw = r.take(_FIXED[op])
            if op == BOOL and raw[0] > 1:
                raise CandidLimit("a bool that is neither 0 nor 1")
            return None if want is None else struct.unpack(_STRUCT[op], raw)[0]
        if op in (NAT, INT):
            return r.sleb() if op == INT else r.leb()
        if op == TEXT:
            raw = r.take(r.leb())
            try:
                return None if want is None else str(raw, "utf-8")
            except UnicodeDecodeError:
                raise CandidLimit("text that is not UTF-8") from None
        if op == PRINCIPAL:
            if r.take(1)[0] != 1:
                raise CandidLimit("an opaque principal reference")
            return bytes(r.take(r.leb()))
        if op == EMPTY:
            raise CandidLimit("a value of type empty")
        return None  # null, reserved

    def _compound(self, want: Any, op: int, refs: list[int], hashes: list[int], depth: int) -> Any:
        r = self.r
        inner = getattr(want, "_type", None)
        if op == OPT:
            flag = r.take(1)[0]
            if flag > 1:
                raise CandidLimit("an opt flag that is neither 0 nor 1")
            return [self.value(inner, refs[0], depth + 1)] if flag else []
        if op == VEC:
            n = r.leb()
            r.step(n)  # every element costs a step, even one that takes no byte
            if refs[0] == NAT8:  # a blob: bytes, read at once
                raw = r.take(n)
                return None if want is None else bytes(raw)
            return [self.value(inner, refs[0], depth + 1) for _ in range(n)]
        by_hash = dict(self._fields(want))
        if op == VARIANT:
            case = r.leb()
            if case >= len(refs):
                raise CandidLimit(f"variant case {case} of {len(refs)}")
            name, typ = by_hash.get(hashes[case], (None, None))
            if want is not None and name is None:
                raise CandidLimit("a variant case this side does not know")
            got = self.value(typ, refs[case], depth + 1)
            return None if want is None else {name: got}
        out: dict[str, Any] = {}
        for h, ref in zip(hashes, refs, strict=True):
            name, typ = by_hash.pop(h, (None, None))
            got = self.value(typ, ref, depth + 1)
            if name is not None:
                out[name] = got
        for name, typ in by_hash.values():
            out[name] = _absent(name, typ)
        return None if want is None else out


def _name(op: int) -> str:
    return str(TypeIds(op).name).lower()


def _absent(name: str, typ: Any) -> Any:
    if typ.id == OPT:
        return []
    if typ.id in (NULL, RESERVED):
        return None
    raise CandidLimit(f"the field {name} is missing")


_PRIMITIVES = {t.value for t in TypeIds} - _COMPOUND - {FUNC, SERVICE}


def decode_first(data: bytes, want: Any) -> Any:
    """The first value of a Candid message as ``want``; :class:`CandidLimit` on anything else
    or too costly. The work is at most ``STEPS_PER_BYTE`` values per byte of ``data``."""
    d = _Decoder(data)
    if not d.args:
        raise CandidLimit("an empty Candid answer")
    return d.value(want, d.args[0])
