"""Sealed envelopes: round trips, tampering with every part, hostile structure."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keys.envelope as envelope_module
from keys import (
    Classification,
    DecryptionFailed,
    Envelope,
    HandlingCode,
    Identity,
    InfoAssessment,
    InvalidSignature,
    KeysError,
    LimitExceeded,
    MalformedInput,
    Markings,
    MessageId,
    NotARecipient,
    Note,
    SourceReliability,
    Suite,
    Tlp,
    WrongKey,
    _suites,
    codec,
    labels,
    open_envelope,
    peek_header_unverified,
    seal,
    verify_envelope,
)
from keys.envelope import MAX_BODY_BYTES, MAX_RECIPIENTS, _seal_from_parts
from keys.ids import ChannelId

MARKS = Markings(Classification.VS_NFD, HandlingCode.H1)
CHANNEL = "clan-lage-ruhr"


@functools.cache
def agency(name: str, suite: Suite = Suite.X25519) -> Identity:
    """One identity per (name, suite), made once for the whole module."""
    return Identity.generate(name, suite=suite)


def seal_for(sender: Identity, readers: list[Identity], text: str = "Notiz", **kw: Any) -> bytes:
    return seal(
        Note(text, **kw),
        sender=sender,
        channel=CHANNEL,
        recipients=[r.card for r in readers],
        markings=MARKS,
    )


def decoded(data: bytes) -> dict[str, Any]:
    value = codec.decode(data, max_bytes=len(data))
    assert isinstance(value, dict)
    return value


def rebuild(outer: dict[str, Any], **changes: Any) -> bytes:
    return codec.encode({**outer, **changes})


# -- round trips --------------------------------------------------------------------


@pytest.mark.parametrize("suite", list(Suite))
@pytest.mark.parametrize("count", [1, 5, 30])
def test_every_recipient_opens_the_same_note(suite: Suite, count: int) -> None:
    sender = agency("pp-duisburg", suite)
    readers = [agency(f"reader-{i:02d}", suite) for i in range(count)]
    data = seal_for(sender, readers, "Treffen der Familie am Freitag", subject="Lage")
    for reader in readers:
        opened = open_envelope(data, reader, sender.card)
        assert opened.note == Note("Treffen der Familie am Freitag", subject="Lage")
        assert opened.header.sender == "pp-duisburg"
        assert opened.header.markings == MARKS
        assert len(opened.header.recipients) == count


def test_recipients_may_use_different_suites() -> None:
    sender = agency("pp-duisburg", Suite.MLKEM768_X25519)
    readers = [agency("sta-essen", Suite.MLKEM768_X25519), agency("stadt-essen", Suite.X25519)]
    data = seal_for(sender, readers)
    assert [open_envelope(data, r, sender.card).note.text for r in readers] == ["Notiz"] * 2


def test_header_carries_routing_and_markings_in_clear() -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    marks = Markings(
        Classification.OFFEN,
        HandlingCode.H2,
        Tlp.RED,
        SourceReliability.X,
        InfoAssessment.CANNOT_BE_JUDGED,
    )
    mid = MessageId.new()
    data = seal(
        Note("x"),
        sender=sender,
        channel=CHANNEL,
        recipients=[reader.card],
        markings=marks,
        message_id=mid,
        now=1_800_000_000_000,
    )
    header = peek_header_unverified(data)
    assert (header.message_id, header.channel, header.sender) == (mid, CHANNEL, "pp-duisburg")
    assert header.sender_key == sender.key_id
    assert header.created == 1_800_000_000_000
    assert header.markings == marks
    assert header.recipient_agencies() == {"sta-essen"}
    assert Note("x").serialize() not in data


def test_body_text_is_not_in_the_envelope() -> None:
    secret = "Geheimer Hinweis von VP-4711"
    data = seal_for(agency("pp-duisburg"), [agency("sta-essen")], secret, case_ref="AZ 99 Js 1")
    assert secret.encode() not in data and b"AZ 99 Js 1" not in data


def test_serialize_parse_is_identity_and_digest_is_stable() -> None:
    data = seal_for(agency("pp-duisburg"), [agency("sta-essen")])
    envelope = Envelope.parse(data)
    assert envelope.serialize() == data
    assert envelope.digest() == _suites.sha256(labels.ENVELOPE_DIGEST, data)


def test_two_seals_of_the_same_note_differ() -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    assert seal_for(sender, [reader]) != seal_for(sender, [reader])


# -- who may open, who is believed --------------------------------------------------


def test_non_recipient_cannot_open() -> None:
    sender, reader, outsider = agency("pp-duisburg"), agency("sta-essen"), agency("zoll-essen")
    data = seal_for(sender, [reader])
    with pytest.raises(NotARecipient) as info:
        open_envelope(data, outsider, sender.card)
    assert "zoll-essen" in str(info.value)


def test_recipient_with_a_rotated_key_is_not_a_recipient_of_old_notes() -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    data = seal_for(sender, [reader])
    rotated = Identity.generate("sta-essen", suite=Suite.X25519)
    with pytest.raises(NotARecipient):
        open_envelope(data, rotated, sender.card)


def test_non_recipient_renaming_itself_still_cannot_decrypt() -> None:
    """An identity that copies a recipient's agency id and key id has the wrong private key."""
    sender, reader, thief = agency("pp-duisburg"), agency("sta-essen"), agency("zoll-essen")
    data = seal_for(sender, [reader])
    impostor = Identity.from_raw_keys(
        "sta-essen",
        Suite.X25519,
        reader.created,
        signing_key=thief.private_keys()[0],
        kem_key=thief.private_keys()[1],
    )
    impostor.card = reader.card  # type: ignore[misc]  # pretend to be the recipient
    with pytest.raises(DecryptionFailed):
        open_envelope(data, impostor, sender.card)


def test_verify_with_another_agencys_card_is_wrong_key() -> None:
    sender, other = agency("pp-duisburg"), agency("sta-essen")
    data = seal_for(sender, [other])
    with pytest.raises(WrongKey) as info:
        verify_envelope(data, other.card)
    assert "pp-duisburg" in str(info.value) and "sta-essen" in str(info.value)


def test_forged_sender_is_refused() -> None:
    """Mallory seals as herself, then rewrites the header to claim pp-duisburg."""
    police, mallory, reader = agency("pp-duisburg"), agency("mallory-gmbh"), agency("sta-essen")
    data = seal_for(mallory, [reader])
    outer = decoded(data)
    header = decoded(outer["h"])
    header.update({"from": "pp-duisburg", "kid": bytes(police.key_id)})
    forged = rebuild(outer, h=codec.encode(header))
    with pytest.raises(InvalidSignature):
        open_envelope(forged, reader, police.card)


def test_equivocating_sender_is_caught_by_the_key_commitment() -> None:
    """A malicious sender wraps a different content key for one reader: that reader refuses."""
    sender, honest, target = agency("pp-duisburg"), agency("sta-essen"), agency("stadt-essen")
    envelope = _seal_from_parts(
        Note("version A"),
        sender=sender,
        channel=ChannelId(CHANNEL),
        recipients=[honest.card, target.card],
        markings=MARKS,
        message_id=MessageId.new(),
        created=1,
        content_key=b"\x01" * 32,
        body_nonce=b"\x02" * 12,
    )
    header = envelope.header
    index = header.recipients.index(next(r for r in header.recipients if r.agency == target.agency))
    info = labels.HPKE_INFO_CONTENT_KEY + codec.encode(
        [CHANNEL, bytes(header.message_id), str(target.agency), bytes(target.key_id)]
    )
    wrapped = list(envelope.wrapped_keys)
    wrapped[index] = target.card.kem_key.wrap(b"\x03" * 32, info)
    record = decoded(envelope.header_bytes)
    record["wkd"] = _suites.sha256(labels.WRAPPED_KEYS_DIGEST, codec.encode(wrapped))
    header_bytes = codec.encode(record)
    signature = sender.signing.sign(labels.SIG_ENVELOPE, header_bytes)
    data = codec.encode(
        {"h": header_bytes, "wk": wrapped, "ct": envelope.ciphertext, "sig": signature}
    )
    assert open_envelope(data, honest, sender.card).note.text == "version A"
    with pytest.raises(DecryptionFailed):
        open_envelope(data, target, sender.card)


# -- tampering with each part -------------------------------------------------------

HEADER_CHANGES: dict[str, Any] = {
    "mid": b"\xff" * 16,
    "ch": "anderer-kanal",
    "from": "stadt-essen",
    "kid": b"\x00" * 16,
    "ts": 1,
    "cls": "OFFEN",
    "hc": "H0",
    "tlp": "CLEAR",
    "src": "A",
    "inf": "1",
    "rcpt": [["stadt-essen", b"\x00" * 16]],
    "nonce": b"\x00" * 12,
    "ctd": b"\x00" * 32,
    "wkd": b"\x00" * 32,
    "kcm": b"\x00" * 32,
}


@pytest.mark.parametrize("field", sorted(HEADER_CHANGES))
def test_changing_any_header_field_breaks_the_signature(field: str) -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    outer = decoded(seal_for(sender, [reader]))
    header = decoded(outer["h"])
    header[field] = HEADER_CHANGES[field]
    data = rebuild(outer, h=codec.encode(header))
    with pytest.raises((InvalidSignature, WrongKey)):
        verify_envelope(data, sender.card)
    with pytest.raises(KeysError):
        open_envelope(data, reader, sender.card)


@pytest.mark.parametrize("part", ["wk", "ct", "sig"])
def test_flipping_a_byte_of_any_part_is_refused(part: str) -> None:
    sender, readers = agency("pp-duisburg"), [agency("sta-essen"), agency("stadt-essen")]
    outer = decoded(seal_for(sender, readers))
    if part == "wk":
        for i in range(len(outer["wk"])):
            wrapped = list(outer["wk"])
            wrapped[i] = bytes([wrapped[i][0] ^ 1]) + wrapped[i][1:]
            with pytest.raises(InvalidSignature):
                verify_envelope(rebuild(outer, wk=wrapped), sender.card)
        return
    for position in (0, len(outer[part]) // 2, len(outer[part]) - 1):
        value = bytearray(outer[part])
        value[position] ^= 0x80
        with pytest.raises(InvalidSignature):
            verify_envelope(rebuild(outer, **{part: bytes(value)}), sender.card)


def test_swapping_wrapped_keys_between_recipients_is_refused() -> None:
    sender, readers = agency("pp-duisburg"), [agency("sta-essen"), agency("stadt-essen")]
    outer = decoded(seal_for(sender, readers))
    with pytest.raises(InvalidSignature):
        verify_envelope(rebuild(outer, wk=outer["wk"][::-1]), sender.card)


def test_every_single_byte_change_is_refused() -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    data = seal_for(sender, [reader], "kurz")
    for position in range(len(data)):
        for flip in (0x01, 0x80):
            mutated = bytearray(data)
            mutated[position] ^= flip
            with pytest.raises(KeysError):
                open_envelope(bytes(mutated), reader, sender.card)


def test_every_truncation_is_refused() -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    data = seal_for(sender, [reader], "kurz")
    for length in range(len(data)):
        with pytest.raises(MalformedInput):
            Envelope.parse(data[:length])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_mutations_are_always_refused(data: st.DataObject) -> None:
    sender, reader = agency("pp-duisburg"), agency("sta-essen")
    original = _sealed_once()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "replace"]))
        position = data.draw(st.integers(0, len(mutated) - 1))
        if action == "flip":
            mutated[position] ^= data.draw(st.integers(1, 255))
        elif action == "insert":
            mutated.insert(position, data.draw(st.integers(0, 255)))
        elif action == "delete":
            del mutated[position]
        else:
            mutated[position : position + 4] = data.draw(st.binary(min_size=1, max_size=8))
    if bytes(mutated) == original:
        return
    with pytest.raises(KeysError):
        open_envelope(bytes(mutated), reader, sender.card)


@functools.cache
def _sealed_once() -> bytes:
    return seal_for(agency("pp-duisburg"), [agency("sta-essen")], "Hypothese")


# -- hostile structure --------------------------------------------------------------


def test_envelope_over_the_size_limit_is_refused_before_parsing() -> None:
    data = seal_for(agency("pp-duisburg"), [agency("sta-essen")])
    with pytest.raises(LimitExceeded) as info:
        Envelope.parse(data, max_bytes=len(data) - 1)
    assert info.value.limit == len(data) - 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": b""}, "unknown field"),
        ({"wk": []}, "one wrapped key per recipient"),
        ({"sig": b"\x00" * 63}, "64 bytes"),
        ({"ct": "text"}, "expected bytes"),
        ({"h": b"\x90"}, "header: expected a map"),
    ],
)
def test_structural_defects_are_named(change: dict[str, Any], message: str) -> None:
    outer = decoded(seal_for(agency("pp-duisburg"), [agency("sta-essen")]))
    with pytest.raises(MalformedInput) as info:
        Envelope.parse(rebuild(outer, **change))
    assert message in str(info.value)


def test_missing_field_is_named() -> None:
    outer = decoded(seal_for(agency("pp-duisburg"), [agency("sta-essen")]))
    del outer["sig"]
    with pytest.raises(MalformedInput, match="missing field 'sig'"):
        Envelope.parse(codec.encode(outer))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("v", 2, "only version 1"),
        ("cls", "STRENG GEHEIM", "Classification"),
        ("hc", "H4", "HandlingCode"),
        ("tlp", "WHITE", "Tlp"),
        ("inf", 1, "expected str"),
        ("ch", "Kanal!", "channel id"),
        ("from", "x", "agency id"),
        ("mid", b"\x00" * 15, "message id"),
        ("ts", -1, "out of range"),
        ("nonce", b"", "12 bytes"),
        ("rcpt", [], "at least one recipient"),
        ("rcpt", [["sta-essen"]], "expected [agency, key id]"),
        ("rcpt", [["zz-b", b"\x00" * 16], ["aa-a", b"\x00" * 16]], "ascending order"),
        ("rcpt", [["aa-a", b"\x00" * 16], ["aa-a", b"\x01" * 16]], "unique"),
        ("unknown", 1, "unknown field"),
    ],
)
def test_header_defects_are_named(field: str, value: Any, message: str) -> None:
    outer = decoded(seal_for(agency("pp-duisburg"), [agency("sta-essen")]))
    header = decoded(outer["h"])
    header[field] = value
    with pytest.raises(MalformedInput) as info:
        Envelope.parse(rebuild(outer, h=codec.encode(header)))
    assert message in str(info.value)


def test_too_many_recipients_in_a_header_is_a_limit() -> None:
    outer = decoded(seal_for(agency("pp-duisburg"), [agency("sta-essen")]))
    header = decoded(outer["h"])
    header["rcpt"] = [[f"a{i:04d}", b"\x00" * 16] for i in range(MAX_RECIPIENTS + 1)]
    with pytest.raises(LimitExceeded):
        Envelope.parse(rebuild(outer, h=codec.encode(header)))


def test_non_canonical_envelope_is_refused() -> None:
    data = seal_for(agency("pp-duisburg"), [agency("sta-essen")])
    outer = decoded(data)
    # Same map, keys written in reverse order: decodes to the same value, but is refused.
    import msgpack

    reordered = msgpack.packb(dict(reversed(list(outer.items()))), use_bin_type=True)
    assert reordered != data
    with pytest.raises(MalformedInput, match="canonical"):
        Envelope.parse(reordered)


# -- refusals when sealing ----------------------------------------------------------


def test_seal_needs_a_recipient() -> None:
    with pytest.raises(MalformedInput, match="at least one"):
        seal_for(agency("pp-duisburg"), [])


def test_seal_refuses_the_same_agency_twice() -> None:
    reader = agency("sta-essen")
    other_key = Identity.generate("sta-essen", suite=Suite.X25519)
    with pytest.raises(MalformedInput, match="at most once"):
        seal(
            Note("x"),
            sender=agency("pp-duisburg"),
            channel=CHANNEL,
            recipients=[reader.card, other_key.card],
            markings=MARKS,
        )


def test_seal_refuses_a_bad_channel_id() -> None:
    with pytest.raises(MalformedInput, match="channel id"):
        seal(
            Note("x"),
            sender=agency("pp-duisburg"),
            channel="Kanal 1",
            recipients=[agency("sta-essen").card],
            markings=MARKS,
        )


def test_seal_refuses_a_note_too_large() -> None:
    with pytest.raises(MalformedInput, match="at most"):
        seal_for(agency("pp-duisburg"), [agency("sta-essen")], "x" * (MAX_BODY_BYTES + 1))


def test_seal_refuses_too_many_recipients() -> None:
    card = agency("sta-essen").card
    with pytest.raises(MalformedInput, match=f"at most {MAX_RECIPIENTS}"):
        seal(
            Note("x"),
            sender=agency("pp-duisburg"),
            channel=CHANNEL,
            recipients=[card] * (MAX_RECIPIENTS + 1),
            markings=MARKS,
        )


@pytest.mark.parametrize(
    "kwargs", [{"text": 5}, {"text": "x", "subject": "s" * 1025}, {"text": "x", "case_ref": b"1"}]
)
def test_note_fields_are_checked(kwargs: dict[str, Any]) -> None:
    with pytest.raises(MalformedInput):
        Note(**kwargs)


def test_note_body_with_unknown_fields_is_refused() -> None:
    with pytest.raises(MalformedInput, match="unknown field 'html'"):
        Note.parse(codec.encode({"text": "x", "html": "<b>"}))


# -- per-seal and per-parse shortcuts give the bytes and values of the long way ---------

_SLUG = st.from_regex(r"[a-z][a-z0-9]{2,20}(-[a-z0-9]{1,10}){0,2}", fullmatch=True)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(channel=_SLUG, message_id=st.binary(min_size=16, max_size=16), agency=_SLUG)
def test_the_hpke_info_of_a_seal_is_the_info_of_each_recipient(
    channel: str, message_id: bytes, agency: str
) -> None:
    """_HpkeInfo encodes the channel part once; each recipient's info is byte for byte the
    canonical encoding the protocol defines (PROTOCOL.md, HPKE info)."""
    key_id = bytes(reversed(message_id))
    expected = labels.HPKE_INFO_CONTENT_KEY + codec.encode([channel, message_id, agency, key_id])
    assert envelope_module._HpkeInfo(channel, message_id).of(agency, key_id) == expected
    assert envelope_module._hpke_info(channel, message_id, agency, key_id) == expected


def test_remembered_recipients_are_only_checked_ones_and_stay_bounded() -> None:
    """A recipient seen before is reused; a bad one is refused every time and never kept;
    a flood of distinct valid ones cannot grow the table past its bound."""
    seen = envelope_module._RECIPIENTS_SEEN
    seen.clear()
    first = envelope_module._recipient("pp-duisburg", b"\x01" * 16)
    assert envelope_module._recipient("pp-duisburg", b"\x01" * 16) is first
    for agency, key_id in [("PP", b"\x01" * 16), ("pp-duisburg", b"\x01" * 15), (1, b"x")]:
        with pytest.raises(MalformedInput):
            envelope_module._recipient(agency, key_id)
    assert list(seen) == [("pp-duisburg", b"\x01" * 16)]
    limit = envelope_module._RECIPIENTS_SEEN_MAX
    for n in range(limit + 10):
        envelope_module._recipient(f"agency-{n}", n.to_bytes(16, "big"))
    assert len(seen) <= limit
    seen.clear()


def test_remembered_markings_are_only_valid_ones_and_at_most_every_combination() -> None:
    """Parsed markings are reused by their text; invalid text is refused every time and
    never kept, so the table holds at most one entry per valid combination."""
    from keys.markings import InfoAssessment, SourceReliability

    seen = envelope_module._MARKINGS_SEEN
    seen.clear()
    record = {"cls": "VS-NfD", "hc": "H1", "tlp": "AMBER"}
    first = envelope_module._markings_from(record)
    assert envelope_module._markings_from(dict(record)) is first
    for bad in [{**record, "cls": "STRENG"}, {**record, "src": "Z"}, {**record, "hc": 1}]:
        with pytest.raises(MalformedInput):
            envelope_module._markings_from(bad)
    assert len(seen) == 1
    combinations = (
        len(Classification)
        * len(HandlingCode)
        * len(Tlp)
        * (len(SourceReliability) + 1)
        * (len(InfoAssessment) + 1)
    )
    assert combinations == 2000
    seen.clear()


def test_a_parsed_envelope_serializes_to_the_bytes_it_came_from_and_a_changed_copy_anew() -> None:
    """Parsing keeps the (canonical) bytes for serialize(); a copy with a field changed
    encodes its own bytes, never the original's."""
    import dataclasses

    data = seal_for(agency("pp-duisburg"), [agency("sta-essen")])
    envelope = Envelope.parse(data)
    assert envelope.serialize() is data
    changed = dataclasses.replace(envelope, signature=bytes(64))
    assert changed.serialize() != data
    assert Envelope.parse(changed.serialize()).signature == bytes(64)
    assert codec.decode(changed.serialize(), max_bytes=len(data))["h"] == envelope.header_bytes
