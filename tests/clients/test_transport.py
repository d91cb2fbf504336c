"""clients/transport.py against a real aiohttp server on loopback that verifies signatures.

The test hub verifies every request with the same ``keys.httpsig.verify_request`` the hub
uses, records it, and answers with the next canned reply, or else echoes what it saw.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import msgpack
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import keys
from clients.errors import (
    PROBLEM_HEADER,
    ClientError,
    Conflict,
    Forbidden,
    HubUnreachable,
    InternalError,
    NotMember,
    ProtocolError,
    StaleRequest,
    Unavailable,
)
from clients.transport import MAX_RETRY_WAIT, Response, Transport, backoff_delay
from keys.httpsig import verify_request

IDENTITY = keys.Identity.generate("pp-duisburg", suite=keys.Suite.X25519)
KEYS = {str(IDENTITY.key_id): IDENTITY.card.sign_key}
PROBLEM = "application/problem+json"


@dataclass
class Seen:
    method: str
    raw_path: str
    query: dict[str, str]
    body: bytes
    nonce: str


@dataclass
class FakeHub:
    base: str = ""
    seen: list[Seen] = field(default_factory=list)
    replies: list[web.Response] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            verified = verify_request(
                method=request.method,
                target_uri=self.base + request.raw_path,
                headers=request.headers,
                body=body,
                lookup_key=KEYS.get,
                now=int(time.time()),
                max_skew=60,
            )
        except keys.OutsideTimeWindow as exc:
            return problem(401, "stale-request", str(exc))
        except keys.KeysError as exc:
            return problem(401, "unauthenticated", str(exc))
        query = dict(request.query)
        self.seen.append(Seen(request.method, request.raw_path, query, body, verified.nonce))
        if self.replies:
            return self.replies.pop(0)
        if request.path == "/v1/live":
            return await self.live(request, verified.keyid)
        if request.path == "/v1/stream":
            return await self.stream(request, int(query["chunks"]))
        echo = {"method": request.method, "query": query, "body": body, "keyid": verified.keyid}
        return web.Response(body=msgpack.packb(echo), content_type="application/msgpack")

    async def live(self, request: web.Request, keyid: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(keyid)
        await ws.send_str(f"echo:{await ws.receive_str()}")
        await ws.close()
        return ws

    async def stream(self, request: web.Request, chunks: int) -> web.StreamResponse:
        """A chunked answer without Content-Length: the client must count as it reads."""
        response = web.StreamResponse(headers={"Content-Type": "application/msgpack"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(chunks):
            await response.write(b"\0" * 1024 * 1024)
        await response.write_eof()
        return response


def problem(status: int, slug: str, detail: str, **headers: str) -> web.Response:
    members = {"type": f"urn:siko:problem:{slug}", "status": status, "detail": detail}
    return web.Response(
        status=status, body=json.dumps(members).encode(), content_type=PROBLEM, headers=headers
    )


def unavailable(retry_after: str = "0") -> web.Response:
    return problem(503, "unavailable", "redis is down", **{"Retry-After": retry_after})


@pytest.fixture
async def hub() -> AsyncIterator[FakeHub]:
    fake = FakeHub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    fake.base = f"http://127.0.0.1:{server.port}"
    yield fake
    await server.close()


@pytest.fixture
async def transport(hub: FakeHub) -> AsyncIterator[Transport]:
    async with Transport(hub.base, IDENTITY, backoff=0.0) as client:
        yield client


def closed_port() -> int:
    """A loopback port that was just bound and closed: nothing listens there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- signing ------------------------------------------------------------------------


async def test_signed_get_with_query_needing_encoding_verifies(
    hub: FakeHub, transport: Transport
) -> None:
    params = {"after": "1764000000000-0", "q": "a b/c?d&e=f#g ü+%"}
    answer = await transport.request("GET", "/v1/channels/lage-ruhr/notes", params=params)
    assert answer.status == 200
    assert answer.msgpack() == {
        "method": "GET",
        "query": params,
        "body": b"",
        "keyid": str(IDENTITY.key_id),
    }
    assert hub.seen[0].raw_path == (
        "/v1/channels/lage-ruhr/notes?after=1764000000000-0&q=a%20b%2Fc%3Fd%26e%3Df%23g%20%C3%BC%2B%25"
    )


async def test_signed_post_with_body_verifies(hub: FakeHub, transport: Transport) -> None:
    body = bytes(range(256)) * 10
    answer = await transport.request(
        "POST", "/v1/notes", body=body, content_type="application/msgpack"
    )
    assert answer.content_type == "application/msgpack"
    assert answer.headers["content-type"] == "application/msgpack"
    assert answer.msgpack() == {
        "method": "POST",
        "query": {},
        "body": body,
        "keyid": str(IDENTITY.key_id),
    }


async def test_percent_encoded_path_and_empty_post_verify(
    hub: FakeHub, transport: Transport
) -> None:
    await transport.request("POST", "/v1/a%2Fb/c", idempotent=False)
    assert hub.seen[0].raw_path == "/v1/a%2Fb/c"
    assert hub.seen[0].body == b""


async def test_clock_is_the_signing_time(hub: FakeHub) -> None:
    async with Transport(hub.base, IDENTITY, clock=lambda: 1_000_000) as client:
        with pytest.raises(StaleRequest) as info:
            await client.request("GET", "/v1/directory")
    assert info.value.status == 401
    assert "clock" in str(info.value)


@pytest.mark.parametrize(
    "path", ["v1/x", "/v1/a b", "/v1/x?y=1", "/v1/#", "/v1/ü", "/v1/%zz", "/v1/%2"]
)
async def test_paths_outside_the_grammar_are_refused(transport: Transport, path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        await transport.request("GET", path)


@pytest.mark.parametrize(
    "base", ["ftp://hub.example", "http://hub.example/?q=1", "http://u:p@hub.example", "hub"]
)
def test_base_urls_outside_http_are_refused(base: str) -> None:
    with pytest.raises(ValueError, match="base_url"):
        Transport(base, IDENTITY)


async def test_request_outside_the_context_manager_is_refused() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await Transport("http://127.0.0.1:9", IDENTITY).request("GET", "/v1/x")


# -- problems -----------------------------------------------------------------------


async def test_problem_maps_to_its_class_with_detail(hub: FakeHub, transport: Transport) -> None:
    hub.replies.append(problem(403, "not-member", "pp-duisburg may not read lage-ruhr"))
    with pytest.raises(NotMember) as info:
        await transport.request("GET", "/v1/channels/lage-ruhr/notes")
    error = info.value
    assert (error.status, error.detail) == (403, "pp-duisburg may not read lage-ruhr")
    assert error.problem_type == "urn:siko:problem:not-member"
    assert str(error).startswith("pp-duisburg may not read lage-ruhr. Ask")


async def test_503_on_a_plain_post_is_not_retried_and_carries_retry_after(
    hub: FakeHub, transport: Transport
) -> None:
    hub.replies.append(unavailable(retry_after="7"))
    with pytest.raises(Unavailable) as info:
        await transport.request("POST", "/v1/admin/proposals", body=b"x")
    assert info.value.retry_after == 7
    assert len(hub.seen) == 1


async def test_unknown_problem_type_falls_back_by_status(
    hub: FakeHub, transport: Transport
) -> None:
    hub.replies.append(problem(409, "brand-new-problem", "something newer"))
    with pytest.raises(Conflict) as info:
        await transport.request("PUT", "/v1/x", body=b"x")
    assert type(info.value) is Conflict
    assert info.value.problem_type == "urn:siko:problem:brand-new-problem"
    assert info.value.detail == "something newer"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (502, b"<html>Bad Gateway</html>", "text/html", InternalError),
        (500, b'{"type": ', PROBLEM, InternalError),
        (403, b"[1, 2]", PROBLEM, Forbidden),
        (418, b"\xff" * 100_000, PROBLEM, ClientError),
        (302, b"", "text/plain", ProtocolError),
    ],
)
async def test_garbage_error_bodies_still_give_a_client_error(
    hub: FakeHub,
    transport: Transport,
    status: int,
    body: bytes,
    content_type: str,
    expected: type[ClientError],
) -> None:
    hub.replies.append(web.Response(status=status, body=body, content_type=content_type))
    with pytest.raises(expected) as info:
        await transport.request("POST", "/v1/x", body=b"x")
    assert info.value.status == status
    assert str(status) in info.value.detail


async def test_oversized_success_body_is_a_protocol_error(
    hub: FakeHub, transport: Transport
) -> None:
    big = b"x" * (16 * 1024 * 1024 + 1)
    hub.replies.append(web.Response(body=big, content_type="application/msgpack"))
    with pytest.raises(ProtocolError, match="larger"):
        await transport.request("GET", "/v1/x")


async def test_oversized_chunked_body_is_a_protocol_error(transport: Transport) -> None:
    answer = await transport.request("GET", "/v1/stream", params={"chunks": "2"})
    assert len(answer.body) == 2 * 1024 * 1024
    with pytest.raises(ProtocolError, match="larger"):
        await transport.request("GET", "/v1/stream", params={"chunks": "17"})


async def test_a_session_raising_for_status_still_gets_problems(hub: FakeHub) -> None:
    hub.replies.append(problem(403, "not-member", "no read role"))
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        async with Transport(hub.base, IDENTITY, session=session) as client:
            with pytest.raises(NotMember, match="no read role"):
                await client.request("GET", "/v1/x")


# -- retries ------------------------------------------------------------------------


async def test_get_is_retried_on_503_with_a_new_nonce_each_time(
    hub: FakeHub, transport: Transport
) -> None:
    hub.replies += [unavailable(), unavailable()]
    answer = await transport.request("GET", "/v1/directory")
    assert answer.status == 200
    assert len(hub.seen) == 3
    assert len({seen.nonce for seen in hub.seen}) == 3


async def test_retries_are_bounded(hub: FakeHub) -> None:
    hub.replies += [unavailable() for _ in range(5)]
    async with Transport(hub.base, IDENTITY, retries=2, backoff=0.0) as client:
        with pytest.raises(Unavailable):
            await client.request("GET", "/v1/directory")
    assert len(hub.seen) == 3


async def test_retry_after_beyond_the_budget_is_not_waited_for(
    hub: FakeHub, transport: Transport
) -> None:
    hub.replies.append(unavailable(retry_after=str(int(MAX_RETRY_WAIT) + 1)))
    with pytest.raises(Unavailable) as info:
        await transport.request("GET", "/v1/directory")
    assert info.value.retry_after == int(MAX_RETRY_WAIT) + 1
    assert len(hub.seen) == 1


async def test_idempotent_post_is_retried(hub: FakeHub, transport: Transport) -> None:
    hub.replies.append(unavailable())
    await transport.request("POST", "/v1/notes", body=b"envelope", idempotent=True)
    assert [seen.body for seen in hub.seen] == [b"envelope", b"envelope"]
    assert hub.seen[0].nonce != hub.seen[1].nonce


async def test_get_marked_not_idempotent_is_not_retried(hub: FakeHub, transport: Transport) -> None:
    hub.replies.append(unavailable())
    with pytest.raises(Unavailable):
        await transport.request("GET", "/v1/directory", idempotent=False)
    assert len(hub.seen) == 1


@pytest.mark.parametrize(("method", "attempts"), [("GET", 3), ("POST", 1)])
async def test_connection_refused_is_hub_unreachable_after_bounded_retries(
    method: str, attempts: int
) -> None:
    started: list[str] = []

    async def on_start(*args: object) -> None:
        started.append(method)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    async with aiohttp.ClientSession(trace_configs=[trace]) as session:
        base = f"http://127.0.0.1:{closed_port()}"
        async with Transport(base, IDENTITY, session=session, retries=2, backoff=0.01) as t:
            with pytest.raises(HubUnreachable) as info:
                await t.request(method, "/v1/directory")
        assert not session.closed
    assert len(started) == attempts
    assert isinstance(info.value.__cause__, OSError | aiohttp.ClientError)
    assert base in str(info.value)


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    assert backoff_delay(0, base=0.25, retry_after=None, jitter=0.5) == 0.125
    assert backoff_delay(3, base=0.25, retry_after=None, jitter=1.0) == 2.0
    assert backoff_delay(30, base=0.25, retry_after=None, jitter=1.0) == 5.0
    assert backoff_delay(0, base=0.25, retry_after=4, jitter=0.9) == 4.0


# -- WebSocket ----------------------------------------------------------------------


async def test_websocket_upgrade_is_signed(hub: FakeHub, transport: Transport) -> None:
    async with transport.websocket("/v1/live", params={"cursor": "0-0 x"}) as ws:
        assert await ws.receive_str() == str(IDENTITY.key_id)
        await ws.send_str("ack")
        assert await ws.receive_str() == "echo:ack"
    assert ws.closed
    assert hub.seen[0].raw_path == "/v1/live?cursor=0-0%20x"
    assert hub.seen[0].query == {"cursor": "0-0 x"}


async def test_refused_upgrade_maps_its_status(hub: FakeHub, transport: Transport) -> None:
    hub.replies.append(problem(403, "not-member", "no read role"))
    with pytest.raises(Forbidden) as info:
        async with transport.websocket("/v1/live"):
            pass  # pragma: no cover
    assert info.value.status == 403
    assert "WebSocket" in info.value.detail


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("not-member", NotMember),  # the hub names the problem: its class
        ("too-many-live-channels", Forbidden),  # a 503 slug on a 403: the status decides
        ("no-such-problem", Forbidden),  # a slug this SDK does not know
        ("not-member" + "x" * 500, Forbidden),  # junk from a hostile server
        ("not-member, forbidden", Forbidden),
    ],
)
async def test_a_refused_upgrade_is_told_apart_by_the_problem_header(
    hub: FakeHub, transport: Transport, header: str, expected: type[Exception]
) -> None:
    """The body of a refused upgrade never reaches the client; the header names it."""
    hub.replies.append(problem(403, "not-member", "no read role", **{PROBLEM_HEADER: header}))
    with pytest.raises(Forbidden) as info:
        async with transport.websocket("/v1/live"):
            pass  # pragma: no cover
    assert type(info.value) is expected
    assert info.value.status == 403
    assert header not in str(info.value)  # nothing the server sent is echoed


async def test_websocket_to_a_closed_port_is_hub_unreachable() -> None:
    async with Transport(f"http://127.0.0.1:{closed_port()}", IDENTITY) as client:
        with pytest.raises(HubUnreachable):
            async with client.websocket("/v1/live"):
                pass  # pragma: no cover


# -- decoding answers ---------------------------------------------------------------


def answer(body: bytes, content_type: str = "application/msgpack") -> Response:
    return Response(status=200, headers={}, body=body, content_type=content_type)


def test_msgpack_and_json_answers_decode() -> None:
    assert answer(msgpack.packb({"a": [1, b"x"]})).msgpack() == {"a": [1, b"x"]}
    assert answer(b'{"a": 1}', "application/json").json() == {"a": 1}


@pytest.mark.parametrize(
    "body",
    [
        b"\x82\xa1a\x01\xa1a\x02",  # a map repeating a key
        b"\xd6\xff\x00\x00\x00\x00",  # a timestamp extension
        b"\x81\x01\x02",  # an integer map key
        b"\xc1",  # never used
        b"\x01\x02",  # trailing data
        b"\x91" * 100_000,  # too deep
        b"\xdd\xff\xff\xff\xff",  # announces 4 billion items
    ],
)
def test_hostile_msgpack_answers_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        answer(body).msgpack()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{", "application/json"),
        (b"[" * 100_000, "application/json"),
        (b'{"a": 1, "a": 2}', "application/json"),
        (b"{}", "text/html"),
    ],
)
def test_bad_json_answers_are_protocol_errors(body: bytes, content_type: str) -> None:
    with pytest.raises(ProtocolError):
        answer(body, content_type).json()


def test_wrong_content_type_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="expected application/msgpack"):
        answer(msgpack.packb(1), "application/json").msgpack()
