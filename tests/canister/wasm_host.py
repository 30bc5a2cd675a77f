"""The compiled ACL canister (canister/build/acl.wasm) run on wasmtime, with a host for the part
of the IC system API (``ic0``, interface specification "Canister interface (System API)") that
the Motoko build imports.

What the host gives: the message's argument and caller, replies and rejections, traps (a trapped
update leaves no change: the state is rebuilt from the updates that succeeded, as the IC discards
a trapped message's changes), ``certified_data_set`` and, in a query, ``data_certificate_*`` (the
certificate the server signs over that data), ``time``, stable memory, ``debug_print``,
``canister_self_*``. Inter-canister calls, cycles and timers are imported by the Motoko runtime
but never used by this canister: they trap with a message naming the function.

Not like a replica: one message at a time, queries may leave heap changes (the IC discards
them), and instructions are not counted (``performance_counter`` is 0).
"""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wasmtime

CANISTER = Path(__file__).resolve().parents[2] / "canister"
BUILD = CANISTER / "build"
EMPTY_ARGS = b"DIDL\x00\x00"  # Candid "()"
PAGE = 65536


class CanisterTrap(Exception):
    """The canister trapped (reject code 5, CANISTER_ERROR)."""


class CanisterReject(Exception):
    """The canister rejected the message itself (msg_reject: code 4, CANISTER_REJECT)."""


def source_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((CANISTER / "src").rglob("*.mo")):
        h.update(path.relative_to(CANISTER).as_posix().encode() + b"\0" + path.read_bytes())
    h.update((CANISTER / "package-lock.json").read_bytes())
    return h.hexdigest()


def compiled_wasm(node: str = "node") -> Path:
    """canister/build/acl.wasm, built with the pinned compiler (canister/scripts/moc.mjs) when
    the sources changed since the last build (the digest is kept beside it)."""
    wasm, stamp = BUILD / "acl.wasm", BUILD / "acl.wasm.sources"
    digest = source_digest()
    outputs = [wasm, BUILD / "acl.did", BUILD / "acl.most"]
    if all(p.is_file() for p in outputs) and stamp.is_file() and stamp.read_text() == digest:
        return wasm
    result = subprocess.run(
        [node, str(CANISTER / "scripts" / "moc.mjs"), "build", str(BUILD)],
        cwd=CANISTER,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"moc build failed: {result.stderr}")
    stamp.write_text(digest)
    return wasm


_MODULES: dict[tuple[str, str], tuple[wasmtime.Engine, wasmtime.Module]] = {}


def _compiled(wasm: Path) -> tuple[wasmtime.Engine, wasmtime.Module]:
    """Compiled once per process (about 2 s); an instance of it takes milliseconds."""
    key = (str(wasm), hashlib.sha256(wasm.read_bytes()).hexdigest())
    if key not in _MODULES:
        engine = wasmtime.Engine()
        _MODULES[key] = (engine, wasmtime.Module.from_file(engine, str(wasm)))
    return _MODULES[key]


def wasm_or_skip() -> Path:
    """The compiled canister for a test: skipped without node or the npm compiler (a failure
    in CI, which installs both through `make setup-dev`)."""
    import shutil

    import pytest

    from tests.conftest import IN_CI

    node = shutil.which("node")
    if node is None or not (CANISTER / "node_modules" / "motoko").is_dir():
        message = "the Motoko compiler is not installed (npm ci --prefix canister)"
        if IN_CI:
            pytest.fail(message + "; CI installs it through `make setup-dev`")
        pytest.skip(message)
    return compiled_wasm(node)


@dataclass
class _Message:
    kind: str  # "init", "update", "query"
    arg: bytes
    caller: bytes
    certificate: bytes | None = None
    reply: bytearray = field(default_factory=bytearray)
    replied: bool = False
    rejected: str | None = None


class WasmCanister:
    """One canister: an instance of the compiled wasm and its ic0 host."""

    def __init__(self, wasm: Path, canister_id: bytes, installer: bytes) -> None:
        self.canister_id = canister_id
        self.installer = installer
        self.engine, self.module = _compiled(wasm)
        self.log: list[tuple[str, bytes, bytes]] = []  # updates that succeeded, for a rollback
        self.printed: list[str] = []
        self._install()

    # -- lifecycle -------------------------------------------------------------------------------
    def _install(self) -> None:
        self.store = wasmtime.Store(self.engine)
        self.stable = bytearray()
        self.certified_data = b""
        self._msg: _Message | None = None
        linker = wasmtime.Linker(self.engine)
        for imp in self.module.imports:
            if imp.module != "ic0" or not isinstance(imp.type, wasmtime.FuncType):
                raise RuntimeError(f"the canister imports {imp.module}.{imp.name}: not provided")
            impl = getattr(self, f"_ic0_{imp.name}", None)
            linker.define_func("ic0", imp.name, imp.type, impl or self._missing(imp.name), True)
        self.instance = linker.instantiate(self.store, self.module)
        mem = self.instance.exports(self.store)["mem"]
        assert isinstance(mem, wasmtime.Memory)
        self.memory = mem
        self._run("canister_init", _Message("init", EMPTY_ARGS, self.installer))

    def _missing(self, name: str) -> Callable[..., Any]:
        def trap(caller: Any, *args: Any) -> Any:
            raise CanisterTrap(f"ic0.{name} is not provided by this host")

        return trap

    def _run(self, export: str, msg: _Message) -> _Message:
        func = self.instance.exports(self.store).get(export)
        if not isinstance(func, wasmtime.Func):
            raise CanisterReject(f"the canister has no {export}")
        self._msg = msg
        try:
            func(self.store)
        except wasmtime.Trap as e:
            raise CanisterTrap(str(e).splitlines()[0]) from None
        except wasmtime.WasmtimeError as e:  # a host function raised (e.g. CanisterTrap)
            cause = e.__cause__ or e.__context__
            if isinstance(cause, CanisterTrap):
                raise cause from None
            raise CanisterTrap(str(e).splitlines()[0]) from None
        finally:
            self._msg = None
        if msg.rejected is not None:
            raise CanisterReject(msg.rejected)
        if msg.kind != "init" and not msg.replied:
            raise CanisterTrap(f"{export} did not reply")
        return msg

    def has(self, export: str) -> bool:
        return isinstance(self.instance.exports(self.store).get(export), wasmtime.Func)

    def update(self, method: str, caller: bytes, arg: bytes) -> bytes:
        try:
            msg = self._run(f"canister_update {method}", _Message("update", arg, caller))
        except CanisterTrap:
            self._rollback()
            raise
        self.log.append((method, caller, arg))
        return bytes(msg.reply)

    def query(self, method: str, caller: bytes, arg: bytes, certificate: bytes | None) -> bytes:
        """A query runs on a copy of the state, as on the IC: its changes (the Motoko runtime's
        own among them) are discarded by restoring the memory afterwards."""
        msg = _Message("query", arg, caller, certificate=certificate)
        saved = self._read(0, self.memory.data_len(self.store))
        try:
            return bytes(self._run(f"canister_query {method}", msg).reply)
        finally:
            grown = self.memory.data_len(self.store) - len(saved)
            self._write(0, saved + bytes(grown))

    def _rollback(self) -> None:
        """The IC discards a trapped message's changes: rebuild from the updates that
        succeeded (the canister is deterministic; only ``time`` differs)."""
        log = list(self.log)
        self._install()
        for method, caller, arg in log:
            self._run(f"canister_update {method}", _Message("update", arg, caller))

    # -- memory ----------------------------------------------------------------------------------
    def _read(self, src: int, size: int) -> bytes:
        return bytes(self.memory.read(self.store, src, src + size))

    def _write(self, dst: int, data: bytes) -> None:
        self.memory.write(self.store, data, dst)

    def _now(self) -> _Message:
        if self._msg is None:
            raise CanisterTrap("no message in progress")
        return self._msg

    # -- ic0 (the names and signatures of the interface specification) ----------------------------
    def _ic0_msg_arg_data_size(self, caller: Any) -> int:
        return len(self._now().arg)

    def _ic0_msg_arg_data_copy(self, caller: Any, dst: int, offset: int, size: int) -> None:
        self._write(dst, self._slice(self._now().arg, offset, size, "msg_arg_data_copy"))

    def _ic0_msg_caller_size(self, caller: Any) -> int:
        return len(self._now().caller)

    def _ic0_msg_caller_copy(self, caller: Any, dst: int, offset: int, size: int) -> None:
        self._write(dst, self._slice(self._now().caller, offset, size, "msg_caller_copy"))

    def _ic0_msg_reply_data_append(self, caller: Any, src: int, size: int) -> None:
        msg = self._now()
        if msg.replied or msg.kind == "init":
            raise CanisterTrap("msg_reply_data_append: no reply is expected")
        msg.reply += self._read(src, size)

    def _ic0_msg_reply(self, caller: Any) -> None:
        msg = self._now()
        if msg.replied or msg.rejected is not None or msg.kind == "init":
            raise CanisterTrap("msg_reply: already replied")
        msg.replied = True

    def _ic0_msg_reject(self, caller: Any, src: int, size: int) -> None:
        msg = self._now()
        if msg.replied or msg.rejected is not None:
            raise CanisterTrap("msg_reject: already replied")
        msg.rejected = self._read(src, size).decode("utf-8", "replace")

    def _ic0_canister_self_size(self, caller: Any) -> int:
        return len(self.canister_id)

    def _ic0_canister_self_copy(self, caller: Any, dst: int, offset: int, size: int) -> None:
        self._write(dst, self._slice(self.canister_id, offset, size, "canister_self_copy"))

    def _ic0_canister_status(self, caller: Any) -> int:
        return 1  # running

    def _ic0_is_controller(self, caller: Any, src: int, size: int) -> int:
        return int(self._read(src, size) == self.installer)

    def _ic0_certified_data_set(self, caller: Any, src: int, size: int) -> None:
        if self._now().kind == "query":
            raise CanisterTrap("certified_data_set: not in a query")
        if size > 32:
            raise CanisterTrap("certified_data_set: more than 32 bytes")
        self.certified_data = self._read(src, size)

    def _ic0_data_certificate_present(self, caller: Any) -> int:
        return int(self._now().certificate is not None)

    def _ic0_data_certificate_size(self, caller: Any) -> int:
        cert = self._now().certificate
        if cert is None:
            raise CanisterTrap("data_certificate_size: no certificate")
        return len(cert)

    def _ic0_data_certificate_copy(self, caller: Any, dst: int, offset: int, size: int) -> None:
        cert = self._now().certificate
        if cert is None:
            raise CanisterTrap("data_certificate_copy: no certificate")
        self._write(dst, self._slice(cert, offset, size, "data_certificate_copy"))

    def _ic0_time(self, caller: Any) -> int:
        return time.time_ns()

    def _ic0_performance_counter(self, caller: Any, kind: int) -> int:
        return 0

    def _ic0_global_timer_set(self, caller: Any, timestamp: int) -> int:
        return 0  # no timer was set; this host never fires one

    def _ic0_debug_print(self, caller: Any, src: int, size: int) -> None:
        self.printed.append(self._read(src, size).decode("utf-8", "replace"))

    def _ic0_trap(self, caller: Any, src: int, size: int) -> None:
        raise CanisterTrap(self._read(src, size).decode("utf-8", "replace"))

    def _ic0_stable64_size(self, caller: Any) -> int:
        return len(self.stable) // PAGE

    def _ic0_stable64_grow(self, caller: Any, pages: int) -> int:
        before = len(self.stable) // PAGE
        self.stable.extend(bytes(pages * PAGE))
        return before

    def _ic0_stable64_read(self, caller: Any, dst: int, offset: int, size: int) -> None:
        self._write(dst, self._slice(bytes(self.stable), offset, size, "stable64_read"))

    def _ic0_stable64_write(self, caller: Any, offset: int, src: int, size: int) -> None:
        if offset + size > len(self.stable):
            raise CanisterTrap("stable64_write: out of bounds")
        self.stable[offset : offset + size] = self._read(src, size)

    @staticmethod
    def _slice(data: bytes, offset: int, size: int, what: str) -> bytes:
        if offset + size > len(data):
            raise CanisterTrap(f"{what}: out of bounds")
        return data[offset : offset + size]
