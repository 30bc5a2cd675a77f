"""The chart's NOTES, run as printed: every ``rotor acl`` line of every value set is run (the
real ``rotor`` command) against the API the rendered controller uses, the Kubernetes emulator
for the ConfigMap backend and the local IC server for the canister backend, and the grants it
makes are the ones the controller then reads (its ``ROTOR_*`` settings from the rendered
Deployment). The kubectl lines: the emulator's discovery does not serve kubectl yet (``/apis/``
answers 404), so they are checked by the real kubectl's own flag parser (``--help`` after the
line's flags exits non-zero on an unknown flag) and the RotatingSecret they apply against the
CRD's schema."""

from __future__ import annotations

import asyncio
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes import client

from controller.acl.configmap import ConfigMapAclBackend
from rotor.acl import AclBackend
from rotor.names import Principal, SecretRef
from rotor.settings.controller import ControllerSettings
from rotorctl.cli import main
from tests.canister.conftest import ADMIN_KEY, CONTROLLER_KEY, backend_for, identity
from tests.canister.ic_server import IcServer, IcServerThread
from tests.chart.chartlib import containers, crds, env_of, one, render, render_files
from tests.kubeemu import EmulatorThread

SECRET = SecretRef("shop", "db-password")
GRANTS = {(Principal("shop", "api"), "rw"), (Principal("shop", "web"), "ro")}
CONFIGMAP_SETS = {
    "defaults": ({}, "rotor-system"),
    "another namespace": ({}, "secrets-infra"),
    "another configmap": ({"acl": {"configmap": {"name": "team-acl"}}}, "platform"),
}


def notes(values: dict[str, Any], namespace: str) -> str:
    return render_files(values, namespace)["rotor/templates/NOTES.txt"]


def printed(text: str, program: str) -> list[list[str]]:
    """The command lines of ``program`` the NOTES print, as argv lists."""
    return [
        shlex.split(line.strip())[1:]
        for line in text.splitlines()
        if line.strip().startswith(program + " ")
    ]


def controller_settings(values: dict[str, Any], namespace: str) -> ControllerSettings:
    deploy = one(render(values, namespace), "Deployment", "rotor-controller")
    return ControllerSettings.from_env(env_of(containers(deploy)["controller"]))


def run_rotor_lines(text: str, extra: list[str]) -> list[str]:
    out = []
    for argv in printed(text, "rotor"):
        assert argv[:1] == ["acl"], argv
        assert main([*argv, *extra]) == 0, argv
        out.append(" ".join(argv))
    return out


def granted(backend: AclBackend) -> set[tuple[Principal, str]]:
    snap = asyncio.run(backend.snapshot())
    return {(g.principal, g.mode) for g in snap.grants if g.secret == SECRET}


@pytest.mark.parametrize("case", CONFIGMAP_SETS)
def test_printed_rotor_lines_work_with_the_configmap_backend(case: str, tmp_path: Path) -> None:
    values, namespace = CONFIGMAP_SETS[case]
    text = notes(values, namespace)
    settings = controller_settings(values, namespace)
    with EmulatorThread() as emu:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": emu.url}}],
                    "users": [{"name": "admin", "user": {"token": "t"}}],
                    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "admin"}}],
                    "current-context": "c",
                }
            )
        )
        # what the controller does first: register the RotatingSecret in its ACL
        ctl = ConfigMapAclBackend(
            client.CoreV1Api(emu.api_client()), settings.namespace, settings.acl_configmap
        )
        asyncio.run(ctl.register_secret(SECRET))
        # the user's shell has the kubeconfig of the cluster, not the controller's settings
        ran = run_rotor_lines(text, [f"--kubeconfig={kubeconfig}"])
        assert len(ran) == 3
        assert ran[0].startswith("acl list")
        assert granted(ctl) == GRANTS


@pytest.fixture
def ic() -> Iterator[tuple[IcServer, Any, Any]]:
    """The local IC server of tests/canister, its admin and the controller (an operator)."""
    admin, ctl = identity(ADMIN_KEY), identity(CONTROLLER_KEY, "ed25519")
    with IcServerThread(IcServer(admin.sender().bytes)) as server:
        server.model.operators.add(ctl.sender().bytes)
        yield server, admin, ctl


def test_printed_rotor_lines_work_with_the_canister_backend(
    ic: tuple[IcServer, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ic_server, admin_identity, controller_identity = ic
    values = {
        "acl": {
            "backend": "canister",
            "canister": {
                "id": ic_server.canister_id,
                "host": ic_server.url,
                "rootKey": ic_server.root.der.hex(),
            },
        }
    }
    text = notes(values, "rotor-system")
    assert "dfx identity export NAME > admin.pem" in text
    ctl = backend_for(ic_server, controller_identity)
    asyncio.run(ctl.register_secret(SECRET))
    (tmp_path / "admin.pem").write_bytes(admin_identity.to_pem())  # the file the NOTES name
    monkeypatch.chdir(tmp_path)
    ran = run_rotor_lines(text, [])
    assert len(ran) == 3
    assert all(f"--canister-id {ic_server.canister_id}" in r for r in ran)
    assert granted(ctl) == GRANTS


def test_notes_say_what_a_principal_is_and_how_to_get_rotor() -> None:
    text = notes({}, "rotor-system")
    assert "A principal is NAMESPACE/SERVICEACCOUNT" in text
    # kube-rotor is on no package index: the line that works is the one docs/install.md gives
    assert "pip install '.[cli]'" in text
    assert "kube-rotor" not in text
    assert "rotor acl requests" not in text


def _kubectl_lines(text: str) -> list[list[str]]:
    lines = [ln.strip() for ln in text.splitlines()]
    joined = [ln.replace("-f - <<'YAML'", "-f -") for ln in lines if ln.startswith("kubectl ")]
    return [shlex.split(ln)[1:] for ln in joined]


@pytest.mark.parametrize("case", CONFIGMAP_SETS)
def test_printed_kubectl_lines_parse_and_apply_a_valid_object(case: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    values, namespace = CONFIGMAP_SETS[case]
    text = notes(values, namespace)
    lines = _kubectl_lines(text)
    assert next(a for a in lines if "rollout" in a)[:2] == ["-n", namespace]
    for argv in lines:
        p = subprocess.run([kubectl, *argv, "--help"], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (argv, p.stderr)
    heredoc = re.search(r"<<'YAML'\n(.*?)\n\s*YAML\n", text, re.S)
    assert heredoc is not None
    doc = yaml.safe_load(heredoc.group(1))
    crd = next(c for c in crds() if c["spec"]["names"]["kind"] == "RotatingSecret")
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate({"spec": doc["spec"]}, {"type": "object", **schema})


def _uninstall_deletes() -> dict[str, set[str]]:
    """kind -> names the Uninstall steps of docs/install.md delete (one kind per line)."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "install.md").read_text()
    block = text.split("## Uninstall", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    out: dict[str, set[str]] = {}
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        if argv[:1] != ["kubectl"] or "delete" not in argv:
            continue
        rest = [a for a in argv[argv.index("delete") + 1 :] if not a.startswith("-")]
        if argv[argv.index("delete") - 1 : argv.index("delete")] == ["-n"]:
            rest = rest[1:]
        kinds, names = rest[0], rest[1:]
        for kind in kinds.split(","):
            out.setdefault(kind, set()).update(names)
    return out


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"acl": {"backend": "canister", "canister": {"id": "rrkah-fqaaa-aaaaa-aaaaq-cai"}}},
        {"auditReceiver": {"enabled": True, "socket": {"allowedSources": ["10.42.0.0/16"]}}},
    ],
)
def test_uninstall_removes_what_the_release_leaves_behind(values: dict[str, Any]) -> None:
    """Everything the controller creates in the release namespace outside the release (named by
    the rendered controller's settings) is deleted by a line of the documented steps."""
    from controller.main import LEASE_NAME

    settings = controller_settings(values, "rotor-system")
    deleted = _uninstall_deletes()
    assert settings.acl_configmap in deleted["configmap"]
    assert {settings.webhook_cert_secret, settings.webhook_cert_secret + "-ca"} <= deleted["secret"]
    assert LEASE_NAME in deleted["lease"]
    if settings.acl_backend == "canister":
        assert settings.canister_identity_secret in deleted["secret"]
    if settings.audit_configmap:
        assert settings.audit_configmap in deleted["configmap"]
    assert "rolebindings" in deleted  # the per-grant RBAC, by label


def test_what_notes_say_get_rsec_shows_is_what_its_columns_are() -> None:
    """`kubectl get rsec` shows the CRD's printer columns and nothing else: the NOTES name only
    those, and show the consumers with a jsonpath (the columns have none)."""
    text = notes({}, "rotor-system")
    (crd,) = [c for c in crds() if c["spec"]["names"]["plural"] == "rotatingsecrets"]
    columns = {
        c["name"].lower() for v in crd["spec"]["versions"] for c in v["additionalPrinterColumns"]
    }
    said = re.search(r"get rsec db-password\n\s+shows the ([^,\n]+(?:, the [^,\n]+)*)", text)
    assert said is not None
    named = re.split(r",? (?:and )?the ", said.group(1).rstrip(","))
    assert named
    assert {n.strip() for n in named} <= columns, (named, columns)
    assert "consumer" not in said.group(0)
    assert "get rsec db-password -o jsonpath='{.status.consumers}'" in text
