"""Who a request is: bearer tokens (the admin's, static users', TokenRequest's bound to their
ServiceAccount) and impersonation (``kubectl --as``), as the real API server decides it.

* a request with no ``Authorization`` header is ``system:anonymous`` (RBAC refuses it, 403);
  an unknown, expired or unbound token is a 401;
* a service-account token issued for an existing ServiceAccount is bound to its ``uid``: once
  that account is deleted (or replaced by a new one of the same name) the token authenticates
  no more (401), as a bound token stops working on the real server;
* ``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*`` headers make the request act as that
  user if the requester may ``impersonate`` each of them (RBAC: ``users``, ``groups``,
  ``serviceaccounts`` for ``system:serviceaccount:NS:NAME``, ``uids`` and ``userextras/KEY`` in
  ``authentication.k8s.io``), else a 403 naming what was refused.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from kubeemu import rbac
from kubeemu.rbac import Attributes, User
from kubeemu.writes import Refused

MAX_IMPERSONATED_GROUPS = 100
ANONYMOUS = User("system:anonymous", ("system:unauthenticated",))
"""A request with no credentials (anonymous authentication, the real server's default): RBAC
refuses it all but ``system:public-info-viewer``'s paths, with a 403."""


@dataclass
class Issued:
    user: User
    expires: float | None = None  # time.time() when it stops authenticating
    bound: tuple[str, str, str] | None = None  # (namespace, name, uid) of its ServiceAccount


@dataclass
class Tokens:
    """The bearer tokens the emulator accepts."""

    admin_user: str
    issued: dict[str, Issued] = field(default_factory=dict)
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def __post_init__(self) -> None:
        admin = User(self.admin_user, (rbac.MASTERS, rbac.AUTHENTICATED))
        self.issued[self.admin_token] = Issued(admin)

    def issue(
        self, namespace: str, name: str, seconds: float | None = None, sa_uid: str = ""
    ) -> str:
        """A token for the ServiceAccount ``namespace/name``, bound to ``sa_uid`` if given."""
        token = secrets.token_urlsafe(32)
        expires = None if seconds is None else time.time() + seconds
        bound = (namespace, name, sa_uid) if sa_uid else None
        self.issued[token] = Issued(User.service_account(namespace, name), expires, bound)
        return token

    def add_user(self, name: str, groups: Iterable[str] = ()) -> str:
        token = secrets.token_urlsafe(32)
        self.issued[token] = Issued(User(name, (*groups, rbac.AUTHENTICATED)))
        return token

    def authenticate(
        self, authorization: str, sa_uid: Callable[[str, str], str | None]
    ) -> User | None:
        """The user of an ``Authorization`` header (None: 401). ``sa_uid(ns, name)`` is the uid
        of the stored ServiceAccount (None: there is none)."""
        scheme, _, token = authorization.partition(" ")
        found = self.issued.get(token.strip()) if scheme.lower() == "bearer" else None
        if found is None:
            return None
        if found.expires is not None and time.time() >= found.expires:
            return None
        if found.bound is not None and sa_uid(found.bound[0], found.bound[1]) != found.bound[2]:
            return None
        return found.user


def impersonation(headers: Mapping[str, str]) -> tuple[str, list[str], str, dict[str, list[str]]]:
    """The ``Impersonate-*`` headers: (user, groups, uid, extras)."""
    user, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for key, value in headers.items():
        k = key.lower()
        if k == "impersonate-user":
            user = value
        elif k == "impersonate-group":
            groups.append(value)
        elif k == "impersonate-uid":
            uid = value
        elif k.startswith("impersonate-extra-"):
            extra.setdefault(k.removeprefix("impersonate-extra-"), []).append(value)
    return user, groups, uid, extra


def impersonate(
    requester: User,
    headers: Mapping[str, str],
    allowed: Callable[[Attributes], bool],
) -> tuple[User, list[Attributes]]:
    """The user a request acts as, and every ``impersonate`` check it needs (the caller refuses
    the first one ``allowed`` denies). No ``Impersonate-*`` header: the requester itself."""
    name, groups, uid, extra = impersonation(headers)
    if not (name or groups or uid or extra):
        return requester, []
    if not name:
        raise Refused(
            400, "BadRequest", "requested impersonation of groups, uid or extras without a user"
        )
    if len(groups) > MAX_IMPERSONATED_GROUPS:
        raise Refused(400, "BadRequest", f"more than {MAX_IMPERSONATED_GROUPS} Impersonate-Group")
    checks = [_user_check(requester, name)]
    checks += [Attributes(requester, "impersonate", "", "groups", name=g) for g in groups]
    auth = "authentication.k8s.io"
    if uid:
        checks.append(Attributes(requester, "impersonate", auth, "uids", name=uid))
    for key, values in extra.items():
        checks += [
            Attributes(requester, "impersonate", auth, "userextras", key, name=v) for v in values
        ]
    if name.startswith(rbac.SA_PREFIX) and name.count(":") == 3:
        ns = name.split(":")[2]
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{ns}"]
    if rbac.AUTHENTICATED not in groups and name != "system:anonymous":
        groups.append(rbac.AUTHENTICATED)
    return User(name, tuple(dict.fromkeys(groups)), uid), checks


def _user_check(requester: User, name: str) -> Attributes:
    if name.startswith(rbac.SA_PREFIX) and name.count(":") == 3:
        _, _, ns, sa = name.split(":")
        return Attributes(requester, "impersonate", "", "serviceaccounts", "", ns, sa)
    return Attributes(requester, "impersonate", "", "users", name=name)
