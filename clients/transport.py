"""Signed HTTP requests and WebSocket upgrades to the hub, over one aiohttp session.

Every attempt is signed with :func:`keys.httpsig.sign_request` over the exact target URI
sent (``base_url + path + "?" + query``, percent-encoded here and handed to aiohttp as
already encoded, so the bytes on the wire are the bytes signed), with a fresh nonce and
``created = clock()``. A non-2xx answer raises the :mod:`clients.errors` class that its
problem ``type`` names. Redirects are not followed: a signature covers one URI.

Retries (theory of operation): only an idempotent request is retried — GET, HEAD, PUT,
DELETE, OPTIONS by default, POST only with ``idempotent=True`` (posting a note is
idempotent by its message id). It is retried after :class:`HubUnreachable` and after
:class:`Unavailable` (HTTP 503), at most ``retries`` times, each time signed anew. The
wait is full-jitter exponential backoff, at least the hub's ``Retry-After``; when the
waits would pass :data:`MAX_RETRY_WAIT` in total the last error is raised instead.

This module is the one place where aiohttp's exceptions become :class:`ClientError`\\ s.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Final, Self
from urllib.parse import quote, urlencode

import aiohttp
import msgpack
from multidict import CIMultiDictProxy
from yarl import URL

from clients.errors import (
    MAX_PROBLEM_BYTES,
    PROBLEM_HEADER,
    HubUnreachable,
    ProtocolError,
    Unavailable,
    error_from_problem,
    error_from_status,
)
from keys import httpsig
from keys.identity import Identity

__all__ = ["IDEMPOTENT_METHODS", "Response", "Transport", "backoff_delay", "unix_seconds"]

#: Query parameters: a mapping, or pairs when a name repeats (``cursor=a:1&cursor=b:2``).
Params = Mapping[str, str] | Sequence[tuple[str, str]]

MAX_BODY: Final = 16 * 1024 * 1024  # bytes of a response body or WebSocket message
MAX_ITEMS: Final = 100_000  # elements of one msgpack array or map
MAX_BACKOFF: Final = 5.0  # seconds, the longest jittered wait between two attempts
MAX_RETRY_WAIT: Final = 30.0  # seconds of waiting between attempts, in total
IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_UNPACK_LIMITS: Final = {
    "raw": False,
    "strict_map_key": True,
    "max_str_len": MAX_BODY,
    "max_bin_len": MAX_BODY,
    "max_array_len": MAX_ITEMS,
    "max_map_len": MAX_ITEMS,
    "max_ext_len": 0,  # no extension types, not even timestamps
}
_PATH: Final = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*")


def unix_seconds() -> int:
    """The current time in whole seconds since the epoch, as signatures carry it."""
    return int(time.time())


def backoff_delay(attempt: int, *, base: float, retry_after: int | None, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based).

    Full jitter: ``jitter`` (in [0, 1)) times ``base * 2**attempt`` capped at
    :data:`MAX_BACKOFF`, but never less than the hub's ``retry_after``.
    """
    delay = jitter * min(MAX_BACKOFF, base * 2.0**attempt)
    return delay if retry_after is None else max(delay, float(retry_after))


@dataclass(frozen=True)
class Response:
    """A 2xx answer: header names in lower case, ``content_type`` without parameters."""

    status: int
    headers: dict[str, str]
    body: bytes
    content_type: str

    def json(self) -> object:
        """The body as JSON; :class:`ProtocolError` unless it is a JSON document."""
        self._expect("application/json")
        try:
            return json.loads(self.body.decode("utf-8"), object_pairs_hook=_unique_map)
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the hub's JSON answer does not decode: {exc}") from exc

    def msgpack(self) -> object:
        """The body as msgpack, strictly and within :data:`MAX_BODY` / :data:`MAX_ITEMS`."""
        self._expect("application/msgpack")
        try:
            return msgpack.unpackb(self.body, object_pairs_hook=_unique_map, **_UNPACK_LIMITS)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise ProtocolError(f"the hub's msgpack answer does not decode: {exc}") from exc

    def _expect(self, content_type: str) -> None:
        if self.content_type != content_type:
            raise ProtocolError(f"expected {content_type}, the hub sent {self.content_type}")


class Transport:
    """Signed requests as one agency identity; use as ``async with Transport(...) as t``.

    The transport owns (and closes) its session only when it created it; an injected
    ``session`` is the seam for tracing, proxies and tests.
    """

    def __init__(
        self,
        base_url: str,
        identity: Identity,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], int] = unix_seconds,
        retries: int = 3,
        timeout: float = 10.0,
        backoff: float = 0.25,
    ) -> None:
        if not 0 <= retries <= 10 or timeout <= 0 or backoff < 0:
            raise ValueError("retries must be 0-10, timeout positive, backoff not negative")
        self._base = _check_base_url(base_url)
        self._identity = identity
        self._keyid = str(identity.key_id)
        self._session = session
        self._owns_session = session is None
        self._clock = clock
        self._retries = retries
        self._timeout = timeout
        self._backoff = backoff

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        accept: str = "application/msgpack",
        params: Params | None = None,
        idempotent: bool | None = None,
    ) -> Response:
        """Send a signed request; return its 2xx answer or raise a :class:`ClientError`."""
        method = method.upper()
        target = self._target(path, params)
        headers = {"Accept": accept} | ({"Content-Type": content_type} if content_type else {})
        retry = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        attempt, waited = 0, 0.0
        while True:
            try:
                return await self._attempt(method, target, headers, body)
            except (HubUnreachable, Unavailable) as exc:
                delay = self._next_delay(attempt, exc.retry_after) if retry else None
                if delay is None or waited + delay > MAX_RETRY_WAIT:
                    raise
            attempt, waited = attempt + 1, waited + delay
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def websocket(
        self, path: str, *, params: Params | None = None
    ) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """A signed WebSocket upgrade (a GET with an empty body); closed on leaving.

        A refused upgrade raises the class its status names (its body is not available).
        """
        ws = await self.open_websocket(path, params=params)
        try:
            yield ws
        finally:
            await ws.close()

    async def open_websocket(
        self, path: str, *, params: Params | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """Like :meth:`websocket`, for a caller that closes the socket itself."""
        target = self._target(path, params)
        headers = self._sign("GET", target, b"")
        with self._translated():
            async with asyncio.timeout(self._timeout):
                return await self._http.ws_connect(
                    URL(target, encoded=True), headers=headers, max_msg_size=MAX_BODY
                )

    @property
    def identity(self) -> Identity:
        """The identity every request is signed with."""
        return self._identity

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the transport as `async with Transport(...) as transport`")
        return self._session

    def _target(self, path: str, params: Params | None) -> str:
        if not _PATH.fullmatch(path):
            raise ValueError(f"path {path!r}: expected '/' then percent-encoded path characters")
        pairs = list(params.items()) if isinstance(params, Mapping) else list(params or ())
        query = urlencode(pairs, quote_via=quote, safe="") if pairs else ""
        target = self._base + path + (f"?{query}" if query else "")
        if len(target) > httpsig.MAX_TARGET_URI:
            raise ValueError(f"target URI longer than {httpsig.MAX_TARGET_URI} characters")
        return target

    def _sign(self, method: str, target: str, body: bytes) -> dict[str, str]:
        return httpsig.sign_request(
            method=method,
            target_uri=target,
            headers={},
            body=body,
            key=self._identity.signing,
            keyid=self._keyid,
            created=self._clock(),
            nonce=httpsig.new_nonce(),
        )

    async def _attempt(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> Response:
        signed = headers | self._sign(method, target, body)
        with self._translated():
            async with self._http.request(
                method,
                URL(target, encoded=True),
                data=body or None,
                headers=signed,
                allow_redirects=False,
                raise_for_status=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                ok = 200 <= resp.status < 300
                data = await _read_bounded(resp, MAX_BODY if ok else MAX_PROBLEM_BYTES, not ok)
        answer = Response(resp.status, _lower_case(resp.headers), data, resp.content_type)
        if not ok:
            retry_after = answer.headers.get("retry-after")
            raise error_from_problem(
                answer.status, data, answer.content_type, retry_after=retry_after
            )
        return answer

    def _next_delay(self, attempt: int, retry_after: int | None) -> float | None:
        if attempt >= self._retries:
            return None
        jitter = random.random()
        return backoff_delay(attempt, base=self._backoff, retry_after=retry_after, jitter=jitter)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The one place where aiohttp's and the socket's exceptions become ClientErrors."""
        try:
            yield
        except aiohttp.WSServerHandshakeError as exc:
            headers = exc.headers
            detail = f"the hub answered HTTP {exc.status} to the WebSocket upgrade"
            raise error_from_status(
                exc.status,
                detail,
                retry_after=headers.get("Retry-After") if headers else None,
                problem=headers.get(PROBLEM_HEADER) if headers else None,
            ) from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            raise HubUnreachable(f"no answer from {self._base}: {reason}") from exc


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, truncate: bool) -> bytes:
    """At most ``limit`` bytes of the body; more is a ProtocolError unless ``truncate``."""
    if not truncate and (resp.content_length or 0) > limit:
        raise ProtocolError(f"the hub's answer is larger than {limit} bytes")
    data = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > limit:
            if truncate:
                return bytes(data[: limit + 1])
            raise ProtocolError(f"the hub's answer is larger than {limit} bytes")
    return bytes(data)


def _lower_case(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """Headers by lower-case name; repeated fields joined with ", " (RFC 9110 §5.3)."""
    merged: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _unique_map(pairs: list[tuple[object, object]]) -> dict[object, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a map repeats a key")
    return result


def _check_base_url(base_url: str) -> str:
    url = URL(base_url)
    if url.scheme not in ("http", "https") or not url.host or url.user or url.password:
        raise ValueError(f"base_url {base_url!r}: expected http(s)://host[:port][/prefix]")
    if url.query_string or url.fragment:
        raise ValueError(f"base_url {base_url!r}: must have no query and no fragment")
    return str(url).rstrip("/")
