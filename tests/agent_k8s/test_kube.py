"""agent.kube: configuration, calls and watches against kmock, and error paths against a scripted
API server (an in-process aiohttp app that answers what a real API server answers)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.kube import (
    MERGE_PATCH,
    Forbidden,
    KubeClient,
    KubeConfig,
    secret_path,
    secrets_path,
)
from rotor.errors import ConflictError, InvalidSpec, NotFoundError, UnavailableError
from tests.agent_k8s.conftest import Emulator
from tests.conftest import until
from tests.kubeemu import EmulatorThread

NS = "shop"


def secret(name: str, data: dict[str, str], rv: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if rv:
        meta["resourceVersion"] = rv
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "data": data}


# -- configuration ---------------------------------------------------------------------------------
def test_in_cluster_config_reads_service_host_and_account_files(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("t0\n")
    (tmp_path / "ca.crt").write_text("pem")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    cfg = KubeConfig.from_env(env, sa_dir=str(tmp_path))
    assert cfg.url == "https://10.96.0.1:6443"
    assert cfg.token_file == str(tmp_path / "token")
    assert cfg.ca_file == str(tmp_path / "ca.crt")
    assert not cfg.insecure
    v6 = KubeConfig.from_env({"KUBERNETES_SERVICE_HOST": "fd00::1"}, sa_dir=str(tmp_path))
    assert v6.url == "https://[fd00::1]:443"


def test_override_url_for_tests_and_demo(tmp_path: Path) -> None:
    env = {
        "ROTOR_KUBE_URL": "http://127.0.0.1:8080/",
        "ROTOR_KUBE_TOKEN_FILE": str(tmp_path / "t"),
        "ROTOR_KUBE_INSECURE": "true",
        "ROTOR_KUBE_WATCH_TIMEOUT": "30s",
    }
    cfg = KubeConfig.from_env(env, sa_dir=str(tmp_path / "absent"))
    assert cfg.url == "http://127.0.0.1:8080"
    assert cfg.token_file == str(tmp_path / "t")
    assert cfg.insecure
    assert cfg.watch_timeout == 30.0


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({}, "KUBERNETES_SERVICE_HOST"),
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, "KUBERNETES_SERVICE_HOST"),  # no token file
        ({"ROTOR_KUBE_URL": "localhost:8080"}, "ROTOR_KUBE_URL"),
        ({"ROTOR_KUBE_URL": "http://x", "ROTOR_KUBE_INSECURE": "maybe"}, "ROTOR_KUBE_INSECURE"),
    ],
)
def test_config_errors_name_the_variable(tmp_path: Path, env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidSpec) as e:
        KubeConfig.from_env(env, sa_dir=str(tmp_path))
    assert e.value.field == field
    assert e.value.fix


# -- calls against kmock ---------------------------------------------------------------------------
async def test_get_create_and_merge_patch_with_precondition(kmock_api: Emulator) -> None:
    async with KubeClient(KubeConfig(url=kmock_api.url)) as kube:
        await kube.create(secrets_path(NS), secret("db", {"a": "YQ==", "b": "Yg=="}))
        got = await kube.get(secret_path(NS, "db"))
        assert got["data"] == {"a": "YQ==", "b": "Yg=="}
        out = await kube.patch(
            secret_path(NS, "db"), {"data": {"a": None, "c": "Yw=="}}, resource_version="7"
        )
        assert out["data"] == {"b": "Yg==", "c": "Yw=="}  # None deleted the key
        sent = kmock_api.requests()[-1]
        assert sent.headers["Content-Type"] == MERGE_PATCH
        assert sent.data["metadata"]["resourceVersion"] == "7"  # the precondition travels
        with pytest.raises(NotFoundError):
            await kube.get(secret_path(NS, "absent"))
        assert await kube.get_or_none(secret_path(NS, "absent")) is None


async def test_follow_yields_changes_and_deletion_of_one_object_only(
    kmock_api: Emulator,
) -> None:
    cfg = KubeConfig(url=kmock_api.url, watch_timeout=0.3)  # kmock never ends a watch itself
    async with KubeClient(cfg) as kube:
        await kube.create(secrets_path(NS), secret("db", {"a": "MQ=="}))
        await kube.create(secrets_path(NS), secret("other", {"a": "eA=="}))
        seen: list[dict[str, Any] | None] = []

        async def consume() -> None:
            async for obj in kube.follow(secrets_path(NS), "db"):
                seen.append(obj)

        task = asyncio.create_task(consume())
        try:
            await until(lambda: len(seen) == 1)
            assert seen[0] is not None
            assert seen[0]["data"] == {"a": "MQ=="}

            def watches() -> int:
                return sum(1 for r in kmock_api.requests() if r.params.get("watch") == "true")

            # Let at least one watch time out, so the change below arrives on a resumed watch.
            await until(lambda: watches() >= 2)
            await kube.patch(secret_path(NS, "other"), {"data": {"a": "eQ=="}})
            await kube.patch(secret_path(NS, "db"), {"data": {"a": "Mg=="}})
            await until(lambda: len(seen) == 2)
            assert seen[1] is not None
            assert seen[1]["data"] == {"a": "Mg=="}
            await kube.request("DELETE", secret_path(NS, "db"))
            await until(lambda: len(seen) == 3)
            assert seen[2] is None
            assert all(o is None or o["metadata"]["name"] == "db" for o in seen)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


# -- error paths against a scripted API server -----------------------------------------------------
class Script:
    """An API server whose answers the test scripts; it records every request."""

    def __init__(self) -> None:
        self.requests: list[web.Request] = []
        self.auth: list[str] = []
        self.answers: list[Callable[[web.Request], Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.auth.append(request.headers.get("Authorization", ""))
        answer = self.answers.pop(0) if self.answers else status(500, "NoScript")
        result = answer(request)
        if asyncio.iscoroutine(result):
            result = await result
        assert isinstance(result, web.StreamResponse)
        return result


def status(code: int, reason: str, headers: dict[str, str] | None = None) -> Any:
    body = {"kind": "Status", "status": "Failure", "code": code, "reason": reason, "message": "m"}
    return lambda _r: web.json_response(body, status=code, headers=headers)


def ok(doc: dict[str, Any]) -> Any:
    return lambda _r: web.json_response(doc)


def stream(*events: dict[str, Any]) -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for e in events:
            await resp.write(json.dumps(e).encode() + b"\n")
        await resp.write_eof()
        return resp

    return answer


@pytest.fixture
async def scripted() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield script, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (409, ConflictError),
        (403, Forbidden),
        (404, NotFoundError),
        (500, UnavailableError),
        (503, UnavailableError),
    ],
)
async def test_http_answers_map_to_rotor_errors(
    scripted: tuple[Script, str], code: int, error: type[Exception]
) -> None:
    script, url = scripted
    script.answers = [status(code, "R")]
    async with KubeClient(KubeConfig(url=url)) as kube:
        with pytest.raises(error, match="R: m"):
            await kube.patch(secret_path(NS, "db"), {"data": {}}, resource_version="3")


async def test_throttling_passes_retry_after_on(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [status(429, "TooManyRequests", {"Retry-After": "3"})]
    async with KubeClient(KubeConfig(url=url)) as kube:
        with pytest.raises(UnavailableError) as e:
            await kube.get(secret_path(NS, "db"))
    assert e.value.delay == 3.0


async def test_an_unreachable_server_is_unavailable() -> None:
    from tests.conftest import free_port

    cfg = KubeConfig(url=f"http://127.0.0.1:{free_port()}", timeout=2)
    async with KubeClient(cfg) as kube:
        with pytest.raises(UnavailableError):
            await kube.get(secret_path(NS, "db"))


async def test_token_is_reread_when_rotated_and_after_a_401(
    scripted: tuple[Script, str], tmp_path: Path
) -> None:
    script, url = scripted
    token = tmp_path / "token"
    token.write_text("first\n")
    async with KubeClient(KubeConfig(url=url, token_file=str(token))) as kube:
        script.answers = [ok({"n": 1})]
        await kube.get("/x")
        token.write_text("second-token\n")  # the kubelet rotates the projected token
        script.answers = [ok({"n": 2})]
        await kube.get("/x")
        assert script.auth == ["Bearer first", "Bearer second-token"]
        # The server already wants a newer token than the cached one: one 401, re-read, retry.
        script.answers = [status(401, "Unauthorized"), ok({"n": 3})]
        kube._token._stamp = None  # as if the change were not yet visible by stat
        token.write_text("third\n")
        assert await kube.get("/x") == {"n": 3}
        assert script.auth[-1] == "Bearer third"


async def test_follow_lists_again_after_410_and_resumes_from_last_version(
    scripted: tuple[Script, str],
) -> None:
    script, url = scripted
    v1 = secret("db", {"a": "MQ=="}, rv="10")
    v2 = secret("db", {"a": "Mg=="}, rv="11")
    v3 = secret("db", {"a": "Mw=="}, rv="20")
    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    big = secret("db", {"a": "Mw==", "big": "A" * 300_000}, rv="21")  # one long line
    script.answers = [
        ok({"metadata": {"resourceVersion": "10"}, "items": [v1]}),
        stream({"type": "MODIFIED", "object": v2}),  # then the server ends the watch
        stream({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "15"}}}),
        stream({"type": "ERROR", "object": gone}),
        ok({"metadata": {"resourceVersion": "20"}, "items": [v3]}),
        status(410, "Expired"),
        ok({"metadata": {"resourceVersion": "20"}, "items": [v3]}),
        stream({"type": "ADDED", "object": v3}, {"type": "MODIFIED", "object": big}),
    ]
    seen: list[dict[str, Any] | None] = []
    async with KubeClient(KubeConfig(url=url)) as kube:
        async for obj in kube.follow(secrets_path(NS), "db"):
            seen.append(obj)
            if len(seen) == 4:
                break
    assert [o["metadata"]["resourceVersion"] for o in seen if o] == ["10", "11", "20", "21"]
    assert len(seen[3]["data"]["big"]) == 300_000  # type: ignore[index]
    watches = [r.query for r in script.requests if r.query.get("watch") == "true"]
    assert [w.get("resourceVersion") for w in watches] == ["10", "11", "15", "20", "20"]
    assert all(w["fieldSelector"] == "metadata.name=db" for w in watches)
    lists = [r for r in script.requests if "watch" not in r.query]
    assert len(lists) == 3  # the first list, and one after each 410


async def test_a_stale_resource_version_is_a_conflict_and_nothing_is_overwritten(
    strict_api: EmulatorThread,
) -> None:
    async with KubeClient(KubeConfig(url=strict_api.url)) as kube:
        created = await kube.create(secrets_path(NS), secret("db", {"a": "MQ=="}))
        rv = created["metadata"]["resourceVersion"]
        first = await kube.patch(
            secret_path(NS, "db"), {"data": {"a": "Mg=="}}, resource_version=rv
        )
        assert first["metadata"]["resourceVersion"] != rv
        with pytest.raises(ConflictError):  # a second writer that read the same version
            await kube.patch(secret_path(NS, "db"), {"data": {"a": "Mw=="}}, resource_version=rv)
        assert (await kube.get(secret_path(NS, "db")))["data"] == {"a": "Mg=="}


# -- transport: keep-alive, TLS, many watches --------------------------------------------------
async def test_calls_reuse_one_kept_alive_connection(scripted: tuple[Script, str]) -> None:
    script, url = scripted
    script.answers = [ok({"n": i}) for i in range(5)]
    async with KubeClient(KubeConfig(url=url)) as kube:
        for i in range(5):
            assert await kube.get("/x") == {"n": i}
        # Read while the connection is still open (aiohttp forgets the transport on close).
        peers = {r.transport.get_extra_info("peername") for r in script.requests}  # type: ignore[union-attr]
    assert len(peers) == 1


async def test_a_kept_connection_the_server_closed_is_replaced() -> None:
    # aiohttp closes an idle kept-alive connection after keepalive_timeout.
    seen: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.transport.get_extra_info("peername"))  # type: ignore[union-attr]
        return web.json_response({"n": len(seen)})

    app = web.Application()
    app.router.add_get("/x", handle)
    runner = web.AppRunner(app, keepalive_timeout=0.05)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with KubeClient(KubeConfig(url=url)) as kube:
            assert await kube.get("/x") == {"n": 1}
            pool = kube._http()
            await until(lambda: all(c.reader.at_eof() for c in pool._idle))
            assert await kube.get("/x") == {"n": 2}
    finally:
        await runner.cleanup()
    assert len(set(seen)) == 2


def _tls_server_files(tmp_path: Path) -> tuple[Any, str]:
    import ssl

    import trustme

    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    ca_file = tmp_path / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_file))
    return ctx, str(ca_file)


async def test_tls_to_the_api_with_the_service_account_ca(tmp_path: Path) -> None:
    server_ctx, ca_file = _tls_server_files(tmp_path)
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/shop/secrets/db", _get_db)
    app.router.add_get("/api/v1/namespaces/shop/secrets", _watch_once)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx).start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with KubeClient(KubeConfig(url=url, ca_file=ca_file)) as kube:
            assert (await kube.get(secret_path(NS, "db")))["metadata"]["name"] == "db"
            events = [e async for e in kube.watch(secrets_path(NS), "db", "1")]
            assert [kind for kind, _ in events] == ["MODIFIED"]
        # Without the CA the server is not trusted: a clear, retryable error, never a traceback.
        async with KubeClient(KubeConfig(url=url, timeout=5)) as kube:
            with pytest.raises(UnavailableError, match="CERTIFICATE_VERIFY_FAILED"):
                await kube.get(secret_path(NS, "db"))
        async with KubeClient(KubeConfig(url=url, insecure=True)) as kube:  # emulators only
            assert (await kube.get(secret_path(NS, "db")))["metadata"]["name"] == "db"
    finally:
        await runner.cleanup()


async def _get_db(_request: web.Request) -> web.Response:
    return web.json_response(secret("db", {}))


async def _watch_once(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    await resp.write(json.dumps({"type": "MODIFIED", "object": secret("db", {}, "2")}).encode())
    await resp.write(b"\n")
    await resp.write_eof()
    return resp


async def test_watch_lines_split_across_chunks_and_many_per_chunk(
    scripted: tuple[Script, str],
) -> None:
    script, url = scripted
    lines = [json.dumps({"type": "MODIFIED", "object": secret("db", {}, str(i))}) for i in range(4)]
    wire = ("\n".join(lines) + "\n").encode()

    async def answer(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        cuts = [0, 7, len(lines[0]) + 3, len(wire) - 2, len(wire)]  # mid-line, across lines
        for a, b in itertools.pairwise(cuts):
            await resp.write(wire[a:b])
            await asyncio.sleep(0.01)  # separate chunks on the wire
        await resp.write_eof()
        return resp

    script.answers = [answer]
    async with KubeClient(KubeConfig(url=url)) as kube:
        events = [o["metadata"]["resourceVersion"] async for _, o in kube.watch("/w", "db", None)]
    assert events == ["0", "1", "2", "3"]


async def test_many_follows_at_once_each_get_their_object_and_changes(
    kmock_api: Emulator,
) -> None:
    """An RW pod with 6 secrets holds 12 watches: none may wait for another to end (the
    aiohttp client allowed 8 connections, so the 9th follow never got past its list)."""
    names = [f"s{i}" for i in range(10)]
    cfg = KubeConfig(url=kmock_api.url, timeout=5)  # kmock never ends a watch: 300 s each
    async with KubeClient(cfg) as kube:
        for n in names:
            await kube.create(secrets_path(NS), secret(n, {"a": "MQ=="}))
        seen: dict[str, list[Any]] = {n: [] for n in names}

        async def consume(name: str) -> None:
            async for obj in kube.follow(secrets_path(NS), name):
                seen[name].append(obj)

        tasks = [asyncio.create_task(consume(n)) for n in names]
        try:
            await until(lambda: all(len(v) == 1 for v in seen.values()))

            def watching() -> int:
                return sum(1 for r in kmock_api.requests() if r.params.get("watch") == "true")

            await until(lambda: watching() >= len(names))
            for n in names:
                await kube.patch(secret_path(NS, n), {"data": {"a": "Mg=="}})
            await until(lambda: all(len(v) == 2 for v in seen.values()))
            assert all(v[1]["data"] == {"a": "Mg=="} for v in seen.values())
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
