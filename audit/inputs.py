"""The inputs besides HTTP ingest: Vault's ``socket`` audit device and a ``file`` device's log,
followed."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from audit.entries import parse_line
from audit.receiver import Receiver

log = logging.getLogger("audit.receiver")


class FileTail:
    """Follow a ``file`` audit device's log (Vault writes it; a shared volume when the receiver
    runs as a sidecar of Vault): new lines only, across rotation (a new inode) and truncation.

    Hand-written: a polled stat and read are all it takes, and a library for it would be a
    dependency of its own (watchfiles wakes on changes but still needs this bookkeeping).
    """

    def __init__(self, path: str, max_line: int, from_start: bool = False) -> None:
        self.path = Path(path)
        self.max_line = max_line
        self.inode: int | None = None
        self.pos = 0
        self.buf = b""
        self.from_start = from_start
        self.skipping = False  # inside a line longer than max_line: drop up to its newline
        self.too_long = 0  # lines dropped for their length since the last take_too_long()

    def read_lines(self) -> list[bytes]:
        """The complete lines written since the last call (blocking; run it in a thread). At most
        ``4 * max_line`` bytes are read per call (the rest next call), and a line longer than
        ``max_line``, finished or not, is dropped and counted in ``too_long``, never kept."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self.from_start = True  # when it appears, all of it is news
            return []
        if self.inode is None:  # first look: start at the end, old entries are not news
            self.inode, self.pos = st.st_ino, (0 if self.from_start else st.st_size)
        elif st.st_ino != self.inode or st.st_size < self.pos:  # rotated or truncated
            self.inode, self.pos, self.buf, self.skipping = st.st_ino, 0, b"", False
        if st.st_size <= self.pos:
            return []
        with self.path.open("rb") as f:
            f.seek(self.pos)
            data = f.read(min(st.st_size - self.pos, 4 * self.max_line))
        self.pos += len(data)
        return [line for line in self._split(data) if line.strip()]

    def _split(self, data: bytes) -> list[bytes]:
        """``data`` after what is buffered, cut into lines of at most ``max_line`` bytes."""
        if self.skipping:
            cut = data.find(b"\n")
            if cut < 0:
                return []
            self.skipping, data = False, data[cut + 1 :]
        *lines, tail = (self.buf + data).split(b"\n")
        kept = [line for line in lines if len(line) <= self.max_line]
        self.too_long += len(lines) - len(kept)
        self.buf = tail
        if len(tail) > self.max_line:  # an unfinished giant: drop it up to its newline
            self.buf, self.skipping = b"", True
            self.too_long += 1
        return kept

    def take_too_long(self) -> int:
        """How many lines were dropped for their length since the last call."""
        n, self.too_long = self.too_long, 0
        return n


async def handle_socket(
    receiver: Receiver, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """One connection of Vault's ``socket`` audit device (newline-delimited JSON), from an
    allowed address only."""
    peer = writer.get_extra_info("peername")
    host = str(peer[0]) if peer else ""
    if not receiver.allowed(host):
        receiver.metrics.rejected.labels("socket").inc()
        log.warning("audit socket: refused a connection from %s (not allowed)", host)
        writer.close()
        return
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    receiver.accept(parse_line(exc.partial))
                break
            except asyncio.LimitOverrunError:
                receiver.metrics.entries.labels("too_long").inc()
                log.warning("audit socket: an entry from %s is too long; reconnecting", host)
                break
            if line.strip():
                receiver.accept(parse_line(line))
    except (ConnectionError, asyncio.CancelledError):
        # a handler of asyncio.start_server that ends cancelled (at shutdown) is logged as
        # an error by Python 3.11, and nobody awaits it: end normally instead
        pass
    except Exception as e:  # never leave a handler dead with a traceback nobody reads
        receiver.metrics.input_errors.labels("socket").inc()
        log.warning("audit socket: a connection from %s failed (%s)", host, type(e).__name__)
    finally:
        writer.close()
