"""The agent in a shared process namespace: another process of its user cannot open
``/proc/<agent>/root`` (where its service-account token is) or ``/proc/<agent>/environ``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

AGENT_UID = 65532

# The real in-cluster entry point (agent.cli main, no subcommand), with the run loop replaced by
# one that says it is up and waits: what matters is what the entry point did before running.
AGENT = textwrap.dedent(
    f"""
    import asyncio, os, sys
    import agent.cli, agent.harden, agent.incluster, prometheus_client, rotor.logs
    import rotor.settings.agent
    os.setgid({AGENT_UID}); os.setuid({AGENT_UID})  # after the imports: the venv may be root's
    # setuid() made this process not dumpable; a container's process starts dumpable (execve as
    # that user): set it back, so the test starts where a real agent starts.
    import ctypes
    assert ctypes.CDLL(None).prctl(4, 1, 0, 0, 0) == 0
    async def run(env):
        print("up", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        return 0
    agent.incluster.run = run
    from agent.cli import main
    sys.exit(main([]))
    """
)
# The app: the same user, no capabilities (as in a container), trying the agent's /proc entries.
APP = textwrap.dedent(
    f"""
    import os, sys
    os.setgid({AGENT_UID}); os.setuid({AGENT_UID})
    pid = sys.argv[1]
    for what in ("root", "environ"):
        try:
            if what == "root":
                os.listdir(f"/proc/{{pid}}/root/")
            else:
                open(f"/proc/{{pid}}/environ", "rb").read()
            print(what, "readable")
        except PermissionError:
            print(what, "refused")
    """
)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run two processes as user 65532")
def test_the_app_cannot_open_the_agents_proc_entries():
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "ROTOR_MODE": "ro",
            "ROTOR_SECRETS": "shop/db",
            # the configuration is read before run(): enough of it to be valid
            "ROTOR_POD_NAMESPACE": "web",
            "ROTOR_KUBE_URL": "http://127.0.0.1:1",
        },
    )
    try:
        assert agent.stdout is not None
        line = agent.stdout.readline()
        assert line.strip() == "up", agent.stderr.read() if agent.stderr else line
        app = subprocess.run(
            [sys.executable, "-c", APP, str(agent.pid)], capture_output=True, text=True, timeout=60
        )
        assert app.returncode == 0, app.stderr
        assert app.stdout.split("\n")[:2] == ["root refused", "environ refused"]
    finally:
        agent.communicate("\n", timeout=30)
