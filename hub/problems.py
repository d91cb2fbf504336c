"""The one middleware that turns every error into RFC 9457 problem details.

Handlers raise :class:`~hub.errors.HubError`; aiohttp's own HTTP errors (unknown path,
wrong method, body too large) and anything unexpected are mapped here too, so every
error response of the hub has the same shape::

    {"type": "urn:siko:problem:not-member", "title": "...", "status": 403,
     "detail": "stadt-essen may not post in channel clan-lage-ruhr"}

An unexpected exception is logged with its traceback (which holds no key or content:
nothing secret is kept in exception messages anywhere in the code) and answered with a
generic 500 that reveals nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiohttp import web

from hub.errors import BadRequest, HubError, NotFound, TooLarge, Unavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
#: Response header naming the problem's slug (the last part of its ``type``).
PROBLEM_HEADER = "Siko-Problem"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem_response(error: HubError) -> web.Response:
    """The problem+json response for ``error``."""
    body = {
        "type": error.problem_type(),
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
    }
    # The slug also goes in a header: a client whose WebSocket upgrade is refused gets
    # the status and headers but not the body (aiohttp, browsers), and can still tell
    # which problem it was. It is the body's ``type`` again, nothing more.
    headers = {PROBLEM_HEADER: error.slug}
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    return web.Response(
        text=json.dumps(body, ensure_ascii=False),
        status=error.status,
        content_type=PROBLEM_JSON,
        headers=headers,
    )


def from_http_exception(exc: web.HTTPException) -> HubError:
    """The problem matching one of aiohttp's own HTTP errors."""
    if exc.status == 404:
        return NotFound("no such resource; see /v1/openapi.json")
    if exc.status == 413:
        return TooLarge("the request body is larger than this hub accepts")
    if exc.status == 405:
        return BadRequest(f"method not allowed here; allowed: {exc.headers.get('Allow', '')}")
    if 400 <= exc.status < 500:
        # aiohttp's explanation (e.g. "No WebSocket UPGRADE hdr") is in the text, not
        # the reason; it names only what the request lacked.
        return BadRequest(exc.text or exc.reason)
    return HubError("the hub failed unexpectedly; the error is logged")


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error raised below as problem details, and log the refusal."""
    try:
        return await handler(request)
    except HubError as error:
        return await _refused(request, error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return await _refused(request, from_http_exception(exc))
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return problem_response(HubError("the hub failed unexpectedly; the error is logged"))


async def _refused(request: web.Request, error: HubError) -> web.Response:
    request[REFUSAL] = error
    recorder = request.app.get(REFUSAL_RECORDER)
    if recorder is not None and not isinstance(error, Unavailable):
        try:
            await recorder(request, error)
        except HubError as failure:
            log.warning("could not log a refused request: %s", failure)
    return problem_response(error)


REFUSAL = web.RequestKey("refusal", HubError)


#: Called for every refused request (set by the app: it logs a refusal its agency provably
#: sent in the audit log, and counts any other for the next ``refusals-summarized`` record).
class RefusalRecorder(Protocol):
    """Logs one refused request."""

    async def __call__(self, request: web.Request, error: HubError, /) -> None: ...


REFUSAL_RECORDER = web.AppKey("refusal_recorder", RefusalRecorder)
