"""The aiohttp apps: HTTPS admission (``POST /mutate``, ``GET /healthz``) and plain metrics.

The handler only decodes, calls :func:`webhook.admission.decide`, and encodes. Exceptions map to
HTTP answers in one place, :func:`_errors`: a body that is not an AdmissionReview, not JSON, of
the wrong content type or too large gets a 4xx with a message that says what to fix; anything
unexpected gets a 500 with no detail (the detail is in the log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from rotor.settings.webhook import WebhookSettings
from webhook import _json
from webhook.admission import BadReview, Decision, decide
from webhook.metrics import Metrics
from webhook.tls import DEFAULT_DEBOUNCE_MS, CertReloader

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", WebhookSettings)
METRICS = web.AppKey("metrics", Metrics)
CERTS = web.AppKey("certs", CertReloader)
DEBOUNCE_MS = web.AppKey("debounce_ms", int)
INLINE_BODY = 16 * 1024
"""A review up to this size is answered on the event loop (no thread hop); a larger one in a
worker thread. Ordinary pod reviews are a few KiB; 16 KiB holds a few hundred containers at most,
whose patch takes a few milliseconds (bounded by inject.MAX_ADDED)."""


class Answer(web.Response):
    """A /mutate response that carries what the handler decided, for the metrics."""

    result = ""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one place where exceptions become HTTP answers (and /mutate is measured)."""
    metrics = request.app[METRICS]
    start = time.perf_counter()
    result = ""  # set here for exceptions; the handler's own answers carry theirs
    try:
        response = await handler(request)
        result = response.result if isinstance(response, Answer) else ""
        return response
    except BadReview as e:
        result = "invalid"
        return _problem(400, str(e))
    except web.HTTPRequestEntityTooLarge:
        result = "invalid"
        limit = request.app[SETTINGS].max_body
        return _problem(
            413, f"the body is larger than {limit} bytes (ROTOR_WEBHOOK_MAX_BODY); send less"
        )
    except web.HTTPException as e:
        result = "invalid"
        return _problem(e.status, e.reason)
    except Exception:
        result = "error"
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return _problem(500, "internal error in the Rotor webhook; see its log")
    finally:
        if result and request.path == "/mutate":
            metrics.count_request(result, time.perf_counter() - start)


def _answer(body: bytes, settings: WebhookSettings) -> tuple[Decision, bytes]:
    """Decode, decide, encode: pure and blocking (runs in a worker thread)."""
    try:
        review = _json.loads(body)
    except ValueError as e:  # broken JSON or bad UTF-8
        raise BadReview(f"the body is not JSON ({e})") from None
    decision = decide(review, settings)
    return decision, _json.dumps(decision.review)


async def mutate(request: web.Request) -> web.Response:
    if request.content_type != "application/json":
        raise BadReview(f"the content type is {request.content_type!r}; send application/json")
    body = await request.read()
    # Decoding and deciding is CPU work on input an API client controls, bounded by the body's
    # size (the patch's entries are bounded too, inject.MAX_ADDED): an ordinary review is
    # answered here in well under a millisecond; a larger one off the event loop, so it never
    # holds back another admission, a probe or a certificate reload.
    if len(body) <= INLINE_BODY:
        decision, encoded = _answer(body, request.app[SETTINGS])
    else:
        decision, encoded = await asyncio.to_thread(_answer, body, request.app[SETTINGS])
    if decision.request is not None:
        req = decision.request
        request.app[METRICS].injections.labels(req.mode, req.delivery).inc()
    if decision.result == "denied":
        log.info("denied a pod: %s", decision.reason)
    response = Answer(body=encoded, content_type="application/json")
    response.result = decision.result
    return response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _watch_certs(app: web.Application) -> AsyncIterator[None]:
    certs, metrics = app[CERTS], app[METRICS]
    stop = asyncio.Event()

    def counted(ok: bool) -> None:
        metrics.cert_reloads.labels("ok" if ok else "error").inc()

    task = asyncio.create_task(certs.watch(stop, counted, app[DEBOUNCE_MS]))
    yield
    stop.set()
    await task


def make_app(
    settings: WebhookSettings,
    *,
    registry: CollectorRegistry,
    certs: CertReloader | None = None,
    debounce_ms: int = DEFAULT_DEBOUNCE_MS,
) -> web.Application:
    """The admission app; with ``certs`` it also reloads the certificate while it runs."""
    app = web.Application(client_max_size=settings.max_body, middlewares=[_errors])
    app[SETTINGS] = settings
    app[METRICS] = Metrics.create(registry)
    app[DEBOUNCE_MS] = debounce_ms
    if certs is not None:
        app[CERTS] = certs
        app.cleanup_ctx.append(_watch_certs)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app


REGISTRY = web.AppKey("registry", CollectorRegistry)


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_metrics_app(registry: CollectorRegistry) -> web.Application:
    """``GET /metrics`` on a plain-HTTP port of its own (``/healthz`` too, for probes)."""
    app = web.Application()
    app[REGISTRY] = registry
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", healthz)
    return app
