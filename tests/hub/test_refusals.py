"""Refusals of request authentication (RFC 9421 + RFC 9530), through HTTP, and the helpers
every refusal test of the hub shares.

Each refusal is checked four ways: the HTTP status, the problem ``type`` in an
``application/problem+json`` body, a ``detail`` that tells the caller what to fix (and
holds no key bytes and no note content), and that nothing was written to Redis.

"Nothing written" compares a snapshot of every key (its ``DUMP`` and whether it expires)
before and after. Only the nonce keys ``siko:{n:<key id>}:<nonce>`` are left out of the
comparison, and counted separately: a request whose signature verified records its nonce
*by design* (replay protection, hub/auth.py steps 4 and 5), even if a later check (its
agency's status, its key, the handler's own) refuses it. A request refused before its
signature verified leaves no nonce.

Hostile requests are made by hand with :func:`keys.httpsig.sign_request` and a plain
``aiohttp.ClientSession``; refusals the SDK can provoke use the SDK and its exception
classes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgpack
import pytest
import redis
from multidict import CIMultiDict
from yarl import URL

from clients import errors as sdk
from clients.sdk import HubClient
from clients.transport import Transport
from hub import keyspace
from hub.problems import PROBLEM_JSON
from hub.state import AUDIT
from keys import (
    Classification,
    HandlingCode,
    Identity,
    Markings,
    Note,
    Suite,
    httpsig,
    seal,
)
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    CITY,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    identity,
)

AUDITOR = "bfdi-pruefung"
NONCE_PREFIX = b"siko:{n:"
LOG_PREFIX = b"siko:{log}:"
#: The text of every note the refusal tests post: it must never show up in a detail.
SECRET_TEXT = "Vertraulich: Hinweisgeber wohnt Altendorfer Str. 12"
NOTES_PATH = f"/v1/channels/{CHANNEL}/notes"


# -- snapshots of Redis ----------------------------------------------------------------


Snapshot = dict[bytes, tuple[bytes, object, bool]]


def value_of(client: redis.Redis, key: bytes) -> tuple[bytes, object]:
    """The type and full value of ``key``, independent of its internal encoding.

    (``DUMP`` is not: a hash in ``hashtable`` encoding dumps in the order of its dict,
    which a read may change by rehashing.) For a stream, its metadata counts too, so an
    entry added and deleted again still shows.
    """
    kind = client.type(key)
    assert isinstance(kind, bytes)
    if kind == b"string":
        return kind, client.get(key)
    if kind == b"hash":
        return kind, sorted(client.hgetall(key).items())
    if kind == b"stream":
        info = client.xinfo_stream(key)
        meta = {k: v for k, v in info.items() if k not in ("first-entry", "last-entry")}
        return kind, (client.xrange(key), sorted(meta.items(), key=str))
    if kind == b"list":
        return kind, client.lrange(key, 0, -1)
    if kind == b"set":
        return kind, sorted(client.smembers(key))
    if kind == b"zset":
        return kind, client.zrange(key, 0, -1, withscores=True)
    return kind, client.dump(key)


def snapshot(client: redis.Redis) -> Snapshot:
    """Every key but the request nonces and the audit log: type, value, whether it expires."""
    keys = sorted(
        k
        for k in client.scan_iter(count=1000)
        if not k.startswith(NONCE_PREFIX) and not k.startswith(LOG_PREFIX)
    )
    return {key: (*value_of(client, key), client.pttl(key) >= 0) for key in keys}


def nonce_keys(client: redis.Redis) -> set[bytes]:
    """The request nonces the hub remembers."""
    return set(client.scan_iter(match=NONCE_PREFIX + b"*", count=1000))


def logged_records(client: redis.Redis) -> Counter[bytes]:
    """Every event record of the audit log, sequenced or still waiting in its inbox.

    Read in one transaction (all keys share the ``{log}`` slot), so that a refusal the
    sequencer is moving from the inbox into the tree is counted once: inbox entries up to
    the inbox cursor are already in the tree.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.hget(keyspace.log_cursors(), keyspace.log_inbox())
        pipe.xrange(keyspace.log_inbox())
        pipe.hvals(keyspace.log_records())
        cursor, inbox, records = pipe.execute()
    done = _stream_id(cursor or b"0-0")
    waiting = [f[b"rec"] for entry_id, f in inbox if _stream_id(entry_id) > done]
    return Counter([*records, *waiting])


def _stream_id(raw: bytes) -> tuple[int, int]:
    ms, _, seq = raw.decode().partition("-")
    return int(ms), int(seq)


def pending_refusals(hub: RunningHub) -> int:
    """How many refusals the hub counts for its next ``refusals-summarized`` record."""
    return sum(hub.app[AUDIT].refusals.pending().values())


@contextlib.contextmanager
def nothing_written(
    client: redis.Redis,
    *,
    nonces: int | None = 0,
    refusals: int = 1,
    logged: int | None = None,
    hub: RunningHub | None = None,
) -> Iterator[None]:
    """Assert that the block changes no key of Redis but its own audit trail.

    ``nonces`` is how many request nonces the block may add: 0 for requests refused by
    authentication, one per request that passed it (see the module docstring), ``None``
    for "any number". ``refusals`` is how many refused requests the block makes. Each
    enters the audit trail exactly once, in one of two ways:

    * ``logged``: its agency provably sent it (its signature verified and its nonce was
      fresh, or it was refused on a socket such a request opened): one ``request-refused``
      record naming that agency;
    * the others name nobody: they only add to the hub's count for its next
      ``refusals-summarized`` record, and write nothing now.

    ``logged`` defaults to every refusal when the block records nonces (only verified
    requests do). Otherwise, unless given, the block must log all of its refusals or
    none. With ``hub``, the hub's pending count must grow by exactly the others.
    Nothing else may reach the log.
    """
    before, before_nonces = snapshot(client), nonce_keys(client)
    before_log = logged_records(client)
    before_pending = pending_refusals(hub) if hub is not None else 0
    yield
    after, after_nonces = snapshot(client), nonce_keys(client)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"keys written by a refused request: {changed}"
    assert before_nonces <= after_nonces
    if nonces is not None:
        assert len(after_nonces - before_nonces) == nonces
    added = [msgpack.unpackb(r) for r in (logged_records(client) - before_log).elements()]
    kinds = [record["kind"] for record in added]
    assert kinds == ["request-refused"] * len(added), f"audit records added: {kinds}"
    assert all(isinstance(record.get("agency"), str) for record in added), added
    if logged is None and nonces:
        logged = refusals
    if logged is not None:
        assert len(added) == logged, f"{len(added)} refusals logged one by one, not {logged}"
    else:
        assert len(added) in (0, refusals), f"{len(added)} of {refusals} refusals logged"
    if hub is not None:
        assert pending_refusals(hub) - before_pending == refusals - len(added)


# -- problem assertions ----------------------------------------------------------------


def secrets() -> list[str]:
    """Strings that must never appear in a problem detail: note text and key bytes."""
    found = [SECRET_TEXT]
    for agency in (POLICE, PROSECUTOR, CITY, ADMIN):
        ident = identity(agency)
        for raw in (ident.signing.public.raw, ident.kem.public.raw[:32], ident.card.signature):
            found += [raw.hex(), base64.b64encode(raw).decode(), _b64url(raw)]
        found.append(base64.b64encode(ident.card.serialize()[:48]).decode())
    return found


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check_detail(detail: str, title: str, needles: tuple[str, ...]) -> None:
    assert detail and detail.strip() and detail != title, detail
    for needle in needles:
        assert needle in detail, f"{needle!r} not in {detail!r}"
    for secret in secrets():
        assert secret not in detail


@dataclass(frozen=True)
class Answer:
    """A raw HTTP answer of the hub."""

    status: int
    headers: Mapping[str, str]
    content_type: str
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.content_type == PROBLEM_JSON, (self.status, self.content_type, self.body)
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


def assert_problem(answer: Answer, status: int, slug: str, *needles: str) -> dict[str, Any]:
    """``answer`` is the problem ``slug`` with ``status``; its detail names ``needles``."""
    problem = answer.problem()
    assert answer.status == status, problem
    assert problem["type"] == f"urn:siko:problem:{slug}", problem
    assert problem["status"] == status
    assert set(problem) == {"type", "title", "status", "detail"}
    # the slug again, for clients that cannot read the body (a refused WebSocket upgrade)
    assert answer.headers["Siko-Problem"] == slug
    check_detail(problem["detail"], problem["title"], needles)
    return problem


def assert_sdk_problem(
    excinfo: pytest.ExceptionInfo[sdk.ClientError], status: int, slug: str, *needles: str
) -> None:
    """The SDK raised for the problem ``slug``: it came as problem+json with a detail."""
    error = excinfo.value
    assert error.status == status
    # The SDK only takes the type from an application/problem+json body.
    assert error.problem_type == f"urn:siko:problem:{slug}"
    check_detail(error.detail, error.title, needles)


# -- hand-made requests ----------------------------------------------------------------


async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain aiohttp session; each test module makes it its ``http`` fixture."""
    async with aiohttp.ClientSession() as session:
        yield session


_http = pytest.fixture(http_session, name="http")


async def send(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    headers: CIMultiDict[str] | Mapping[str, str],
    body: bytes,
) -> Answer:
    async with session.request(
        method, URL(url, encoded=True), data=body or None, headers=headers, allow_redirects=False
    ) as resp:
        data = await resp.read()
        return Answer(resp.status, dict(resp.headers), resp.content_type, data)


def sign(
    hub: RunningHub,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    signer: Identity | None = None,
    keyid: str | None = None,
    created: int | None = None,
    nonce: str | None = None,
    target: str | None = None,
) -> dict[str, str]:
    """The three signature headers for a request (by default as the police, now)."""
    who = signer or identity(POLICE)
    return httpsig.sign_request(
        method=method,
        target_uri=target or hub.base_url + path,
        headers={},
        body=body,
        key=who.signing,
        keyid=keyid or str(who.key_id),
        created=int(time.time()) if created is None else created,
        nonce=nonce or httpsig.new_nonce(),
    )


async def signed(
    session: aiohttp.ClientSession,
    hub: RunningHub,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    signer: Identity | None = None,
    accept: str = "application/json",
) -> Answer:
    """A correctly signed request as ``signer`` (the police by default)."""
    headers = {"Accept": accept, **sign(hub, method, path, body, signer=signer)}
    if content_type:
        headers["Content-Type"] = content_type
    return await send(session, hub.base_url + path, method, headers, body)


def sealed(
    sender: str = POLICE,
    *,
    readers: tuple[str, ...] = (POLICE, PROSECUTOR, CITY),
    channel: str = CHANNEL,
    classification: Classification = Classification.VS_NFD,
    text: str = SECRET_TEXT,
    **kw: Any,
) -> bytes:
    """An envelope sealed by ``sender`` for ``readers``' session identities."""
    return seal(
        Note(text),
        sender=identity(sender),
        channel=channel,
        recipients=[identity(a).card for a in readers],
        markings=Markings(classification, HandlingCode.H1),
        **kw,
    )


ENVELOPE = "application/vnd.siko.envelope"


def post_headers(hub: RunningHub, body: bytes, **kw: Any) -> dict[str, str]:
    return {"Content-Type": ENVELOPE, **sign(hub, "POST", NOTES_PATH, body, **kw)}


# -- the control: a correctly signed hand-made post is accepted ------------------------


async def test_a_hand_signed_post_is_accepted(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    body = sealed()
    answer = await send(http, world.base_url + NOTES_PATH, "POST", post_headers(world, body), body)
    assert answer.status == 201, answer.body
    assert redis_db.xlen(f"siko:{{ch:{CHANNEL}}}:notes") == 1


# -- refused before the nonce is recorded ----------------------------------------------


def _drop(name: str) -> Any:
    def mutate(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
        return {k: v for k, v in headers.items() if k != name}, body

    return mutate


def _replace(name: str, value: str) -> Any:
    def mutate(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
        return {**headers, name: value}, body

    return mutate


def _tamper_body(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
    other = sealed(text="eine ganz andere Notiz")
    return headers, other


def _tamper_body_and_digest(
    headers: dict[str, str], body: bytes, hub: RunningHub
) -> tuple[Any, bytes]:
    other = sealed(text="eine ganz andere Notiz")
    return {**headers, "Content-Digest": httpsig.content_digest(other)}, other


def _repeat_signature(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
    repeated = CIMultiDict(headers)
    repeated.add("Signature", headers["Signature"])
    return repeated, body


def _resign(**kw: Any) -> Any:
    def mutate(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
        return post_headers(hub, body, **kw), body

    return mutate


def _relabel(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
    relabelled = {
        **headers,
        "Signature-Input": headers["Signature-Input"].replace("sig1=", "sig2=", 1),
        "Signature": headers["Signature"].replace("sig1=", "sig2=", 1),
    }
    return relabelled, body


def _spaced(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
    spaced = headers["Signature-Input"].replace(' "@target-uri"', '  "@target-uri"')
    return {**headers, "Signature-Input": spaced}, body


def _short_nonce(headers: dict[str, str], body: bytes, hub: RunningHub) -> tuple[Any, bytes]:
    short = re.sub(r'nonce="[^"]+"', 'nonce="short"', headers["Signature-Input"])
    return {**headers, "Signature-Input": short}, body


def _stranger() -> Identity:
    return identity("lka-fremd")


AUTH_REFUSALS: dict[str, tuple[Any, str, tuple[str, ...]]] = {
    "unsigned": (
        lambda h, b, hub: ({"Content-Type": ENVELOPE}, b),
        "unauthenticated",
        ("missing",),
    ),
    "no Signature": (_drop("Signature"), "unauthenticated", ("signature", "missing")),
    "no Signature-Input": (_drop("Signature-Input"), "unauthenticated", ("missing",)),
    "no Content-Digest": (_drop("Content-Digest"), "unauthenticated", ("content-digest",)),
    "body changed after signing": (_tamper_body, "unauthenticated", ("does not verify",)),
    "body and digest changed after signing": (
        _tamper_body_and_digest,
        "unauthenticated",
        ("does not verify",),
    ),
    "signed for another path": (
        lambda h, b, hub: (post_headers(hub, b, target=hub.base_url + "/v1/agencies"), b),
        "unauthenticated",
        ("exact URL", NOTES_PATH),
    ),
    "signed for another host": (
        lambda h, b, hub: (
            post_headers(
                hub, b, target=hub.base_url.replace("127.0.0.1", "localhost") + NOTES_PATH
            ),
            b,
        ),
        "unauthenticated",
        ("does not verify",),
    ),
    "signed with another key than the keyid names": (
        lambda h, b, hub: (
            post_headers(hub, b, keyid=str(identity(POLICE).key_id), signer=identity(CITY)),
            b,
        ),
        "unauthenticated",
        ("does not verify",),
    ),
    "unknown keyid": (
        lambda h, b, hub: (post_headers(hub, b, signer=_stranger()), b),
        "unauthenticated",
        ("unknown keyid",),
    ),
    "keyid not a key id": (
        _resign(keyid="pp-duisburg"),
        "unauthenticated",
        ("unknown keyid",),
    ),
    "Signature-Input not canonical": (_spaced, "unauthenticated", ("canonical",)),
    "Signature repeated": (_repeat_signature, "unauthenticated", ("repeated",)),
    "another label": (_relabel, "unauthenticated", ("sig1",)),
    "Signature not a byte sequence": (
        _replace("Signature", "sig1=:AAAA:"),
        "unauthenticated",
        ("signature",),
    ),
    "nonce too short": (_short_nonce, "unauthenticated", ("nonce",)),
    "Content-Digest with another algorithm": (
        _replace("Content-Digest", "sha-512=:AAAA:"),
        "unauthenticated",
        ("content-digest",),
    ),
}


@pytest.mark.parametrize(
    ("mutate", "slug", "needles"), AUTH_REFUSALS.values(), ids=AUTH_REFUSALS.keys()
)
async def test_authentication_refusals_write_nothing_not_even_a_nonce(
    world: RunningHub,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
    mutate: Any,
    slug: str,
    needles: tuple[str, ...],
) -> None:
    body = sealed()
    headers, sent = mutate(post_headers(world, body), body, world)
    with nothing_written(redis_db, nonces=0, logged=0, hub=world):
        answer = await send(http, world.base_url + NOTES_PATH, "POST", headers, sent)
    assert_problem(answer, 401, slug, *needles)
    assert not redis_db.exists(f"siko:{{ch:{CHANNEL}}}:notes")


async def test_a_target_uri_beyond_the_profile_is_refused_before_any_check_of_the_signature(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    """A request URI longer than the profile allows (4,096 characters) is refused as
    such, whatever was signed; nothing is written, not even a nonce."""
    body = sealed()
    padded = world.base_url + NOTES_PATH + "?pad=" + "a" * httpsig.MAX_TARGET_URI
    with nothing_written(redis_db, nonces=0, logged=0, hub=world):
        answer = await send(http, padded, "POST", post_headers(world, body), body)
    assert_problem(answer, 401, "unauthenticated", "request signature", "target uri")


# -- replays ---------------------------------------------------------------------------


async def test_a_replayed_post_is_refused_and_stores_nothing_more(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    body = sealed()
    headers = post_headers(world, body)
    first = await send(http, world.base_url + NOTES_PATH, "POST", headers, body)
    assert first.status == 201
    with nothing_written(redis_db, nonces=0, logged=0, hub=world):
        again = await send(http, world.base_url + NOTES_PATH, "POST", headers, body)
    assert_problem(again, 401, "replayed-request", "nonce")


async def test_a_nonce_is_spent_even_on_a_different_request(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    nonce = httpsig.new_nonce()
    first = await send(
        http,
        world.base_url + "/v1/agencies",
        "GET",
        sign(world, "GET", "/v1/agencies", nonce=nonce),
        b"",
    )
    assert first.status == 200
    body = sealed()
    with nothing_written(redis_db, nonces=0, logged=0, hub=world):
        answer = await send(
            http, world.base_url + NOTES_PATH, "POST", post_headers(world, body, nonce=nonce), body
        )
    assert_problem(answer, 401, "replayed-request", "sign every request afresh")


async def test_the_same_nonce_under_another_key_is_no_replay(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    nonce = httpsig.new_nonce()
    for who in (POLICE, CITY):
        headers = sign(world, "GET", "/v1/agencies", nonce=nonce, signer=identity(who))
        answer = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
        assert answer.status == 200


async def test_a_nonce_outlives_every_moment_its_request_would_be_accepted(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    # A request is accepted while abs(int(now) - created) <= clock_skew_s, that is for
    # 2 * clock_skew_s + 1 seconds of real time (now is truncated to whole seconds). A
    # request signed with created = now + skew (a sender clock a minute fast) must keep
    # its nonce until the last of those moments, or the very same request could be
    # replayed and accepted once more (hub/auth.py once kept it for only 2 * skew).
    skew = world.settings.clock_skew_s
    while time.time() % 1 > 0.8:  # keep the check below clear of a second boundary
        time.sleep(0.05)
    known = nonce_keys(redis_db)
    created = int(time.time()) + skew
    headers = sign(world, "GET", "/v1/agencies", created=created)
    answer = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
    stored_at = time.time()
    assert answer.status == 200
    (key,) = nonce_keys(redis_db) - known
    expires_at = stored_at + redis_db.pttl(key) / 1000
    last_accepted_moment = created + skew + 1  # exclusive: int(now) - created <= skew
    assert expires_at >= last_accepted_moment


# -- keys and status of the caller -----------------------------------------------------


async def test_a_replaced_key_is_refused(world: RunningHub, redis_db: redis.Redis) -> None:
    rotated = Identity.generate(CITY, suite=Suite.X25519)
    city = await world.client(CITY)
    await city.add_card(CITY, rotated.card)
    with (
        nothing_written(redis_db, nonces=1, hub=world),
        pytest.raises(sdk.Unauthenticated) as excinfo,
    ):
        await city.roster(CHANNEL)
    assert_sdk_problem(excinfo, 401, "unauthenticated", "replaced", "current key")
    async with HubClient(world.base_url, rotated) as fresh:
        assert (await fresh.roster(CHANNEL)).channel == CHANNEL


async def test_an_unregistered_identity_is_refused(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    async with HubClient(world.base_url, _stranger()) as stranger:
        with (
            nothing_written(redis_db, nonces=0, logged=0, hub=world),
            pytest.raises(sdk.Unauthenticated) as excinfo,
        ):
            await stranger.post_note(CHANNEL, Note(SECRET_TEXT), MARKS)
    assert_sdk_problem(excinfo, 401, "unauthenticated", "not registered")


async def test_a_suspended_agency_is_refused_everything(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    admin = await world.client(ADMIN)
    city = await world.client(CITY)
    await admin.set_status(CITY, "suspended")
    with nothing_written(redis_db, nonces=3, refusals=3, hub=world):
        with pytest.raises(sdk.AgencySuspended) as excinfo:
            await city.post_note(CHANNEL, Note(SECRET_TEXT), MARKS)
        assert_sdk_problem(excinfo, 403, "agency-suspended", CITY)
        with pytest.raises(sdk.AgencySuspended):
            await city.page_notes(CHANNEL)
        with pytest.raises(sdk.AgencySuspended):
            await city.ack(CHANNEL, "0-0")
    await admin.set_status(CITY, "active")
    assert (await city.page_notes(CHANNEL)).notes == ()


async def test_a_refused_request_cannot_be_replayed_once_its_reason_is_gone(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    """Refused while its agency was suspended, the very same request (headers and all)
    sent again after the agency is reinstated is a replay, not a first use."""
    admin = await world.client(ADMIN)
    await admin.set_status(CITY, "suspended")
    headers = {
        "Accept": "application/json",
        **sign(world, "GET", "/v1/agencies", signer=identity(CITY)),
    }
    first = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
    assert_problem(first, 403, "agency-suspended", CITY)
    await admin.set_status(CITY, "active")
    with nothing_written(redis_db, nonces=0, logged=0, hub=world):
        again = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
    assert_problem(again, 401, "replayed-request", "nonce")


async def test_a_key_is_refused_what_its_kind_may_not_do(
    world: RunningHub, redis_db: redis.Redis
) -> None:
    """An auditor's key administers nothing; an administrator's key posts no note."""
    admin = await world.client(ADMIN)
    await admin.register_agency(identity(AUDITOR).card, kind="auditor")
    auditor = await world.client(AUDITOR)
    with nothing_written(redis_db, nonces=3, refusals=3, hub=world):
        with pytest.raises(sdk.Forbidden) as excinfo:
            await auditor.register_agency(identity("stadt-bochum").card)
        assert_sdk_problem(excinfo, 403, "forbidden", AUDITOR, "not an administrator")
        with pytest.raises(sdk.Forbidden) as excinfo:
            await auditor.set_member(CHANNEL, AUDITOR, {"read"})
        assert_sdk_problem(excinfo, 403, "forbidden", AUDITOR, "not an administrator")
        with pytest.raises(sdk.NotMember) as member_excinfo:
            await admin.post_envelope(CHANNEL, sealed(ADMIN))
        assert_sdk_problem(member_excinfo, 403, "not-member", ADMIN, "post")


@pytest.mark.parametrize("offset", [-3600, +3600])
async def test_a_client_with_a_wrong_clock_is_told_so(
    world: RunningHub, redis_db: redis.Redis, offset: int
) -> None:
    transport = Transport(world.base_url, identity(POLICE), clock=lambda: int(time.time()) + offset)
    async with HubClient(world.base_url, identity(POLICE), transport=transport) as police:
        with (
            nothing_written(redis_db, nonces=0, logged=0, hub=world),
            pytest.raises(sdk.StaleRequest) as excinfo,
        ):
            await police.post_note(CHANNEL, Note(SECRET_TEXT), MARKS)
    assert_sdk_problem(excinfo, 401, "stale-request", "clock")


async def test_the_signing_window_edges(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    skew = world.settings.clock_skew_s
    for delta in (-(skew - 2), skew - 2):
        headers = sign(world, "GET", "/v1/agencies", created=int(time.time()) + delta)
        answer = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
        assert answer.status == 200
    for delta in (-(skew + 2), skew + 2):
        headers = sign(world, "GET", "/v1/agencies", created=int(time.time()) + delta)
        with nothing_written(redis_db, nonces=0, logged=0, hub=world):
            answer = await send(http, world.base_url + "/v1/agencies", "GET", headers, b"")
        assert_problem(answer, 401, "stale-request", f"± {skew} s")


async def test_authentication_comes_before_every_other_check(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    """An unsigned request learns nothing: not whether a channel or a route exists."""
    for method, path in [
        ("GET", "/v1/channels/gibt-es-nicht"),
        ("GET", "/v1/nirgendwo"),
        ("DELETE", "/v1/agencies"),
        ("POST", "/v1/agencies"),
    ]:
        with nothing_written(redis_db, nonces=0, logged=0, hub=world):
            answer = await send(http, world.base_url + path, method, {}, b"")
        assert_problem(answer, 401, "unauthenticated", "missing")


async def test_a_msgpack_accepting_client_still_gets_problem_json(
    world: RunningHub, http: aiohttp.ClientSession, redis_db: redis.Redis
) -> None:
    body = msgpack.packb({"card": b"x"})
    with nothing_written(redis_db, nonces=1, hub=world):
        answer = await signed(
            http,
            world,
            "POST",
            "/v1/agencies",
            body,
            content_type="application/msgpack",
            accept="application/msgpack",
        )
    assert_problem(answer, 403, "forbidden", "not an administrator")
