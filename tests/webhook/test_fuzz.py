"""Hypothesis over annotations and pod shapes: mutate() never crashes, every answer is well
formed, and every patch applies, validates and is final (a second review changes nothing)."""

from __future__ import annotations

import posixpath

import kubernetes_validate
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from rotor.settings.webhook import WebhookSettings
from tests.webhook.kube import apply, ops_of, review
from webhook.admission import BadReview, mutate
from webhook.inject import SA_TOKEN_DIR

SETTINGS = {"native": WebhookSettings(), "classic": WebhookSettings(sidecar_mode="classic")}
GOOD = {
    "rotor.dev/rw": ["db", "db,cache", " db , db "],
    "rotor.dev/ro": ["db", "other/api-key,x", "db,other/1st.key"],
    "rotor.dev/mount-path": ["/var/run/secrets/rotor", "/data", "/srv/x/", "/etc/rotor"],
    "rotor.dev/delivery": ["agent", "volume", "env"],
    "rotor.dev/reload": ["none", "signal:HUP", "http://127.0.0.1:8080/r"],
    "rotor.dev/apply-hook": ["http://127.0.0.1:5000/a"],
    "rotor.dev/wait": ["true", "false"],
    "rotor.dev/inject": ["true"],
}
BAD = {
    "rotor.dev/rw": ["", "Bad_Name", "other/db"],
    "rotor.dev/ro": ["a/db,b/db", "a/b/c"],
    "rotor.dev/mount-path": ["/./etc", "rel", "/", "/var/run/secrets", "/usr/lib/x"],
    "rotor.dev/delivery": ["ftp"],
    "rotor.dev/reload": ["signal:KILL", "x"],
    "rotor.dev/apply-hook": ["http://example.com/a", ""],
    "rotor.dev/wait": ["maybe"],
    "rotor.dev/inject": ["false", "nah"],
    "rotor.dev/status": ["injected", "pending"],
}


SEGMENTS = [
    "",
    ".",
    "..",
    "etc",
    "proc",
    "var",
    "run",
    "secrets",
    "kubernetes.io",
    "serviceaccount",
    "usr",
    "lib",
    "dev",
    "tmp",
    "app",
    "rotor",
    "x",
]
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6).map(
    lambda parts: "/" + "/".join(parts)
) | st.sampled_from(["/./etc", "/./proc", "//var/run/secrets/kubernetes.io", "/etc/rotor/"])
"""Mount paths built to trick the check: dot segments, doubled slashes, system folders."""
names = st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True)
name_lists = st.lists(names, min_size=55, max_size=75).map(",".join)
"""Lists around the bound on secrets per pod."""
hostile = st.one_of(
    st.text(max_size=2000),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40).map(lambda t: t * 50),
    st.sampled_from(["\r\n", "\t", "\x00", "\u2028", " ", ",", "/", "a/b/c/d"]).map(
        lambda c: f"http://127.0.0.1:8080/r{c}x"
    ),
    st.just("a," * 40_000),
)
"""Long and hostile strings: any text, repeated text, control characters in URLs, 80 KB lists."""


def _value(key: str) -> st.SearchStrategy[str]:
    """Mostly good values, sometimes a known bad one, sometimes long or hostile text."""
    good = st.sampled_from(GOOD.get(key) or BAD[key])
    extra: list[st.SearchStrategy[str]] = [hostile]
    if key == "rotor.dev/mount-path":
        extra += [paths, paths]
    if key in ("rotor.dev/rw", "rotor.dev/ro"):
        extra.append(name_lists)
    return st.one_of(*[good] * 6, st.sampled_from(BAD[key]), *extra)


annotations = st.one_of(
    *[st.fixed_dictionaries({"rotor.dev/rw": _value("rotor.dev/rw")})] * 2,
    *[st.fixed_dictionaries({"rotor.dev/ro": _value("rotor.dev/ro")})] * 2,
    st.just({}),
).flatmap(
    lambda base: st.sets(st.sampled_from([*BAD, "other.io/a~b/c"]), max_size=3).flatmap(
        lambda extra: st.fixed_dictionaries(
            {k: _value(k) if k in BAD else st.just("1") for k in extra if k not in base}
            | {k: st.just(v) for k, v in base.items()}
        )
    )
)
mount = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["data", "rotor-files", "cfg", "kube-api-access-x"]),
        "mountPath": st.sampled_from(
            ["/data", "/var/run/secrets/rotor", "/srv/x", "/cfg/", SA_TOKEN_DIR]
        ),
    }
)
maybe_list = lambda item: st.one_of(st.none(), st.just([]), st.lists(item, max_size=2))  # noqa: E731


@st.composite
def container_list(draw, prefix: str, native: bool = False) -> list[dict]:
    n = draw(st.integers(0, 3))
    out = []
    for i in range(n):
        c: dict = {"name": f"{prefix}{i}", "image": "example/app:1"}
        for key, strategy in (
            ("volumeMounts", maybe_list(mount)),
            ("env", maybe_list(st.just({"name": "X", "value": "1"}))),
            ("envFrom", maybe_list(st.just({"configMapRef": {"name": "cfg"}}))),
        ):
            value = draw(st.one_of(st.just("absent"), strategy))
            if value != "absent":
                c[key] = value
        # volumeMounts must be unique by path in a valid pod: keep the first of each
        if c.get("volumeMounts"):
            seen: dict[str, dict] = {}
            for m in c["volumeMounts"]:
                seen.setdefault(m["mountPath"].rstrip("/"), m)
            c["volumeMounts"] = list(seen.values())
        if native and draw(st.booleans()):
            c["restartPolicy"] = "Always"
        out.append(c)
    return out


@st.composite
def pods(draw) -> tuple[dict, str]:
    namespace = draw(st.sampled_from(["shop", "shop", "other", "rotor-system"]))
    meta: dict = {"generateName": "p-", "namespace": namespace}
    ann = draw(annotations)
    if ann or draw(st.booleans()):
        meta["annotations"] = ann
    labels = draw(st.sampled_from([None, {}, {"app.kubernetes.io/name": "rotor"}, {"a/b": "c"}]))
    if labels is not None:
        meta["labels"] = labels
    spec: dict = {"containers": draw(container_list("c")) or [{"name": "c", "image": "i"}]}
    for key, strategy in (
        ("initContainers", st.one_of(st.none(), container_list("i", native=True))),
        ("volumes", st.sampled_from([None, [], [{"name": "data", "emptyDir": {}}]])),
        ("automountServiceAccountToken", st.sampled_from([True, False])),
        ("hostPID", st.sampled_from([True, False])),
        ("shareProcessNamespace", st.sampled_from([True, False])),
        ("securityContext", st.sampled_from([{}, {"runAsGroup": 1001}, {"fsGroup": 2000}])),
    ):
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    if spec.get("hostPID") and spec.get("shareProcessNamespace"):
        del spec["shareProcessNamespace"]  # invalid together, as the API server says
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, namespace


def _names_unique(items: list[dict] | None, what: str) -> None:
    names = [i["name"] for i in items or []]
    assert len(names) == len(set(names)), f"duplicate {what}: {names}"


@pytest.mark.slow  # hypothesis, 500 pods: about 5 s
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.sampled_from(sorted(SETTINGS)))
def test_every_answer_is_well_formed_and_every_patch_applies(pod_ns, mode):
    pod, namespace = pod_ns
    answer = mutate(review(pod, namespace), SETTINGS[mode])
    assert answer["apiVersion"] == "admission.k8s.io/v1"
    resp = answer["response"]
    assert resp["uid"] == review(pod)["request"]["uid"]
    event("denied" if not resp["allowed"] else "patched" if "patch" in resp else "unchanged")
    if not resp["allowed"]:
        assert resp["status"]["code"] == 400
        assert resp["status"]["message"].startswith("rotor: ")
        assert "patch" not in resp
        return
    if "patch" not in resp:
        return
    out = apply(pod, answer)  # raises if any pointer or /- is wrong
    kubernetes_validate.validate(out, "1.33", strict=True)
    spec = out["spec"]
    _names_unique(spec.get("volumes"), "volumes")
    _names_unique((spec.get("initContainers") or []) + spec["containers"], "containers")
    volumes = {v["name"] for v in spec.get("volumes") or []}
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        paths = [m["mountPath"].rstrip("/") for m in c.get("volumeMounts") or []]
        assert len(paths) == len(set(paths)), f"duplicate mount paths in {c['name']}: {paths}"
        for m in c.get("volumeMounts") or []:
            assert not m["name"].startswith("rotor-") or m["name"] in volumes
    assert "patch" not in mutate(review(out, namespace), SETTINGS[mode])["response"]
    assert ops_of(answer)
    _no_reserved_mounts(pod, out)


RESERVED_TREES = (
    "/proc",
    "/sys",
    "/dev",
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/boot",
    "/etc/ssl",
    "/var/run/secrets/kubernetes.io",
    "/run/secrets/kubernetes.io",
)
"""Written out here, not imported: the property must not share the code it checks."""


def _no_reserved_mounts(before: dict, after: dict) -> None:
    """Every mount the patch added is at a normal path, outside the system folders and the
    token folder, and not a parent of one (it would hide it); the one exception is the agent's
    token at the token folder itself."""

    def mounts(pod: dict) -> set[tuple[str, str, str]]:
        spec = pod.get("spec") or {}
        return {
            (c["name"], m["name"], m["mountPath"])
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
            for m in c.get("volumeMounts") or []
        }

    for container, volume, mount_path in mounts(after) - mounts(before):
        if container == "rotor-agent" and mount_path == SA_TOKEN_DIR:
            continue
        assert mount_path == posixpath.normpath(mount_path), f"{volume}: {mount_path!r}"
        assert not mount_path.startswith("//"), f"{volume}: {mount_path!r}"
        for tree in RESERVED_TREES:
            assert mount_path != tree, f"{container}: {volume} mounted at {tree}"
            assert not mount_path.startswith(tree + "/"), f"{container}: {volume} in {tree}"
            assert not tree.startswith(mount_path.rstrip("/") + "/"), (
                f"{container}: {volume} at {mount_path} hides {tree}"
            )
        assert mount_path not in ("/", "/etc", "/var", "/tmp"), f"{volume} hides {mount_path}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        json_values,
        json_values.map(
            lambda o: review({"metadata": {"annotations": {"rotor.dev/rw": "db"}}, "spec": o})
        ),
        json_values.map(lambda o: review({"metadata": o, "spec": {"containers": []}})),
        json_values.map(lambda o: {**review({}), "request": o}),
    )
)
def test_junk_never_crashes(body):
    try:
        answer = mutate(body, WebhookSettings())
    except BadReview as e:
        message = str(e)
    else:
        assert isinstance(answer["response"]["allowed"], bool)
        message = answer["response"].get("status", {}).get("message", "ok")
    assert message  # every refusal says why


@settings(max_examples=400, deadline=None)
@given(paths, st.sampled_from(["agent", "volume"]), st.sampled_from(sorted(SETTINGS)))
def test_no_patch_mounts_a_reserved_path(mount_path, delivery, mode):
    """The property on its own, over tricky paths only: allowed or denied, never reserved."""
    p = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "p-",
            "namespace": "shop",
            "annotations": {
                "rotor.dev/ro": "db,other/key",
                "rotor.dev/mount-path": mount_path,
                "rotor.dev/delivery": delivery,
            },
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    answer = mutate(review(p), SETTINGS[mode])
    event("denied" if not answer["response"]["allowed"] else "patched")
    if answer["response"]["allowed"]:
        _no_reserved_mounts(p, apply(p, answer))
    else:
        assert "rotor.dev/mount-path" in answer["response"]["status"]["message"]
