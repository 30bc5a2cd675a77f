"""The highest ACL version read from the canister, kept where a restarted controller finds it:
a ConfigMap in the controller's namespace (its Role already lets it get, create and patch
ConfigMaps there). Without it, a replayed older answer, validly certified within
ROTOR_CANISTER_CERT_MAX_AGE, was refused only until the controller restarted."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from rotor.errors import UnavailableError

log = logging.getLogger(__name__)

MARK_SUFFIX = "-canister-version"
"""The ConfigMap is ``<ROTOR_ACL_CONFIGMAP>-canister-version`` (rotor-acl-canister-version)."""


@dataclass(frozen=True)
class Mark:
    version: int
    digest: bytes


class VersionMark(Protocol):
    async def load(self) -> Mark | None: ...

    async def save(self, mark: Mark) -> None: ...


class ConfigMapMark:
    """:class:`VersionMark` in a ConfigMap: ``data`` holds the canister id, the version and the
    sha256 of the ACL's canonical encoding. A mark of another canister id does not apply."""

    def __init__(self, core_v1: Any, namespace: str, name: str, canister_id: str) -> None:
        self.core_v1, self.namespace, self.name = core_v1, namespace, name
        self.canister_id = canister_id
        self.exists: bool | None = None

    @property
    def origin(self) -> str:
        return f"configmap {self.namespace}/{self.name}"

    async def load(self) -> Mark | None:
        try:
            cm = await asyncio.to_thread(
                self.core_v1.read_namespaced_config_map, self.name, self.namespace
            )
        except Exception as e:  # the kubernetes client's ApiException, or a connection error
            if getattr(e, "status", None) == 404:
                self.exists = False
                return None
            raise UnavailableError(f"{self.origin}: {type(e).__name__}") from None
        self.exists = True
        data = getattr(cm, "data", None) or {}
        if data.get("canister") != self.canister_id:
            return None
        try:
            return Mark(int(data["version"]), bytes.fromhex(data["sha256"]))
        except (KeyError, ValueError):
            log.warning("%s: not a version mark; it is written anew", self.origin)
            return None

    async def save(self, mark: Mark) -> None:
        data = {
            "canister": self.canister_id,
            "version": str(mark.version),
            "sha256": mark.digest.hex(),
        }
        body = {"metadata": {"name": self.name, "namespace": self.namespace}, "data": data}
        try:
            if self.exists:
                await asyncio.to_thread(
                    self.core_v1.patch_namespaced_config_map, self.name, self.namespace, body
                )
            else:
                await asyncio.to_thread(
                    self.core_v1.create_namespaced_config_map, self.namespace, body
                )
                self.exists = True
        except Exception as e:  # the kubernetes client's ApiException, or a connection error
            if getattr(e, "status", None) in (404, 409):
                self.exists = not self.exists  # deleted or created meanwhile: the other way next
            raise UnavailableError(f"{self.origin}: {type(e).__name__}") from None


class MemoryMark:
    """:class:`VersionMark` in memory: one process only (the CLI, tests)."""

    def __init__(self) -> None:
        self.mark: Mark | None = None

    async def load(self) -> Mark | None:
        return self.mark

    async def save(self, mark: Mark) -> None:
        self.mark = mark
