"""The in-cluster :class:`~agent.store.SecretStore`: the source Secret, through :mod:`agent.kube`.

* :meth:`KubeSecretStore.read`: ``GET`` the Secret; the token is its ``metadata.resourceVersion``.
* :meth:`KubeSecretStore.write`: a JSON merge patch that carries that resourceVersion, so the API
  server applies it only if nobody wrote in between (409 -> :class:`rotor.errors.ConflictError`:
  the engine re-reads, never overwrites). Data keys the new state no longer has (``.pending``
  after a commit, ``.previous`` after the overlap) are set to ``null``, which deletes them
  (:func:`rotor.protocol.secret_patch`).

The store never creates the Secret: the controller creates it (owned by the RotatingSecret,
labelled, no value yet) when the RotatingSecret appears, and RW principals are granted
``get/list/watch/patch`` on that one name only (``create`` cannot be scoped to a name). A
missing Secret is :class:`rotor.errors.NotFoundError`; the in-cluster loop waits for it.

Rotate-now is decided from what is stored, so it is answered exactly once even across restarts,
conflicts and writer changes: the asked value (the RotatingSecret's ``rotor.dev/rotate-now``, or
the controller's copy ``rotor.dev/rotate-requested`` on the Secret) differs from
``rotor.dev/rotate-handled``. :meth:`KubeSecretStore.read` then calls :attr:`on_request` (the
engine's ``request_rotation``) before the engine decides, and the write that prepares the
rotation records the value as ``rotor.dev/rotate-handled`` in the same patch. A prepare that
loses a race records nothing, so the next read asks again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.kube import KubeClient, resource_version, secret_path
from agent.store import Stored
from rotor.errors import ConflictError, NotFoundError
from rotor.layout import ANN_ROTATE_HANDLED, ANN_ROTATE_REQUESTED, SecretState
from rotor.protocol import secret_patch

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
        """The unhandled rotate-now value found by the last read (recorded by the prepare)."""
        self.rotate_now = ""
        """The RotatingSecret's ``rotor.dev/rotate-now``, as the in-cluster loop last saw it."""
        self.on_request: Callable[[], None] | None = None
        """Called by :meth:`read` when a rotate-now request is not handled yet."""
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

    def wanted(self, obj: dict[str, Any]) -> str:
        """The rotate-now value asked for: the RotatingSecret's own annotation as last seen
        (:attr:`rotate_now`), else the copy the controller puts on the source Secret."""
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        return self.rotate_now or str(annotations.get(ANN_ROTATE_REQUESTED, ""))

    async def _get(self) -> Stored:
        obj = await self.kube.get_or_none(self.path)
        if obj is None:
            raise NotFoundError(
                f"source Secret {self.namespace}/{self.name} does not exist yet "
                "(the controller creates it for the RotatingSecret)"
            )
        stored = self.decode(obj)
        want = self.wanted(obj)
        if want and want != self.handled(obj) and stored.state.phase == "committed":
            self.rotate_request = want
        else:
            self.rotate_request = None
        return stored

    async def read(self) -> Stored:
        """Read the Secret; if a rotate-now request is not handled yet, tell the engine (its
        step reads, then decides, so the request is honoured by this very step)."""
        stored = await self._get()
        if self.rotate_request and self.on_request is not None:
            self.on_request()
        return stored

    async def write(self, state: SecretState, token: str) -> str:
        if not token:
            raise ConflictError(
                f"source Secret {self.namespace}/{self.name}: no resourceVersion to write over "
                "(the agent never creates the Secret)"
            )
        if token not in self._keys and (await self._get()).token != token:
            raise ConflictError(f"source Secret {self.namespace}/{self.name} moved on")
        handled = {}
        if state.phase == "pending" and self.rotate_request:
            handled[ANN_ROTATE_HANDLED] = self.rotate_request
        patch = secret_patch(state, self._keys.get(token, ()), annotations=handled)
        obj = await self.kube.patch(self.path, patch, resource_version=token)
        return self.decode(obj).token
