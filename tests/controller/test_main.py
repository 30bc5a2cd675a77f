"""``rotor-controller`` as a process against the strict emulator: Lease, work, metrics, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from controller.kube import Kube, path
from rotor import API
from tests.conftest import free_port, require_tool

pytestmark = pytest.mark.slow  # the rotor-controller process

DEADLINE = 30.0


def poll(check, what):
    end = time.monotonic() + DEADLINE
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < end, f"not reached within {DEADLINE}s: {what}"
        time.sleep(0.1)


def reconciles_a_rotating_secret(kube: Kube) -> None:
    """Create shop/db and wait for the controller to create its source Secret."""
    kube.create(
        path(API, "rotatingsecrets", "shop"),
        {
            "apiVersion": API,
            "kind": "RotatingSecret",
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"keys": [{"name": "password", "generator": {"type": "password"}}]},
        },
    )
    poll(lambda: kube.get(path("v1", "secrets", "shop", "db")), "the source Secret")


def test_controller_process_leads_works_serves_metrics_and_stops_cleanly(kube_emulator, tmp_path):
    kube = Kube(kube_emulator.api_client())
    port = free_port()
    env = dict(
        os.environ,
        ROTOR_CONTROLLER_METRICS_PORT=str(port),
        ROTOR_ACL_POLL="1s",
        ROTOR_LOG_LEVEL="WARNING",
        POD_NAME="rotor-controller-0",
    )
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.main", "--server", kube_emulator.url],
        env=env,
        stderr=log,
    )
    try:
        lease_url = path("coordination.k8s.io/v1", "leases", "rotor-system", "rotor-controller")
        lease = poll(lambda: kube.get(lease_url), "the Lease")
        assert lease["spec"]["holderIdentity"].startswith("rotor-controller-0")

        reconciles_a_rotating_secret(kube)

        def scrape():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            except OSError:
                return None
            return text if 'rotor_controller_reconciles_total{result="ok"}' in text else None

        text = poll(scrape, "metrics with a reconcile")
        assert "rotor_controller_leader 1.0" in text
        promtool = require_tool("promtool", "apt-get install prometheus")
        check = subprocess.run(
            [promtool, "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
        assert not kube.get(lease_url)["spec"].get("holderIdentity")  # released at once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "controller.log").read_text()[-3000:])
        kube.close()


def test_kubeconfig_flag_is_what_the_watches_log_in_with(kube_emulator, tmp_path):
    """``--kubeconfig FILE`` is the controller's identity for its watches too (kopf's own login
    would read KUBECONFIG, here a file for a server that is not there, and never see the
    RotatingSecret)."""
    emu = kube_emulator
    good = emu.write_kubeconfig(tmp_path / "good")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(good.read_text().replace(emu.url, f"http://127.0.0.1:{free_port()}"))
    kube = Kube(emu.api_client())
    env = dict(
        os.environ,
        KUBECONFIG=str(elsewhere),
        ROTOR_CONTROLLER_METRICS_PORT=str(free_port()),
        ROTOR_LOG_LEVEL="WARNING",
        ROTOR_LEADER_ELECTION="false",
    )
    log = (tmp_path / "controller.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.main", "--kubeconfig", str(good)],
        env=env,
        stderr=log,
    )
    try:
        reconciles_a_rotating_secret(kube)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "controller.log").read_text()[-3000:])
        kube.close()


def test_a_second_sigterm_while_stopping_is_harmless(kube_emulator, tmp_path):
    """`rotor demo` (and a person pressing Ctrl-C twice) signals twice: the stop stays clean,
    with no asyncio InvalidStateError in the log (kopf's handler set a done future again)."""
    kube = Kube(kube_emulator.api_client())
    env = dict(
        os.environ,
        ROTOR_CONTROLLER_METRICS_PORT=str(free_port()),
        ROTOR_LOG_LEVEL="INFO",
        ROTOR_LEADER_ELECTION="false",
    )
    log_path = tmp_path / "controller.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "controller.main", "--server", kube_emulator.url],
            env=env,
            stderr=log,
        )
        try:
            reconciles_a_rotating_secret(kube)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(DEADLINE) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            kube.close()
    text = log_path.read_text()
    assert "Operator is stopping" in text or "stopping" in text.lower()
    assert "InvalidStateError" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
