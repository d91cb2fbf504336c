"""hub/policy.py: every access rule and every refusal, as pure functions (no Redis).

The facts are built by hand: directory entries, a channel record and envelope headers
whose recipients and keys are chosen per case. Each refusal is checked for its class
(and so its problem type and status), and for a detail that names what to fix without
any key bytes.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from hub import policy
from hub.errors import (
    AboveCeiling,
    AgencySuspended,
    Forbidden,
    HubError,
    NotMember,
    RecipientsMismatch,
    SenderMismatch,
)
from hub.records import AgencyRecord, ChannelRecord, Kind, Role, Status
from keys import (
    AgencyId,
    ChannelId,
    Classification,
    HandlingCode,
    Header,
    KeyId,
    Markings,
    MessageId,
    Recipient,
)

CHANNEL = ChannelId("lage-ruhr")
POLICE, PROSECUTOR, CITY, OUTSIDER, ADMIN = (
    AgencyId("pp-duisburg"),
    AgencyId("sta-essen"),
    AgencyId("stadt-essen"),
    AgencyId("stadt-bochum"),
    AgencyId("admin-lka"),
)
POST_READ = frozenset({Role.POST, Role.READ})
READ = frozenset({Role.READ})
POST = frozenset({Role.POST})


def key(n: int) -> KeyId:
    return KeyId(bytes([n]) * 16)


KEYS = {POLICE: key(1), PROSECUTOR: key(2), CITY: key(3), OUTSIDER: key(4), ADMIN: key(5)}
OLD_KEY = key(9)


def entry(
    agency: AgencyId, *, kind: Kind = Kind.AGENCY, status: Status = Status.ACTIVE
) -> AgencyRecord:
    return AgencyRecord(agency, kind, status, (OLD_KEY, KEYS[agency]), 1_700_000_000_000)


def channel(ceiling: Classification = Classification.VS_NFD) -> ChannelRecord:
    """lage-ruhr: police and city post and read, the prosecutor reads."""
    members = {POLICE: POST_READ, PROSECUTOR: READ, CITY: POST_READ}
    return ChannelRecord(CHANNEL, ceiling, 30, members, 1_700_000_000_000)


READER_KEYS = {POLICE: KEYS[POLICE], PROSECUTOR: KEYS[PROSECUTOR], CITY: KEYS[CITY]}


def header(
    sender: AgencyId = POLICE,
    *,
    sender_key: KeyId | None = None,
    channel_id: str = CHANNEL,
    recipients: dict[AgencyId, KeyId] | None = None,
    classification: Classification = Classification.VS_NFD,
) -> Header:
    sealed_for = READER_KEYS if recipients is None else recipients
    return Header(
        message_id=MessageId(b"\x07" * 16),
        channel=ChannelId(channel_id),
        sender=sender,
        sender_key=KEYS[sender] if sender_key is None else sender_key,
        created=1_700_000_000_000,
        markings=Markings(classification, HandlingCode.H1),
        recipients=tuple(Recipient(a, k) for a, k in sorted(sealed_for.items())),
        body_nonce=b"\x00" * 12,
        body_digest=b"\x01" * 32,
        wrapped_digest=b"\x02" * 32,
        key_commitment=b"\x03" * 32,
    )


def refused(error_class: type[HubError], excinfo: pytest.ExceptionInfo[HubError]) -> str:
    """The refusal is exactly ``error_class``; its detail is useful and holds no key bytes."""
    error = excinfo.value
    assert type(error) is error_class
    assert error.problem_type() == f"urn:siko:problem:{error_class.slug}"
    assert error.detail and error.detail != error_class.title
    for key_id in (*KEYS.values(), OLD_KEY):
        assert key_id.hex() not in error.detail
        assert key_id.fingerprint() not in error.detail
    return error.detail


# -- require_active / require_admin ----------------------------------------------------


def test_an_active_agency_passes() -> None:
    policy.require_active(entry(POLICE))


def test_a_suspended_agency_is_refused() -> None:
    with pytest.raises(AgencySuspended) as excinfo:
        policy.require_active(entry(POLICE, status=Status.SUSPENDED))
    assert POLICE in refused(AgencySuspended, excinfo)
    assert (AgencySuspended.status, AgencySuspended.slug) == (403, "agency-suspended")


def test_an_active_administrator_is_an_administrator() -> None:
    policy.require_admin(entry(ADMIN, kind=Kind.ADMIN))


def test_an_agency_is_not_an_administrator() -> None:
    with pytest.raises(Forbidden) as excinfo:
        policy.require_admin(entry(POLICE))
    assert "not an administrator" in refused(Forbidden, excinfo)
    assert Forbidden.status == 403


def test_a_suspended_administrator_may_do_nothing() -> None:
    with pytest.raises(AgencySuspended) as excinfo:
        policy.require_admin(entry(ADMIN, kind=Kind.ADMIN, status=Status.SUSPENDED))
    assert ADMIN in refused(AgencySuspended, excinfo)


def test_a_suspended_agency_is_refused_as_suspended_not_as_no_admin() -> None:
    with pytest.raises(AgencySuspended):
        policy.require_admin(entry(POLICE, status=Status.SUSPENDED))


# -- require_role ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("agency", "role"),
    [(POLICE, Role.POST), (POLICE, Role.READ), (CITY, Role.POST), (PROSECUTOR, Role.READ)],
)
def test_members_with_the_role_pass(agency: AgencyId, role: Role) -> None:
    policy.require_role(channel(), entry(agency), role)


@pytest.mark.parametrize(
    ("agency", "role"),
    [(PROSECUTOR, Role.POST), (OUTSIDER, Role.READ), (OUTSIDER, Role.POST)],
)
def test_members_without_the_role_and_outsiders_are_refused(agency: AgencyId, role: Role) -> None:
    with pytest.raises(NotMember) as excinfo:
        policy.require_role(channel(), entry(agency), role)
    detail = refused(NotMember, excinfo)
    assert agency in detail and role.value in detail and CHANNEL in detail


def test_an_administrator_has_no_role_in_a_channel_it_is_not_member_of() -> None:
    with pytest.raises(NotMember):
        policy.require_role(channel(), entry(ADMIN, kind=Kind.ADMIN), Role.READ)


def test_a_suspended_member_is_refused_as_suspended() -> None:
    with pytest.raises(AgencySuspended):
        policy.require_role(channel(), entry(POLICE, status=Status.SUSPENDED), Role.READ)


def test_a_post_only_member_may_not_read() -> None:
    record = channel().with_member(OUTSIDER, POST)
    policy.require_role(record, entry(OUTSIDER), Role.POST)
    with pytest.raises(NotMember):
        policy.require_role(record, entry(OUTSIDER), Role.READ)


# -- check_post: the envelope rules ------------------------------------------------------


def test_a_correct_note_passes_every_rule() -> None:
    policy.check_post(channel(), entry(POLICE), header(), READER_KEYS)
    policy.check_post(channel(), entry(CITY), header(CITY), READER_KEYS)


def test_a_reader_without_post_role_may_not_post() -> None:
    with pytest.raises(NotMember) as excinfo:
        policy.check_post(channel(), entry(PROSECUTOR), header(PROSECUTOR), READER_KEYS)
    assert "post" in refused(NotMember, excinfo)


def test_an_outsider_may_not_post_even_a_perfect_envelope() -> None:
    with pytest.raises(NotMember):
        policy.check_post(channel(), entry(OUTSIDER), header(OUTSIDER), READER_KEYS)


def test_the_role_is_checked_before_anything_in_the_envelope() -> None:
    hostile = header(
        POLICE, channel_id="andere-lage", recipients={}, classification=Classification.GEHEIM
    )
    with pytest.raises(NotMember):
        policy.check_post(channel(), entry(OUTSIDER), hostile, READER_KEYS)


def test_a_suspended_poster_is_refused() -> None:
    with pytest.raises(AgencySuspended):
        policy.check_post(channel(), entry(POLICE, status=Status.SUSPENDED), header(), READER_KEYS)


def test_an_envelope_sealed_for_another_channel_is_refused() -> None:
    with pytest.raises(SenderMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(channel_id="andere-lage"), READER_KEYS)
    detail = refused(SenderMismatch, excinfo)
    assert "andere-lage" in detail and CHANNEL in detail


def test_an_envelope_from_another_agency_is_refused() -> None:
    with pytest.raises(SenderMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(CITY), READER_KEYS)
    assert CITY in refused(SenderMismatch, excinfo)


def test_an_envelope_signed_with_the_callers_old_key_is_refused() -> None:
    with pytest.raises(SenderMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(sender_key=OLD_KEY), READER_KEYS)
    assert "current key" in refused(SenderMismatch, excinfo)


def test_a_missing_reader_is_named() -> None:
    sealed = {POLICE: KEYS[POLICE], CITY: KEYS[CITY]}
    with pytest.raises(RecipientsMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(recipients=sealed), READER_KEYS)
    detail = refused(RecipientsMismatch, excinfo)
    assert f"missing: {PROSECUTOR}" in detail and "not readers: none" in detail


def test_an_extra_recipient_is_named() -> None:
    sealed = {**READER_KEYS, OUTSIDER: KEYS[OUTSIDER]}
    with pytest.raises(RecipientsMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(recipients=sealed), READER_KEYS)
    detail = refused(RecipientsMismatch, excinfo)
    assert "missing: none" in detail and f"not readers: {OUTSIDER}" in detail


def test_a_post_only_member_is_no_recipient() -> None:
    record = channel().with_member(OUTSIDER, POST)
    sealed = {**READER_KEYS, OUTSIDER: KEYS[OUTSIDER]}
    with pytest.raises(RecipientsMismatch):
        policy.check_post(record, entry(POLICE), header(recipients=sealed), READER_KEYS)
    policy.check_post(record, entry(OUTSIDER), header(OUTSIDER), READER_KEYS)


def test_missing_and_extra_are_both_named() -> None:
    sealed = {POLICE: KEYS[POLICE], CITY: KEYS[CITY], OUTSIDER: KEYS[OUTSIDER]}
    with pytest.raises(RecipientsMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(recipients=sealed), READER_KEYS)
    detail = refused(RecipientsMismatch, excinfo)
    assert f"missing: {PROSECUTOR}" in detail and f"not readers: {OUTSIDER}" in detail


def test_a_reader_sealed_under_an_old_key_is_named() -> None:
    sealed = {**READER_KEYS, PROSECUTOR: OLD_KEY}
    with pytest.raises(RecipientsMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(recipients=sealed), READER_KEYS)
    detail = refused(RecipientsMismatch, excinfo)
    assert PROSECUTOR in detail and "seal again" in detail


def test_a_reader_without_a_known_current_key_counts_as_stale() -> None:
    keys = {POLICE: KEYS[POLICE], CITY: KEYS[CITY]}
    with pytest.raises(RecipientsMismatch) as excinfo:
        policy.check_post(channel(), entry(POLICE), header(), keys)
    assert PROSECUTOR in refused(RecipientsMismatch, excinfo)


def test_check_recipients_alone_accepts_exactly_the_readers() -> None:
    policy.check_recipients(channel(), header(), READER_KEYS)
    with pytest.raises(RecipientsMismatch):
        policy.check_recipients(channel(), header(recipients={POLICE: KEYS[POLICE]}), READER_KEYS)


LEVELS = list(Classification)


@pytest.mark.parametrize(("level", "ceiling"), list(itertools.product(LEVELS, LEVELS)))
def test_classification_against_every_ceiling(
    level: Classification, ceiling: Classification
) -> None:
    note = header(classification=level)
    if level.rank <= ceiling.rank:
        policy.check_post(channel(ceiling), entry(POLICE), note, READER_KEYS)
        return
    with pytest.raises(AboveCeiling) as excinfo:
        policy.check_post(channel(ceiling), entry(POLICE), note, READER_KEYS)
    detail = refused(AboveCeiling, excinfo)
    assert level.value in detail and ceiling.value in detail


def test_the_ceiling_is_checked_after_the_recipients() -> None:
    note = replace(
        header(recipients={POLICE: KEYS[POLICE]}),
        markings=Markings(Classification.GEHEIM, HandlingCode.H0),
    )
    with pytest.raises(RecipientsMismatch):
        policy.check_post(channel(), entry(POLICE), note, READER_KEYS)


@pytest.mark.parametrize(
    ("error_class", "status", "slug"),
    [
        (AgencySuspended, 403, "agency-suspended"),
        (Forbidden, 403, "forbidden"),
        (NotMember, 403, "not-member"),
        (SenderMismatch, 403, "sender-mismatch"),
        (RecipientsMismatch, 422, "recipients-mismatch"),
        (AboveCeiling, 422, "above-ceiling"),
    ],
)
def test_policy_refusals_have_stable_problem_types(
    error_class: type[HubError], status: int, slug: str
) -> None:
    assert error_class.status == status
    assert error_class.problem_type() == f"urn:siko:problem:{slug}"
