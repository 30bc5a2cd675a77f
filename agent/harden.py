"""Keep the app in the same pod out of the agent's process: :func:`no_dumping`.

With ``rotor.dev/reload: signal:...`` the webhook turns on ``shareProcessNamespace`` so the agent
can signal the app. The app then sees the agent's process, and a process of the same user (the
agent runs as 65532, the "nonroot" user of distroless images, which many apps use too) may open
``/proc/<agent>/root/...``, ``/proc/<agent>/environ`` and ``/proc/<agent>/mem``: the agent's own
service-account token (patch rights on the source Secret) and the values in its memory. When the
pod has ``automountServiceAccountToken: false`` the app would otherwise hold no token at all.

The kernel grants those ``/proc`` entries only to a process that may ptrace the agent; a process
that is not *dumpable* may be ptraced only with ``CAP_SYS_PTRACE``, which containers do not get by
default. So the agent marks itself not dumpable (``prctl(PR_SET_DUMPABLE, 0)``) before it reads
its token. It can still read its own ``/proc/self``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def _prctl() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.prctl
    fn.restype = ctypes.c_int
    return fn


def no_dumping() -> bool:
    """Mark this process not dumpable; True when it is now (False off Linux or on failure,
    which is logged: the agent still runs)."""
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("cannot mark the agent not dumpable (errno %d)", ctypes.get_errno())
        return False
    return bool(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0)
