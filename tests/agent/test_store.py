"""agent.store.FileStore under a full disk: a write that does not fit leaves the good state."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from agent.store import FileStore
from rotor.layout import SecretState

# The child process lowers its file size limit (RLIMIT_FSIZE) below the size of the new state and
# ignores SIGXFSZ: the kernel then answers the write with a short write and then EFBIG, exactly
# as a disk that fills up mid-write answers with a short write and then ENOSPC.
CHILD = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from agent.store import FileStore
    from rotor.layout import SecretState

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = FileStore(sys.argv[1])
    stored = asyncio.run(store.read())
    big = SecretState(version=2, current={"password": b"n" * 4096}, rotated_at=2.0)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    try:
        asyncio.run(store.write(big, stored.token))
    except OSError as e:
        print("refused:", e.errno)
        sys.exit(0)
    print("written")
    """
)


async def test_a_write_that_does_not_fit_keeps_the_good_state(tmp_path: Path) -> None:
    path = tmp_path / "state" / "db.json"
    store = FileStore(path)
    good = SecretState(version=1, current={"password": b"o" * 16}, rotated_at=1.0)
    token = await store.write(good, "")

    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=60
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("refused:"), child.stdout  # the write failed, and said so

    stored = await store.read()  # the next start reads the last good state
    assert stored.token == token
    assert stored.state.version == 1
    assert stored.state.current == {"password": b"o" * 16}
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    # and a later write (the disk has room again) goes through
    assert await store.write(SecretState(version=2, current={"password": b"n" * 16}), token)
