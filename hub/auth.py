"""Request authentication: every request is signed by its caller (RFC 9421 + RFC 9530).

The middleware, for every path but the public ones:

1. parses the signature headers once and reads the keyid the request claims (before
   trusting anything);
2. finds the card with that key id (cards never change, so it is cached);
3. verifies the signature over method, target URI (the hub's public base URL plus the
   path and query exactly as received) and the body's Content-Digest, within
   ``clock_skew_s`` of now, with that card's key;
4. in one Redis round trip, reads the card's directory entry fresh and records the
   nonce for as long as the request could be accepted (twice the window, plus two
   seconds because the window is checked in whole seconds);
5. refuses the request if the nonce was seen before (a replay), or if the key is not
   the entry's current key or the entry is not active. The nonce stays recorded either
   way: a request whose signature verified is used up, whatever the answer, so it cannot
   be replayed within the window once the reason for its refusal is gone (an agency
   reinstated, a suspended key's refusal raced by its rotation);
6. puts the caller on the request for the handlers.

From step 5 on the agency provably sent this request, once: its card's agency is put on
the request (:data:`VERIFIED_AGENCY`), so that a refusal from then on, by this middleware
or a handler, is logged in its name. Earlier refusals name nobody and are only counted.

Each refusal is its own problem type, and nothing about keys leaks into the detail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web

from hub.directory import Directory
from hub.errors import (
    AgencySuspended,
    NotFound,
    ReplayedRequest,
    StaleRequest,
    Unauthenticated,
)
from hub.records import AgencyRecord, Status
from hub.store import Store
from keys import AgencyCard, InvalidSignature, KeysError, OutsideTimeWindow, WrongKey, httpsig

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/v1/openapi.json"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Caller:
    """The authenticated agency or administrator behind a request."""

    record: AgencyRecord
    card: AgencyCard
    #: Directory entries a handler asked for (:data:`PREFETCH`), read fresh in the same
    #: round trip as the caller's; ``None`` for an agency that is not registered.
    entries: Mapping[str, AgencyRecord | None] = field(default_factory=dict)

    @property
    def agency(self) -> str:
        """The caller's agency id."""
        return str(self.record.agency)


CALLER = web.RequestKey("caller", Caller)
#: The agency whose card verified the request's signature, set once its nonce was fresh.
VERIFIED_AGENCY = web.RequestKey("verified_agency", str)


@dataclass(frozen=True)
class Authenticator:
    """Checks request signatures against the directory."""

    directory: Directory
    store: Store
    base_url: str
    clock_skew_s: int

    async def authenticate(
        self, request: web.Request, body: bytes, also: Sequence[str] = ()
    ) -> Caller:
        """The verified caller of ``request``, or the refusal explaining why not.

        The directory entries of the agencies ``also`` are read with the caller's, in the
        same round trip, and handed to the handler in :attr:`Caller.entries`.
        """
        try:
            parsed = httpsig.parse_signature(request.headers)
        except KeysError as exc:
            raise Unauthenticated(f"request signature: {exc}") from None
        keyid = parsed.keyid
        card = await self.directory.card(keyid) if _is_key_id(keyid) else None
        if card is None:
            raise Unauthenticated("unknown keyid; the key is not registered with this hub")
        verified = self._verify(request, body, parsed, card)
        entries, fresh = await self.store.agencies_and_nonce(
            [str(card.agency), *also], keyid, verified.nonce, self._nonce_ttl_s
        )
        if not fresh:
            raise ReplayedRequest("this nonce was already used; sign every request afresh")
        request[VERIFIED_AGENCY] = str(card.agency)
        record = _current_entry(entries[0], card)
        return Caller(record, card, dict(zip(also, entries[1:], strict=True)))

    @property
    def _nonce_ttl_s(self) -> int:
        """How long a nonce is kept: longer than its request can pass the time check.

        A request passes while ``abs(int(now) - created) <= clock_skew_s``: since ``now`` is
        truncated to whole seconds, that lasts ``2 * clock_skew_s + 1`` seconds of real
        time, and the nonce is stored up to a second after the first of them.
        """
        return 2 * self.clock_skew_s + 2

    def _verify(
        self, request: web.Request, body: bytes, parsed: httpsig.ParsedSignature, card: AgencyCard
    ) -> httpsig.VerifiedRequest:
        try:
            return httpsig.verify_parsed(
                parsed,
                method=request.method,
                target_uri=self.base_url + request.raw_path,
                body=body,
                lookup_key=lambda k: card.sign_key if k == parsed.keyid else None,
                now=int(time.time()),
                max_skew=self.clock_skew_s,
            )
        except OutsideTimeWindow as exc:
            raise StaleRequest(f"{exc}") from None
        except (InvalidSignature, WrongKey):
            raise Unauthenticated(
                "the request signature does not verify; sign method, the exact URL "
                f"({self.base_url}{request.raw_path}) and the body's Content-Digest"
            ) from None
        except KeysError as exc:
            raise Unauthenticated(f"request signature: {exc}") from None


def _current_entry(record: AgencyRecord | None, card: AgencyCard) -> AgencyRecord:
    """The card's directory entry: the card's key must be its current key, and it active."""
    if record is None:
        raise NotFound(f"no agency {card.agency} is registered")
    if record.current_key != card.key_id:
        raise Unauthenticated("this key was replaced; sign with the agency's current key")
    if record.status is not Status.ACTIVE:
        raise AgencySuspended(f"{record.agency} is suspended; ask an administrator")
    return record


_KEY_ID = re.compile(r"[0-9a-f]{32}")


def _is_key_id(text: str) -> bool:
    return _KEY_ID.fullmatch(text) is not None


AUTHENTICATOR = web.AppKey("authenticator", Authenticator)

#: The agencies whose directory entries a request's handler will read, if it says so in
#: advance: authentication reads them with the caller's, saving the handler a round trip.
Prefetch = Callable[[web.Request], Sequence[str]]
PREFETCH: web.AppKey[Prefetch] = web.AppKey("prefetch")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate every non-public request; handlers find the caller in ``CALLER``."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    body = await request.read()
    prefetch = request.app.get(PREFETCH)
    also = prefetch(request) if prefetch is not None else ()
    request[CALLER] = await request.app[AUTHENTICATOR].authenticate(request, body, also)
    return await handler(request)
