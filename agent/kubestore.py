"""The in-cluster :class:`~agent.store.SecretStore`: the source Secret, through :mod:`agent.kube`.

* :meth:`KubeSecretStore.read`: ``GET`` the Secret; the token is its ``metadata.resourceVersion``.
* :meth:`KubeSecretStore.write`: a JSON merge patch that carries that resourceVersion, so the API
  server applies it only if nobody wrote in between (409 -> :class:`rotor.errors.ConflictError`:
  the engine re-reads, never overwrites). Data keys the new state no longer has (``.pending``
  after a commit, ``.previous`` after the overlap) are set to ``null``, which deletes them.

The store never creates the Secret: the controller creates it (owned by the RotatingSecret,
labelled, no value yet) when the RotatingSecret appears, and RW principals are granted
``get/list/watch/patch`` on that one name only (``create`` cannot be scoped to a name). A
missing Secret is :class:`rotor.errors.NotFoundError`; the in-cluster loop waits for it.

Rotate-now: :attr:`KubeSecretStore.rotate_request` is the ``rotor.dev/rotate-now`` value the
in-cluster loop asked the engine to honour; the write that prepares a rotation records it as
``rotor.dev/rotate-handled``, in the same patch, so the request is answered exactly once even
across restarts and writer changes.
"""

from __future__ import annotations

from typing import Any

from agent.kube import KubeClient, resource_version, secret_path
from agent.store import Stored
from rotor.errors import ConflictError, NotFoundError
from rotor.layout import ANN_ROTATE_HANDLED, SecretState

KEEP_KEYS = 16
"""Data keys are remembered for this many recent resourceVersions (reads and watch events)."""


class KubeSecretStore:
    """One source Secret, read and written with compare-and-swap on its resourceVersion."""

    def __init__(self, kube: KubeClient, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.path = secret_path(namespace, name)
        self.rotate_request: str | None = None
        self._keys: dict[str, frozenset[str]] = {}  # data keys stored at each resourceVersion

    def __repr__(self) -> str:
        return f"KubeSecretStore({self.namespace}/{self.name})"

    def decode(self, obj: dict[str, Any]) -> Stored:
        """The state and token of a Secret object (also used for watch events)."""
        meta = obj.get("metadata") or {}
        data = obj.get("data") or {}
        token = resource_version(obj) or ""
        self._keys[token] = frozenset(data)
        while len(self._keys) > KEEP_KEYS:  # the oldest first (dicts keep insertion order)
            del self._keys[next(iter(self._keys))]
        return Stored(SecretState.from_secret(data, meta.get("annotations")), token)

    def handled(self, obj: dict[str, Any]) -> str:
        """The rotate-now value the stored Secret says was handled (``""``: none)."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return str(annotations.get(ANN_ROTATE_HANDLED, ""))

    async def read(self) -> Stored:
        obj = await self.kube.get_or_none(self.path)
        if obj is None:
            raise NotFoundError(
                f"source Secret {self.namespace}/{self.name} does not exist yet "
                "(the controller creates it for the RotatingSecret)"
            )
        return self.decode(obj)

    async def write(self, state: SecretState, token: str) -> str:
        if not token:
            raise ConflictError(
                f"source Secret {self.namespace}/{self.name}: no resourceVersion to write over "
                "(the agent never creates the Secret)"
            )
        if token not in self._keys and (await self.read()).token != token:
            raise ConflictError(f"source Secret {self.namespace}/{self.name} moved on")
        data: dict[str, str | None] = dict.fromkeys(self._keys.get(token, ()), None)
        data.update(state.secret_data())
        annotations = state.annotations()
        if state.phase == "pending" and self.rotate_request:
            annotations[ANN_ROTATE_HANDLED] = self.rotate_request
        patch = {"metadata": {"annotations": annotations}, "data": data}
        obj = await self.kube.patch(self.path, patch, resource_version=token)
        return self.decode(obj).token
