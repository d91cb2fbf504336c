"""hub/records.py: directory entries and channels, their bytes, and hostile stored bytes.

A record read back from Redis is input like any other: damaged or hostile bytes must be
refused with :class:`keys.MalformedInput` (the one error the ``keys`` codec raises for
bad structure), never turned into a record that would drive a wrong decision.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from hub.records import (
    MAX_MEMBERS,
    MAX_RECORD_BYTES,
    MAX_RETENTION_DAYS,
    AgencyRecord,
    ChannelRecord,
    Kind,
    Role,
    Status,
)
from keys import AgencyId, ChannelId, Classification, KeyId, LimitExceeded, MalformedInput, codec

K1, K2 = KeyId(b"\x01" * 16), KeyId(b"\x02" * 16)
POLICE, CITY, PROSECUTOR = AgencyId("pp-duisburg"), AgencyId("stadt-essen"), AgencyId("sta-essen")


def agency_record(**overrides: Any) -> AgencyRecord:
    values: dict[str, Any] = {
        "agency": POLICE,
        "kind": Kind.AGENCY,
        "status": Status.ACTIVE,
        "key_ids": (K1, K2),
        "registered": 1_700_000_000_000,
    }
    values.update(overrides)
    return AgencyRecord(**values)


def channel_record(**overrides: Any) -> ChannelRecord:
    values: dict[str, Any] = {
        "channel": ChannelId("lage-ruhr"),
        "ceiling": Classification.VS_NFD,
        "retention_days": 30,
        "members": {
            POLICE: frozenset({Role.POST, Role.READ}),
            PROSECUTOR: frozenset({Role.READ}),
            CITY: frozenset({Role.POST}),
        },
        "created": 1_700_000_000_000,
    }
    values.update(overrides)
    return ChannelRecord(**values)


AGENCY_FIELDS: dict[str, Any] = {
    "agency": "pp-duisburg",
    "kind": "agency",
    "status": "active",
    "keys": [bytes(K1)],
    "registered": 1,
}
CHANNEL_FIELDS: dict[str, Any] = {
    "channel": "lage-ruhr",
    "ceiling": "VS-NfD",
    "retention_days": 30,
    "members": {"pp-duisburg": ["post", "read"]},
    "created": 1,
}


def with_fields(base: dict[str, Any], **changes: Any) -> bytes:
    """Canonical bytes of ``base`` with fields changed (``None`` removes one)."""
    fields = {**base, **changes}
    return codec.encode({k: v for k, v in fields.items() if v is not None})


# -- Role --------------------------------------------------------------------------------


def test_roles_parse_from_a_list_and_collapse_repeats() -> None:
    assert Role.parse_all(["post", "read", "post"]) == {Role.POST, Role.READ}
    assert Role.parse_all(("read",)) == {Role.READ}


@pytest.mark.parametrize(
    "value", [[], (), "post", None, {"post": 1}, ["write"], ["POST"], [1], [["post"]], b"post"]
)
def test_bad_role_lists_are_refused(value: object) -> None:
    with pytest.raises(MalformedInput, match="roles"):
        Role.parse_all(value)


# -- AgencyRecord ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        agency_record(),
        agency_record(kind=Kind.ADMIN, key_ids=(K1,)),
        agency_record(status=Status.SUSPENDED),
    ],
)
def test_agency_records_round_trip_through_canonical_bytes(record: AgencyRecord) -> None:
    data = record.serialize()
    assert AgencyRecord.parse(data) == record
    assert codec.encode(codec.decode(data, max_bytes=MAX_RECORD_BYTES)) == data
    assert record.serialize() == data


def test_the_current_key_is_the_last_one_added() -> None:
    assert agency_record().current_key == K2
    assert agency_record(key_ids=(K2, K1)).current_key == K1


def test_a_record_parses_with_exact_types() -> None:
    parsed = AgencyRecord.parse(with_fields(AGENCY_FIELDS))
    assert type(parsed.agency) is AgencyId and type(parsed.key_ids[0]) is KeyId
    assert parsed.kind is Kind.AGENCY and parsed.status is Status.ACTIVE


HOSTILE_AGENCY_BYTES = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "not a map": codec.encode(["pp-duisburg"]),
    "trailing bytes": with_fields(AGENCY_FIELDS) + b"\x00",
    "unsorted keys": msgpack.packb(dict(reversed(list(AGENCY_FIELDS.items())))),
    "over-long int": with_fields(AGENCY_FIELDS).replace(
        b"\xaaregistered\x01", b"\xaaregistered\xcf" + (1).to_bytes(8, "big")
    ),
    "float": msgpack.packb({**AGENCY_FIELDS, "registered": 1.5}),
    "extension type": msgpack.packb({**AGENCY_FIELDS, "registered": msgpack.ExtType(1, b"x")}),
    "missing keys": with_fields(AGENCY_FIELDS, keys=None),
    "missing status": with_fields(AGENCY_FIELDS, status=None),
    "extra field": with_fields(AGENCY_FIELDS, admin=True),
    "keys not a list": with_fields(AGENCY_FIELDS, keys=bytes(K1)),
    "no key": with_fields(AGENCY_FIELDS, keys=[]),
    "short key": with_fields(AGENCY_FIELDS, keys=[b"\x01" * 15]),
    "key as text": with_fields(AGENCY_FIELDS, keys=[K1.hex()]),
    "registered as bool": with_fields(AGENCY_FIELDS, registered=True),
    "registered as text": with_fields(AGENCY_FIELDS, registered="1"),
    "agency id not a slug": with_fields(AGENCY_FIELDS, agency="PP Duisburg"),
    "agency id with brace": with_fields(AGENCY_FIELDS, agency="pp-{dir}"),
    "kind as bytes": with_fields(AGENCY_FIELDS, kind=b"agency"),
    "deeply nested": msgpack.packb({"agency": [[[[[[[[[[["x"]]]]]]]]]]]}),
}


@pytest.mark.parametrize("data", HOSTILE_AGENCY_BYTES.values(), ids=HOSTILE_AGENCY_BYTES.keys())
def test_hostile_agency_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        AgencyRecord.parse(data)


def test_an_oversized_agency_record_is_refused_before_parsing() -> None:
    data = with_fields(AGENCY_FIELDS, keys=[bytes(K1)] * 1000) + b"\x00" * MAX_RECORD_BYTES
    with pytest.raises(LimitExceeded):
        AgencyRecord.parse(data)


@pytest.mark.parametrize(
    "changes",
    [{"kind": "superuser"}, {"status": "deleted"}, {"kind": "ADMIN"}, {"status": ""}],
    ids=["unknown kind", "unknown status", "kind in upper case", "empty status"],
)
def test_unknown_kind_or_status_in_storage_is_malformed_input(changes: dict[str, str]) -> None:
    # Like every other damaged field: code catching KeysError for damaged records must
    # not miss a bare ValueError from the enum.
    with pytest.raises(MalformedInput):
        AgencyRecord.parse(with_fields(AGENCY_FIELDS, **changes))


# -- ChannelRecord -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        channel_record(),
        channel_record(members={}),
        channel_record(ceiling=Classification.GEHEIM, retention_days=MAX_RETENTION_DAYS),
        channel_record(ceiling=Classification.OFFEN, retention_days=1),
    ],
)
def test_channel_records_round_trip_through_canonical_bytes(record: ChannelRecord) -> None:
    data = record.serialize()
    assert ChannelRecord.parse(data) == record
    assert codec.encode(codec.decode(data, max_bytes=MAX_RECORD_BYTES)) == data


def test_roles_are_stored_sorted_whatever_the_set_order() -> None:
    stored = codec.decode(channel_record().serialize(), max_bytes=MAX_RECORD_BYTES)
    assert isinstance(stored, dict)
    assert stored["members"] == {
        "pp-duisburg": ["post", "read"],
        "sta-essen": ["read"],
        "stadt-essen": ["post"],
    }


def test_readers_roles_and_retention() -> None:
    record = channel_record()
    assert record.readers() == {POLICE, PROSECUTOR}
    assert record.roles_of("stadt-essen") == {Role.POST}
    assert record.roles_of("stadt-bochum") == frozenset()
    assert record.retention_ms == 30 * 86_400_000


def test_with_member_adds_changes_and_removes_without_touching_the_original() -> None:
    record = channel_record()
    added = record.with_member(AgencyId("stadt-bochum"), frozenset({Role.READ}))
    changed = record.with_member(CITY, frozenset({Role.POST, Role.READ}))
    removed = record.with_member(PROSECUTOR, frozenset())
    absent = record.with_member(AgencyId("stadt-bochum"), frozenset())
    assert added.readers() == {POLICE, PROSECUTOR, AgencyId("stadt-bochum")}
    assert changed.readers() == {POLICE, PROSECUTOR, CITY}
    assert PROSECUTOR not in removed.members and removed.readers() == {POLICE}
    assert absent.members == record.members
    assert record == channel_record()
    for derived in (added, changed, removed):
        assert (derived.channel, derived.ceiling, derived.created) == (
            record.channel,
            record.ceiling,
            record.created,
        )
        assert ChannelRecord.parse(derived.serialize()) == derived


@pytest.mark.parametrize("days", [0, -1, MAX_RETENTION_DAYS + 1, True, 30.0, "30"])
def test_retention_outside_its_bounds_is_refused(days: object) -> None:
    with pytest.raises(MalformedInput, match="retention_days"):
        channel_record(retention_days=days)


def test_more_than_the_member_limit_is_refused() -> None:
    members = {AgencyId(f"stadt-{i}"): frozenset({Role.READ}) for i in range(MAX_MEMBERS + 1)}
    with pytest.raises(MalformedInput, match="members"):
        channel_record(members=members)
    del members[AgencyId(f"stadt-{MAX_MEMBERS}")]
    assert len(channel_record(members=members).readers()) == MAX_MEMBERS


def test_a_member_without_roles_is_refused_so_no_unreadable_record_exists() -> None:
    # parse() refuses an empty role list, so such a record, once stored, could never be
    # read again: it must not be built at all (POST /v1/channels answers bad-request).
    with pytest.raises(MalformedInput, match=f"{CITY} without a role"):
        channel_record(members={POLICE: frozenset({Role.READ}), CITY: frozenset()})


HOSTILE_CHANNEL_BYTES = {
    "not msgpack": b"\x92",
    "not a map": codec.encode("lage-ruhr"),
    "missing members": with_fields(CHANNEL_FIELDS, members=None),
    "missing created": with_fields(CHANNEL_FIELDS, created=None),
    "extra field": with_fields(CHANNEL_FIELDS, owner="pp-duisburg"),
    "unknown ceiling": with_fields(CHANNEL_FIELDS, ceiling="STRENG-GEHEIM"),
    "ceiling in lower case": with_fields(CHANNEL_FIELDS, ceiling="vs-nfd"),
    "members a list": with_fields(CHANNEL_FIELDS, members=[["pp-duisburg", ["read"]]]),
    "empty role list": with_fields(CHANNEL_FIELDS, members={"pp-duisburg": []}),
    "unknown role": with_fields(CHANNEL_FIELDS, members={"pp-duisburg": ["admin"]}),
    "roles as text": with_fields(CHANNEL_FIELDS, members={"pp-duisburg": "read"}),
    "member not a slug": with_fields(CHANNEL_FIELDS, members={"PP_Duisburg": ["read"]}),
    "channel not a slug": with_fields(CHANNEL_FIELDS, channel="lage ruhr"),
    "retention zero": with_fields(CHANNEL_FIELDS, retention_days=0),
    "retention too long": with_fields(CHANNEL_FIELDS, retention_days=MAX_RETENTION_DAYS + 1),
    "retention as bool": with_fields(CHANNEL_FIELDS, retention_days=True),
    "too many members": with_fields(
        CHANNEL_FIELDS, members={f"stadt-{i}": ["read"] for i in range(MAX_MEMBERS + 1)}
    ),
    "unsorted keys": msgpack.packb(dict(reversed(list(CHANNEL_FIELDS.items())))),
}


@pytest.mark.parametrize("data", HOSTILE_CHANNEL_BYTES.values(), ids=HOSTILE_CHANNEL_BYTES.keys())
def test_hostile_channel_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        ChannelRecord.parse(data)


def test_an_oversized_channel_record_is_refused_before_parsing() -> None:
    with pytest.raises(LimitExceeded):
        ChannelRecord.parse(b"\x80" + b"\x00" * MAX_RECORD_BYTES)


def test_a_channel_record_is_not_an_agency_record() -> None:
    with pytest.raises(MalformedInput):
        AgencyRecord.parse(channel_record().serialize())
    with pytest.raises(MalformedInput):
        ChannelRecord.parse(agency_record().serialize())
