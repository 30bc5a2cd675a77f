"""What a user sees when the controller or `rotor acl` cannot reach a cluster: one line that
names the file or the server and the cause, exit status 1 (2 for bad input), no traceback, no
urllib3 retry warnings, and a bounded wait."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def run(module: str, *argv: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and "SERVICE" not in k}
    clean |= {"HOME": str(home), "ROTOR_CONTROLLER_METRICS_PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=clean,
        timeout=60,
    )


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    err = p.stderr.strip()
    assert "Traceback" not in err, err
    assert "Retrying" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def test_controller_without_any_configuration(tmp_path: Path) -> None:
    p = run("controller.main", home=tmp_path)
    err = one_line(p)
    assert p.returncode == 1
    assert "no Kubernetes configuration" in err
    assert str(tmp_path / ".kube" / "config") in err
    assert "--kubeconfig" in err


@pytest.mark.parametrize("how", ["flag", "env"])
def test_controller_names_a_missing_kubeconfig(tmp_path: Path, how: str) -> None:
    missing = str(tmp_path / "nope")
    if how == "flag":
        p = run("controller.main", "--kubeconfig", missing, home=tmp_path)
    else:
        p = run("controller.main", home=tmp_path, KUBECONFIG=missing)
    err = one_line(p)
    assert p.returncode == 1
    assert f"{missing}: cannot read it (No such file or directory)" in err


def test_controller_gives_up_on_an_unreachable_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    p = run("controller.main", "--server", url, "--connect-attempts", "2", home=tmp_path)
    took = time.monotonic() - t0
    err = one_line(p)
    assert p.returncode == 1
    assert f"the API server at {url} did not answer (Connection refused)" in err
    assert "gave up after 2 attempts 2s apart" in err
    assert took < 30, took


class Refuse(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"kind":"Status","status":"Failure","reason":"Unauthorized","code":401}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def refusing_server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: not-a-valid-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    return path


def test_controller_says_the_credentials_were_refused(tmp_path: Path, refusing_server: str) -> None:
    cfg = kubeconfig(tmp_path / "kubeconfig", refusing_server)
    p = run("controller.main", "--kubeconfig", str(cfg), home=tmp_path)
    err = one_line(p)
    assert p.returncode == 1
    assert f"the API server at {refusing_server} refused the credentials (HTTP 401)" in err


def test_acl_list_names_a_missing_kubeconfig(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    p = run("rotorctl.cli", "acl", "list", "--kubeconfig", missing, home=tmp_path)
    err = one_line(p)
    assert p.returncode == 2
    assert f"--kubeconfig: cannot read {missing} (No such file or directory)" in err


def test_acl_list_against_a_stopped_server(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    cfg = kubeconfig(tmp_path / "kubeconfig", url)
    p = run("rotorctl.cli", "acl", "list", "--kubeconfig", str(cfg), home=tmp_path)
    err = one_line(p)
    assert p.returncode == 1
    assert f"the API server at {url} did not answer (Connection refused)" in err
    assert "MaxRetryError" not in err


def test_acl_list_with_refused_credentials(tmp_path: Path, refusing_server: str) -> None:
    cfg = kubeconfig(tmp_path / "kubeconfig", refusing_server)
    p = run("rotorctl.cli", "acl", "list", "--kubeconfig", str(cfg), home=tmp_path)
    err = one_line(p)
    assert p.returncode == 1
    assert "HTTP 401" in err


@pytest.mark.parametrize(
    ("blocked", "argv", "needs"),
    [
        ("kubernetes", ["acl", "list"], "rotor acl needs the Kubernetes client"),
        ("ic", ["acl", "list", "--backend", "canister", "--identity", "x"], "rotor acl needs"),
        ("kmock", ["demo", "--duration", "1s"], "rotor demo needs kmock"),
    ],
)
def test_rotor_without_an_optional_part_names_the_pip_command(
    tmp_path: Path, blocked: str, argv: list[str], needs: str
) -> None:
    """`pip install .` (no extra) leaves these out; None in sys.modules makes the import fail
    the way a missing package does."""
    (tmp_path / "x").write_text("not a key")
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; from rotorctl.cli import main; "
        f"sys.exit(main({argv!r}))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"HOME": str(tmp_path)},
        timeout=60,
    )
    err = one_line(p)
    assert p.returncode == 1
    assert needs in err
    assert "pip install '.[cli]' in a checkout of Rotor" in err
