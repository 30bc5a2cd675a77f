"""The specs of Rotor's custom resources, as frozen dataclasses read from plain dicts.

``RotatingSecretSpec.from_dict(obj["spec"])`` accepts exactly what the CRD schema accepts and
raises :class:`~rotor.errors.InvalidSpec` with the field path and the fix for anything else, so
the agent (standalone configs), the controller (a malformed object that slipped past an old
schema) and the tests share one reading of the contract.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from rotor.durations import format_duration, parse_duration
from rotor.errors import InvalidSpec
from rotor.names import check_key_name, check_name, loopback_url_problem
from rotor.settings.agent import DEFAULT_JITTER

GeneratorType = Literal["password", "token", "hex", "uuid", "rsa", "ecdsa", "ed25519"]
GENERATOR_TYPES: tuple[str, ...] = get_args(GeneratorType)
KEY_PAIR_TYPES = frozenset({"rsa", "ecdsa", "ed25519"})

PasswordClass = Literal["lower", "upper", "digit", "symbol"]
PASSWORD_CLASSES: tuple[str, ...] = get_args(PasswordClass)
TokenEncoding = Literal["hex", "base64", "base64url"]
TOKEN_ENCODINGS: tuple[str, ...] = get_args(TokenEncoding)
RSA_BITS = (2048, 3072, 4096)
ECDSA_CURVES = ("P-256", "P-384")

DEFAULT_PASSWORD_LENGTH = 32
DEFAULT_SYMBOLS = "!#%+-.:=@^_~"
"""Symbols that need no quoting in shells, URLs' userinfo, YAML or SQL string literals."""
DEFAULT_TOKEN_BYTES = 32
DEFAULT_HEX_LENGTH = 64
DEFAULT_RSA_BITS = 3072
DEFAULT_ECDSA_CURVE = "P-256"
DEFAULT_INTERVAL = 24 * 3600.0
DEFAULT_OVERLAP = 3600.0
MIN_INTERVAL = 1.0
MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH = 8, 1024
MIN_TOKEN_BYTES, MAX_TOKEN_BYTES = 16, 1024
MIN_HEX_LENGTH, MAX_HEX_LENGTH = 16, 2048
PUB_SUFFIX = ".pub"


def _mapping(value: object, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidSpec(field, f"expected a mapping, got {type(value).__name__}", "")
    return cast(Mapping[str, Any], value)


def reject_unknown(obj: Mapping[str, Any], allowed: set[str], field: str) -> None:
    """Refuse the first field of ``obj`` not in ``allowed``, naming it and the allowed ones."""
    extra = sorted(set(obj) - allowed)
    if extra:
        raise InvalidSpec(
            f"{field}.{extra[0]}",
            "unknown field",
            f"remove it; allowed here: {', '.join(sorted(allowed))}",
        )


def _int(obj: Mapping[str, Any], key: str, default: int, lo: int, hi: int, field: str) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{field}.{key}", f"expected an integer, got {value!r}", "")
    if not lo <= value <= hi:
        raise InvalidSpec(f"{field}.{key}", f"{value} is out of range", f"use {lo} to {hi}")
    return value


def _choice(
    obj: Mapping[str, Any], key: str, default: Any, choices: Sequence[Any], field: str
) -> Any:
    value = obj.get(key, default)
    if value not in choices:
        raise InvalidSpec(
            f"{field}.{key}",
            f"{value!r} is not supported",
            f"use one of {', '.join(str(c) for c in choices)}",
        )
    return value


@dataclass(frozen=True)
class GeneratorSpec:
    """How to make one key's value. Only the fields of ``type`` are used."""

    type: GeneratorType
    length: int | None = None  # password: characters; hex: hex digits
    classes: tuple[PasswordClass, ...] = ()  # password
    symbols: str = DEFAULT_SYMBOLS  # password
    bytes: int | None = None  # token
    encoding: TokenEncoding = "base64url"  # token
    bits: int | None = None  # rsa
    curve: str | None = None  # ecdsa

    @property
    def is_key_pair(self) -> bool:
        return self.type in KEY_PAIR_TYPES

    @classmethod
    def from_dict(cls, value: object, field: str) -> GeneratorSpec:
        obj = _mapping(value, field)
        gtype = obj.get("type")
        if gtype not in GENERATOR_TYPES:
            raise InvalidSpec(
                f"{field}.type",
                f"{gtype!r} is not a generator type" if gtype is not None else "type is required",
                f"use one of {', '.join(GENERATOR_TYPES)}",
            )
        if gtype == "password":
            reject_unknown(obj, {"type", "length", "classes", "symbols"}, field)
            length = _int(
                obj,
                "length",
                DEFAULT_PASSWORD_LENGTH,
                MIN_PASSWORD_LENGTH,
                MAX_PASSWORD_LENGTH,
                field,
            )
            raw = obj.get("classes", list(PASSWORD_CLASSES))
            if not isinstance(raw, list) or not raw:
                raise InvalidSpec(
                    f"{field}.classes",
                    "expected a non-empty list",
                    f"list some of {', '.join(PASSWORD_CLASSES)}",
                )
            for i, c in enumerate(raw):
                if c not in PASSWORD_CLASSES:
                    raise InvalidSpec(
                        f"{field}.classes[{i}]",
                        f"{c!r} is not a character class",
                        f"use one of {', '.join(PASSWORD_CLASSES)}",
                    )
            if len(set(raw)) != len(raw):
                raise InvalidSpec(f"{field}.classes", "a class is listed twice", "list each once")
            if len(raw) > length:
                raise InvalidSpec(
                    f"{field}.length",
                    f"{length} is shorter than the number of classes",
                    "raise length or list fewer classes",
                )
            symbols = obj.get("symbols", DEFAULT_SYMBOLS)
            if (
                not isinstance(symbols, str)
                or not symbols
                or not symbols.isascii()
                or any(ch.isalnum() or ch.isspace() or not ch.isprintable() for ch in symbols)
                or len(set(symbols)) != len(symbols)
            ):
                raise InvalidSpec(
                    f"{field}.symbols",
                    "expected distinct printable ASCII symbols (no letters, digits or spaces)",
                    f"e.g. {DEFAULT_SYMBOLS!r}",
                )
            return cls(
                "password",
                length=length,
                classes=tuple(cast(list[PasswordClass], raw)),
                symbols=symbols,
            )
        if gtype == "token":
            reject_unknown(obj, {"type", "bytes", "encoding"}, field)
            return cls(
                "token",
                bytes=_int(
                    obj, "bytes", DEFAULT_TOKEN_BYTES, MIN_TOKEN_BYTES, MAX_TOKEN_BYTES, field
                ),
                encoding=_choice(obj, "encoding", "base64url", TOKEN_ENCODINGS, field),
            )
        if gtype == "hex":
            reject_unknown(obj, {"type", "length"}, field)
            return cls(
                "hex",
                length=_int(
                    obj, "length", DEFAULT_HEX_LENGTH, MIN_HEX_LENGTH, MAX_HEX_LENGTH, field
                ),
            )
        if gtype == "rsa":
            reject_unknown(obj, {"type", "bits"}, field)
            return cls("rsa", bits=_choice(obj, "bits", DEFAULT_RSA_BITS, RSA_BITS, field))
        if gtype == "ecdsa":
            reject_unknown(obj, {"type", "curve"}, field)
            return cls(
                "ecdsa", curve=_choice(obj, "curve", DEFAULT_ECDSA_CURVE, ECDSA_CURVES, field)
            )
        reject_unknown(obj, {"type"}, field)
        return cls(cast(GeneratorType, gtype))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type == "password":
            out.update(length=self.length, classes=list(self.classes), symbols=self.symbols)
        elif self.type == "token":
            out.update(bytes=self.bytes, encoding=self.encoding)
        elif self.type == "hex":
            out["length"] = self.length
        elif self.type == "rsa":
            out["bits"] = self.bits
        elif self.type == "ecdsa":
            out["curve"] = self.curve
        return out


@dataclass(frozen=True)
class KeySpec:
    """One key: one file (and, for key pairs, a second file ``<name>.pub``)."""

    name: str
    generator: GeneratorSpec

    @property
    def files(self) -> tuple[str, ...]:
        """The file names (and Secret data keys) this key produces."""
        if self.generator.is_key_pair:
            return (self.name, self.name + PUB_SUFFIX)
        return (self.name,)

    @classmethod
    def from_dict(cls, value: object, field: str) -> KeySpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"name", "generator"}, field)
        name = check_key_name(obj.get("name"), f"{field}.name")
        if "generator" not in obj:
            raise InvalidSpec(
                f"{field}.generator",
                "generator is required",
                "add e.g. generator: {type: password, length: 32}",
            )
        return cls(name, GeneratorSpec.from_dict(obj["generator"], f"{field}.generator"))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "generator": self.generator.to_dict()}


@dataclass(frozen=True)
class RotationSpec:
    interval: float = DEFAULT_INTERVAL
    overlap: float = DEFAULT_OVERLAP

    @classmethod
    def from_dict(cls, value: object, field: str) -> RotationSpec:
        obj = _mapping(value if value is not None else {}, field)
        reject_unknown(obj, {"interval", "overlap"}, field)
        interval = (
            parse_duration(obj["interval"], f"{field}.interval")
            if "interval" in obj
            else DEFAULT_INTERVAL
        )
        if interval < MIN_INTERVAL:
            raise InvalidSpec(
                f"{field}.interval",
                f"{obj['interval']!r} is too short",
                f"use at least {format_duration(MIN_INTERVAL)}",
            )
        overlap = (
            parse_duration(obj["overlap"], f"{field}.overlap")
            if "overlap" in obj
            else min(DEFAULT_OVERLAP, interval / 2)
        )
        out = cls(interval, overlap)
        out.check_jitter(DEFAULT_JITTER, f"{field}.overlap")
        return out

    def check_jitter(self, jitter: float, field: str) -> None:
        """The overlap must end before the earliest next rotation, ``interval * (1 - jitter)``
        (the jitter only shortens the interval): a rotation inside the overlap ends the previous
        value early (the alternating strategy changes its password) while ``.rotor.json`` still
        calls it valid. The spec is checked with the default jitter; the agent again with its
        own (``ROTOR_JITTER``)."""
        shortest = self.interval * (1.0 - jitter)
        if self.overlap > 0 and self.overlap >= shortest:
            raise InvalidSpec(
                field,
                f"overlap {format_duration(self.overlap)} is not shorter than the shortest "
                f"jittered interval {format_duration(shortest)} (interval "
                f"{format_duration(self.interval)} less jitter {jitter:g})",
                f"make overlap shorter than {format_duration(shortest)} (0s turns it off), or "
                "lengthen the interval",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval": format_duration(self.interval),
            "overlap": format_duration(self.overlap),
        }


@dataclass(frozen=True)
class ExternalStoreRef:
    store: str  # name of an ExternalStore in the RotatingSecret's namespace
    path: str  # KV v2 path under the store's mount

    @classmethod
    def from_dict(cls, value: object, field: str) -> ExternalStoreRef:
        obj = _mapping(value, field)
        reject_unknown(obj, {"storeRef", "path"}, field)
        ref = _mapping(obj.get("storeRef"), f"{field}.storeRef")
        reject_unknown(ref, {"name"}, f"{field}.storeRef")
        name = check_name(ref.get("name"), f"{field}.storeRef.name")
        path = obj.get("path")
        if not isinstance(path, str) or not path.strip("/") or ".." in path.split("/"):
            raise InvalidSpec(
                f"{field}.path",
                f"{path!r} is not a KV path",
                "give a path under the store's mount, e.g. shop/db-password",
            )
        return cls(name, path.strip("/"))

    def to_dict(self) -> dict[str, Any]:
        return {"storeRef": {"name": self.store}, "path": self.path}


PostgresStrategy = Literal["single", "alternating", "per-version"]
POSTGRES_STRATEGIES: tuple[str, ...] = get_args(PostgresStrategy)
OverlapEnd = Literal["keep", "lock", "terminate"]
OVERLAP_END_ACTIONS: tuple[str, ...] = get_args(OverlapEnd)
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]
SSL_MODES: tuple[str, ...] = get_args(SslMode)
DEFAULT_POSTGRES_PORT = 5432
DEFAULT_POSTGRES_DATABASE = "postgres"
DEFAULT_POSTGRES_ADMIN = "postgres"
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PASSWORD_KEY = "password"  # noqa: S105  (a key name, not a password)
MAX_CONNECT_TIMEOUT = 120.0
ROLE_PATTERN = r"^[a-z_][a-z0-9_]*$"
MAX_ROLE_LENGTH = 61
"""PostgreSQL truncates identifiers at 63 bytes; the alternating roles add ``_a``/``_b``."""
ALTERNATE_SUFFIXES = ("_a", "_b")
VERSION_SUFFIX = "_v"
"""per-version: the role of version N is ``<role>_v<N>``."""
MAX_PER_VERSION_ROLE_LENGTH = 63 - len(VERSION_SUFFIX) - 10
_ROLE = re.compile(ROLE_PATTERN)
_DIGITS = re.compile("[0-9]+")


def _role(obj: Mapping[str, Any], key: str, field: str, required: bool) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _ROLE.fullmatch(value) or len(value) > MAX_ROLE_LENGTH:
        raise InvalidSpec(
            f"{field}.{key}",
            f"{value!r} is not a role name" if value is not None else "a role name is required",
            f"use lower-case letters, digits and '_', starting with a letter or '_' "
            f"(at most {MAX_ROLE_LENGTH} characters), e.g. app",
        )
    return value


def _str(obj: Mapping[str, Any], key: str, default: str | None, field: str, fix: str) -> str | None:
    value = obj.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidSpec(f"{field}.{key}", f"expected a non-empty string, got {value!r}", fix)
    return value


@dataclass(frozen=True)
class PostgresAdmin:
    """Who changes the passwords: ``user`` with the password of ``secret_ref`` (in a cluster: a
    Secret the writer's Role may get) or ``password_file`` (standalone, or a mounted Secret), or
    no password at all (peer or trust authentication, e.g. on the database pod's own socket)."""

    user: str = DEFAULT_POSTGRES_ADMIN
    secret_ref: str | None = None
    username_key: str = "username"
    password_key: str = DEFAULT_PASSWORD_KEY
    password_file: str | None = None

    @classmethod
    def from_dict(cls, value: object, field: str) -> PostgresAdmin:
        obj = _mapping(value if value is not None else {}, field)
        reject_unknown(obj, {"user", "secretRef", "passwordFile"}, field)
        user = _str(obj, "user", DEFAULT_POSTGRES_ADMIN, field, "name the admin role")
        password_file = _str(obj, "passwordFile", None, field, "give a file path")
        if password_file is not None and not password_file.startswith("/"):
            raise InvalidSpec(
                f"{field}.passwordFile", f"{password_file!r} is not an absolute path", ""
            )
        if "secretRef" not in obj:
            return cls(user or DEFAULT_POSTGRES_ADMIN, password_file=password_file)
        if password_file is not None:
            raise InvalidSpec(field, "secretRef and passwordFile are both set", "keep one of them")
        ref = _mapping(obj["secretRef"], f"{field}.secretRef")
        reject_unknown(ref, {"name", "usernameKey", "passwordKey"}, f"{field}.secretRef")
        name = check_name(ref.get("name"), f"{field}.secretRef.name")
        keys = {
            k: check_key_name(ref.get(k, d), f"{field}.secretRef.{k}")
            for k, d in (("usernameKey", "username"), ("passwordKey", "password"))
        }
        return cls(
            user or DEFAULT_POSTGRES_ADMIN,
            secret_ref=name,
            username_key=keys["usernameKey"],
            password_key=keys["passwordKey"],
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user}
        if self.secret_ref is not None:
            out["secretRef"] = {
                "name": self.secret_ref,
                "usernameKey": self.username_key,
                "passwordKey": self.password_key,
            }
        if self.password_file is not None:
            out["passwordFile"] = self.password_file
        return out


@dataclass(frozen=True)
class PostgresTargetSpec:
    """``spec.target.postgres``: the writer's agent changes a PostgreSQL role's password before
    each commit (docs/database.md). ``alternating`` (default) keeps two roles and changes the one
    consumers do not use; ``single`` changes one role in place (clients must retry a login)."""

    host: str
    role: str
    port: int = DEFAULT_POSTGRES_PORT
    database: str = DEFAULT_POSTGRES_DATABASE
    sslmode: SslMode = "prefer"
    sslrootcert: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    strategy: PostgresStrategy = "alternating"
    template: str | None = None
    on_overlap_end: OverlapEnd = "lock"
    username_key: str = "username"
    password_key: str = DEFAULT_PASSWORD_KEY
    admin: PostgresAdmin = field(default_factory=PostgresAdmin)

    @property
    def roles(self) -> tuple[str, ...]:
        """The fixed roles this target rotates (two for ``alternating``; none for
        ``per-version``, whose roles are :meth:`version_role`)."""
        if self.strategy == "single":
            return (self.role,)
        if self.strategy == "per-version":
            return ()
        return tuple(self.role + s for s in ALTERNATE_SUFFIXES)

    def version_role(self, version: int) -> str:
        """per-version: the role of ``version``."""
        return f"{self.role}{VERSION_SUFFIX}{version}"

    def owns(self, role: str) -> bool:
        """Whether ``role`` is one this target made or rotates."""
        if self.strategy == "per-version":
            prefix = self.role + VERSION_SUFFIX
            return role.startswith(prefix) and _DIGITS.fullmatch(role[len(prefix) :]) is not None
        return role in self.roles

    @classmethod
    def from_dict(cls, value: object, field: str) -> PostgresTargetSpec:
        obj = _mapping(value, field)
        allowed = {
            "host", "port", "database", "sslmode", "sslRootCert", "connectTimeout", "role",
            "strategy", "template", "onOverlapEnd", "usernameKey", "passwordKey", "admin",
        }  # fmt: skip
        reject_unknown(obj, allowed, field)
        host = obj.get("host")
        if not isinstance(host, str) or not host or any(c.isspace() for c in host):
            raise InvalidSpec(
                f"{field}.host",
                f"{host!r} is not a host" if host is not None else "host is required",
                "give a host name or IP (db.shop.svc), or the folder of a Unix socket "
                "(/var/run/postgresql)",
            )
        timeout = (
            parse_duration(obj["connectTimeout"], f"{field}.connectTimeout")
            if "connectTimeout" in obj
            else DEFAULT_CONNECT_TIMEOUT
        )
        if not 1.0 <= timeout <= MAX_CONNECT_TIMEOUT:
            raise InvalidSpec(
                f"{field}.connectTimeout",
                f"{obj['connectTimeout']!r} is out of range",
                f"use 1s to {format_duration(MAX_CONNECT_TIMEOUT)}",
            )
        strategy = _choice(obj, "strategy", "alternating", POSTGRES_STRATEGIES, field)
        template = _role(obj, "template", field, required=False)
        role = _role(obj, "role", field, required=True)
        assert role is not None
        if strategy == "single" and template is not None:
            raise InvalidSpec(
                f"{field}.template",
                "a template is used only by strategies alternating and per-version",
                "remove it, or set strategy: alternating",
            )
        if strategy == "per-version" and len(role) > MAX_PER_VERSION_ROLE_LENGTH:
            raise InvalidSpec(
                f"{field}.role",
                f"{role!r} is too long for per-version roles (<role>_v<version>)",
                f"use at most {MAX_PER_VERSION_ROLE_LENGTH} characters",
            )
        keys = {
            k: check_key_name(obj.get(k, d), f"{field}.{k}")
            for k, d in (("usernameKey", "username"), ("passwordKey", "password"))
        }
        if keys["usernameKey"] == keys["passwordKey"]:
            raise InvalidSpec(
                f"{field}.usernameKey", "is the same as passwordKey", "give them different names"
            )
        return cls(
            host=host,
            role=role,
            port=_int(obj, "port", DEFAULT_POSTGRES_PORT, 1, 65535, field),
            database=cast(
                str, _str(obj, "database", DEFAULT_POSTGRES_DATABASE, field, "name the database")
            ),
            sslmode=_choice(obj, "sslmode", "prefer", SSL_MODES, field),
            sslrootcert=_str(obj, "sslRootCert", None, field, "give the path of a CA file"),
            connect_timeout=timeout,
            strategy=strategy,
            template=template,
            on_overlap_end=_choice(obj, "onOverlapEnd", "lock", OVERLAP_END_ACTIONS, field),
            username_key=keys["usernameKey"],
            password_key=keys["passwordKey"],
            admin=PostgresAdmin.from_dict(obj.get("admin"), f"{field}.admin"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "sslmode": self.sslmode,
            "connectTimeout": format_duration(self.connect_timeout),
            "role": self.role,
            "strategy": self.strategy,
            "onOverlapEnd": self.on_overlap_end,
            "usernameKey": self.username_key,
            "passwordKey": self.password_key,
            "admin": self.admin.to_dict(),
        }
        if self.sslrootcert is not None:
            out["sslRootCert"] = self.sslrootcert
        if self.template is not None:
            out["template"] = self.template
        return out


@dataclass(frozen=True)
class HookTargetSpec:
    """``spec.target.hook``: for apps that are not PostgreSQL, the end of the overlap is POSTed
    to a loopback URL of the writer pod (the app revokes the previous value there)."""

    overlap_end: str

    @classmethod
    def from_dict(cls, value: object, field: str) -> HookTargetSpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"overlapEnd"}, field)
        url = obj.get("overlapEnd")
        problem = "overlapEnd is required" if url is None else f"{url!r} is not a URL"
        if isinstance(url, str):
            problem = loopback_url_problem(url) or ""
        if problem or not isinstance(url, str):
            raise InvalidSpec(
                f"{field}.overlapEnd",
                problem,
                "give http://127.0.0.1:PORT/PATH (the writer pod's own app)",
            )
        return cls(url)

    def to_dict(self) -> dict[str, Any]:
        return {"overlapEnd": self.overlap_end}


@dataclass(frozen=True)
class TargetSpec:
    """``spec.target``: what the writer's agent does with a value besides writing files: exactly
    one of ``postgres`` and ``hook``."""

    postgres: PostgresTargetSpec | None = None
    hook: HookTargetSpec | None = None

    @property
    def extra_files(self) -> tuple[str, ...]:
        """Files the target adds to the payload (the username of a PostgreSQL target)."""
        return (self.postgres.username_key,) if self.postgres is not None else ()

    @classmethod
    def from_dict(cls, value: object, field: str) -> TargetSpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"postgres", "hook"}, field)
        if ("postgres" in obj) == ("hook" in obj):
            raise InvalidSpec(field, "exactly one target is required", "set postgres or hook")
        if "postgres" in obj:
            return cls(postgres=PostgresTargetSpec.from_dict(obj["postgres"], f"{field}.postgres"))
        return cls(hook=HookTargetSpec.from_dict(obj["hook"], f"{field}.hook"))

    def to_dict(self) -> dict[str, Any]:
        if self.postgres is not None:
            return {"postgres": self.postgres.to_dict()}
        assert self.hook is not None
        return {"hook": self.hook.to_dict()}


@dataclass(frozen=True)
class RotatingSecretSpec:
    keys: tuple[KeySpec, ...]
    rotation: RotationSpec = field(default_factory=RotationSpec)
    external_stores: tuple[ExternalStoreRef, ...] = ()
    suspend: bool = False
    target: TargetSpec | None = None

    @property
    def files(self) -> tuple[str, ...]:
        """Every file of a value: each key's, then those the target adds (``username``)."""
        extra = self.target.extra_files if self.target is not None else ()
        return tuple(f for k in self.keys for f in k.files) + extra

    @classmethod
    def from_dict(cls, value: object, field: str = "spec") -> RotatingSecretSpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"keys", "rotation", "externalStores", "suspend", "target"}, field)
        raw_keys = obj.get("keys")
        if not isinstance(raw_keys, list) or not raw_keys:
            raise InvalidSpec(
                f"{field}.keys",
                "at least one key is required",
                "add e.g. keys: [{name: password, generator: {type: password}}]",
            )
        keys = tuple(KeySpec.from_dict(k, f"{field}.keys[{i}]") for i, k in enumerate(raw_keys))
        seen: dict[str, int] = {}
        for i, k in enumerate(keys):
            for f in k.files:
                if f in seen:
                    raise InvalidSpec(
                        f"{field}.keys[{i}].name",
                        f"file {f!r} is already made by keys[{seen[f]}]",
                        "give every key a distinct name",
                    )
                seen[f] = i
        raw_stores = obj.get("externalStores", [])
        if not isinstance(raw_stores, list):
            raise InvalidSpec(f"{field}.externalStores", "expected a list", "")
        stores = tuple(
            ExternalStoreRef.from_dict(s, f"{field}.externalStores[{i}]")
            for i, s in enumerate(raw_stores)
        )
        suspend = obj.get("suspend", False)
        if not isinstance(suspend, bool):
            raise InvalidSpec(f"{field}.suspend", f"expected true or false, got {suspend!r}", "")
        target = TargetSpec.from_dict(obj["target"], f"{field}.target") if "target" in obj else None
        rotation = RotationSpec.from_dict(obj.get("rotation"), f"{field}.rotation")
        if target is not None and target.postgres is not None:
            _check_postgres_keys(keys, target.postgres, f"{field}.target.postgres", seen)
            if target.postgres.strategy == "per-version" and rotation.overlap <= 0:
                raise InvalidSpec(
                    f"{field}.rotation.overlap",
                    "strategy per-version needs an overlap (a version's role is dropped when "
                    "its overlap ends)",
                    "set an overlap, e.g. 10m",
                )
        return cls(keys, rotation, stores, suspend, target)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "keys": [k.to_dict() for k in self.keys],
            "rotation": self.rotation.to_dict(),
        }
        if self.external_stores:
            out["externalStores"] = [s.to_dict() for s in self.external_stores]
        if self.suspend:
            out["suspend"] = True
        if self.target is not None:
            out["target"] = self.target.to_dict()
        return out


def _check_postgres_keys(
    keys: tuple[KeySpec, ...], pg: PostgresTargetSpec, field: str, files: Mapping[str, int]
) -> None:
    """The password is one of the keys (not a key pair); the username file is not."""
    by_name = {k.name: k for k in keys}
    key = by_name.get(pg.password_key)
    if key is None:
        raise InvalidSpec(
            f"{field}.passwordKey",
            f"no key is named {pg.password_key!r}",
            f"name one of {', '.join(by_name)}, or add a key {pg.password_key!r} "
            "(e.g. generator: {type: password, length: 32})",
        )
    if key.generator.is_key_pair:
        raise InvalidSpec(
            f"{field}.passwordKey",
            f"key {pg.password_key!r} is a {key.generator.type} key pair, not a password",
            "use a password, token or hex generator",
        )
    if pg.username_key in files:
        raise InvalidSpec(
            f"{field}.usernameKey",
            f"file {pg.username_key!r} is already made by keys[{files[pg.username_key]}]",
            "the target writes the username itself: rename the key or set usernameKey",
        )


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str


@dataclass(frozen=True)
class VaultAuth:
    token_secret: SecretKeyRef | None = None
    kubernetes_role: str | None = None
    kubernetes_mount: str = "kubernetes"


@dataclass(frozen=True)
class VaultSpec:
    server: str
    mount: str
    auth: VaultAuth
    ca_bundle: str | None = None  # PEM

    @classmethod
    def from_dict(cls, value: object, field: str) -> VaultSpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"server", "mount", "caBundle", "auth"}, field)
        server = obj.get("server")
        if not isinstance(server, str) or not server.startswith(("https://", "http://")):
            raise InvalidSpec(
                f"{field}.server",
                f"{server!r} is not a URL",
                "give the Vault address, e.g. https://vault.vault:8200",
            )
        mount = obj.get("mount", "secret")
        if not isinstance(mount, str) or not mount.strip("/"):
            raise InvalidSpec(
                f"{field}.mount",
                f"{mount!r} is not a mount path",
                "give the KV v2 mount, e.g. secret",
            )
        ca = obj.get("caBundle")
        if ca is not None and (not isinstance(ca, str) or "BEGIN CERTIFICATE" not in ca):
            raise InvalidSpec(
                f"{field}.caBundle",
                "expected a PEM certificate bundle",
                "paste the CA certificate(s) in PEM form, or remove the field",
            )
        auth_f = f"{field}.auth"
        auth = _mapping(obj.get("auth"), auth_f)
        reject_unknown(auth, {"token", "kubernetes"}, auth_f)
        if ("token" in auth) == ("kubernetes" in auth):
            raise InvalidSpec(
                auth_f,
                "exactly one auth method is required",
                "set auth.token.secretRef or auth.kubernetes.role",
            )
        if "token" in auth:
            tok = _mapping(auth["token"], f"{auth_f}.token")
            ref = _mapping(tok.get("secretRef"), f"{auth_f}.token.secretRef")
            name = check_name(ref.get("name"), f"{auth_f}.token.secretRef.name")
            key = ref.get("key", "token")
            if not isinstance(key, str) or not key:
                raise InvalidSpec(
                    f"{auth_f}.token.secretRef.key",
                    "expected a key name",
                    "name the Secret key that holds the token, e.g. token",
                )
            va = VaultAuth(token_secret=SecretKeyRef(name, key))
        else:
            kube = _mapping(auth["kubernetes"], f"{auth_f}.kubernetes")
            role = kube.get("role")
            if not isinstance(role, str) or not role:
                raise InvalidSpec(
                    f"{auth_f}.kubernetes.role",
                    "a role is required",
                    "name the Vault Kubernetes auth role",
                )
            mpath = kube.get("mountPath", "kubernetes")
            if not isinstance(mpath, str) or not mpath:
                raise InvalidSpec(f"{auth_f}.kubernetes.mountPath", "expected a path", "")
            va = VaultAuth(kubernetes_role=role, kubernetes_mount=mpath.strip("/"))
        return cls(server.rstrip("/"), mount.strip("/"), va, ca)


@dataclass(frozen=True)
class ExternalStoreSpec:
    vault: VaultSpec

    @classmethod
    def from_dict(cls, value: object, field: str = "spec") -> ExternalStoreSpec:
        obj = _mapping(value, field)
        reject_unknown(obj, {"vault"}, field)
        if "vault" not in obj:
            raise InvalidSpec(f"{field}.vault", "vault is required", "add spec.vault")
        return cls(VaultSpec.from_dict(obj["vault"], f"{field}.vault"))
