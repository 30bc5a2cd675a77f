"""What the webhook adds to a pod: :func:`build_patch` decides it purely, from pod and settings.

For a pod that asks for secrets (``rotor.dev/rw`` or ``rotor.dev/ro``, see
:mod:`rotor.annotations`) the patch adds:

* ``delivery: agent`` (the default): a memory-backed emptyDir ``rotor-files``; the agent container
  ``rotor-agent`` (a native sidecar: an init container with ``restartPolicy: Always``, whose
  startup probe on ``/readyz`` holds the app containers back until every file exists when
  ``rotor.dev/wait`` is true; or, in ``classic`` mode, a regular container) that writes into it;
  and a read-only mount of it at the mount path in every other container of the pod;
* ``delivery: volume``: per RO secret a kubelet Secret volume of its RO view
  ``rotor.<ns>.<name>`` (``optional: true``, so the pod starts before the grant), mounted
  read-only at ``<mount path>/<name>`` in every container; no agent;
* ``delivery: env``: per RO secret an ``envFrom`` of its RO view (``optional: true``) with the
  prefix :func:`env_prefix` in every container; no agent;
* always: the label ``rotor.dev/injected: "true"`` and the annotation ``rotor.dev/status:
  injected``, so a second review of the patched pod changes nothing.

Nothing here does I/O; errors a user can fix raise :class:`~rotor.errors.InvalidSpec` (or its
subclass :class:`~rotor.errors.AnnotationError`) naming the field and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rotor import annotations as ann
from rotor import env as agent_env
from rotor.errors import AnnotationError, InvalidSpec
from rotor.layout import view_name
from rotor.names import SecretRef
from rotor.settings.webhook import WebhookSettings
from webhook import _json
from webhook.patch import Op, Patch, escape

AGENT_CONTAINER = "rotor-agent"
FILES_VOLUME = "rotor-files"
TOKEN_VOLUME = "rotor-agent-token"  # noqa: S105 - a volume name
VIEW_VOLUME_PREFIX = "rotor-view-"
"""Volume ``rotor-view-<i>`` holds the RO view of the i-th secret of ``rotor.dev/ro``."""
FILES_SIZE_LIMIT = "8Mi"
"""Room for the files on the memory-backed emptyDir (it counts against the pod's memory)."""
AGENT_UID = 65532
"""The agent's user and default group ("nonroot" in distroless images)."""
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
SA_TOKEN_EXPIRY = 3607
"""What the kubelet asks for its own projected token (it refreshes it at 80 % of the lifetime)."""
MAX_ADDED = 4096
"""Volume mounts or envFrom entries one patch may add over all containers: 64 secrets in each of
64 containers. A patch grows with containers x secrets; past this it is refused, not built."""
MAX_PATCH = 1024 * 1024
"""Bytes of JSON patch one answer may carry (checked before it is built, and again after)."""
STARTUP_PERIOD = 1
STARTUP_FAILURES = 600
"""The startup probe waits up to 10 minutes per start; the kubelet then restarts the agent,
which keeps waiting (the pod stays in its init phase until the files exist)."""
OWN_APP_LABEL_KEY = "app.kubernetes.io/name"

_ENV_NAME_BAD = re.compile(r"[^A-Z0-9_]")


def env_prefix(name: str) -> str:
    """``envFrom`` prefix for a secret: upper case, ``-`` and ``.`` become ``_``, then ``_``.

    A leading digit gets a ``_`` in front. The variable for key ``password`` of secret
    ``db-password`` is ``DB_PASSWORD_password``: the
    kubelet appends the key name unchanged (the webhook does not know the key names; it reads no
    RotatingSecret).
    """
    prefix = _ENV_NAME_BAD.sub("_", name.upper()) + "_"
    return "_" + prefix if prefix[0].isdigit() else prefix


@dataclass(frozen=True)
class Plan:
    """What :func:`plan` decided: the pod's request (``None``: not for Rotor) and the operations."""

    request: ann.PodRequest | None
    ops: list[Op]
    reason: str = ""
    """Why nothing is injected (for logs), when ``ops`` is empty."""


def build_patch(
    pod: Mapping[str, Any], settings: WebhookSettings, namespace: str | None = None
) -> list[Op]:
    """The RFC 6902 operations that inject Rotor into ``pod`` (empty: leave the pod alone)."""
    return plan(pod, settings, namespace).ops


def _map(value: object, field: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidSpec(field, "is not an object", "send a valid Pod")
    return value


def _list(value: object, field: str) -> Sequence[Any]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidSpec(field, "is not a list", "send a valid Pod")
    return value


def _str_map(value: object, field: str) -> Mapping[str, str]:
    m = _map(value, field)
    for k, v in m.items():
        if not isinstance(v, str):
            raise InvalidSpec(f"{field}[{k!r}]", "is not a string", "quote the value")
    return m


def plan(pod: Mapping[str, Any], settings: WebhookSettings, namespace: str | None = None) -> Plan:
    """Decide what to inject into ``pod``; ``namespace`` is the admission request's namespace."""
    pod = _map(pod, "object")
    meta = _map(pod.get("metadata"), "metadata")
    annotations = _str_map(meta.get("annotations"), "metadata.annotations")
    labels = _str_map(meta.get("labels"), "metadata.labels")
    ns = namespace or meta.get("namespace") or ""
    if not isinstance(ns, str):
        raise InvalidSpec("metadata.namespace", "is not a string", "send a valid Pod")

    if ns == settings.own_namespace and labels.get(OWN_APP_LABEL_KEY) == settings.own_app_label:
        return Plan(None, [], "Rotor's own pod")
    if ann.is_injected(annotations):
        return Plan(None, [], "already injected")
    request = ann.parse_pod(annotations, ns)
    if request is None:
        return Plan(None, [], "asks for no secret")

    if not isinstance(pod.get("spec"), dict):
        raise InvalidSpec("spec", "is missing", "send a Pod with a spec")
    spec = pod["spec"]
    p = Patch()
    if request.delivery == "agent":
        _inject_agent(p, spec, request, settings)
    else:
        _inject_views(p, spec, request)
    p.put(meta, "labels", "/metadata/labels", {ann.INJECTED_LABEL: "true"})
    p.put(meta, "annotations", "/metadata/annotations", {ann.STATUS: ann.STATUS_INJECTED})
    return Plan(request, p.ops)


def _bad(field: str, what: str) -> InvalidSpec:
    return InvalidSpec(field, f"is not {what}", "send a valid Pod")


def _objects(value: object, field: str) -> Iterator[Mapping[str, Any]]:
    """The entries of a list of objects (none when absent), each checked as it is reached; a
    clear error names a bad one."""
    for i, item in enumerate(_list(value, field)):
        if not isinstance(item, dict):
            raise _bad(f"{field}[{i}]", "an object")
        yield item


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, int, Mapping[str, Any]]]:
    """``(list key, index, container)`` for every init and regular container of the pod."""
    out: list[tuple[str, int, Mapping[str, Any]]] = []
    for key in ("initContainers", "containers"):
        for i, c in enumerate(_objects(spec.get(key), f"spec.{key}")):
            out.append((key, i, c))
    return out


def _check_free(
    spec: Mapping[str, Any],
    containers: list[tuple[str, int, Mapping[str, Any]]],
    volumes: Sequence[str],
    mounts: Sequence[str],
) -> None:
    """Fail with a clear message where the pod already uses a name or path Rotor adds."""
    for i, v in enumerate(_objects(spec.get("volumes"), "spec.volumes")):
        name = v.get("name")
        if name in volumes:
            raise InvalidSpec(
                f"spec.volumes[{i}].name",
                f"{name!r} is a name Rotor adds",
                "rename the volume (Rotor's volume names start with rotor-)",
            )
    for key, i, c in containers:
        if c.get("name") == AGENT_CONTAINER:
            raise InvalidSpec(
                f"spec.{key}[{i}].name",
                f"{AGENT_CONTAINER!r} is the name of Rotor's agent container",
                "rename the container",
            )
        for m in _objects(c.get("volumeMounts"), f"spec.{key}[{i}].volumeMounts"):
            path = m.get("mountPath")
            if isinstance(path, str) and path.rstrip("/") in mounts:
                raise AnnotationError(
                    ann.MOUNT_PATH,
                    f"container {c.get('name')!r} already mounts a volume at {path}",
                    f"set {ann.MOUNT_PATH} to a free path",
                )


def _check_fanout(
    containers: list[tuple[str, int, Mapping[str, Any]]], items: list[Any], what: str
) -> None:
    """Refuse a pod whose patch would add more than MAX_ADDED entries or MAX_PATCH bytes: the
    patch (and the webhook's memory) grows with containers x secrets, and a 56 KiB review of
    2,000 containers with 64 secrets once took the webhook past its memory limit."""
    total = len(containers) * len(items)
    if total > MAX_ADDED:
        raise InvalidSpec(
            "spec.containers",
            f"{len(containers)} containers (init ones included) x {len(items)} {what} "
            f"would be {total} entries to add; Rotor adds at most {MAX_ADDED} to one pod",
            "ask for fewer secrets in this pod, use fewer containers, or use delivery agent "
            "(one mount per container)",
        )
    size = len(containers) * len(_json.dumps(items))
    if size > MAX_PATCH:
        raise InvalidSpec(
            "spec.containers",
            f"the patch would be {size // 1024} KiB (at most {MAX_PATCH // 1024} KiB; etcd "
            "stores no object over 1.5 MiB)",
            "ask for fewer secrets, use fewer containers or a shorter rotor.dev/mount-path",
        )


def _mount_all(
    p: Patch,
    containers: list[tuple[str, int, Mapping[str, Any]]],
    mounts: list[dict[str, Any]],
) -> None:
    _check_fanout(containers, mounts, "volume mounts")
    for key, i, c in containers:
        p.extend(c, "volumeMounts", f"/spec/{key}/{i}/volumeMounts", mounts)


def _inject_agent(
    p: Patch, spec: Mapping[str, Any], req: ann.PodRequest, s: WebhookSettings
) -> None:
    containers = _containers(spec)
    token_mount = _token_mount(containers)
    own_token = token_mount is None
    ours = (FILES_VOLUME, TOKEN_VOLUME) if own_token else (FILES_VOLUME,)
    _check_free(spec, containers, ours, (req.mount_path,))
    signal_reload = req.reload.kind == "signal"
    if signal_reload and spec.get("hostPID") is True:
        raise AnnotationError(
            ann.RELOAD,
            f"{req.reload} needs shareProcessNamespace, which a hostPID pod cannot have",
            "use an http:// reload URL or none",
        )
    pod_sc = _map(spec.get("securityContext"), "spec.securityContext")

    volumes: list[dict[str, Any]] = [
        {"name": FILES_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": FILES_SIZE_LIMIT}}
    ]
    if own_token:
        volumes.append(_token_volume())
    # Mount before adding the agent: only the pod's own containers get the read-only mount.
    _mount_all(
        p, containers, [{"name": FILES_VOLUME, "mountPath": req.mount_path, "readOnly": True}]
    )
    p.extend(spec, "volumes", "/spec/volumes", volumes)

    native = s.sidecar_mode == "native"
    agent = _agent_container(req, s, token_mount, native, pod_sc)
    key = "initContainers" if native else "containers"
    p.extend(spec, key, f"/spec/{key}", [agent])
    if signal_reload:
        p.set("/spec/shareProcessNamespace", True)


def _token_mount(
    containers: list[tuple[str, int, Mapping[str, Any]]],
) -> dict[str, Any] | None:
    """The pod's service-account token mount, to give the agent the same one.

    The API server's ServiceAccount admission plugin runs before mutating webhooks: when the
    token is automounted, the pod arrives with a ``kube-api-access-*`` volume mounted into its
    containers, but a container added later (the agent) would not get it. ``None`` when no
    container has it (``automountServiceAccountToken: false`` on the pod or its ServiceAccount):
    the agent then gets a projected token volume of its own.
    """
    for _, _, c in containers:
        mounts = c.get("volumeMounts")
        for m in mounts if isinstance(mounts, list) else ():
            if not isinstance(m, dict):
                continue  # _check_free reports it
            path, name = m.get("mountPath"), m.get("name")
            if isinstance(path, str) and path.rstrip("/") == SA_TOKEN_DIR and isinstance(name, str):
                return {"name": name, "mountPath": SA_TOKEN_DIR, "readOnly": True}
    return None


def _agent_container(
    req: ann.PodRequest,
    s: WebhookSettings,
    token_mount: dict[str, Any] | None,
    native: bool,
    pod_sc: Mapping[str, Any],
) -> dict[str, Any]:
    env = agent_env.AgentEnv(
        mode=req.mode,
        secrets=req.rw if req.rw else req.ro,
        ro_secrets=req.ro if req.rw else (),
        mount_path=req.mount_path,
        pod_name="",
        pod_namespace=req.namespace,
        service_account="",
        reload=req.reload,
        apply_hook=req.apply_hook,
        metrics_port=agent_env.DEFAULT_METRICS_PORT,
    ).to_env()
    env_list: list[dict[str, Any]] = [
        _field_env(agent_env.POD_NAME, "metadata.name"),
        _field_env(agent_env.POD_NAMESPACE, "metadata.namespace"),
        _field_env(agent_env.SERVICE_ACCOUNT, "spec.serviceAccountName"),
    ]
    env_list += [{"name": k, "value": v} for k, v in env.items()]

    mounts: list[dict[str, Any]] = [{"name": FILES_VOLUME, "mountPath": req.mount_path}]
    mounts.append(
        token_mount or {"name": TOKEN_VOLUME, "mountPath": SA_TOKEN_DIR, "readOnly": True}
    )

    requests = {"cpu": s.agent_cpu_request, "memory": s.agent_memory_request}
    limits = {"cpu": s.agent_cpu_limit, "memory": s.agent_memory_limit}
    resources = {
        k: v
        for k, v in (
            ("requests", {r: q for r, q in requests.items() if q}),
            ("limits", {r: q for r, q in limits.items() if q}),
        )
        if v
    }
    # The files get the agent's primary group: take the pod's, so a non-root app in that group
    # can read them (with fsGroup the emptyDir's setgid bit does the same).
    group = pod_sc.get("runAsGroup")
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": s.agent_image,
        "imagePullPolicy": s.agent_pull_policy,
        "env": env_list,
        "ports": [
            {
                "name": agent_env.METRICS_PORT_NAME,
                "containerPort": agent_env.DEFAULT_METRICS_PORT,
                "protocol": "TCP",
            }
        ],
        "volumeMounts": mounts,
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": AGENT_UID,
            "runAsGroup": group if isinstance(group, int) else AGENT_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": agent_env.METRICS_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if native:
        container["restartPolicy"] = "Always"
        if req.wait:
            container["startupProbe"] = {
                "httpGet": {"path": "/readyz", "port": agent_env.METRICS_PORT_NAME},
                "periodSeconds": STARTUP_PERIOD,
                "timeoutSeconds": 1,
                "failureThreshold": STARTUP_FAILURES,
            }
    return container


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _token_volume() -> dict[str, Any]:
    """The projected volume the kubelet would mount, for the agent alone."""
    return {
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": SA_TOKEN_EXPIRY}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ],
        },
    }


def _check_prefixes(refs: Sequence[SecretRef]) -> None:
    """Two secrets whose names differ only in ``-`` and ``.`` (``a-b``, ``a.b``) give one env
    prefix; the kubelet would let the later one win without a word. Refuse the pod instead."""
    seen: dict[str, SecretRef] = {}
    for ref in refs:
        prefix = env_prefix(ref.name)
        if prefix in seen:
            raise AnnotationError(
                ann.RO,
                f"{seen[prefix]} and {ref} give the same env prefix {prefix}",
                "use delivery agent or volume for one of them, or read them in two workloads",
            )
        seen[prefix] = ref


def _inject_views(p: Patch, spec: Mapping[str, Any], req: ann.PodRequest) -> None:
    """``volume`` and ``env`` delivery: the kubelet reads the RO views, no agent."""
    views = [view_name(r.namespace, r.name) for r in req.ro]
    if req.delivery == "volume":
        names = [f"{VIEW_VOLUME_PREFIX}{i}" for i in range(len(views))]
        paths = [f"{req.mount_path}/{r.name}" for r in req.ro]
        containers = _containers(spec)
        _check_free(spec, containers, names, paths)
        _mount_all(
            p,
            containers,
            [
                {"name": n, "mountPath": path, "readOnly": True}
                for n, path in zip(names, paths, strict=True)
            ],
        )
        p.extend(
            spec,
            "volumes",
            "/spec/volumes",
            [
                {"name": n, "secret": {"secretName": v, "optional": True}}
                for n, v in zip(names, views, strict=True)
            ],
        )
    else:
        _check_prefixes(req.ro)
        sources = [
            {"prefix": env_prefix(r.name), "secretRef": {"name": v, "optional": True}}
            for r, v in zip(req.ro, views, strict=True)
        ]
        containers = _containers(spec)
        _check_fanout(containers, sources, "envFrom entries")
        for key, i, c in containers:
            _list(c.get("envFrom"), f"spec.{key}[{i}].envFrom")
            p.extend(c, "envFrom", f"/spec/{key}/{i}/envFrom", sources)


__all__ = ["Op", "Plan", "build_patch", "env_prefix", "escape", "plan"]
