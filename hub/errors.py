"""Every error the hub answers with, each carrying its RFC 9457 problem fields.

One tree, rooted in :class:`HubError`. Each class has a stable problem ``type`` (a URN
that clients map back to their own exception class), an HTTP ``status`` and a short
``title``; the instance's ``detail`` tells the caller what to fix. One middleware
(:mod:`hub.problems`) renders them; handlers only raise.

Details never contain key material, note content or passphrases: at most ids that the
caller sent or may know (agency, channel, message id) and names of limits.
"""

from __future__ import annotations

from typing import ClassVar

PROBLEM_PREFIX = "urn:siko:problem:"


class HubError(Exception):
    """Base of every error the hub answers with."""

    slug: ClassVar[str] = "internal"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.retry_after = retry_after

    @classmethod
    def problem_type(cls) -> str:
        """The stable problem ``type`` URI of this class."""
        return PROBLEM_PREFIX + cls.slug

    def __str__(self) -> str:
        return self.detail


class BadRequest(HubError):
    slug, status, title = "bad-request", 400, "The request is malformed"


class MalformedEnvelope(HubError):
    slug, status, title = "malformed-envelope", 400, "The envelope is not well-formed"


class TooLarge(HubError):
    slug, status, title = "too-large", 413, "The request body is too large"


class Unauthenticated(HubError):
    slug, status, title = "unauthenticated", 401, "The request signature is missing or invalid"


class ReplayedRequest(HubError):
    slug, status, title = "replayed-request", 401, "This request was already seen"


class StaleRequest(HubError):
    slug, status, title = "stale-request", 401, "The request's signing time is outside the window"


class Forbidden(HubError):
    slug, status, title = "forbidden", 403, "The caller may not do this"


class AgencySuspended(HubError):
    slug, status, title = "agency-suspended", 403, "The agency is suspended"


class NotMember(HubError):
    slug, status, title = "not-member", 403, "The agency lacks the needed role in this channel"


class SenderMismatch(HubError):
    slug, status, title = "sender-mismatch", 403, "The envelope's sender is not the caller"


class BadEnvelopeSignature(HubError):
    slug, status, title = "bad-envelope-signature", 422, "The envelope's signature does not verify"


class RecipientsMismatch(HubError):
    slug, status, title = "recipients-mismatch", 422, "Recipients differ from the channel's readers"


class AboveCeiling(HubError):
    slug, status, title = "above-ceiling", 422, "Classification above the channel's ceiling"


class NotFound(HubError):
    slug, status, title = "not-found", 404, "No such resource"


class Conflict(HubError):
    slug, status, title = "conflict", 409, "The request conflicts with the current state"


class RosterChanged(Conflict):
    slug, status, title = "roster-changed", 409, "The channel's roster changed; seal again"


class IdempotencyConflict(HubError):
    slug, status, title = (
        "idempotency-conflict",
        409,
        "This message id was already used for a different envelope",
    )


class Unavailable(HubError):
    slug, status, title = "unavailable", 503, "The hub's storage is unavailable; retry later"


class TooManyLiveChannels(Unavailable):
    slug, status, title = (
        "too-many-live-channels",
        503,
        "This hub process follows as many channels live as it may; retry shortly",
    )


class ShuttingDown(HubError):
    slug, status, title = "shutting-down", 503, "The hub is shutting down; retry on another replica"


ALL_PROBLEMS: tuple[type[HubError], ...] = (
    HubError,
    BadRequest,
    MalformedEnvelope,
    TooLarge,
    Unauthenticated,
    ReplayedRequest,
    StaleRequest,
    Forbidden,
    AgencySuspended,
    NotMember,
    SenderMismatch,
    BadEnvelopeSignature,
    RecipientsMismatch,
    AboveCeiling,
    NotFound,
    Conflict,
    RosterChanged,
    IdempotencyConflict,
    Unavailable,
    TooManyLiveChannels,
    ShuttingDown,
)
