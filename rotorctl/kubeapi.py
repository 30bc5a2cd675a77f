"""The harness's client of the emulator: JSON over HTTPS with a bearer token (urllib: a handful
of calls, no client library needed)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rotor.kubepaths import api_path
from rotorctl.processes import HarnessError

Obj = dict[str, Any]


class ApiError(HarnessError):
    """The API answered an error status (``code``; ``status``: its Status body)."""

    def __init__(self, message: str, code: int, status: Obj) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Api:
    """JSON over HTTP to the API server, the emulator's or a real one (urllib: a handful of
    calls, no client library needed), as the holder of ``token`` (a bearer token; "" sends
    none) or of ``client_cert`` (certificate and key files: the real server's admin)."""

    def __init__(
        self,
        url: str,
        token: str = "",
        ca_file: Path | None = None,
        client_cert: tuple[Path, Path] | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.ca_file = ca_file
        self.context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        if client_cert is not None:
            self.context = self.context or ssl.create_default_context()
            self.context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        h = {"Content-Type": content_type}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def request(
        self, method: str, path: str, body: object = None, content_type: str = "application/json"
    ) -> Obj | None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - http to the local emulator
            self.url + path, data=data, method=method, headers=self.headers(content_type)
        )
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.context) as r:  # noqa: S310
                out: Obj = json.loads(r.read() or b"{}")
                return out
        except urllib.error.HTTPError as e:
            if e.code == 404 and method in ("GET", "DELETE"):
                return None
            raw = e.read()
            try:
                status: Obj = json.loads(raw)
            except ValueError:
                status = {}
            raise ApiError(
                f"{method} {path}: HTTP {e.code} {status.get('message') or raw[:300]!r}",
                e.code,
                status,
            ) from None

    def as_user(self, token: str) -> Api:
        return Api(self.url, token, self.ca_file)

    def get(self, api: str, plural: str, namespace: str | None, name: str) -> Obj | None:
        return self.request("GET", api_path(api, plural, namespace, name))

    def create(self, obj: Obj) -> Obj:
        m = obj["metadata"]
        out = self.request(
            "POST", api_path(obj["apiVersion"], plural_of(obj["kind"]), m.get("namespace")), obj
        )
        assert out is not None
        return out

    def ensure(self, obj: Obj) -> Obj:
        """Create ``obj``, or merge-patch it in when it exists (``kubectl apply``, roughly)."""
        try:
            return self.create(obj)
        except ApiError as e:
            if e.code != 409:
                raise
        m = obj["metadata"]
        out = self.patch(
            obj["apiVersion"], plural_of(obj["kind"]), m.get("namespace"), m["name"], obj
        )
        assert out is not None
        return out

    def token_for(self, namespace: str, service_account: str, seconds: int = 3600) -> str:
        """A TokenRequest for the ServiceAccount (what the kubelet does for a pod's token)."""
        out = self.request(
            "POST",
            api_path("v1", "serviceaccounts", namespace, service_account) + "/token",
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": seconds},
            },
        )
        assert out is not None
        return str(out["status"]["token"])

    def patch(
        self,
        api: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Obj,
        subresource: str = "",
    ) -> Obj | None:
        path = api_path(api, plural, namespace, name) + (f"/{subresource}" if subresource else "")
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, api: str, plural: str, namespace: str | None, name: str) -> None:
        self.request("DELETE", api_path(api, plural, namespace, name))


def plural_of(kind: str) -> str:
    low = kind.lower()
    if low == "endpoints":  # already plural (the real server has no "endpointses")
        return low
    return (
        low + "es"
        if low.endswith(("s", "ch", "sh"))
        else low[:-1] + "ies"
        if low.endswith("y")
        else low + "s"
    )
