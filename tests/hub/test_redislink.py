"""hub/redislink.py against real redis-servers: matching, errors, faults, credentials.

Most tests use the session Redis (``redis_url``, flushed per test). The fault tests start
their own :class:`~hub.embedded.EmbeddedRedis` in ``tmp_path`` and kill (SIGKILL), pause
(SIGSTOP) or restart it. A ``BLPOP`` holds the link's connection busy where a test needs
calls to be pending on the server: Redis answers a connection's commands in order, so
everything written after it waits behind it. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    DataError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from hub.embedded import EmbeddedRedis
from hub.redislink import CLIENT_NAME, Endpoint, LinkScript, RedisLink, error_reply

BOUND_S = 10.0  # the longest any single step may take

_T = TypeVar("_T")


async def bounded(awaitable: Awaitable[_T], seconds: float = BOUND_S) -> _T:
    async with asyncio.timeout(seconds):
        return await awaitable


def link_to(url: str, **options: float) -> RedisLink:
    """A link to ``url``, parsed by redis-py as the hub's Store does."""
    return RedisLink.for_client(aioredis.Redis.from_url(url), **options)


@pytest.fixture
async def link(redis_url: str, redis_db: redis.Redis) -> AsyncIterator[RedisLink]:
    opened = link_to(redis_url)
    yield opened
    await opened.close()


def server_pid(url: str) -> int:
    with redis.Redis.from_url(url) as direct:
        info: dict[str, Any] = direct.info("server")
    return int(info["process_id"])


async def hold(link: RedisLink, seconds: float) -> asyncio.Task[Any]:
    """Start a ``BLPOP`` that keeps the link's connection busy on the server; once it is
    there, everything written after it waits behind it."""
    blocker = asyncio.create_task(link.call("BLPOP", "gate", seconds))
    await asyncio.sleep(0.1)
    return blocker


# -- matching replies to callers --------------------------------------------------------


async def test_a_thousand_concurrent_callers_each_get_their_own_reply(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    redis_db.mset({f"k{i}": f"v{i}" for i in range(1000)})
    rng = random.Random(7)

    async def caller(i: int) -> tuple[int, Any]:
        for _ in range(rng.randrange(4)):  # a different interleaving for each caller
            await asyncio.sleep(0)
        if i % 3 == 0:
            return i, await link.batch([("GET", f"k{i}"), ("STRLEN", f"k{i}")])
        return i, await link.call("GET", f"k{i}")

    results = await bounded(asyncio.gather(*(caller(i) for i in range(1000))))
    for i, reply in results:
        value = f"v{i}".encode()
        assert reply == ([value, len(value)] if i % 3 == 0 else value)


async def test_concurrent_first_calls_share_one_connection(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    replies = await bounded(asyncio.gather(*(link.call("ECHO", i) for i in range(100))))
    assert replies == [str(i).encode() for i in range(100)]
    clients: list[dict[str, Any]] = redis_db.client_list()
    assert [c["name"] for c in clients].count(CLIENT_NAME) == 1


async def test_a_batch_answers_in_order(link: RedisLink) -> None:
    commands = [("INCRBY", "n", i) for i in range(1, 101)]
    replies = await bounded(link.batch(commands))
    assert replies == [i * (i + 1) // 2 for i in range(1, 101)]


async def test_a_link_busy_for_longer_than_its_timeout_is_not_cut_while_replies_come(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """The watchdog measures the oldest unanswered write, not the life of the connection."""
    link = link_to(redis_url, timeout_s=0.3)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        count = 0
        while loop.time() < end:
            assert await bounded(link.call("INCR", "n")) == count + 1
            count += 1
            await asyncio.sleep(0.01)
        assert redis_db.get("n") == str(count).encode()
    finally:
        await link.close()


# -- error replies ------------------------------------------------------------------------


async def test_an_error_reply_fails_only_its_caller(link: RedisLink, redis_db: redis.Redis) -> None:
    redis_db.set("text", "not a number")

    async def caller(i: int) -> Any:
        if i % 7 == 3:
            return await link.call("INCR", "text")
        return await link.call("ECHO", f"v{i}")

    results = await bounded(
        asyncio.gather(*(caller(i) for i in range(300)), return_exceptions=True)
    )
    for i, result in enumerate(results):
        if i % 7 == 3:
            assert type(result) is ResponseError
            assert "not an integer" in str(result)
        else:
            assert result == f"v{i}".encode()


async def test_an_error_in_a_batch_raises_after_every_reply_is_read(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    """Not a transaction: the commands around the error ran; the next call is matched."""
    redis_db.set("text", "x")
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await bounded(link.batch([("SET", "a", 1), ("LPUSH", "text", 2), ("SET", "b", 3)]))
    assert redis_db.mget("a", "b") == [b"1", b"3"]
    assert await bounded(link.call("ECHO", "next")) == b"next"


async def test_a_value_that_cannot_be_packed_is_a_data_error_and_nothing_is_sent(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    for bad in (None, {"a": 1}, object()):
        with pytest.raises(DataError):
            await bounded(link.call("SET", "k", bad))  # type: ignore[arg-type]
        with pytest.raises(DataError):
            await bounded(link.batch([("SET", "j", 1), ("SET", "k", bad)]))  # type: ignore[list-item]
    assert redis_db.dbsize() == 0
    assert await bounded(link.call("ECHO", "still in step")) == b"still in step"


# -- scripts ------------------------------------------------------------------------------

COUNT_RUNS = LinkScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")


async def test_a_script_flushed_from_redis_is_loaded_again_and_runs_once(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    assert await bounded(link.script(COUNT_RUNS, ["runs"], [1])) == 1
    redis_db.script_flush()
    assert redis_db.script_exists(COUNT_RUNS.sha) == [False]
    assert await bounded(link.script(COUNT_RUNS, ["runs"], [10])) == 11  # ran once, not twice
    assert redis_db.get("runs") == b"11"
    assert redis_db.script_exists(COUNT_RUNS.sha) == [True]


async def test_a_script_error_is_the_callers_alone(link: RedisLink, redis_db: redis.Redis) -> None:
    redis_db.set("runs", "text")
    outcomes = await bounded(
        asyncio.gather(
            link.script(COUNT_RUNS, ["runs"], [1]),
            link.script(COUNT_RUNS, ["other"], [5]),
            return_exceptions=True,
        )
    )
    assert isinstance(outcomes[0], ResponseError) and outcomes[1] == 5


# -- cancellation and closing -------------------------------------------------------------


async def test_a_cancelled_caller_does_not_shift_the_replies_of_others(
    link: RedisLink, redis_db: redis.Redis
) -> None:
    await bounded(link.call("PING"))
    blocker = await hold(link, 5)
    calls = [
        asyncio.create_task(
            link.batch([("ECHO", f"b{i}"), ("ECHO", f"c{i}")])
            if i % 5 == 0
            else link.call("ECHO", f"v{i}")
        )
        for i in range(200)
    ]
    await asyncio.sleep(0.1)  # all written, all waiting behind the BLPOP
    for i, call in enumerate(calls):
        if i % 3 == 0:
            call.cancel()
    redis_db.rpush("gate", "open")
    assert await bounded(blocker) == [b"gate", b"open"]
    results = await bounded(asyncio.gather(*calls, return_exceptions=True))
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, asyncio.CancelledError)
        elif i % 5 == 0:
            assert result == [f"b{i}".encode(), f"c{i}".encode()]
        else:
            assert result == f"v{i}".encode()
    assert await bounded(link.call("ECHO", "after")) == b"after"


async def test_close_fails_pending_calls_and_the_link_connects_again_later(
    link: RedisLink,
) -> None:
    blocker = await hold(link, 5)
    pending = asyncio.create_task(link.call("ECHO", "never answered"))
    await asyncio.sleep(0.05)
    await bounded(link.close())
    for call in (blocker, pending):
        with pytest.raises(RedisConnectionError, match="closed"):
            await bounded(call)
    assert await bounded(link.call("PING")) == b"PONG"


async def test_close_while_connecting_fails_the_waiting_callers_with_a_connection_error(
    redis_db: redis.Redis,
) -> None:
    """A server that accepts and never answers: the callers wait in the handshake."""

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the link hangs up
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(Endpoint("127.0.0.1", port), connect_timeout_s=30.0)
    try:
        calls = [asyncio.create_task(link.call("PING")) for _ in range(3)]
        await asyncio.sleep(0.1)
        await bounded(link.close())
        for call in calls:
            with pytest.raises(RedisConnectionError, match="closed"):
                await bounded(call)
    finally:
        server.close()
        await server.wait_closed()


# -- faults ---------------------------------------------------------------------------------


async def test_kill_9_fails_pending_calls_at_once_and_a_restart_is_reconnected(
    own_redis: EmbeddedRedis,
) -> None:
    link = link_to(own_redis.url, timeout_s=30.0)
    try:
        blocker = await hold(link, 30)
        calls = [asyncio.create_task(link.call("ECHO", i)) for i in range(100)]
        await asyncio.sleep(0.1)
        loop = asyncio.get_running_loop()
        await own_redis.kill()
        killed_at = loop.time()
        results = await bounded(asyncio.gather(blocker, *calls, return_exceptions=True), 2.0)
        assert loop.time() - killed_at < 1.0, "pending calls must fail at once"
        assert all(type(r) is RedisConnectionError for r in results), results
        with pytest.raises(RedisConnectionError, match="connecting"):
            await bounded(link.call("PING"))  # nobody listens: refused at once
        await own_redis.start()  # same folder, port and password
        assert await bounded(link.call("PING")) == b"PONG"
    finally:
        await link.close()


async def test_a_paused_redis_fails_pending_calls_with_a_timeout(
    own_redis: EmbeddedRedis,
) -> None:
    link = link_to(own_redis.url, timeout_s=0.5, connect_timeout_s=0.5)
    pid = server_pid(own_redis.url)
    try:
        await bounded(link.call("PING"))
        loop = asyncio.get_running_loop()
        os.kill(pid, signal.SIGSTOP)
        try:
            paused_at = loop.time()
            calls = [link.call("ECHO", i) for i in range(50)]
            results = await bounded(asyncio.gather(*calls, return_exceptions=True), 3.0)
            assert loop.time() - paused_at < 1.5
            assert all(type(r) is RedisTimeoutError for r in results), results
            with pytest.raises(RedisTimeoutError):  # a new connection's handshake times out
                await bounded(link.call("PING"), 3.0)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await bounded(link.call("ECHO", "again")) == b"again"
    finally:
        await link.close()


async def test_a_refused_connection_is_a_connection_error(redis_db: redis.Redis) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = RedisLink(Endpoint("127.0.0.1", port, password="s3cret-pw"))
    with pytest.raises(RedisConnectionError) as refused:
        await bounded(link.call("PING"))
    assert f"127.0.0.1:{port}" in str(refused.value)
    assert "s3cret-pw" not in str(refused.value) + repr(link) + repr(link.endpoint)
    await link.close()


# -- credentials and database ---------------------------------------------------------------


async def test_the_url_password_is_used_and_a_wrong_one_is_a_clear_error_without_it(
    redis_url: str, redis_db: redis.Redis
) -> None:
    """The session Redis is an EmbeddedRedis: it has a password."""
    right = link_to(redis_url)
    password = right.endpoint.password
    assert password
    assert await bounded(right.call("PING")) == b"PONG"
    await right.close()

    wrong_password = "wrong-" + password[::-1]
    wrong = link_to(redis_url.replace(password, wrong_password))
    with pytest.raises(AuthenticationError) as refused:
        await bounded(wrong.call("PING"))
    text = "".join(
        str(e) + repr(e)
        for e in (refused.value, refused.value.__cause__, refused.value.__context__)
    )
    assert "refused the credentials" in text
    assert password not in text and wrong_password not in text
    assert wrong_password not in repr(wrong) + repr(wrong.endpoint) + str(wrong.endpoint)
    await wrong.close()

    none = link_to(redis_url.replace(f":{password}@", ""))
    with pytest.raises(AuthenticationError, match="Authentication required"):
        await bounded(none.call("PING"))
    await none.close()


async def test_the_url_database_is_selected_and_the_link_has_a_name(
    redis_url: str, redis_db: redis.Redis
) -> None:
    link = link_to(redis_url.rsplit("/", 1)[0] + "/3")
    try:
        assert await bounded(link.call("SET", "in-three", 1)) == b"OK"
        assert await bounded(link.call("CLIENT", "GETNAME")) == CLIENT_NAME.encode()
    finally:
        await link.close()
    assert redis_db.get("in-three") is None
    with redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + "/3") as three:
        assert three.get("in-three") == b"1"


# -- a peer that does not speak Redis's protocol -----------------------------------------


async def _fake_redis(answer: bytes) -> tuple[asyncio.Server, int]:
    """A local TCP server that answers the link's handshake with ``answer`` and then
    stays silent: a broken or hostile peer, not a Redis."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)  # the handshake
        writer.write(answer)
        await writer.drain()
        await reader.read(4096)  # then hold the connection until the client drops it
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"+OK\r\n!!! not RESP\r\n", "protocol error"),
        (b"+OK\r\n+OK\r\n", "nobody asked for"),
    ],
    ids=["garbage", "an unrequested reply"],
)
async def test_bytes_that_are_not_the_replies_asked_for_drop_the_connection(
    answer: bytes, why: str
) -> None:
    """Garbage, or more replies than commands, fail every pending caller with a
    ConnectionError naming the fault, and the link does not go on reading that stream."""
    server, port = await _fake_redis(answer)
    link = RedisLink(Endpoint(host="127.0.0.1", port=port), timeout_s=2.0)
    try:
        with pytest.raises(RedisConnectionError, match=why):
            await bounded(link.call("PING"))
    finally:
        await link.close()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("reply", "cls", "text"),
    [
        ("NOSCRIPT No matching script.", NoScriptError, "No matching script."),
        ("NOAUTH Authentication required.", AuthenticationError, "Authentication required."),
        ("WRONGPASS invalid username-password pair", AuthenticationError, "invalid username"),
        ("LOADING Redis is loading the dataset in memory", BusyLoadingError, "Redis is loading"),
        ("READONLY You can't write against a read only replica.", ReadOnlyError, "You can't"),
        ("OOM command not allowed when used memory", OutOfMemoryError, "command not allowed"),
        ("WRONGTYPE Operation against a key", ResponseError, "WRONGTYPE Operation"),
        ("ERR unknown command 'FOO'", ResponseError, "ERR unknown command"),
        ("", ResponseError, ""),
    ],
)
def test_error_replies_become_the_classes_redis_py_raises(
    reply: str, cls: type[Exception], text: str
) -> None:
    """The link's own table: the replies the hub tells apart, by their first word."""
    error = error_reply(reply)
    assert type(error) is cls
    assert str(error).startswith(text)
