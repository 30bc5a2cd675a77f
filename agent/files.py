"""Writing a secret's files the kubelet way, so a reader never sees a torn or mixed set.

Layout of one secret's folder (``<dir>/<secret>/``), as the kubelet's ``AtomicWriter`` makes it
for Secret and ConfigMap volumes::

    ..2026_01_31_12_00_00.k3j4h5/     the payload of one write (files with mode 0440 by default)
        password
        password.previous             during the overlap window only
    ..data -> ..2026_01_31_12_00_00.k3j4h5
    password -> ..data/password       the names the app opens
    password.previous -> ..data/password.previous
    .rotor.json -> ..data/.rotor.json  the version's metadata (below)

``.rotor.json`` is written inside the same payload as the values, so it always describes the
files beside it (no race: read it through ``..data`` with the values, as below)::

    {"version": 13, "rotatedAt": "2026-01-31T12:00:00Z", "nextRotation": "2026-02-01T11:02:13Z",
     "previousVersion": 12, "previousExpires": "2026-01-31T13:00:00Z",
     "files": ["password", "password.previous", "username", ...]}

``nextRotation`` is when the writer rotates next (``null``: not scheduled, e.g. suspended);
``previousVersion``/``previousExpires`` are ``null`` outside the overlap. A client that caches
a value re-reads at ``nextRotation`` (or when ``version`` changes); the previous value is
valid until ``previousExpires``. Key names cannot start with a dot, so it never collides with a
key's file.

One :meth:`AtomicWriter.write`:

1. writes every file into a new timestamped folder (a fresh name, never reused);
2. points a temporary symlink ``..data_tmp`` at it and renames it over ``..data``: ``rename(2)``
   is atomic, so ``..data`` names the old payload or the new one, never a mix;
3. creates the visible links ``<name> -> ..data/<name>`` that are missing, and removes the links
   of names the new payload does not have (e.g. ``<file>.previous`` after the overlap);
4. renames the old payload folder to ``..removing.<name>`` and deletes it.

What a reader can rely on: a file opened through a visible name is always complete and never
empty (files are never written in place). To read *several* files of one version: read the link
``..data``, read the files (by their visible names, or from the folder it names), read ``..data``
again, and read again if it changed (a payload folder's name is never reused, and it is removed
only after ``..data`` has moved on). ``tests/agent/test_files.py`` runs such a reader in another
process against thousands of writes and finds no torn, empty or mixed read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from rotor.layout import SecretState, format_time, previous_key
from rotor.settings.agent import DEFAULT_FILE_MODE

DATA = "..data"
DATA_TMP = "..data_tmp"
TRASH = "..removing."
DIR_MODE = 0o755
METADATA = ".rotor.json"
"""The version's metadata file in every payload (see the module docstring)."""


def metadata(state: SecretState, files: list[str], next_rotation: float | None) -> bytes:
    """The bytes of ``.rotor.json`` for ``state`` (no value, only names, versions, times)."""

    def t(ts: float | None) -> str | None:
        return format_time(ts) if ts is not None else None

    previous = bool(state.previous)
    doc = {
        "version": state.version,
        "rotatedAt": t(state.rotated_at),
        "nextRotation": t(next_rotation),
        "previousVersion": state.version - 1 if previous else None,
        "previousExpires": t(state.previous_expires) if previous else None,
        "files": sorted(f for f in files if f != METADATA),
    }
    return (json.dumps(doc, sort_keys=True) + "\n").encode()


def value_files(files: Mapping[str, bytes]) -> list[str]:
    """The names of the value files (not the metadata file), sorted: what a reload names."""
    return sorted(f for f in files if f != METADATA)


def files_for(state: SecretState, next_rotation: float | None = None) -> dict[str, bytes]:
    """What the app sees: current values, ``<file>.previous`` during the overlap, and the
    metadata file ``.rotor.json`` (``next_rotation``: when the writer rotates next)."""
    out = dict(state.current)
    out.update({previous_key(name): value for name, value in state.previous.items()})
    out[METADATA] = metadata(state, list(out), next_rotation)
    return out


def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith("..") or name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a file name in a secret folder")


class AtomicWriter:
    """Writes the files of one secret under ``target`` (created if absent)."""

    def __init__(self, target: Path, mode: int = DEFAULT_FILE_MODE) -> None:
        self.target = Path(target)
        self.mode = mode

    def _payload_dirs(self) -> list[str]:
        try:
            entries = os.listdir(self.target)
        except FileNotFoundError:
            return []
        return [e for e in entries if e.startswith("..") and e not in (DATA, DATA_TMP)]

    def current_payload(self) -> str | None:
        try:
            return os.readlink(self.target / DATA)
        except (FileNotFoundError, OSError):
            return None

    def write(self, files: Mapping[str, bytes]) -> None:
        for name in files:
            _check_name(name)
        self.target.mkdir(parents=True, exist_ok=True)
        old = self.current_payload()
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        payload = Path(tempfile.mkdtemp(prefix=f"..{stamp}.", dir=self.target))
        try:
            payload.chmod(DIR_MODE)
            for name, value in files.items():
                # O_EXCL on a fresh folder: nothing to follow or overwrite.
                fd = os.open(payload / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, self.mode)
                try:
                    os.fchmod(fd, self.mode)  # umask may have narrowed the mode given to open
                    view = memoryview(value)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)
            tmp_link = self.target / DATA_TMP
            if tmp_link.is_symlink() or tmp_link.exists():
                tmp_link.unlink()
            os.symlink(payload.name, tmp_link)
            os.rename(tmp_link, self.target / DATA)
        except BaseException:
            shutil.rmtree(payload, ignore_errors=True)
            raise
        for name in files:
            link = self.target / name
            if not link.is_symlink() or os.readlink(link) != f"{DATA}/{name}":
                if link.exists() or link.is_symlink():  # someone else's file or link: replace
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.target / (name + ".tmp-link"))
                    os.symlink(f"{DATA}/{name}", self.target / (name + ".tmp-link"))
                    os.rename(self.target / (name + ".tmp-link"), link)
                else:
                    os.symlink(f"{DATA}/{name}", link)
        for entry in os.listdir(self.target):
            if entry.startswith(".."):
                continue
            path = self.target / entry
            if entry not in files and path.is_symlink() and os.readlink(path).startswith(DATA):
                path.unlink()
        for stale in self._payload_dirs():
            if stale != payload.name and (stale == old or stale.startswith(("..2", TRASH))):
                self._discard(stale)

    def _discard(self, payload: str) -> None:
        # Rename first, then delete: a reader that resolved ``..data`` to this folder gets
        # FileNotFoundError (and resolves again) instead of a half-deleted listing.
        trash = payload if payload.startswith(TRASH) else TRASH + payload.removeprefix("..")
        try:
            os.rename(self.target / payload, self.target / trash)
        except FileNotFoundError:
            return
        shutil.rmtree(self.target / trash, ignore_errors=True)

    def read(self) -> dict[str, bytes]:
        """The files of the current payload (one version), ``{}`` when nothing is written."""
        payload = self.current_payload()
        if payload is None:
            return {}
        folder = self.target / payload
        return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))}

    def remove(self) -> None:
        """Remove every file, link and payload folder (the folder itself stays)."""
        if not self.target.exists():
            return
        for entry in os.listdir(self.target):
            path = self.target / entry
            if path.is_symlink():
                path.unlink()
        for stale in self._payload_dirs():
            self._discard(stale)
