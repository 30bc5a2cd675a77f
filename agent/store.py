"""Where the rotation engine keeps a secret's state: a small store protocol and its local-file form.

The engine (:mod:`agent.engine`) never reads or writes state any other way than through a
:class:`SecretStore`, one per secret:

* :meth:`SecretStore.read` returns a :class:`Stored`: the decoded :class:`~rotor.layout.SecretState`
  and an opaque *token* that names the stored revision (``""`` when nothing is stored yet);
* :meth:`SecretStore.write` stores a new state *only if* the stored revision is still the token
  the caller read (compare-and-swap), and returns the new token. When someone else wrote in
  between it raises :class:`rotor.errors.ConflictError`; the caller re-reads and decides again,
  it never overwrites. A token of ``""`` means "create; nothing may exist yet".

Every write goes through the pure transitions of :mod:`rotor.protocol` (``prepare``, ``commit``,
``abort``, ``expire_previous``), so the same engine drives any store that keeps these semantics.

Implementations:

* :class:`FileStore` (standalone mode): one JSON file per secret, holding the same encoding as the
  source Secret (``data``: base64 values with ``.previous``/``.pending`` suffixes; ``annotations``:
  ``rotor.dev/version``, ``rotor.dev/phase``, ...) and a revision counter as the token. The file is
  mode 0600 in a 0700 folder, replaced atomically (write a temporary file, fsync, ``rename``), and
  the compare-and-swap is serialised across processes with ``flock`` on a lock file beside it.
* In-cluster (:class:`agent.kubestore.KubeSecretStore`): the source Secret, with
  ``metadata.resourceVersion`` as the token and a merge patch carrying it as the precondition
  (409 -> ``ConflictError``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from rotor.errors import ConflictError, InvalidSpec
from rotor.layout import SecretState

STATE_MODE = 0o600
STATE_DIR_MODE = 0o700
FORMAT = "rotor.dev/agent-state/v1"


def _write_file(path: Path, data: bytes) -> None:
    """Write all of ``data`` to a new file and fsync it; a short write (the disk filled up) is
    continued, and one that writes nothing raises ``OSError(ENOSPC)``: never a truncated file."""
    # A leftover (or planted) file of this name goes first; O_EXCL | O_NOFOLLOW then creates a
    # new file and never follows a symlink someone put in its place.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, STATE_MODE)
    try:
        os.fchmod(fd, STATE_MODE)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Stored:
    """A state as read, with the token that a compare-and-swap write must present."""

    state: SecretState
    token: str = ""


@runtime_checkable
class SecretStore(Protocol):
    """The state of one secret, read and written with compare-and-swap."""

    async def read(self) -> Stored:
        """The stored state and its token; ``Stored(SecretState(), "")`` when none is stored."""
        ...

    async def write(self, state: SecretState, token: str) -> str:
        """Store ``state`` if the stored token is still ``token``; return the new token.

        Raises :class:`rotor.errors.ConflictError` when the stored token differs.
        """
        ...


class FileStore:
    """A secret's state in a local JSON file (standalone mode)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def _load(self) -> tuple[SecretState, int]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return SecretState(), 0
        fix = f"remove {self.path} to start over (the secret then gets a new value)"
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise ValueError
            revision = int(doc["revision"])
            state = SecretState.from_secret(doc.get("data"), doc.get("annotations"))
        except InvalidSpec as e:
            raise InvalidSpec(f"{self.path}: {e.field}", e.problem, fix) from None
        except (ValueError, KeyError, TypeError):
            raise InvalidSpec(str(self.path), "is not a Rotor agent state file", fix) from None
        return state, revision

    def _lock(self) -> int:
        self.path.parent.mkdir(mode=STATE_DIR_MODE, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, STATE_MODE)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    async def read(self) -> Stored:
        state, revision = self._load()
        return Stored(state, str(revision) if revision else "")

    async def write(self, state: SecretState, token: str) -> str:
        fd = self._lock()
        try:
            _, revision = self._load()
            current = str(revision) if revision else ""
            if token != current:
                raise ConflictError(
                    f"{self.path}: state moved on (revision {current or 'none'}, not {token!r})"
                )
            doc: dict[str, Any] = {
                "format": FORMAT,
                "revision": revision + 1,
                "annotations": state.annotations(),
                "data": state.secret_data(),
            }
            tmp = self.path.with_name(self.path.name + ".tmp")
            try:
                _write_file(tmp, json.dumps(doc, indent=1, sort_keys=True).encode())
            except OSError:
                # disk full, quota, file size limit: the good file stays, the partial one goes
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            os.replace(tmp, self.path)
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            return str(revision + 1)
        finally:
            os.close(fd)  # closing releases the flock
