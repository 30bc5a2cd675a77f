"""The ``rotor.dev/*`` annotations on a pod template: one constant and one typed reading each.

:func:`parse_pod` turns a pod's annotations into a :class:`PodRequest` or raises
:class:`~rotor.errors.AnnotationError` naming the annotation and the fix. It is the only reader of
these annotations; the webhook and the controller both call it.
"""

from __future__ import annotations

import posixpath
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from rotor import PREFIX
from rotor.errors import AnnotationError, InvalidSpec
from rotor.names import SecretRef, check_name, loopback_url_problem

RW = PREFIX + "rw"
"""Comma list of RotatingSecret names in the pod's namespace that this workload writes."""
RO = PREFIX + "ro"
"""Comma list of ``name`` or ``namespace/name`` that this workload reads."""
MOUNT_PATH = PREFIX + "mount-path"
"""Where the files appear in app containers."""
DELIVERY = PREFIX + "delivery"
"""RO only: ``agent`` (default), ``volume`` or ``env``."""
RELOAD = PREFIX + "reload"
"""``none`` (default), ``signal:HUP`` or ``http://127.0.0.1:PORT/PATH``."""
APPLY_HOOK = PREFIX + "apply-hook"
"""RW only: ``http://127.0.0.1:PORT/PATH``; the agent POSTs the pending value, commits on 2xx."""
WAIT = PREFIX + "wait"
"""``true`` (default): app containers start after every file exists."""
INJECT = PREFIX + "inject"
"""``false`` opts a pod out."""
STATUS = PREFIX + "status"
"""Set to ``injected`` by the webhook; a pod that has it is never patched twice."""
ROTATE_NOW = PREFIX + "rotate-now"
"""On a RotatingSecret: any new value asks for one rotation now."""
INJECTED_LABEL = PREFIX + "injected"
"""Label the webhook puts on injected pods (value ``"true"``), for one PodMonitor."""

STATUS_INJECTED = "injected"
DEFAULT_MOUNT_PATH = "/var/run/secrets/rotor"
Delivery = Literal["agent", "volume", "env"]
DELIVERIES: tuple[Delivery, ...] = ("agent", "volume", "env")
RELOAD_SIGNALS = ("HUP", "USR1", "USR2", "TERM", "INT", "QUIT")
REQUEST_ANNOTATIONS = (RW, RO)
ALL = (RW, RO, MOUNT_PATH, DELIVERY, RELOAD, APPLY_HOOK, WAIT, INJECT, STATUS)

MAX_VALUE_LENGTH = 20 * 1024
"""The longest value of any ``rotor.dev/*`` annotation: 64 references of the longest kind
(``namespace/name``, 63 + 1 + 253 characters) with room to spare. A tenant writes these; longer
values are refused before they are split, so parsing costs at most a few hundred microseconds."""
MAX_SECRETS = 64
"""The most secrets one pod may ask for (``rotor.dev/rw`` and ``rotor.dev/ro`` together)."""

_MOUNT_RE = re.compile(r"/[A-Za-z0-9._/-]*")
SYSTEM_TREES = (
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/boot",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/etc/pam.d",
    "/etc/sudoers.d",
    "/etc/ld.so.conf.d",
    "/etc/passwd",
    "/etc/group",
    "/etc/shadow",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/var/run/secrets/kubernetes.io",
    "/run/secrets/kubernetes.io",
)
"""Folders a mount may not be at or under: the system's programs, libraries, CA bundle and
accounts, the kernel's file systems, the files the kubelet manages, and the service-account token
folder (``/var/run`` is a link to ``/run`` in most images, so both spellings)."""
SYSTEM_FOLDERS = (
    "/etc",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/tmp",  # noqa: S108 - a folder refused, not used
    "/tmp",  # noqa: S108 - a folder refused, not used
    "/home",
    "/root",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
)
"""Folders a mount may not be *at* (it would hide everything in them), though an ordinary
sub-folder such as ``/etc/rotor`` or ``/srv/app`` is fine."""


@dataclass(frozen=True)
class Reload:
    """How the app learns of a new value."""

    kind: Literal["none", "signal", "http"] = "none"
    signal: str = ""  # e.g. "HUP"
    url: str = ""

    def __str__(self) -> str:
        return {"none": "none", "signal": f"signal:{self.signal}", "http": self.url}[self.kind]

    @property
    def signum(self) -> int:
        return int(getattr(signal, "SIG" + self.signal))


@dataclass(frozen=True)
class PodRequest:
    """What a pod asks of Rotor, read from its annotations."""

    namespace: str
    rw: tuple[SecretRef, ...] = ()
    ro: tuple[SecretRef, ...] = ()
    mount_path: str = DEFAULT_MOUNT_PATH
    delivery: Delivery = "agent"
    reload: Reload = Reload()
    apply_hook: str = ""
    wait: bool = True

    @property
    def mode(self) -> Literal["rw", "ro"]:
        """The agent's mode: ``rw`` when the pod writes anything (it then reads its RO too)."""
        return "rw" if self.rw else "ro"

    @property
    def secrets(self) -> tuple[SecretRef, ...]:
        return self.rw + tuple(r for r in self.ro if r not in self.rw)


def _loopback_url(value: str, annotation: str, what: str) -> str:
    problem = loopback_url_problem(value)
    if problem is not None:
        fix = f"write {what} as http://127.0.0.1:PORT/PATH (the app in the same pod)"
        raise AnnotationError(annotation, problem, fix)
    return value


def parse_reload(value: str, annotation: str = RELOAD) -> Reload:
    value = value.strip()
    if value in ("", "none"):
        return Reload()
    if value.startswith("signal:"):
        sig = value.partition(":")[2].upper().removeprefix("SIG")
        if sig not in RELOAD_SIGNALS:
            raise AnnotationError(
                annotation,
                f"{value!r} names an unsupported signal",
                f"use signal:{'|'.join(RELOAD_SIGNALS)}",
            )
        return Reload("signal", signal=sig)
    if value.startswith("http"):
        return Reload("http", url=_loopback_url(value, annotation, "the reload URL"))
    raise AnnotationError(
        annotation,
        f"{value!r} is not a reload method",
        "use none, signal:HUP or http://127.0.0.1:PORT/PATH",
    )


def _bool(value: str, annotation: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "yes", "1"):
        return True
    if v in ("false", "no", "0"):
        return False
    raise AnnotationError(annotation, f"{value!r} is not a boolean", "use true or false")


def _refs(
    value: str, annotation: str, namespace: str, allow_namespace: bool
) -> tuple[SecretRef, ...]:
    if len(value) > MAX_VALUE_LENGTH:
        raise AnnotationError(
            annotation,
            f"is {len(value)} characters long, more than {MAX_VALUE_LENGTH}",
            f"list at most {MAX_SECRETS} secrets per pod",
        )
    out: dict[SecretRef, None] = {}  # insertion-ordered set: O(1) de-duplication
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "/" in item and not allow_namespace:
            raise AnnotationError(
                annotation,
                f"{item!r} names another namespace",
                "a workload writes only secrets of its own namespace: give the name alone",
            )
        try:
            ref = SecretRef.parse(item, namespace, annotation)
        except InvalidSpec as e:
            raise AnnotationError(
                annotation,
                e.problem,
                f"list RotatingSecret names (or namespace/name for {RO}), comma-separated",
            ) from None
        out[ref] = None
        if len(out) > MAX_SECRETS:
            raise AnnotationError(
                annotation,
                f"lists more than {MAX_SECRETS} secrets",
                f"list at most {MAX_SECRETS} secrets per pod (split the workload)",
            )
    if not out:
        raise AnnotationError(
            annotation,
            "lists no secret",
            "list at least one RotatingSecret name, or remove the annotation",
        )
    return tuple(out)


def _refuse_mount(value: str, problem: str) -> AnnotationError:
    return AnnotationError(
        MOUNT_PATH,
        f"{value!r} {problem}",
        "give an absolute path of the app's own, e.g. " + DEFAULT_MOUNT_PATH + " or /etc/myapp",
    )


def check_mount_path(value: str) -> str:
    """The mount path, normalised (no ``.``, ``//`` or trailing ``/``), or an error.

    Refused: relative paths, ``..``, anything at or under :data:`SYSTEM_TREES`, the folders of
    :data:`SYSTEM_FOLDERS` themselves, and every parent of a system tree (``/``, ``/var/run``,
    ``/var/run/secrets``): a mount there would hide the token or the system's own files.
    """
    raw = value.strip()
    if not _MOUNT_RE.fullmatch(raw):
        raise _refuse_mount(raw, "is not an absolute path of letters, digits and ._-/")
    if ".." in raw.split("/"):
        raise _refuse_mount(raw, "contains '..'")
    mount = posixpath.normpath(raw)
    if mount.startswith("//"):  # normpath keeps a leading '//' (POSIX leaves it to the system)
        mount = "/" + mount.lstrip("/")
    for tree in SYSTEM_TREES:
        if mount == tree or mount.startswith(tree + "/"):
            raise _refuse_mount(raw, f"is in the system folder {tree}")
        if tree.startswith(mount + "/") or mount == "/":
            raise _refuse_mount(raw, f"would hide the system folder {tree}")
    if mount in SYSTEM_FOLDERS:
        raise _refuse_mount(raw, "is a system folder; use a sub-folder of it")
    return mount


def wants_rotor(annotations: Mapping[str, str] | None) -> bool:
    """True when the pod asks for any secret (and has not opted out)."""
    ann = annotations or {}
    if not any(a in ann for a in REQUEST_ANNOTATIONS):
        return False
    return ann.get(INJECT, "true").strip().lower() not in ("false", "no", "0")


def is_injected(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(STATUS) == STATUS_INJECTED


def parse_pod(annotations: Mapping[str, str] | None, namespace: str) -> PodRequest | None:
    """Read a pod's Rotor annotations; ``None`` when it asks for nothing or opted out."""
    ann = annotations or {}
    if INJECT in ann:
        _bool(ann[INJECT], INJECT)
    if not wants_rotor(ann):
        return None
    check_name(namespace, "metadata.namespace")
    for key in ALL:
        if len(ann.get(key, "")) > MAX_VALUE_LENGTH:
            raise AnnotationError(
                key,
                f"is {len(ann[key])} characters long, more than {MAX_VALUE_LENGTH}",
                "shorten it"
                + (f" (at most {MAX_SECRETS} secrets per pod)" if key in (RW, RO) else ""),
            )
    rw = _refs(ann[RW], RW, namespace, allow_namespace=False) if RW in ann else ()
    ro = _refs(ann[RO], RO, namespace, allow_namespace=True) if RO in ann else ()
    if len(rw) + len(ro) > MAX_SECRETS:
        raise AnnotationError(
            RO,
            f"{RW} and {RO} list {len(rw) + len(ro)} secrets together, more than {MAX_SECRETS}",
            f"list at most {MAX_SECRETS} secrets per pod (split the workload)",
        )
    both = set(rw) & set(ro)
    if both:
        raise AnnotationError(
            RO,
            f"{sorted(map(str, both))[0]} is also in {RW}",
            f"a writer reads its own secrets: remove it from {RO}",
        )
    # Files go to <mount>/<name>/, for every delivery: two secrets of one name would collide.
    by_name: dict[str, SecretRef] = {}
    for ref in rw + ro:
        if ref.name in by_name:
            raise AnnotationError(
                RO,
                f"{by_name[ref.name]} and {ref} have the same name (both would be <mount>/"
                f"{ref.name})",
                "read at most one secret of a name per pod (split the workload, or give one "
                "RotatingSecret another name)",
            )
        by_name[ref.name] = ref

    mount = check_mount_path(ann.get(MOUNT_PATH, DEFAULT_MOUNT_PATH))

    delivery = ann.get(DELIVERY, "agent").strip()
    if delivery not in DELIVERIES:
        raise AnnotationError(
            DELIVERY, f"{delivery!r} is not a delivery", f"use one of {', '.join(DELIVERIES)}"
        )
    if DELIVERY in ann and not ro:
        raise AnnotationError(
            DELIVERY, "applies to read-only secrets only", f"remove it, or list the secrets in {RO}"
        )
    if delivery != "agent" and rw:
        raise AnnotationError(
            DELIVERY,
            f"{delivery!r} cannot be used by a writer pod",
            "use delivery agent, or move the writing to another workload",
        )

    hook = ann.get(APPLY_HOOK, "").strip()
    if hook:
        if not rw:
            raise AnnotationError(
                APPLY_HOOK, "applies to writers only", f"remove it, or list the secrets in {RW}"
            )
        _loopback_url(hook, APPLY_HOOK, "the apply hook")

    return PodRequest(
        namespace=namespace,
        rw=rw,
        ro=ro,
        mount_path=mount,
        delivery=delivery,
        reload=parse_reload(ann.get(RELOAD, "none")),
        apply_hook=hook,
        wait=_bool(ann[WAIT], WAIT) if WAIT in ann else True,
    )
