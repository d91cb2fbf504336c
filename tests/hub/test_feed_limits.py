"""Live feeds are bounded: one per channel with subscribers here, at most ``limit`` of them.

A feed holds a pooled Redis connection while it waits in ``XREAD``. Feeds that outlived
their subscribers, or one per channel a reader ever subscribed to, would take the
store's whole pool, and every post would then wait for a connection and fail. So a feed
stops with its last subscriber, and a subscription that needs a feed beyond the
process's limit is refused at the upgrade with a 503 ``too-many-live-channels`` (a
client retries it), leaving every running subscription as it was.
"""

from __future__ import annotations

import asyncio

import pytest
import redis

from clients.errors import TooManyLiveChannels, Unavailable
from hub.errors import TooManyLiveChannels as HubTooManyLiveChannels
from hub.feeds import MAX_FEEDS, Subscriber
from hub.live import FEEDS
from hub.store import MAX_POOL_CONNECTIONS
from tests.hub.conftest import CHANNEL, POLICE, PROSECUTOR, RunningHub, identity
from tests.hub.test_live import (
    OTHER,
    STEP_S,
    audit_kinds,
    create_other_channel,
    cursor,
    live_socket,
    next_frame,
    post_many,
)


def blocked_reads(client: redis.Redis) -> int:
    """Redis clients waiting in a blocking XREAD (the feeds' reads), this test's hub only."""
    return sum(
        1 for c in client.client_list() if c.get("cmd") == "xread" and "b" in c.get("flags", "")
    )


async def until(condition: object, what: str) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    async with asyncio.timeout(STEP_S):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)
    assert condition(), what  # type: ignore[operator]


def test_the_limit_leaves_most_of_the_pool_to_requests() -> None:
    assert MAX_FEEDS <= MAX_POOL_CONNECTIONS // 2


async def test_a_feed_stops_with_its_last_subscriber_and_frees_its_connection(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    feeds = world.app[FEEDS]
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    first, second = await live_socket(prosecutor), await live_socket(prosecutor)
    assert feeds.following == {CHANNEL}
    await until(lambda: blocked_reads(redis_db) == 1, "one feed waits in XREAD")

    await first.close()
    await post_many(police, ["noch einer liest"])
    frame = await next_frame(second)
    assert frame["t"] == "note"
    assert feeds.following == {CHANNEL}, "a feed runs while it has a subscriber"

    await second.close()
    await until(lambda: not feeds.following, "the feed stops with its last subscriber")
    await until(lambda: blocked_reads(redis_db) == 0, "its connection is free again")

    # a later subscriber starts a fresh feed and misses nothing posted meanwhile
    posted = await post_many(police, ["zwischendurch"])
    again = await prosecutor.transport.open_websocket(
        "/v1/subscribe", params=cursor(CHANNEL, "0-0")
    )
    replayed = [await next_frame(again) for _ in range(3)]
    assert [f["t"] for f in replayed] == ["note", "note", "live"]
    assert replayed[1]["id"] == posted[0].stream_id
    live = await post_many(police, ["danach"])
    assert (await next_frame(again))["id"] == live[0].stream_id
    await again.close()


async def test_a_subscription_beyond_the_limit_is_refused_and_nothing_changes(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    await create_other_channel(world)
    feeds = world.app[FEEDS]
    feeds.limit = 1
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    running = await live_socket(prosecutor)
    kinds = audit_kinds(redis_db)

    # the upgrade is refused with a 503, Retry-After and the problem's header (its body
    # does not reach an aiohttp client); the SDK retries it as any Unavailable
    with pytest.raises(TooManyLiveChannels) as refused:
        await prosecutor.transport.open_websocket("/v1/subscribe", params=cursor(OTHER, "0-0"))
    assert isinstance(refused.value, Unavailable)
    assert (refused.value.status, refused.value.retry_after) == (503, 1)
    # the problem itself, as a plain signed GET of the same URL sees it
    with pytest.raises(TooManyLiveChannels) as problem:
        await prosecutor.transport.request(
            "GET", "/v1/subscribe", params=cursor(OTHER, "0-0"), idempotent=False
        )
    assert "follows 1 channels live, its limit" in problem.value.detail
    # a subscription to both channels needs one more feed too: refused as a whole
    both = [*cursor(CHANNEL, "0-0"), *cursor(OTHER, "0-0")]
    with pytest.raises(TooManyLiveChannels):
        await prosecutor.transport.open_websocket("/v1/subscribe", params=both)

    # nothing changed: the same feed, no refusal logged (a 503 is not the caller's
    # doing), and the running subscription still gets its notes
    assert feeds.following == {CHANNEL}
    assert audit_kinds(redis_db) == kinds
    posted = await post_many(police, ["weiter"])
    assert (await next_frame(running))["id"] == posted[0].stream_id

    # another subscriber of a channel already followed needs no new feed
    at = cursor(CHANNEL, posted[0].stream_id)
    also = await prosecutor.transport.open_websocket("/v1/subscribe", params=at)
    assert await next_frame(also) == {"t": "live", "ch": CHANNEL}
    assert feeds.following == {CHANNEL}
    await also.close()
    await running.close()

    # once the feed has stopped, there is room for the other channel
    await until(lambda: not feeds.following, "the feed stops")
    other = await prosecutor.transport.open_websocket("/v1/subscribe", params=cursor(OTHER, "0-0"))
    assert await next_frame(other) == {"t": "live", "ch": OTHER}
    assert feeds.following == {OTHER}
    await other.close()


async def test_joining_enforces_the_limit_itself(world: RunningHub) -> None:
    """The check at the upgrade is a courtesy; a join that races past it is refused too."""
    await create_other_channel(world)
    feeds = world.app[FEEDS]
    feeds.limit = 1
    prosecutor = await world.client(PROSECUTOR)
    running = await live_socket(prosecutor)
    feeds.check_room([CHANNEL])  # a followed channel always fits
    late = Subscriber(PROSECUTOR, str(identity(PROSECUTOR).card.key_id))
    with pytest.raises(HubTooManyLiveChannels):
        await feeds.join(OTHER, late)
    assert feeds.following == {CHANNEL}
    feeds.leave(OTHER, late)  # as the socket's cleanup does: harmless
    assert feeds.following == {CHANNEL}
    await running.close()
