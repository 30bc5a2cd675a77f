"""``rotor-agent standalone`` as a user runs it: a real process, its exit codes and messages,
state kept across restarts, rotate-now by signal, and no secret value in any log line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.cli import _serve
from agent.store import FileStore
from rotor.errors import InvalidSpec
from rotor.layout import SecretState
from rotor.protocol import ProtocolError, prepare
from tests.conftest import wait_until

AGENT = [sys.executable, "-m", "agent", "standalone"]


def run(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "ROTOR_LOG_LEVEL": "INFO"},
    )


def write_config(tmp_path: Path, doc: object, name: str = "secrets.yaml") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return path


def state_doc(tmp_path: Path, name: str) -> dict[str, object]:
    return json.loads((tmp_path / "out" / ".rotor" / f"{name}.json").read_text())


KEY = {"name": "password", "generator": {"type": "password", "length": 20}}


@pytest.mark.parametrize(
    ("doc", "field", "fix"),
    [
        (
            [{"name": "db", "spec": {"keys": [{"name": "pw", "generator": {"type": "pasword"}}]}}],
            "[0].spec.keys[0].generator.type",
            "use one of password, token",
        ),
        (
            [{"name": "db", "spec": {"keys": [KEY]}, "extra": 1}],
            "[0].extra",
            "remove it",
        ),
        ([{"name": "db"}], "[0].spec", "add spec"),
        (
            [
                {
                    "name": "db",
                    "spec": {"keys": [KEY], "rotation": {"interval": "1h", "overlap": "2h"}},
                }
            ],
            "[0].spec.rotation.overlap",
            "make overlap shorter than 57m",
        ),
        (
            [{"name": "db", "spec": {"keys": [KEY], "rotation": {"interval": 60}}}],
            "[0].spec.rotation.interval",
            "write a number with a unit",
        ),
        (
            [{"name": "db", "spec": {"keys": [KEY]}}, {"name": "db", "spec": {"keys": [KEY]}}],
            "[1].name",
            "give every secret its own name",
        ),
        ([{"name": "Bad_Name", "spec": {"keys": [KEY]}}], "[0].name", "use lower-case"),
        (
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "spec": {}},
            "(top).kind",
            "use kind: RotatingSecret",
        ),
        ([], "config", "list at least one"),
    ],
)
def test_invalid_config_exits_2_naming_the_field_and_the_fix(
    tmp_path: Path, doc: object, field: str, fix: str
) -> None:
    path = write_config(tmp_path, doc)
    r = run(tmp_path, "--config", str(path), "--dir", "out", "--once")
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(f"rotor-agent: error: {path}: {field}: ")
    assert fix in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--config", "missing.yaml"], "--config: missing.yaml: no such file"),
        (
            ["--name", "db", "--key", "pw", "--generator", "pasword"],
            "--generator (key 1: generator.type)",
        ),
        (["--name", "db", "--key", "pw", "--generator", "password:length=3"], "out of range"),
        (
            ["--name", "db", "--key", "pw", "--interval", "soon"],
            "--interval: 'soon' is not a duration",
        ),
        (["--name", "db"], "--key: no key given"),
        (["--demo", "--name", "db"], "--demo and --name cannot be combined"),
        ([], "no secret given; give one of --config FILE, --demo"),
        (["--demo", "--reload", "signal:HUP"], "add --reload-process NAME or --reload-pid PID"),
        (
            ["--demo", "--apply-hook", "http://example.com/x"],
            "--apply-hook: 'http://example.com/x' is not a loopback",
        ),
        (["--demo", "--metrics-port", "70000"], "--metrics-port: 70000 is out of range"),
    ],
)
def test_bad_flags_exit_2_with_one_clear_line(
    tmp_path: Path, args: list[str], expected: str
) -> None:
    r = run(tmp_path, *args, "--once")
    assert r.returncode == 2
    assert expected in r.stderr
    assert "Traceback" not in r.stderr


def test_an_overlap_longer_than_the_jittered_interval_is_refused(tmp_path: Path) -> None:
    """With ROTOR_JITTER=0.5 a 2s interval may rotate after 1s: a 1.5s overlap would end early."""
    doc = [{"name": "db", "spec": {
        "keys": [{"name": "pw", "generator": {"type": "password"}}],
        "rotation": {"interval": "2s", "overlap": "1500ms"},
    }}]  # fmt: skip
    path = write_config(tmp_path, doc)
    r = subprocess.run(
        [*AGENT, "--config", str(path), "--dir", "out", "--once"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "ROTOR_JITTER": "0.5"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert (
        "db: spec.rotation.overlap: overlap 1s500ms is not shorter than the shortest " in r.stderr
    )
    assert "make overlap shorter than 1s" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "db").exists()


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text("- name: db\n  spec: {keys: [\n")
    r = run(tmp_path, "--config", "s.yaml", "--once")
    assert r.returncode == 2
    assert "s.yaml: is not valid YAML at line" in r.stderr


@pytest.mark.parametrize("where", ["file-in-the-way", "read-only-fs"])
def test_unwritable_folder_is_a_clear_error(tmp_path: Path, where: str) -> None:
    if where == "file-in-the-way":
        (tmp_path / "afile").write_text("x")
        folder = str(tmp_path / "afile" / "sub")
    else:
        folder = "/sys/rotor-agent-test"
    r = run(tmp_path, "--demo", "--dir", folder, "--once")
    assert r.returncode == 2
    assert f"rotor-agent: error: --dir: cannot write to {folder} (" in r.stderr
    assert "choose a folder you can write with --dir" in r.stderr
    assert "Traceback" not in r.stderr


def test_accepts_real_manifests_json_and_lists(tmp_path: Path) -> None:
    manifest = {
        "apiVersion": "rotor.dev/v1alpha1",
        "kind": "RotatingSecret",
        "metadata": {"name": "api-token", "namespace": "shop", "labels": {"a": "b"}},
        "spec": {"keys": [{"name": "token", "generator": {"type": "token", "encoding": "hex"}}]},
        "status": {"version": 3},
    }
    path = tmp_path / "m.yaml"
    path.write_text(
        yaml.safe_dump(manifest)
        + "---\n"
        + yaml.safe_dump({"kind": "List", "items": [{"name": "db", "spec": {"keys": [KEY]}}]})
    )
    r = run(tmp_path, "--config", "m.yaml", "--dir", "out", "--once", "--metrics-port", "0")
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "out" / "api-token" / "token").read_text()) == 64
    assert len((tmp_path / "out" / "db" / "password").read_text()) == 20
    jpath = write_config(tmp_path, [{"name": "j", "spec": {"keys": [KEY]}}], "c.json")
    r = run(tmp_path, "--config", str(jpath), "--dir", "out", "--once")
    assert r.returncode == 0, r.stderr


def test_restart_keeps_a_valid_value_and_versions_keep_counting(tmp_path: Path) -> None:
    args = [
        "--name",
        "db",
        "--key",
        "pw",
        "--key",
        "sig",
        "--generator",
        "password:length=24",
        "--generator",
        "ed25519",
        "--interval",
        "1h",
        "--overlap",
        "10m",
        "--dir",
        "out",
        "--once",
    ]
    assert run(tmp_path, *args).returncode == 0
    out = tmp_path / "out" / "db"
    first = (out / "pw").read_text()
    assert (out / "sig.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    state_file = tmp_path / "out" / ".rotor" / "db.json"
    assert oct(state_file.stat().st_mode & 0o777) == "0o600"

    assert run(tmp_path, *args).returncode == 0
    assert (out / "pw").read_text() == first  # still valid: not regenerated
    assert state_doc(tmp_path, "db")["annotations"]["rotor.dev/version"] == "1"  # type: ignore[index]

    doc = state_doc(tmp_path, "db")
    doc["annotations"]["rotor.dev/rotated-at"] = "2000-01-01T00:00:00Z"  # type: ignore[index]
    state_file.write_text(json.dumps(doc))
    r = run(tmp_path, *args)
    assert r.returncode == 0
    assert "rotated secret=db version=2 reason=due" in r.stderr
    assert (out / "pw").read_text() != first
    assert (out / "pw.previous").read_text() == first
    assert (out / "sig.previous").exists()


async def test_pending_rotation_is_finished_on_start(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "out" / ".rotor" / "db.json")
    base = SecretState(version=5, current={"pw": b"old-value-1234"}, rotated_at=time.time())
    token = await store.write(base, "")
    await store.write(prepare(base, {"pw": b"new-value-5678"}, time.time(), "w"), token)
    r = run(tmp_path, "--name", "db", "--key", "pw", "--dir", "out", "--once")
    assert r.returncode == 0, r.stderr
    assert "pending rotation found secret=db version=6 action=commit" in r.stderr
    assert (tmp_path / "out" / "db" / "pw").read_text() == "new-value-5678"
    assert (tmp_path / "out" / "db" / "pw.previous").read_text() == "old-value-1234"


def test_full_run_rotates_on_signal_and_schedule_and_logs_no_value(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [
            {
                "name": "app",
                "spec": {
                    "keys": [
                        KEY,
                        {"name": "api-token", "generator": {"type": "token"}},
                        {"name": "tls", "generator": {"type": "ecdsa"}},
                    ],
                    "rotation": {"interval": "2s", "overlap": "1s"},
                },
            }
        ],
    )
    folder = tmp_path / "out" / "app"
    seen: set[str] = set()

    def version() -> int:
        try:
            return int(state_doc(tmp_path, "app")["annotations"]["rotor.dev/version"])  # type: ignore[index]
        except (FileNotFoundError, ValueError, KeyError):
            return 0

    def collect() -> None:
        for name in ("password", "api-token", "tls", "password.previous"):
            with contextlib.suppress(FileNotFoundError):
                seen.add((folder / name).read_text())

    proc = subprocess.Popen(
        [*AGENT, "--config", str(config), "--dir", "out", "--metrics-port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ROTOR_LOG_LEVEL": "DEBUG"},
    )
    try:
        wait_until("version 1", lambda: version() >= 1, 30)
        collect()
        proc.send_signal(signal.SIGUSR1)  # rotate now
        wait_until("version 2 (SIGUSR1)", lambda: version() >= 2, 30)
        collect()
        wait_until("version 4", lambda: version() >= 4, 30)  # on schedule
        collect()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0
    assert "reason=requested" in err
    assert "reason=due" in err
    assert "agent stopped" in err
    assert len(seen) >= 6
    # no line was even about to carry a value: the redaction filter (a second line of defence)
    # replaces such a line with a marker, which the greps below would not see
    assert "[log line dropped" not in err
    assert "[log line dropped" not in out
    for value in seen:
        for line in value.splitlines():
            if not line.startswith("-----"):
                assert line not in err
                assert line not in out
    assert "Traceback" not in err


def test_second_agent_on_the_same_folder_is_refused(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*AGENT, "--demo", "--dir", "out", "--metrics-port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until("the demo's first files", (tmp_path / "out" / "demo" / "password").exists, 30)
        r = run(tmp_path, "--demo", "--dir", "out", "--once")
        assert r.returncode == 2
        assert f"another rotor-agent (pid {proc.pid}) is already rotating into out" in r.stderr
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_demo_prints_where_files_and_metrics_are(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [*AGENT, "--demo", "--metrics-port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = [proc.stdout.readline() for _ in range(6)]
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    text = "".join(banner)
    assert "rotates every 30s into rotor-demo/demo/" in text
    assert "password, signing-key, signing-key.pub" in text
    assert f"http://127.0.0.1:{port}/metrics" in text
    assert (tmp_path / "rotor-demo" / "demo" / "signing-key").exists()
    assert proc.returncode == 0, err


def test_metrics_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run(
            tmp_path, "--name", "db", "--key", "pw", "--dir", "out", "--metrics-port", str(port)
        )
    assert r.returncode == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "choose another port, or 0 to turn the metrics server off" in r.stderr
    assert "Traceback" not in r.stderr
    # refused before anything is written: no version 1 in the folder, none in the log
    assert not (tmp_path / "out" / "db").exists()
    assert "version=1" not in r.stderr
    assert "version 1" not in r.stderr


def test_the_error_docs_agent_md_shows_is_what_its_config_file_gives(tmp_path: Path) -> None:
    """docs/agent.md's example error is printed for its own example config file with the typo
    it names: the path in it is the one a user sees."""
    doc = (Path(__file__).parents[2] / "docs" / "agent.md").read_text()
    config = doc.split("## Config file", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert "type: password, length: 32" in config
    (tmp_path / "secrets.yaml").write_text(config.replace("type: password,", "type: pasword,", 1))
    r = run(tmp_path, "--config", "secrets.yaml", "--dir", "out", "--once")
    assert r.returncode == 2
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("rotor-agent: error:")]
    assert line in doc


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (InvalidSpec("spec.keys[0].name", "must be a DNS label", "rename it"), 2),
        (ProtocolError("phase", "nothing is pending", "prepare before commit"), 1),
    ],
)
def test_a_protocol_bug_is_reported_as_a_failure_not_as_bad_input(
    raised: Exception,
    code: int,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit 2 tells the user to fix their input; a refused transition is Rotor's bug (or a
    lost race) and must not send them looking for a mistake in their spec."""
    # the process-wide set-up _serve does (a root handler on this test's stderr) stays out
    monkeypatch.setattr("rotor.logs.setup", lambda _level: None)
    monkeypatch.setattr("prometheus_client.disable_created_metrics", lambda: None)

    async def start(_config: object) -> int:
        raise raised

    assert _serve(lambda: None, lambda _c: "INFO", start) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    if code == 1:
        assert "rotation protocol: phase: nothing is pending" in err
