"""mutate(): table-driven cases; every patch is applied with jsonpatch and schema-checked."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from rotor.settings.webhook import WebhookSettings
from tests.webhook.kube import apply, containers, env_of, ops_of, pod, review, validate
from webhook.admission import BadReview, mutate
from webhook.inject import AGENT_CONTAINER, FILES_VOLUME, SA_TOKEN_DIR, TOKEN_VOLUME, env_prefix

S = WebhookSettings()
CLASSIC = replace(S, sidecar_mode="classic")
MOUNT = "/var/run/secrets/rotor"


def injected(p: dict, settings: WebhookSettings = S, namespace: str = "shop") -> dict:
    """Mutate, check the answer, apply and validate the patch; the patched pod."""
    answer = mutate(review(p, namespace), settings)
    resp = answer["response"]
    assert resp["allowed"] is True, resp.get("status")
    assert resp["uid"] == review(p)["request"]["uid"]
    assert ops_of(answer), "expected a patch"
    out = apply(p, answer)
    validate(out)
    again = mutate(review(out, namespace), settings)["response"]
    assert "patch" not in again, "a second review of the patched pod must change nothing"
    return out


def agent_of(out: dict) -> dict:
    both = containers(out, "initContainers") | containers(out)
    return both[AGENT_CONTAINER]


@pytest.mark.parametrize(
    ("ann", "mode", "secrets", "ro_secrets"),
    [
        ({"rotor.dev/rw": "db"}, "rw", "shop/db", None),
        ({"rotor.dev/ro": "db"}, "ro", "shop/db", None),
        ({"rotor.dev/rw": "db", "rotor.dev/ro": "other/api"}, "rw", "shop/db", "other/api"),
        ({"rotor.dev/ro": "a, b ,other/c"}, "ro", "shop/a,shop/b,other/c", None),
        ({"rotor.dev/rw": "a,b", "rotor.dev/ro": "x,y"}, "rw", "shop/a,shop/b", "shop/x,shop/y"),
    ],
)
def test_agent_env_tells_the_agent_what_to_do(ann, mode, secrets, ro_secrets):
    env = env_of(agent_of(injected(pod(ann))))
    assert env["ROTOR_MODE"] == mode
    assert env["ROTOR_SECRETS"] == secrets
    assert env.get("ROTOR_RO_SECRETS") == ro_secrets
    assert env["ROTOR_MOUNT_PATH"] == MOUNT
    assert env["ROTOR_METRICS_PORT"] == "9753"
    assert env["ROTOR_POD_NAME"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert env["ROTOR_POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["ROTOR_SERVICE_ACCOUNT"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"


def test_native_sidecar_gates_the_app_on_readyz():
    base = pod({"rotor.dev/rw": "db"}, initContainers=[{"name": "migrate", "image": "m:1"}])
    out = injected(base)
    inits = out["spec"]["initContainers"]
    assert [c["name"] for c in inits] == ["migrate", AGENT_CONTAINER]  # last: apps wait on it
    agent = inits[-1]
    assert agent["restartPolicy"] == "Always"
    probe = agent["startupProbe"]["httpGet"]
    assert probe == {"path": "/readyz", "port": "rotor-metrics"}
    assert agent["ports"] == [{"name": "rotor-metrics", "containerPort": 9753, "protocol": "TCP"}]
    assert AGENT_CONTAINER not in containers(out)


def test_wait_false_starts_the_app_at_once():
    out = injected(pod({"rotor.dev/rw": "db", "rotor.dev/wait": "false"}))
    agent = agent_of(out)
    assert agent["restartPolicy"] == "Always"
    assert "startupProbe" not in agent


def test_classic_mode_is_a_regular_container_and_warns_about_wait():
    p = pod({"rotor.dev/ro": "db"})
    out = injected(p, CLASSIC)
    assert "initContainers" not in out["spec"]
    agent = containers(out)[AGENT_CONTAINER]
    assert "restartPolicy" not in agent
    assert "startupProbe" not in agent
    warnings = mutate(review(p), CLASSIC)["response"]["warnings"]
    assert any("not enforced in classic" in w for w in warnings)


def test_files_are_a_memory_emptydir_mounted_read_only_into_every_other_container():
    p = pod(
        {"rotor.dev/rw": "db"},
        initContainers=[{"name": "init", "image": "i:1"}],
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    p["spec"]["containers"] = [
        {"name": "app", "image": "a:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        {"name": "proxy", "image": "p:1", "env": [{"name": "X", "value": "1"}]},
    ]
    out = injected(p)
    vols = {v["name"]: v for v in out["spec"]["volumes"]}
    assert vols[FILES_VOLUME]["emptyDir"]["medium"] == "Memory"
    assert "data" in vols
    for c in [*out["spec"]["initContainers"][:-1], *out["spec"]["containers"]]:
        mount = [m for m in c["volumeMounts"] if m["name"] == FILES_VOLUME]
        assert mount == [{"name": FILES_VOLUME, "mountPath": MOUNT, "readOnly": True}], c["name"]
    assert containers(out)["app"]["volumeMounts"][0]["name"] == "data"  # kept, first
    assert containers(out)["proxy"]["env"] == [{"name": "X", "value": "1"}]
    agent_mounts = agent_of(out)["volumeMounts"]
    assert agent_mounts[0] == {"name": FILES_VOLUME, "mountPath": MOUNT}  # the agent writes


def test_custom_mount_path():
    out = injected(pod({"rotor.dev/ro": "db", "rotor.dev/mount-path": "/etc-app/secrets/"}))
    assert containers(out)["app"]["volumeMounts"][0]["mountPath"] == "/etc-app/secrets"
    assert env_of(agent_of(out))["ROTOR_MOUNT_PATH"] == "/etc-app/secrets"


def test_missing_lists_are_added_whole_and_present_ones_appended():
    bare = pod({"rotor.dev/rw": "db"})
    bare_ops = ops_of(mutate(review(bare), S))
    assert not [o for o in bare_ops if o["path"].endswith("/-")]
    assert {o["path"] for o in bare_ops} >= {
        "/spec/volumes",
        "/spec/initContainers",
        "/spec/containers/0/volumeMounts",
        "/metadata/labels",
    }
    full = pod(
        {"rotor.dev/rw": "db"},
        volumes=[{"name": "v", "emptyDir": {}}],
        initContainers=[{"name": "i", "image": "i:1"}],
    )
    full["metadata"]["labels"] = {"app": "api"}
    full["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v"}]
    paths = {o["path"] for o in ops_of(mutate(review(full), S))}
    assert {
        "/spec/volumes/-",
        "/spec/initContainers/-",
        "/spec/containers/0/volumeMounts/-",
        "/spec/initContainers/0/volumeMounts",
        "/metadata/labels/rotor.dev~1injected",
        "/metadata/annotations/rotor.dev~1status",
    } <= paths
    injected(full)


def test_null_lists_count_as_absent():
    p = pod({"rotor.dev/rw": "db"}, volumes=None, initContainers=None)
    out = injected(p)
    assert [v["name"] for v in out["spec"]["volumes"]] == [FILES_VOLUME, TOKEN_VOLUME]
    assert [c["name"] for c in out["spec"]["initContainers"]] == [AGENT_CONTAINER]


def test_label_and_status_marker():
    out = injected(pod({"rotor.dev/ro": "db"}))
    assert out["metadata"]["labels"] == {"rotor.dev/injected": "true"}
    assert out["metadata"]["annotations"]["rotor.dev/status"] == "injected"


def test_hardened_security_context_and_resources_from_settings():
    settings = replace(S, agent_cpu_limit="200m", agent_memory_limit="128Mi", agent_image="r/a:9")
    agent = agent_of(injected(pod({"rotor.dev/rw": "db"}), settings))
    sc = agent["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert agent["resources"] == {
        "requests": {"cpu": "10m", "memory": "36Mi"},
        "limits": {"cpu": "200m", "memory": "128Mi"},
    }
    assert agent["image"] == "r/a:9"


def test_agent_takes_the_pods_group_so_a_non_root_app_can_read():
    p = pod({"rotor.dev/ro": "db"}, securityContext={"runAsUser": 1001, "runAsGroup": 1001})
    assert agent_of(injected(p))["securityContext"]["runAsGroup"] == 1001


@pytest.mark.parametrize(
    ("reload", "shared"),
    [("signal:HUP", True), ("none", None), ("http://127.0.0.1:8080/-/reload", None)],
)
def test_share_process_namespace_only_for_signal_reload(reload, shared):
    out = injected(pod({"rotor.dev/rw": "db", "rotor.dev/reload": reload}))
    assert out["spec"].get("shareProcessNamespace") is shared
    assert env_of(agent_of(out))["ROTOR_RELOAD"] == reload


def test_apply_hook_reaches_the_agent():
    hook = "http://127.0.0.1:5000/rotate"
    out = injected(pod({"rotor.dev/rw": "db", "rotor.dev/apply-hook": hook}))
    assert env_of(agent_of(out))["ROTOR_APPLY_HOOK"] == hook


def test_no_automount_gives_the_agent_its_own_token():
    out = injected(pod({"rotor.dev/rw": "db"}, automountServiceAccountToken=False))
    token = {v["name"]: v for v in out["spec"]["volumes"]}[TOKEN_VOLUME]["projected"]
    kinds = [next(iter(s)) for s in token["sources"]]
    assert kinds == ["serviceAccountToken", "configMap", "downwardAPI"]
    assert token["sources"][1]["configMap"]["name"] == "kube-root-ca.crt"
    agent_mounts = {m["mountPath"]: m for m in agent_of(out)["volumeMounts"]}
    assert agent_mounts[SA_TOKEN_DIR] == {
        "name": TOKEN_VOLUME,
        "mountPath": SA_TOKEN_DIR,
        "readOnly": True,
    }
    app_mounts = [m["name"] for m in containers(out)["app"]["volumeMounts"]]
    assert app_mounts == [FILES_VOLUME]  # the app stays without a token


def with_sa_token(p: dict) -> dict:
    """The pod as the API server hands it to webhooks: the ServiceAccount admission plugin has
    added its projected token volume and mounted it into every container."""
    p["spec"].setdefault("volumes", []).append(
        {
            "name": "kube-api-access-x7k2p",
            "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {
                        "configMap": {
                            "name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}],
                        }
                    },
                ],
            },
        }
    )
    for c in p["spec"].get("initContainers", []) + p["spec"]["containers"]:
        c.setdefault("volumeMounts", []).append(
            {"name": "kube-api-access-x7k2p", "mountPath": SA_TOKEN_DIR, "readOnly": True}
        )
    return p


def test_the_agent_shares_the_automounted_token():
    out = injected(with_sa_token(pod({"rotor.dev/rw": "db"})))
    assert TOKEN_VOLUME not in {v["name"] for v in out["spec"]["volumes"]}
    assert {"name": "kube-api-access-x7k2p", "mountPath": SA_TOKEN_DIR, "readOnly": True} in (
        agent_of(out)["volumeMounts"]
    )


def test_no_token_mount_anywhere_gives_the_agent_its_own():
    """E.g. the ServiceAccount sets automountServiceAccountToken: false."""
    out = injected(pod({"rotor.dev/rw": "db"}))
    assert TOKEN_VOLUME in {v["name"] for v in out["spec"]["volumes"]}
    assert TOKEN_VOLUME in {m["name"] for m in agent_of(out)["volumeMounts"]}
    assert [m["name"] for m in containers(out)["app"]["volumeMounts"]] == [FILES_VOLUME]


def test_volume_delivery_mounts_the_views_and_adds_no_agent():
    p = pod(
        {"rotor.dev/ro": "db,other/api-key", "rotor.dev/delivery": "volume"},
        initContainers=[{"name": "init", "image": "i:1"}],
    )
    out = injected(p)
    assert AGENT_CONTAINER not in containers(out, "initContainers") | containers(out)
    vols = {v["name"]: v["secret"] for v in out["spec"]["volumes"]}
    assert list(vols.values()) == [
        {"secretName": "rotor.shop.db", "optional": True},
        {"secretName": "rotor.other.api-key", "optional": True},
    ]
    for c in [*out["spec"]["initContainers"], *out["spec"]["containers"]]:
        assert [(m["mountPath"], m["readOnly"]) for m in c["volumeMounts"]] == [
            (f"{MOUNT}/db", True),
            (f"{MOUNT}/api-key", True),
        ]
    assert out["metadata"]["annotations"]["rotor.dev/status"] == "injected"


def test_env_delivery_adds_optional_env_from_the_views():
    p = pod({"rotor.dev/ro": "db-password,other/1st.key", "rotor.dev/delivery": "env"})
    p["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "cfg"}}]
    out = injected(p)
    assert containers(out)["app"]["envFrom"] == [
        {"configMapRef": {"name": "cfg"}},
        {
            "prefix": "DB_PASSWORD_",
            "secretRef": {"name": "rotor.shop.db-password", "optional": True},
        },
        {"prefix": "_1ST_KEY_", "secretRef": {"name": "rotor.other.1st.key", "optional": True}},
    ]
    assert "volumes" not in out["spec"]


def test_env_delivery_refuses_two_secrets_of_one_prefix():
    """x/a-b and y/a.b both give A_B_: the kubelet would let one hide the other's variables."""
    answer = mutate(
        review(pod({"rotor.dev/ro": "x/a-b,y/a.b", "rotor.dev/delivery": "env"})), WebhookSettings()
    )
    resp = answer["response"]
    assert resp["allowed"] is False
    assert "rotor.dev/ro" in resp["status"]["message"]
    assert "A_B_" in resp["status"]["message"]
    # the same two secrets as files are fine: <mount>/a-b and <mount>/a.b
    ok = mutate(
        review(pod({"rotor.dev/ro": "x/a-b,y/a.b", "rotor.dev/delivery": "volume"})),
        WebhookSettings(),
    )
    assert ok["response"]["allowed"] is True


@pytest.mark.parametrize(
    ("name", "prefix"), [("db", "DB_"), ("db-password", "DB_PASSWORD_"), ("a.b-c", "A_B_C_")]
)
def test_env_prefix_rule(name, prefix):
    assert env_prefix(name) == prefix


@pytest.mark.parametrize(
    "ann",
    [
        {},
        {"app.kubernetes.io/name": "x"},
        {"rotor.dev/rw": "db", "rotor.dev/inject": "false"},
        {"rotor.dev/rw": "db", "rotor.dev/status": "injected"},
    ],
)
def test_pods_left_alone(ann):
    resp = mutate(review(pod(ann)), S)["response"]
    assert resp["allowed"] is True
    assert "patch" not in resp
    assert "warnings" not in resp


def test_own_pods_are_never_touched():
    own = pod({"rotor.dev/rw": "db"})
    own["metadata"]["labels"] = {"app.kubernetes.io/name": S.own_app_label}
    assert "patch" not in mutate(review(own, S.own_namespace), S)["response"]
    assert "patch" in mutate(review(own, "shop"), S)["response"]  # same label elsewhere: patched


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"operation": "UPDATE"}, None),
        ({"kind": {"group": "", "version": "v1", "kind": "Secret"}}, None),
    ],
)
def test_only_pod_creation_is_patched(change, path):
    r = review(pod({"rotor.dev/rw": "db"}))
    r["request"].update(change)
    assert "patch" not in mutate(r, S)["response"]


def test_warns_that_the_app_waits_for_the_grant_naming_the_request_and_its_approval():
    """By default (rotor.dev/wait: true) the app is held until the grant: the warning says so,
    names the access request the pod makes (its principal and mode) and the approve command."""
    body = pod({"rotor.dev/rw": "db", "rotor.dev/ro": "other/api"}, serviceAccountName="api")
    resp = mutate(review(body), S)["response"]
    assert resp["warnings"] == [
        "rotor: shop/db: the app waits (rotor.dev/wait: true) until it exists and shop/api is "
        "granted rw; a pending request is approved with: rotor acl approve shop/db shop/api rw "
        "(kubectl get rsec -n shop db)",
        "rotor: other/api: the app waits (rotor.dev/wait: true) until it exists and shop/api is "
        "granted ro; a pending request is approved with: rotor acl approve other/api shop/api ro "
        "(kubectl get rsec -n other api)",
    ]
    assert all(len(w) <= 256 for w in resp["warnings"])  # the API server may cut longer ones
    no_wait = pod({"rotor.dev/ro": "other/api", "rotor.dev/wait": "false"})
    (warning,) = mutate(review(no_wait), S)["response"]["warnings"]
    assert "the agent waits (the app does not)" in warning
    assert "rotor acl approve other/api shop/default ro" in warning


def test_many_secrets_are_summarised_in_warnings():
    names = ",".join(f"s{i}" for i in range(8))
    warnings = mutate(review(pod({"rotor.dev/ro": names})), S)["response"]["warnings"]
    assert len(warnings) == 6
    assert "3 more" in warnings[-1]


@pytest.mark.parametrize(
    ("ann", "spec", "names"),
    [
        ({"rotor.dev/rw": "Bad_Name"}, {}, "rotor.dev/rw"),
        ({"rotor.dev/rw": "other/db"}, {}, "rotor.dev/rw"),
        ({"rotor.dev/ro": "db", "rotor.dev/delivery": "ftp"}, {}, "rotor.dev/delivery"),
        ({"rotor.dev/rw": "db", "rotor.dev/reload": "signal:KILL"}, {}, "rotor.dev/reload"),
        ({"rotor.dev/rw": "db", "rotor.dev/wait": "maybe"}, {}, "rotor.dev/wait"),
        ({"rotor.dev/rw": "db", "rotor.dev/inject": "perhaps"}, {}, "rotor.dev/inject"),
        ({"rotor.dev/rw": "db", "rotor.dev/mount-path": "/./etc"}, {}, "rotor.dev/mount-path"),
        (
            {"rotor.dev/rw": "db", "rotor.dev/reload": "signal:HUP"},
            {"hostPID": True},
            "rotor.dev/reload",
        ),
        (
            {"rotor.dev/ro": "a/db,b/db", "rotor.dev/delivery": "volume"},
            {},
            "rotor.dev/ro",
        ),
        (
            {"rotor.dev/rw": "db", "rotor.dev/mount-path": "/data"},
            {
                "containers": [
                    {
                        "name": "app",
                        "image": "a",
                        "volumeMounts": [{"name": "d", "mountPath": "/data/"}],
                    }
                ]
            },
            "rotor.dev/mount-path",
        ),
        (
            {"rotor.dev/rw": "db"},
            {"volumes": [{"name": FILES_VOLUME, "emptyDir": {}}]},
            "spec.volumes[0].name",
        ),
        (
            {"rotor.dev/rw": "db"},
            {"containers": [{"name": AGENT_CONTAINER, "image": "x"}]},
            "spec.containers[0].name",
        ),
    ],
)
def test_denied_with_a_message_naming_the_field_and_the_fix(ann, spec, names):
    resp = mutate(review(pod(ann, **spec)), S)["response"]
    assert resp["allowed"] is False
    assert resp["status"]["code"] == 400
    message = resp["status"]["message"]
    assert message.startswith(f"rotor: {names}: ")
    assert "; " in message  # problem; fix
    assert "patch" not in resp


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ([], "JSON list"),
        (
            {"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"},
            "admissionReviewVersions",
        ),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}, "no request"),
        ({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}, "no uid"),
    ],
)
def test_not_an_admission_review(body, words):
    with pytest.raises(BadReview, match=words):
        mutate(body, S)


def test_mutate_does_not_change_its_input():
    p = pod({"rotor.dev/rw": "db"}, volumes=[{"name": "v", "emptyDir": {}}])
    before = copy.deepcopy(p)
    mutate(review(p), S)
    assert p == before


@pytest.mark.parametrize(
    ("settings", "restart", "warned"),
    [
        (CLASSIC, "Never", True),
        (CLASSIC, "OnFailure", True),
        (CLASSIC, "Always", False),
        (S, "Never", False),
    ],
)
def test_classic_agent_in_a_job_pod_is_warned_about(settings, restart, warned):
    p = pod({"rotor.dev/ro": "db"}, restartPolicy=restart)
    injected(p, settings)
    warnings = mutate(review(p), settings)["response"]["warnings"]
    assert any("does not complete" in w for w in warnings) is warned
