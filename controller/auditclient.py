"""The controller's client of the audit receiver's long-poll (``GET /events``), typed: a page of
events (:class:`rotor.auditwire.EventsPage`, decoded there) or a Rotor error from the one status
table (:func:`rotor.errors.from_status`), as every other transport's edge gives:

* no answer (refused, reset, timed out) and 429/5xx: :class:`~rotor.errors.UnavailableError`,
  retried with backoff;
* 401/403: :class:`~rotor.errors.ForbiddenError`, the controller's token refused: a person fixes
  it (``ROTOR_AUDIT_RECEIVER_TOKEN_FILE`` and the receiver's ``ROTOR_AUDIT_EVENTS_TOKEN_FILE``);
* an answer that is not a page (another version, over :data:`~rotor.auditwire.MAX_PAGE_BYTES`):
  :class:`~rotor.auditwire.WireError`, permanent too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp

from rotor.auditwire import MAX_PAGE_BYTES, EventsPage, WireError
from rotor.errors import RotorError, UnavailableError, from_status


def _http_error(url: str, status: int, data: bytes, headers: Mapping[str, str]) -> RotorError:
    """The receiver's edge: an HTTP error answer (at most 300 bytes of its text) to a Rotor
    error, through the one status table."""
    text = data[:300].decode("utf-8", "replace").strip()
    return from_status(status, f"{url}: HTTP {status} ({text})", headers=headers, payload=text)


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to ``limit`` bytes (a longer one is not read further)."""
    data = bytearray()
    while len(data) < limit:
        chunk = await stream.read(limit - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


async def fetch_events(
    session: aiohttp.ClientSession,
    url: str,
    since: int,
    epoch: str = "",
    wait: float = 30.0,
    token: str = "",
) -> EventsPage:
    """One long-poll of the receiver at ``url``: the events after ``since`` (all of them when
    ``epoch`` is not the receiver's, ``page.reset``), waiting up to ``wait`` seconds for one.

    The controller keeps ``since = page.last`` and ``epoch = page.epoch``; on ``page.reset``
    (the receiver restarted) it re-checks every referenced path instead of trusting the queue.
    """
    where = f"{url.rstrip('/')}/events"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"since": str(since), "wait": str(wait), "epoch": epoch}
    try:
        async with session.get(where, params=params, headers=headers) as resp:
            data = await _read_at_most(resp.content, MAX_PAGE_BYTES + 1)
            if resp.status != 200:
                raise _http_error(where, resp.status, data, resp.headers)
    except TimeoutError:
        raise UnavailableError(f"{where}: no answer in time", status=0) from None
    except aiohttp.ClientError as e:
        raise UnavailableError(f"{where}: {type(e).__name__}", status=0) from None
    if len(data) > MAX_PAGE_BYTES:
        raise WireError(f"{where}: the answer is over {MAX_PAGE_BYTES} bytes")
    try:
        body = json.loads(data)
    except ValueError:
        raise WireError(f"{where}: the answer is not JSON") from None
    try:
        return EventsPage.from_dict(body)
    except WireError as e:
        raise WireError(f"{where}: {e}") from None
