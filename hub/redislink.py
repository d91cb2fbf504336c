"""One multiplexed Redis connection for the hub's hot path: pipelined, cheap per command.

Why it exists. The hub is CPU-bound, and redis-py's asyncio client costs about 74 µs of
client CPU per ``EVALSHA`` (pool checkout, health check, retry wrapper, a read per
call), 98 µs per two-command pipeline. Redis answers every connection's commands in
order, so one connection shared by all callers, with replies matched to callers
first-in first-out, needs none of that: about 6 µs per ``EVALSHA`` with 64 callers.
redis-py stays for everything else (blocking ``XREAD`` of live feeds, admin paths).

Theory of operation.

* A caller's command is packed by hiredis (C) into a buffer, and a future for its reply
  goes to the back of the FIFO ``pending``. The buffer is written once per event-loop
  iteration (``loop.call_soon``), so the commands of concurrent callers share one
  ``write``; nobody waits for the write.
* ``data_received`` feeds the bytes to a ``hiredis.Reader`` and hands each complete
  reply to the future at the front of the FIFO. A batch is one FIFO entry that takes
  as many replies as it sent commands.
* An error reply becomes the exception redis-py raises for it (``ResponseError``,
  ``NoScriptError``, ...), for its caller only; it is a reply like any other, so the
  replies after it stay matched.
* A caller cancelled while waiting leaves its future done (cancelled): its reply is
  still read, then dropped. The FIFO never shifts.
* The connection lost (Redis killed, reset, closed): every pending caller fails at once
  with ``redis.exceptions.ConnectionError``, and the next call connects again. Nothing
  is retried here, since a command in flight may have been applied; the callers retry
  (a post is idempotent by message id, and the client signs a fresh nonce per attempt).
* Timeouts without a timer per call: each write records when it was sent; while
  replies are outstanding one timer is armed for when the oldest unanswered write
  becomes ``timeout_s`` old. If it is still unanswered then, Redis is stuck (paused,
  or the network is): the connection is aborted and every pending caller fails with
  ``redis.exceptions.TimeoutError``.

There is no write flow control: each caller has at most one command or batch in
flight and waits for it, so what is buffered is bounded by the callers themselves, and
the timeout bounds how long it can sit there.

A link connects lazily on first use, on the event loop of that use, and serves that
loop until the connection ends (a later connection may be on another loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    DataError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["Arg", "Endpoint", "LinkScript", "RedisLink", "error_reply", "pack"]

#: The error replies the hub tells apart, by their first word, as redis-py's classes; any
#: other is a :class:`ResponseError`. (redis-py keeps its own table in a private module.)
_ERROR_CLASSES: Final[dict[str, type[RedisError]]] = {
    "NOSCRIPT": NoScriptError,
    "NOAUTH": AuthenticationError,
    "WRONGPASS": AuthenticationError,
    "LOADING": BusyLoadingError,
    "READONLY": ReadOnlyError,
    "OOM": OutOfMemoryError,
}


def error_reply(text: str) -> RedisError:
    """An error reply as the exception redis-py raises for it, without its prefix word
    when the class already names it (``NOSCRIPT No matching script`` -> NoScriptError)."""
    word, _, rest = text.partition(" ")
    cls = _ERROR_CLASSES.get(word)
    return ResponseError(text) if cls is None else cls(rest)


#: One argument of a command, as hiredis packs it.
Arg: TypeAlias = bytes | str | int | float
Command: TypeAlias = tuple[Arg, ...]

DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_CONNECT_TIMEOUT_S: Final = 2.0
#: What ``CLIENT LIST`` shows for the link, so an operator can tell it from the pool.
CLIENT_NAME: Final = "siko-hub-link"


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: as redis-py parsed it from the hub's Redis URL.

    The password is kept out of ``repr`` and ``str``, which are what error messages use.
    """

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    ssl: ssl.SSLContext | None = field(default=None, repr=False)

    @classmethod
    def of_client(cls, client: aioredis.Redis) -> Endpoint:
        """The endpoint of a redis-py client's connection pool (its parsed URL).

        The TLS context is built by redis-py's own connection class from the same
        settings (``rediss://`` and its ``ssl_*`` options), so both connect alike.
        """
        pool = client.connection_pool
        options = pool.connection_kwargs
        tls = issubclass(pool.connection_class, aioredis.SSLConnection)
        connection = pool.make_connection() if tls else None  # type: ignore[no-untyped-call]
        context = (
            connection.ssl_context.get() if isinstance(connection, aioredis.SSLConnection) else None
        )
        return cls(
            host=str(options.get("host", "localhost")),
            port=int(options.get("port", 6379)),
            path=options.get("path"),
            username=options.get("username"),
            password=options.get("password"),
            db=int(options.get("db", 0) or 0),
            ssl=context,
        )

    def __str__(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


class LinkScript:
    """A Lua script run by its SHA-1 (``EVALSHA``), loaded again when Redis lost it.

    Redis keeps loaded scripts in memory only: a restart or ``SCRIPT FLUSH`` empties the
    cache, and the next ``EVALSHA`` is answered ``NOSCRIPT``.
    """

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest()


def pack(command: Sequence[Any]) -> bytes:
    """One command in the Redis protocol, packed by hiredis (C); for the link and for
    the store's redis-py connections alike.

    As redis-py's packers do, a command name of several words (``"CLIENT SETNAME"``) is
    split into them, a ``bytearray`` or ``memoryview`` is sent as its bytes, and a value
    hiredis cannot pack is a ``DataError``.
    """
    head = command[0]
    words = head.split() if isinstance(head, str | bytes) else [head]
    args = (bytes(a) if isinstance(a, bytearray | memoryview) else a for a in command[1:])
    try:
        packed: bytes = hiredis.pack_command((*words, *args))
    except TypeError as exc:
        raise DataError(str(exc)) from None
    return packed


def _first_error(replies: list[Any]) -> RedisError | None:
    for reply in replies:
        if isinstance(reply, RedisError):
            return reply
    return None


class _Batch:
    """A FIFO entry for several commands written together: collects their replies."""

    __slots__ = ("future", "replies", "size")

    def __init__(self, future: asyncio.Future[Any], size: int) -> None:
        self.future = future
        self.size = size
        self.replies: list[Any] = []


class _Connection(asyncio.Protocol):
    """One socket to Redis: coalesced writes, a FIFO of waiters, one watchdog timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=error_reply)
        self.pending: deque[asyncio.Future[Any] | _Batch] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        #: Replies asked for and replies read, since the connection was made.
        self.sent = 0
        self.received = 0
        #: (``sent`` after a write, when it was written): the unanswered writes, oldest first.
        self.writes: deque[tuple[int, float]] = deque()
        self.watchdog: asyncio.TimerHandle | None = None
        #: Why the connection cannot be used any more (None while it can).
        self.failure: RedisError | None = None
        self.closed: asyncio.Future[None] = loop.create_future()

    # -- requests -------------------------------------------------------------------

    def request(self, command: Command) -> asyncio.Future[Any]:
        """Queue one command; the future of its reply."""
        data = pack(command)
        future = self.loop.create_future()
        self._queue(data, future, 1)
        return future

    def request_many(self, commands: Sequence[Command]) -> asyncio.Future[list[Any]]:
        """Queue commands to be written together; the future of their replies, in order."""
        data = b"".join([pack(command) for command in commands])
        future: asyncio.Future[list[Any]] = self.loop.create_future()
        self._queue(data, _Batch(future, len(commands)), len(commands))
        return future

    def _queue(self, data: bytes, waiter: asyncio.Future[Any] | _Batch, replies: int) -> None:
        if self.failure is not None:
            raise type(self.failure)(str(self.failure))
        self.out.append(data)
        self.pending.append(waiter)
        self.sent += replies
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Write what this loop iteration's callers queued, in one write."""
        self.flush_scheduled = False
        if self.failure is not None or not self.out or self.transport is None:
            return
        data = b"".join(self.out)
        self.out.clear()
        self.transport.write(data)
        now = self.loop.time()
        writes = self.writes
        while writes and writes[0][0] <= self.received:
            writes.popleft()
        writes.append((self.sent, now))
        if self.watchdog is None:
            self.watchdog = self.loop.call_at(now + self.timeout_s, self._watch)

    def _watch(self) -> None:
        """Abort if the oldest unanswered write is ``timeout_s`` old; else look again then."""
        self.watchdog = None
        writes = self.writes
        while writes and writes[0][0] <= self.received:
            writes.popleft()
        if not writes:
            return  # all answered: the next write arms the timer again
        written_at = writes[0][1]
        if self.loop.time() - written_at >= self.timeout_s:
            self.abort(RedisTimeoutError(f"no reply from Redis within {self.timeout_s:g} s"))
        else:
            self.watchdog = self.loop.call_at(written_at + self.timeout_s, self._watch)

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        pending = self.pending
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                self.abort(RedisConnectionError("Redis sent a reply nobody asked for"))
                return
            self.received += 1
            head = pending[0]
            future: asyncio.Future[Any]
            if isinstance(head, _Batch):
                head.replies.append(reply)
                if len(head.replies) < head.size:
                    continue
                pending.popleft()
                future = head.future
                reply = head.replies
            else:
                pending.popleft()
                future = head
            if future.done():
                continue  # its caller was cancelled: the reply is read and dropped
            if isinstance(reply, RedisError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def eof_received(self) -> bool:
        return False  # Redis closed its side: close ours, connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc is not None else ""
        self._fail(RedisConnectionError(f"Connection to Redis lost{reason}"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- ending -----------------------------------------------------------------------

    def abort(self, failure: RedisError) -> None:
        """Fail every pending caller with ``failure`` and drop the socket at once."""
        self._fail(failure)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, failure: RedisError) -> None:
        if self.failure is not None:
            return
        self.failure = failure
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        self.out.clear()
        self.writes.clear()
        pending, self.pending = self.pending, deque()
        for waiter in pending:
            future = waiter.future if isinstance(waiter, _Batch) else waiter
            if not future.done():
                # An instance per caller: each raise adds its own traceback to it.
                future.set_exception(type(failure)(str(failure)))


class RedisLink:
    """One multiplexed connection to Redis, shared by every caller on its event loop.

    ``call`` runs one command, ``batch`` several written at once (not a transaction),
    ``script`` a :class:`LinkScript`. Replies are Redis's own (RESP2, bytes), as
    redis-py's raw replies without its response callbacks. Every failure is a
    ``redis.exceptions.RedisError``: ``ConnectionError`` (cannot connect, connection
    lost, closed), ``TimeoutError`` (no reply within ``timeout_s``), ``AuthenticationError``,
    or the error reply's own class.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        name: str = CLIENT_NAME,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.name = name
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    @classmethod
    def for_client(
        cls,
        client: aioredis.Redis,
        *,
        timeout_s: float | None = None,
        connect_timeout_s: float | None = None,
    ) -> RedisLink:
        """A link to the Redis of a redis-py client, with its socket timeouts by default."""
        options = client.connection_pool.connection_kwargs
        return cls(
            Endpoint.of_client(client),
            timeout_s=timeout_s or options.get("socket_timeout") or DEFAULT_TIMEOUT_S,
            connect_timeout_s=(
                connect_timeout_s
                or options.get("socket_connect_timeout")
                or DEFAULT_CONNECT_TIMEOUT_S
            ),
        )

    def __repr__(self) -> str:
        return f"<RedisLink to {self.endpoint}>"

    async def call(self, *args: Arg) -> Any:
        """Run one command; its reply."""
        conn = self._conn
        if conn is None or conn.failure is not None:
            conn = await self._connection()
        return await conn.request(args)

    async def batch(self, commands: Sequence[Command]) -> list[Any]:
        """Run commands written together (a pipeline, not a transaction); replies in order.

        An error reply raises its exception once every reply has been read (as
        redis-py's pipelines do): the first one, if there are several.
        """
        conn = self._conn
        if conn is None or conn.failure is not None:
            conn = await self._connection()
        replies = await conn.request_many(commands)
        error = _first_error(replies)
        if error is not None:
            raise error
        return replies

    async def script(self, script: LinkScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run a Lua script by SHA; on ``NOSCRIPT`` load it and run it again, once.

        ``NOSCRIPT`` means the script did not run, so running it again is safe.
        """
        conn = self._conn
        if conn is None or conn.failure is not None:
            conn = await self._connection()
        run = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return await conn.request(run)
        except NoScriptError:
            _, reply = await self.batch([("SCRIPT", "LOAD", script.source), run])
            return reply

    async def close(self) -> None:
        """Fail pending calls with ``ConnectionError`` and close the connection.

        The link may be used again afterwards: the next call connects anew.
        """
        task, self._connecting = self._connecting, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # retrieved here: nobody else may be waiting for it
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed.done():
            conn.abort(RedisConnectionError("the Redis link was closed"))
            await conn.closed

    # -- connecting ---------------------------------------------------------------------

    async def _connection(self) -> _Connection:
        """The connection, made by one task that every concurrent caller waits for.

        Shielded, so a caller cancelled while it waits does not stop the connect for the
        others.
        """
        task = self._connecting
        if task is None:
            task = self._connecting = asyncio.get_running_loop().create_task(self._connect())
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                # close() stopped the connect; this caller itself was not cancelled
                raise RedisConnectionError("the Redis link was closed") from None
            raise

    async def _connect(self) -> _Connection:
        try:
            conn = await self._open()
            self._conn = conn
            return conn
        finally:
            self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        conn: _Connection | None = None

        def made() -> _Connection:
            return _Connection(loop, self.timeout_s)

        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if endpoint.path is not None:
                    _, conn = await loop.create_unix_connection(made, endpoint.path)
                else:
                    _, conn = await loop.create_connection(
                        made,
                        endpoint.host,
                        endpoint.port,
                        ssl=endpoint.ssl,
                        server_hostname=endpoint.host if endpoint.ssl is not None else None,
                    )
                await self._handshake(conn)
                return conn
        except BaseException as exc:
            if conn is not None:
                conn.abort(RedisConnectionError("the connection was not completed"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError(f"Timeout connecting to Redis at {endpoint}") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(
                    f"Error connecting to Redis at {endpoint}: {exc.strerror or exc}"
                ) from None
            raise

    async def _handshake(self, conn: _Connection) -> None:
        """AUTH, SELECT and CLIENT SETNAME in one round trip, before any caller's command.

        A refused name (an ACL may forbid it) does not matter; anything else does. No
        error message here can hold the password: Redis never repeats it.
        """
        endpoint = self.endpoint
        commands: list[Command] = []
        if endpoint.password is not None:
            if endpoint.username:
                commands.append(("AUTH", endpoint.username, endpoint.password))
            else:
                commands.append(("AUTH", endpoint.password))
        if endpoint.db:
            commands.append(("SELECT", endpoint.db))
        commands.append(("CLIENT", "SETNAME", self.name))
        replies = await conn.request_many(commands)
        for command, reply in zip(commands, replies, strict=True):
            if not isinstance(reply, RedisError):
                continue
            if command[0] == "CLIENT" and isinstance(reply, ResponseError):
                continue
            if command[0] == "AUTH" or isinstance(reply, AuthenticationError):
                raise AuthenticationError(
                    f"Redis at {endpoint} refused the credentials in the hub's Redis URL ({reply})"
                )
            raise type(reply)(f"Redis at {endpoint} refused {command[0]!s}: {reply}")
