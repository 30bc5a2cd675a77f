"""Names and references: Kubernetes object names, key names, ``namespace/name`` references."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from rotor.errors import InvalidSpec

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
KEY_NAME = r"^[A-Za-z0-9]([-_A-Za-z0-9]*[A-Za-z0-9])?$"
"""A key is one file and one Secret data entry; dots are kept for the suffixes Rotor adds."""

# Matched with fullmatch: `$` also matches before a final newline ("db\n"). The ACL canister
# (canister/src/State.mo, validRef) applies the same rule; tests/canister checks both on one list.
_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)
_LABEL = re.compile(DNS1123_LABEL)
_KEY = re.compile(KEY_NAME)

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOOPBACK_URL = r"^http://(127\.0\.0\.1|localhost|\[::1\]):[0-9]{1,5}([/?][^#\s]*)?$"
"""The CRD's pattern for a loopback URL: the authority is a loopback host and a port, nothing else
(no user part: ``http://127.0.0.1:1@other.host/`` would go to ``other.host``)."""


def loopback_url_problem(value: str) -> str | None:
    """Why ``value`` is not ``http://<loopback>:PORT[/PATH]``, or None. One rule for the apply
    hook and reload annotations, the agent's flags and ``spec.target.hook.overlapEnd``: the URL
    is parsed (not matched by prefix), so the host the agent would connect to is the one checked."""
    # urlsplit drops tab, CR and LF silently, but the raw value is what the agent later sends:
    # refuse them (and every other control character or space) before looking at the parts.
    if any(c.isspace() or not c.isprintable() for c in value):
        return f"{value!r} contains a space or control character"
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        return f"{value!r} has a bad port"
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
        return f"{value!r} is not a loopback http URL"
    if port is None or "@" in parts.netloc or parts.fragment:
        return f"{value!r} must name a port and carry no user or fragment"
    return None


def check_name(value: object, field: str) -> str:
    """A RotatingSecret name: a DNS-1123 subdomain of at most 253 characters."""
    if not isinstance(value, str) or not value:
        raise InvalidSpec(field, "a name is required", "give a lower-case name like db-password")
    if len(value) > 253 or not _SUBDOMAIN.fullmatch(value):
        raise InvalidSpec(
            field,
            f"{value!r} is not a valid name",
            "use lower-case letters, digits, '-' and '.', starting and ending with a letter or "
            "digit (at most 253 characters)",
        )
    return value


def check_namespace(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(field, "a namespace is required", "give a namespace like shop")
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise InvalidSpec(
            field,
            f"{value!r} is not a valid namespace",
            "use lower-case letters, digits and '-' (at most 63 characters)",
        )
    return value


def check_key_name(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(field, "a key name is required", "give a name like password")
    if len(value) > 200 or not _KEY.fullmatch(value):
        raise InvalidSpec(
            field,
            f"{value!r} is not a valid key name",
            "use letters, digits, '-' and '_', starting and ending with a letter or digit",
        )
    return value


@dataclass(frozen=True, order=True)
class SecretRef:
    """A RotatingSecret by namespace and name; ``str()`` gives ``namespace/name``."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str, default_namespace: str | None, field: str) -> SecretRef:
        """Read ``name`` (in ``default_namespace``) or ``namespace/name``."""
        text = text.strip()
        if "/" in text:
            ns, _, name = text.partition("/")
            if "/" in name:
                raise InvalidSpec(field, f"{text!r} has more than one '/'", "write namespace/name")
            return cls(check_namespace(ns, field), check_name(name, field))
        if default_namespace is None:
            raise InvalidSpec(field, f"{text!r} has no namespace", "write namespace/name")
        return cls(default_namespace, check_name(text, field))


@dataclass(frozen=True, order=True)
class Principal:
    """Who a pod is: ``<namespace>/<serviceAccountName>``."""

    namespace: str
    service_account: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.service_account}"

    @classmethod
    def parse(cls, text: str, field: str = "principal") -> Principal:
        ns, sep, sa = text.partition("/")
        if not sep:
            raise InvalidSpec(
                field, f"{text!r} is not a principal", "write namespace/serviceaccount"
            )
        return cls(check_namespace(ns, field), check_name(sa, field))
