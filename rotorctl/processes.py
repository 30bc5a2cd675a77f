"""The harness's processes: a child in its own process group logging to a file, stopped as a
whole; waits on a condition with a deadline."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

T = TypeVar("T")

STOP_TIMEOUT = 10.0
START_TIMEOUT = 60.0


class Started:
    """A context manager over ``start()`` and ``stop()`` (the harness, the control plane, the
    node): ``stop()`` also runs when ``start()`` fails half way, so nothing is left running."""

    def start(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class HarnessError(RuntimeError):
    """Something the harness started did not come up (the message says what and where)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int, field: str) -> float:
    """A ``kB`` field of ``/proc/PID/status`` (``VmRSS``, ``VmHWM``), in MiB; 0.0 if absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


class Cancelled(HarnessError):
    """The wait was cancelled (Ctrl-C or SIGTERM while starting)."""


def wait_for(
    check: Callable[[], T | None],
    what: str,
    timeout: float = START_TIMEOUT,
    cancel: threading.Event | None = None,
) -> T:
    """Poll ``check`` (every 50 ms) until it returns something truthy; fail after ``timeout``,
    or at once when ``cancel`` is set."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"stopped while waiting for {what}")
        if time.monotonic() > end:
            raise HarnessError(f"not reached within {timeout:.0f}s: {what}")
        time.sleep(0.05)


# -- processes ----------------------------------------------------------------------------------
@dataclass
class Proc:
    """A child process in its own process group, logging to a file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stopped as a whole
            )
        return self

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.running and self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM the group, wait, then SIGKILL it: nothing is left behind."""
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.popen.wait(timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)  # stray grandchildren

    def kill(self) -> None:
        """SIGKILL, as a node or an OOM kill would: no clean-up runs."""
        if self.popen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(STOP_TIMEOUT)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _script(name: str) -> str:
    """A console script of this installation (next to this Python first)."""
    return find_script(name) or name


def find_script(name: str) -> str | None:
    """A command next to this Python (the virtual environment's ``bin/``, on PATH or not), else
    on PATH; None when neither has it."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)
