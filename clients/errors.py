"""Every error the SDK raises, and the map from the hub's problem ``type`` back to a class.

One tree, rooted in :class:`ClientError`::

    ClientError                      status, detail, problem_type, retry_after
    ├── HubUnreachable               no answer: refused, reset, timed out
    ├── ProtocolError                an answer the protocol does not allow
    └── HubProblem                   the hub answered with a problem (RFC 9457)
        ├── InternalError            500, and any other 5xx
        ├── Unavailable              503
        │   ├── TooManyLiveChannels
        │   └── ShuttingDown
        ├── BadRequest               400
        │   └── MalformedEnvelope
        ├── TooLarge                 413
        ├── Unauthenticated          401
        │   ├── ReplayedRequest
        │   └── StaleRequest
        ├── Forbidden                403
        │   ├── AgencySuspended
        │   ├── NotMember
        │   └── SenderMismatch
        ├── NotFound                 404
        ├── Conflict                 409
        │   ├── RosterChanged
        │   └── IdempotencyConflict
        └── EnvelopeRejected         422
            ├── BadEnvelopeSignature
            ├── RecipientsMismatch
            └── AboveCeiling

Each class under :class:`HubProblem` with a hub ``slug`` has the name of its class in
``hub/errors.py`` (the hub's base ``HubError`` is :class:`InternalError` here). A problem
whose ``type`` is unknown, or whose body is not problem JSON, becomes the class that the
status names (:data:`BY_STATUS`), else :class:`HubProblem` (4xx) or :class:`InternalError`
(5xx). ``detail`` is the hub's text, cleaned of control characters and bounded;
``str()`` adds what to do next. ``retry_after`` comes from the ``Retry-After`` header
(delta-seconds) or the problem's ``retry_after`` member.
"""

from __future__ import annotations

import json
from typing import ClassVar, Final

PROBLEM_PREFIX: Final = "urn:siko:problem:"
PROBLEM_JSON: Final = "application/problem+json"
#: The hub's response header naming a problem's slug, for answers whose body a client
#: cannot read (a refused WebSocket upgrade).
PROBLEM_HEADER: Final = "Siko-Problem"
MAX_PROBLEM_BYTES: Final = 64 * 1024
MAX_DETAIL_CHARS: Final = 1000
MAX_RETRY_AFTER: Final = 86_400


class ClientError(Exception):
    """Base of every error the SDK raises."""

    slug: ClassVar[str] = "client-error"
    default_status: ClassVar[int | None] = None
    title: ClassVar[str] = "The request failed"
    hint: ClassVar[str] = "Retry later; if it persists, tell the hub's operator."

    def __init__(
        self,
        detail: str = "",
        *,
        status: int | None = None,
        problem_type: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.detail = detail or self.title
        self.status = self.default_status if status is None else status
        self.problem_type = problem_type
        self.retry_after = retry_after
        super().__init__(self.detail)

    def __str__(self) -> str:
        return f"{self.detail.rstrip('. ')}. {self.hint}"


class HubUnreachable(ClientError):
    slug, title = "hub-unreachable", "The hub did not answer"
    hint = "Check the hub's address and the network, then retry."


class ProtocolError(ClientError):
    slug, title = "protocol-error", "The hub's answer does not follow the protocol"
    hint = "Check that the base URL points at a siko hub of a compatible version."


class HubProblem(ClientError):
    slug, title = "problem", "The hub refused the request"
    hint = "Check the request; if it persists, tell the hub's operator."


class InternalError(HubProblem):
    slug, default_status, title = "internal", 500, "The hub failed"
    hint = "Retry later; if it persists, tell the hub's operator."


class Unavailable(HubProblem):
    slug, default_status, title = "unavailable", 503, "The hub's storage is unavailable"
    hint = "Retry later, after retry_after seconds if the hub named them."


class TooManyLiveChannels(Unavailable):
    slug, title = (
        "too-many-live-channels",
        "The hub process follows as many channels live as it may",
    )
    hint = "Retry shortly (a subscription retries by itself), or subscribe to fewer channels."


class ShuttingDown(Unavailable):
    slug, title = "shutting-down", "The hub is shutting down"
    hint = "Retry; another hub replica will answer."


class BadRequest(HubProblem):
    slug, default_status, title = "bad-request", 400, "The request is malformed"
    hint = "Fix what the detail names; the same request will fail again."


class MalformedEnvelope(BadRequest):
    slug, title = "malformed-envelope", "The envelope is not well-formed"
    hint = "Seal the note again with a current siko client."


class TooLarge(HubProblem):
    slug, default_status, title = "too-large", 413, "The request body is too large"
    hint = "Send less: split the note or leave out attachments."


class Unauthenticated(HubProblem):
    slug, default_status, title = "unauthenticated", 401, "The request signature was refused"
    hint = "Check that the hub has this agency's current card and the identity is the right one."


class ReplayedRequest(Unauthenticated):
    slug, title = "replayed-request", "The hub saw this request signature before"
    hint = "Send it again with a fresh signature; if you did not replay it, report it."


class StaleRequest(Unauthenticated):
    slug, title = "stale-request", "The request's signing time is outside the hub's window"
    hint = "Check this machine's clock (NTP), then retry."


class Forbidden(HubProblem):
    slug, default_status, title = "forbidden", 403, "The caller may not do this"
    hint = "Ask the hub's administrators for the right you need."


class AgencySuspended(Forbidden):
    slug, title = "agency-suspended", "The agency is suspended"
    hint = "Ask the cooperation's administrators to lift the suspension."


class NotMember(Forbidden):
    slug, title = "not-member", "The agency lacks the needed role in this channel"
    hint = "Ask the channel's administrators for the role (post or read) you need."


class SenderMismatch(Forbidden):
    slug, title = "sender-mismatch", "The envelope's sender is not the caller"
    hint = "Seal the note with the same identity that signs the request."


class NotFound(HubProblem):
    slug, default_status, title = "not-found", 404, "No such resource"
    hint = "Check the name or id; it may have expired or never existed."


class Conflict(HubProblem):
    slug, default_status, title = "conflict", 409, "The request conflicts with the current state"
    hint = "Fetch the current state and make the change against it."


class RosterChanged(Conflict):
    slug, title = "roster-changed", "The channel's roster changed while the note was sealed"
    hint = "Fetch the channel's current readers and seal the note again for exactly them."


class IdempotencyConflict(Conflict):
    slug, title = "idempotency-conflict", "This message id was used for a different envelope"
    hint = "Give a different note a new message id; retry only with the identical envelope."


class EnvelopeRejected(HubProblem):
    slug, default_status, title = "envelope-rejected", 422, "The hub refused the envelope"
    hint = "Fetch the channel's current state and seal the note again."


class BadEnvelopeSignature(EnvelopeRejected):
    slug, title = "bad-envelope-signature", "The envelope's signature does not verify"
    hint = "Seal the note again with the identity whose card the hub has."


class RecipientsMismatch(EnvelopeRejected):
    slug, title = "recipients-mismatch", "Recipients differ from the channel's readers"
    hint = "Fetch the channel's current readers and seal the note for exactly them."


class AboveCeiling(EnvelopeRejected):
    slug, title = "above-ceiling", "Classification above the channel's ceiling"
    hint = "Lower the classification, or post in a channel with a higher ceiling."


_HUB_CLASSES: Final[tuple[type[HubProblem], ...]] = (
    InternalError, Unavailable, TooManyLiveChannels, ShuttingDown, BadRequest, MalformedEnvelope,
    TooLarge, Unauthenticated, ReplayedRequest, StaleRequest, Forbidden, AgencySuspended,
    NotMember, SenderMismatch, NotFound, Conflict, RosterChanged, IdempotencyConflict,
    BadEnvelopeSignature, RecipientsMismatch, AboveCeiling,
)  # fmt: skip

#: Every class the hub's problem ``type`` can name, by slug.
BY_SLUG: Final[dict[str, type[HubProblem]]] = {cls.slug: cls for cls in _HUB_CLASSES}

_GENERIC: Final[tuple[type[HubProblem], ...]] = (
    BadRequest, Unauthenticated, Forbidden, NotFound, Conflict, TooLarge, EnvelopeRejected,
    InternalError, Unavailable,
)  # fmt: skip

#: The fallback for an unknown problem ``type`` or a body that is not problem JSON.
BY_STATUS: Final[dict[int, type[HubProblem]]] = {
    cls.default_status: cls for cls in _GENERIC if cls.default_status is not None
}


def class_for_type(problem_type: str) -> type[HubProblem] | None:
    """The class a problem ``type`` URI names, or ``None`` for a type this SDK does not know."""
    if not problem_type.startswith(PROBLEM_PREFIX):
        return None
    return BY_SLUG.get(problem_type.removeprefix(PROBLEM_PREFIX))


def error_from_problem(
    status: int, body: bytes, content_type: str, *, retry_after: str | None = None
) -> ClientError:
    """The exception for a hub answer with a non-2xx ``status``; never raises itself.

    ``retry_after`` is the raw ``Retry-After`` header, if any (delta-seconds only).
    """
    problem = _problem_members(body, content_type)
    sent_type = _clean(problem.get("type"), 512)
    cls = _class_for(status, sent_type)
    detail = _clean(problem.get("detail"), MAX_DETAIL_CHARS) or _clean(problem.get("title"), 200)
    if cls is ProtocolError:
        detail = f"unexpected HTTP status {status} where an error was expected"
    elif not problem:
        detail = f"HTTP {status}: {cls.title} (the answer carried no problem details)"
    seconds = parse_retry_after(retry_after)
    if seconds is None:
        seconds = _seconds(problem.get("retry_after"))
    return cls(detail, status=status, problem_type=sent_type or None, retry_after=seconds)


def error_from_status(
    status: int, detail: str, *, retry_after: str | None = None, problem: str | None = None
) -> ClientError:
    """The exception for a non-2xx ``status`` without a body, e.g. a refused upgrade.

    ``problem`` is the hub's :data:`PROBLEM_HEADER` (the problem's slug), if it sent one:
    a slug this SDK knows for this status names the class, anything else is ignored.
    """
    sent_type = PROBLEM_PREFIX + problem[:64] if problem else ""
    cls = _class_for(status, sent_type)
    return cls(detail, status=status, retry_after=parse_retry_after(retry_after))


def parse_retry_after(value: str | None) -> int | None:
    """A ``Retry-After`` header's delta-seconds, bounded; ``None`` for absent or a date."""
    if value is None or not value.strip().isdigit() or not value.strip().isascii():
        return None
    return min(int(value.strip()[:9]), MAX_RETRY_AFTER)


def _class_for(status: int, sent_type: str) -> type[ClientError]:
    if not 400 <= status <= 599:
        return ProtocolError
    named = class_for_type(sent_type)
    if named is not None and named.default_status == status:
        return named
    fallback = BY_STATUS.get(status)
    if fallback is not None:
        return fallback
    return InternalError if status >= 500 else HubProblem


def _problem_members(body: bytes, content_type: str) -> dict[str, object]:
    """The members of a problem JSON object, or ``{}`` for anything else."""
    if content_type.split(";")[0].strip().lower() != PROBLEM_JSON:
        return {}
    if len(body) > MAX_PROBLEM_BYTES:
        return {}
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _clean(value: object, limit: int) -> str:
    """Printable text of at most ``limit`` characters, or "" when ``value`` is not text."""
    if not isinstance(value, str):
        return ""
    text = "".join(ch if ch.isprintable() else " " for ch in value[: limit + 1]).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _seconds(value: object) -> int | None:
    if type(value) is not int or value < 0:
        return None
    return min(value, MAX_RETRY_AFTER)
