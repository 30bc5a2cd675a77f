"""Both images, built by a real container runtime (podman) and run the way the chart runs them:
uid 65532, read-only root filesystem, every capability dropped, no privilege escalation.

* The agent image rotates into a tmpfs volume shared with a second container of the same pod,
  which sees each new value.
* The controller image serves the webhook over TLS and answers an AdmissionReview, and runs the
  controller against the Kubernetes API emulator (it writes the ACL ConfigMap).
* Every console script in each image starts; nothing is written to the root filesystem.

The images are built once per run by ``make images LOCAL_BASE=1`` (the base from Debian's
packages with debootstrap, since no registry can be reached here); podman needs root and the
settings in tests/images/containers.conf. Skipped, with the reason, where podman is absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.kube import Kube, path
from kubeemu.emulator import EmulatorThread
from rotorctl.tls import make_certs
from tests.conftest import IN_CI, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONF = Path(__file__).with_name("containers.conf")
TAG = "test-" + hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]  # one per checkout
AGENT = f"localhost/rotor-agent:{TAG}"
CONTROLLER = f"localhost/rotor-controller:{TAG}"
UID = "65532"
# What the chart's securityContext sets (runAsUser/Group 65532, readOnlyRootFilesystem, drop ALL,
# allowPrivilegeEscalation false).
HARDENED = [
    "--read-only",
    "--cap-drop",
    "ALL",
    "--user",
    f"{UID}:{UID}",
    "--security-opt",
    "no-new-privileges",
]
# podman itself bind-mounts these into every container; they are not the process's writes
PODMAN_OWN = {"C /etc", "A /etc/hosts", "A /etc/hostname", "A /etc/resolv.conf", "C /run"}
BUILD_TIMEOUT = 1800

pytestmark = pytest.mark.slow


def _podman() -> str:
    path = shutil.which("podman")
    if path is None or shutil.which("runc") is None:
        msg = "podman and runc are not installed (make system-deps installs them as root)"
    elif os.geteuid() != 0:
        msg = "podman runs containers here as root only (see docs/install.md)"
    else:
        return path
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"CONTAINERS_CONF": str(CONF)}
    p = subprocess.run([_podman(), *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {p.returncode}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def images() -> None:
    """``make images LOCAL_BASE=1``: the base once (kept between runs), then both images."""
    _podman()
    if os.environ.get("ROTOR_TEST_IMAGES_PREBUILT") == "1":  # tags built by an earlier run
        return
    p = subprocess.run(
        ["make", "-C", str(ROOT), "images", "LOCAL_BASE=1", f"IMAGE_TAG={TAG}"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT,
        env=os.environ | {"CONTAINERS_CONF": str(CONF)},
    )
    assert p.returncode == 0, f"make images failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"


@pytest.fixture
def names() -> Iterator[Callable[[str], str]]:
    """Unique container/pod/volume names; every one is removed afterwards."""
    made: list[tuple[str, str]] = []

    def name(kind: str) -> str:
        n = f"rotor-test-{kind}-{uuid.uuid4().hex[:8]}"
        made.append((kind, n))
        return n

    yield name
    for kind, n in reversed(made):
        if kind == "pod":
            podman("pod", "rm", "-f", n, check=False)
        elif kind == "vol":
            podman("volume", "rm", "-f", n, check=False)
        else:
            podman("rm", "-f", "-t", "2", n, check=False)


def root_fs_writes(container: str, *mounts: str) -> set[str]:
    """What ``podman diff`` lists, less what podman made itself (its /etc files and the
    mount points of the volumes, with their parents)."""
    made = {f"A {p}" for m in mounts for p in [m, *map(str, Path(m).parents)] if p != "/"}
    return set(podman("diff", container).stdout.split("\n")) - PODMAN_OWN - made - {""}


def bin_scripts(image: str) -> set[str]:
    out = podman(
        "run", "--rm", *HARDENED, "--network", "none", "--entrypoint", "ls", image, "/opt/rotor/bin"
    ).stdout.split()
    return {n for n in out if n.startswith("rotor")}


@pytest.mark.parametrize(
    ("image", "scripts"),
    [
        (AGENT, {"rotor-agent"}),
        (CONTROLLER, {"rotor-controller", "rotor-webhook", "rotor-audit-receiver"}),
    ],
)
def test_every_entry_point_of_the_image_starts(images: None, image: str, scripts: set[str]) -> None:
    assert bin_scripts(image) == scripts  # no console script whose package is not in the image
    for script in sorted(scripts):
        p = podman(
            "run", "--rm", *HARDENED, "--network", "none", "--entrypoint", script, image, "--help",
            check=False,
        )  # fmt: skip
        assert p.returncode == 0, f"{script} --help: {p.stderr}"
        assert p.stdout.startswith(f"usage: {script}"), p.stdout


@pytest.mark.parametrize(
    ("image", "command", "message"),
    [
        (AGENT, [], "rotor-agent: error: ROTOR_MODE: '' is not a mode"),
        (CONTROLLER, [], "rotor-controller: no Kubernetes configuration"),
        (CONTROLLER, ["rotor-webhook"], "rotor-webhook: ROTOR_WEBHOOK_CERT_FILE: cannot load"),
    ],
)
def test_unconfigured_entry_points_say_what_is_missing(
    images: None, image: str, command: list[str], message: str
) -> None:
    p = podman("run", "--rm", *HARDENED, "--network", "none", image, *command, check=False)
    assert p.returncode in (1, 2)
    assert "Traceback" not in p.stderr
    assert p.stderr.strip().startswith(message), p.stderr


READER = """
import hashlib, os, sys, time
path = "/run/secrets/rotor/db/password"
seen = None
while True:
    try:
        value = open(path, "rb").read()
    except OSError:
        value = None
    if value and value != seen:
        seen = value
        print(len(value), hashlib.sha256(value).hexdigest()[:16], os.getuid(), flush=True)
    time.sleep(0.1)
"""


def test_agent_rotates_into_a_tmpfs_shared_with_the_app(
    images: None, names: Callable[[str], str]
) -> None:
    vol, pod, agent, app = names("vol"), names("pod"), names("ctr"), names("ctr")
    # The chart's emptyDir {medium: Memory}: a tmpfs owned by the agent's uid.
    podman("volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
           "--opt", f"o=uid={UID},gid={UID},mode=0750,nodev,nosuid,noexec", vol)  # fmt: skip
    podman("pod", "create", "--infra=false", "--name", pod)  # no pause image to pull here
    podman(
        "run", "-d", "--pod", pod, "--name", agent, *HARDENED, "--network", "none",
        "-v", f"{vol}:/run/secrets/rotor", AGENT,
        "standalone", "--name", "db", "--key", "password", "--generator", "password:length=24",
        "--interval", "2s", "--overlap", "1s", "--dir", "/run/secrets/rotor", "--metrics-port", "0",
    )  # fmt: skip
    podman(
        "run", "-d", "--pod", pod, "--name", app, *HARDENED, "--network", "none",
        "-v", f"{vol}:/run/secrets/rotor:ro", "--entrypoint", "python", AGENT, "-c", READER,
    )  # fmt: skip

    def values() -> list[list[str]]:
        lines = podman("logs", app).stdout.splitlines()
        return [ln.split() for ln in lines] if len(lines) >= 3 else []

    seen = wait_until("three values seen by the app container", values)
    assert all(length == "24" and uid == UID for length, _, uid in seen), seen
    assert len({digest for _, digest, _ in seen}) == len(seen), "each value is new"
    log = podman("logs", agent).stdout + podman("logs", agent).stderr
    assert "rotated secret=db version=3" in log, log
    assert "ERROR" not in log, log
    assert "Traceback" not in log, log
    for c in (agent, app):
        assert podman("inspect", "-f", "{{.State.Running}}", c).stdout.strip() == "true"
        assert root_fs_writes(c) == set()


def _certs(folder: Path) -> Path:
    """The harness's throwaway CA and certificate (rotorctl/tls.py), as a Secret volume."""
    ca, _, _ = make_certs(folder)
    for f in folder.iterdir():  # a Secret volume's files are world-readable (defaultMode 0644)
        f.chmod(0o644)
    folder.chmod(0o755)
    return ca


def test_controller_image_serves_the_webhook_over_tls(
    images: None, names: Callable[[str], str], tmp_path: Path
) -> None:
    ca = _certs(tmp_path / "tls")
    port, metrics = free_port(), free_port()
    webhook = names("ctr")
    podman(
        "run", "-d", "--name", webhook, *HARDENED, "--network", "host",
        "-v", f"{tmp_path / 'tls'}:/etc/rotor/tls:ro",
        "-e", "ROTOR_WEBHOOK_HOST=127.0.0.1", "-e", f"ROTOR_WEBHOOK_PORT={port}",
        "-e", f"ROTOR_WEBHOOK_METRICS_PORT={metrics}",
        "-e", f"ROTOR_AGENT_IMAGE={AGENT}",
        CONTROLLER, "rotor-webhook",
    )  # fmt: skip
    ctx = ssl.create_default_context(cafile=str(ca))
    base = f"https://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{base}/healthz", context=ctx, timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    wait_until(f"the webhook at {base}/healthz", healthy)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "api-",
            "namespace": "shop",
            "annotations": {"rotor.dev/rw": "db-password"},
        },
        "spec": {"containers": [{"name": "app", "image": "example/app:1"}]},
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f0c6f7e-1111-4b1e-9d5f-2f6c1a7e9a01",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
        },
    }
    req = urllib.request.Request(
        f"{base}/mutate",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        answer = json.loads(r.read())
    resp = answer["response"]
    assert resp["uid"] == review["request"]["uid"]
    assert resp["allowed"] is True
    import base64

    patch = json.loads(base64.b64decode(resp["patch"]))
    assert AGENT in json.dumps(patch), "the agent image is injected"
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
        assert b"rotor_webhook" in r.read()
    assert root_fs_writes(webhook, "/etc/rotor/tls") == set()


def test_controller_image_runs_the_controller_against_the_api(
    images: None, names: Callable[[str], str]
) -> None:
    controller = names("ctr")
    metrics = free_port()
    with EmulatorThread() as emu:
        Kube(emu.api_client()).create(
            path("rotor.dev/v1alpha1", "rotatingsecrets", "shop"),
            {
                "apiVersion": "rotor.dev/v1alpha1",
                "kind": "RotatingSecret",
                "metadata": {"name": "db", "namespace": "shop"},
                "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
            },
        )
        podman(
            "run", "-d", "--name", controller, *HARDENED, "--network", "host",
            "-e", "ROTOR_NAMESPACE=rotor-system", "-e", "ROTOR_ACL_BACKEND=configmap",
            "-e", f"ROTOR_CONTROLLER_METRICS_PORT={metrics}", "-e", "ROTOR_MANAGE_CERTS=false",
            CONTROLLER, "rotor-controller", "--server", emu.url,
        )  # fmt: skip

        def registered() -> bool:
            """The controller saw the secret: its status and the list of known secrets, which
            it keeps in the requests ConfigMap (it may not write the grants in rotor-acl)."""
            (rs,) = emu.objects("rotor.dev/v1alpha1", "rotatingsecrets")
            acl = [
                cm
                for cm in emu.objects("v1", "configmaps")
                if cm["metadata"].get("name") == "rotor-acl-requests"
                and cm["metadata"].get("namespace") == "rotor-system"
            ]
            return bool(
                (rs.get("status") or {}).get("phase") == "Pending"
                and acl
                and "shop/db" in acl[0].get("data", {}).get("acl.yaml", "")
            )

        try:
            wait_until(
                "the controller to register shop/db (status, ACL requests ConfigMap)", registered
            )
        finally:
            logs = podman("logs", controller, check=False)
        assert "Traceback" not in logs.stderr, logs.stderr[-3000:]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as r:
            assert b"rotor_" in r.read()
        assert root_fs_writes(controller) == set()
