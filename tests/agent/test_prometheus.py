"""A real Prometheus scrapes a running agent; promtool checks the scrape text."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, require_tool, wait_until

HOW = "apt-get install -y --no-install-recommends prometheus"


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def answer(url: str) -> str:
    """The body at ``url``, or "" while nothing answers there yet."""
    try:
        return get(url)
    except OSError:
        return ""


@pytest.mark.slow  # a real Prometheus
def test_prometheus_scrapes_the_agent_and_promtool_accepts_the_text(tmp_path: Path) -> None:
    prometheus = require_tool("prometheus", HOW)
    promtool = require_tool("promtool", HOW)
    agent_port, prom_port = free_port(), free_port()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent",
            "standalone",
            "--demo",
            "--dir",
            "out",
            "--metrics-port",
            str(agent_port),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "rotor-agent",
                        "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}],
                    }
                ],
            }
        )
    )
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = f"http://127.0.0.1:{agent_port}/metrics"
        text = str(wait_until("the agent's /metrics", lambda: answer(metrics)))
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr

        api = f"http://127.0.0.1:{prom_port}/api/v1/query?query=rotor_agent_secret_version"

        def scraped() -> list[dict[str, object]]:
            text = answer(api)
            if not text:
                return []
            body = json.loads(text)
            assert body["status"] == "success"
            return list(body["data"]["result"])

        result = wait_until("Prometheus to scrape the agent", scraped)
        assert isinstance(result, list)
        (series,) = result
        assert series["metric"]["secret"] == "demo"
        assert series["metric"]["job"] == "rotor-agent"
        assert float(series["value"][1]) >= 1
        up = json.loads(get(f"http://127.0.0.1:{prom_port}/api/v1/query?query=up"))
        assert up["data"]["result"][0]["value"][1] == "1"
    finally:
        for p in (prom, agent):
            p.terminate()
        for p in (prom, agent):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert agent.returncode == 0
    assert os.path.exists(tmp_path / "out" / "demo" / "password")
