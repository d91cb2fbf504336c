"""The liaison officer's local web UI: a page served by the agency's own client process.

End-to-end encryption ends in this process: it holds the unlocked identity, opens
notes with it and seals replies with it (through :class:`~clients.sdk.HubClient`);
the browser only gets plaintext of notes the agency may read and never a key. Who
may call this server is decided by :mod:`clients.webui_guard`; what the page shows
is kept by :mod:`clients.webui_live`.

    ui = WebUi(hub_client, port=0)
    print(await ui.start())          # the login link, with this start's secret
    ...
    await ui.stop()

Routes (all JSON but the page, its two files and the event stream)::

    GET  /login/<secret>                       set the session cookie, go to /
    GET  /  /static/app.js  /static/app.css    the page (files from clients/static),
    GET  /favicon.ico                          and its icon
    GET  /api/state                            agency, channels with unread counts
    GET  /api/channels/<ch>/notes              the channel's notes, opened
    POST /api/channels/<ch>/notes              seal and post {text, subject, case_ref,
                                               classification, handling, tlp}
    POST /api/channels/<ch>/read               acknowledge (signed) up to {stream_id}
    GET  /api/channels/<ch>/receipts/<msg id>  who has read one of one's own notes
    GET  /api/events                           Server-Sent Events: new notes, counts
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from importlib import resources
from typing import Any, Final

from aiohttp import web

from clients.errors import ClientError
from clients.sdk import HubClient
from clients.webui_guard import COOKIE, SECURITY_HEADERS, Guard, Refusal
from clients.webui_live import Live
from keys import Classification, HandlingCode, KeysError, MalformedInput, Markings, Note, Tlp

__all__ = ["WebUi"]

log = logging.getLogger(__name__)

KEEPALIVE_S: Final = 15.0
LIVE_WITHIN_S: Final = 10.0
MAX_BODY: Final = 256 * 1024
STATIC: Final = {
    "/": ("index.html", "text/html"),
    "/static/app.js": ("app.js", "text/javascript"),
    "/static/app.css": ("app.css", "text/css"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),
}
GUARD = web.AppKey("guard", Guard)
LIVE = web.AppKey("live", Live)
FILES = web.AppKey("files", dict)

routes = web.RouteTableDef()


class WebUi:
    """The UI server of one agency on 127.0.0.1 (a free port with ``port=0``)."""

    def __init__(self, hub: HubClient, *, port: int = 0) -> None:
        self.live = Live(hub)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.guard = Guard(self._sock.getsockname()[1])
        self._runner: web.AppRunner | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> str:
        """Load the channels, follow the hub, serve; return the login link."""
        try:
            await self.live.load()
        except BaseException:
            self._sock.close()
            raise
        self._follower = asyncio.create_task(self.live.follow(), name="webui-follow")
        with contextlib.suppress(TimeoutError):  # not live yet: the page says so, and waits
            await asyncio.wait_for(self.live.following.wait(), LIVE_WITHIN_S)
        self._runner = web.AppRunner(build_app(self.guard, self.live), access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        return self.guard.login_url

    async def stop(self) -> None:
        """End every page's stream, stop following the hub, close the socket."""
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()


def build_app(guard: Guard, live: Live) -> web.Application:
    """The aiohttp application: guard, security headers, routes."""
    app = web.Application(middlewares=[_guarded], client_max_size=MAX_BODY)
    app[GUARD] = guard
    app[LIVE] = live
    package = resources.files("clients") / "static"
    app[FILES] = {path: (package / name).read_bytes() for path, (name, _) in STATIC.items()}
    app.on_response_prepare.append(_secure_headers)
    app.on_shutdown.append(_end_streams)
    app.add_routes(routes)
    for path in STATIC:
        app.router.add_get(path, _file)
    return app


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


async def _end_streams(app: web.Application) -> None:
    app[LIVE].stop_pages()


def _refused(reason: str) -> web.Response:
    return web.Response(status=403, text=f"refused: {reason}\n")


@web.middleware
async def _guarded(request: web.Request, handler: Any) -> web.StreamResponse:
    guard = request.app[GUARD]
    try:
        if request.path.startswith("/login/"):
            session = guard.login(request.match_info.get("token", ""), request.headers)
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/")
            return response
        cookie = request.cookies.get(COOKIE, "")
        guard.check(request.method, request.path, request.headers, cookie)
    except Refusal as exc:
        raw = request.rel_url.raw_path  # still %-encoded: no line breaks in the log
        shown = "/login/…" if raw.startswith("/login/") else raw[:200]
        log.warning("refused %s %s: %s", request.method, shown, exc)
        return _refused(str(exc))
    result: web.StreamResponse = await handler(request)
    return result


@routes.get("/login/{token}")
async def _login(request: web.Request) -> web.Response:  # answered by the middleware
    raise web.HTTPNotFound


async def _file(request: web.Request) -> web.Response:
    content_type = STATIC[request.path][1]
    body = request.app[FILES][request.path]
    return web.Response(body=body, content_type=content_type, charset="utf-8")


def _problem(status: int, message: str) -> web.Response:
    return web.json_response({"error": " ".join(message.split())}, status=status)


def _channel(request: web.Request, role: str) -> str:
    name = request.match_info["channel"]
    channel = request.app[LIVE].channels.get(name)
    if channel is None or role not in channel.roles:
        raise web.HTTPNotFound(text=f"no channel {name} you may {role} in\n")
    return name


@routes.get("/api/state")
async def _state(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    return web.json_response(
        {
            "agency": live.me,
            "channels": [c.summary(live.me) for c in live.channels.values()],
            "classifications": [c.value for c in Classification],
            "handling": [h.value for h in HandlingCode],
            "tlp": [t.value for t in Tlp],
        }
    )


@routes.get("/api/channels/{channel}/notes")
async def _notes(request: web.Request) -> web.Response:
    live = request.app[LIVE]
    channel = live.channels[_channel(request, "read")]
    return web.json_response({"channel": channel.summary(live.me), "notes": channel.notes})


async def _json_map(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="send a JSON object\n")
    return body


def _note_from(body: dict[str, Any]) -> tuple[Note, Markings]:
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        raise MalformedInput("the note needs a text")
    optional = {k: (body.get(k) or None) for k in ("subject", "case_ref")}
    markings = Markings(
        Classification.parse(body.get("classification")),
        HandlingCode.parse(body.get("handling")),
        Tlp.parse(body.get("tlp", Tlp.AMBER.value)),
    )
    return Note(text, optional["subject"], optional["case_ref"]), markings


@routes.post("/api/channels/{channel}/notes")
async def _post(request: web.Request) -> web.Response:
    name = _channel(request, "post")
    body = await _json_map(request)
    try:
        note, markings = _note_from(body)
        posted = await request.app[LIVE].hub.post_note(name, note, markings)
    except KeysError as exc:
        return _problem(400, str(exc))
    except ClientError as exc:
        return _problem(502 if exc.status is None or exc.status >= 500 else 422, str(exc))
    return web.json_response(
        {"message_id": posted.message_id, "stream_id": posted.stream_id}, status=201
    )


@routes.post("/api/channels/{channel}/read")
async def _read(request: web.Request) -> web.Response:
    name = _channel(request, "read")
    stream_id = (await _json_map(request)).get("stream_id")
    if not isinstance(stream_id, str):
        return _problem(400, "give the stream_id read up to")
    try:
        summary = await request.app[LIVE].mark_read(name, stream_id)
    except ClientError as exc:
        return _problem(exc.status or 502, str(exc))
    return web.json_response(summary)


@routes.get("/api/channels/{channel}/receipts/{message_id}")
async def _receipts(request: web.Request) -> web.Response:
    name = _channel(request, "read")
    try:
        answer = await request.app[LIVE].hub.receipts(name, request.match_info["message_id"])
    except ClientError as exc:
        return _problem(exc.status or 502, str(exc))
    return web.json_response(
        {k: answer.get(k) for k in ("message_id", "stream_id", "read_by", "unread_by")}
    )


@routes.get("/api/events")
async def _events(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one ``data:`` line of JSON per event; comments keep it open."""
    live = request.app[LIVE]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    queue = live.listen()
    try:
        await response.write(b"retry: 1000\n: ready\n\n")
        while (event := await _next(queue)) is not None:
            if event:
                await response.write(f"data: {json.dumps(event)}\n\n".encode())
            else:
                await response.write(b": keepalive\n\n")
    finally:
        live.unlisten(queue)
    return response


async def _next(queue: asyncio.Queue[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The next event, ``{}`` after a quiet keep-alive interval, ``None`` to stop."""
    try:
        return await asyncio.wait_for(queue.get(), KEEPALIVE_S)
    except TimeoutError:
        return {}
