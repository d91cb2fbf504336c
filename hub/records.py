"""The hub's own records (directory entries, channels), as frozen values with bytes forms.

Stored in Redis as canonical msgpack (:mod:`keys.codec`) and parsed back strictly: a
record read from storage is checked like any other input, so a damaged entry becomes a
clear error instead of a wrong decision.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from keys import AgencyId, ChannelId, Classification, KeyId, MalformedInput, codec

MAX_RECORD_BYTES: Final = 256 * 1024
MAX_MEMBERS: Final = 256
MAX_RETENTION_DAYS: Final = 3650


class Role(enum.Enum):
    """What a member agency may do in a channel."""

    POST = "post"
    READ = "read"

    @classmethod
    def parse_all(cls, values: object) -> frozenset[Role]:
        """A set of roles from a list of names; refuses unknown names and empty lists."""
        if not isinstance(values, list | tuple | set | frozenset) or not values:
            raise MalformedInput("roles: expected a non-empty list of 'post', 'read'")
        roles = set()
        for value in values:
            match = [role for role in cls if role.value == value]
            if not match:
                raise MalformedInput(f"roles: unknown role {value!r}; use 'post', 'read'")
            roles.add(match[0])
        return frozenset(roles)


_E = TypeVar("_E", bound=enum.Enum)


def _member(kind: type[_E], value: object, what: str) -> _E:
    """The member of ``kind`` named ``value``; :class:`MalformedInput` for any other."""
    for member in kind:
        if member.value == value:
            return member
    raise MalformedInput(f"{what}: expected one of {', '.join(repr(m.value) for m in kind)}")


class Kind(enum.Enum):
    """Who an entry of the directory is."""

    AGENCY = "agency"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Status(enum.Enum):
    """Whether an entry's key may be used."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@dataclass(frozen=True)
class AgencyRecord:
    """A directory entry: an agency or an administrator, with its key history."""

    agency: AgencyId
    kind: Kind
    status: Status
    key_ids: tuple[KeyId, ...]
    registered: int

    @property
    def current_key(self) -> KeyId:
        """The key id of the card in force: the last one added."""
        return self.key_ids[-1]

    def serialize(self) -> bytes:
        """Canonical bytes for storage."""
        return codec.encode(
            {
                "agency": str(self.agency),
                "kind": self.kind.value,
                "status": self.status.value,
                "keys": [bytes(k) for k in self.key_ids],
                "registered": self.registered,
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> AgencyRecord:
        """Parse stored bytes strictly."""
        record = codec.expect_map(
            codec.decode(data, max_bytes=MAX_RECORD_BYTES),
            "agency record",
            required={"agency": str, "kind": str, "status": str, "keys": list, "registered": int},
        )
        keys = tuple(KeyId(k) for k in record["keys"])
        if not keys:
            raise MalformedInput("agency record: no key")
        return cls(
            agency=AgencyId(record["agency"]),
            kind=_member(Kind, record["kind"], "kind"),
            status=_member(Status, record["status"], "status"),
            key_ids=keys,
            registered=record["registered"],
        )


@dataclass(frozen=True)
class ChannelRecord:
    """A channel: its members and their roles, classification ceiling and retention."""

    channel: ChannelId
    ceiling: Classification
    retention_days: int
    members: Mapping[AgencyId, frozenset[Role]] = field(default_factory=dict)
    created: int = 0

    def __post_init__(self) -> None:
        codec.expect_int(self.retention_days, "retention_days", low=1, high=MAX_RETENTION_DAYS)
        if len(self.members) > MAX_MEMBERS:
            raise MalformedInput(f"members: at most {MAX_MEMBERS}")
        # A member without roles would be stored as bytes that parse() refuses.
        idle = sorted(str(a) for a, roles in self.members.items() if not roles)
        if idle:
            raise MalformedInput(f"members: {', '.join(idle)} without a role; give 'post', 'read'")

    @property
    def retention_ms(self) -> int:
        """Retention in milliseconds, as Redis stream ids count time."""
        return self.retention_days * 86_400_000

    def readers(self) -> frozenset[AgencyId]:
        """Agencies with the read role: every note must be sealed for exactly these."""
        return self._readers

    @functools.cached_property
    def _readers(self) -> frozenset[AgencyId]:
        # Once per record: a post asks three times (prefetch, checks, receipts).
        return frozenset(a for a, roles in self.members.items() if Role.READ in roles)

    def roles_of(self, agency: str) -> frozenset[Role]:
        """The roles of ``agency`` here (empty when it is no member)."""
        return self.members.get(AgencyId(agency), frozenset())

    def with_member(self, agency: AgencyId, roles: frozenset[Role]) -> ChannelRecord:
        """A copy with ``agency`` given ``roles`` (an empty set removes it)."""
        members = dict(self.members)
        if roles:
            members[agency] = roles
        else:
            members.pop(agency, None)
        return ChannelRecord(self.channel, self.ceiling, self.retention_days, members, self.created)

    def serialize(self) -> bytes:
        """Canonical bytes for storage."""
        members: dict[str, codec.Value] = {
            str(a): [r.value for r in sorted(roles, key=lambda r: r.value)]
            for a, roles in self.members.items()
        }
        return codec.encode(
            {
                "channel": str(self.channel),
                "ceiling": self.ceiling.value,
                "retention_days": self.retention_days,
                "members": members,
                "created": self.created,
            }
        )

    @classmethod
    def parse(cls, data: bytes) -> ChannelRecord:
        """Parse stored bytes strictly."""
        record = codec.expect_map(
            codec.decode(data, max_bytes=MAX_RECORD_BYTES),
            "channel record",
            required={
                "channel": str,
                "ceiling": str,
                "retention_days": int,
                "members": dict,
                "created": int,
            },
        )
        members = {AgencyId(a): Role.parse_all(r) for a, r in record["members"].items()}
        return cls(
            channel=ChannelId(record["channel"]),
            ceiling=Classification.parse(record["ceiling"]),
            retention_days=record["retention_days"],
            members=members,
            created=record["created"],
        )
