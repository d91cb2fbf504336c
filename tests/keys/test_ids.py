"""keys/ids.py: agency and channel slugs, message ids and key ids."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from keys.errors import MalformedInput
from keys.ids import AgencyId, ChannelId, KeyId, MessageId

SLUG_CLASSES = [AgencyId, ChannelId]

VALID_SLUGS = [
    "abc",  # shortest: 3
    "a" * 63,  # longest: 63
    "a" + "-b" * 31,  # 63 with hyphens
    "pp-duisburg",
    "stadt-essen-ordnungsamt",
    "sta-nrw-2",
    "a1b",
    "a-1",
    "x99",
    "clan-lagebild-ruhr",
]

INVALID_SLUGS = [
    "",
    "ab",  # 2: too short
    "a" * 64,  # 64: too long
    "a" + "-b" * 31 + "c",  # 64 with hyphens
    "Abc",
    "pp-Duisburg",
    "PP-DUISBURG",
    "1abc",  # leading digit
    "-abc",  # leading hyphen
    "abc-",  # trailing hyphen
    "ab--c",  # double hyphen
    "a_bc",
    "a.bc",
    "a bc",
    " abc",
    "abc ",
    "abc\n",
    "\nabc",
    "a/bc",
    "pp-duisbürg",  # non-ASCII letter
    "\u0440\u0440-duisburg",  # Cyrillic er (U+0440) looks like "p"
    "pp-duisbur\u0261",  # Latin small script g (U+0261)
    "pp\u2010duisburg",  # U+2010 HYPHEN
    "pp\u2013duisburg",  # U+2013 EN DASH
    "\uff50\uff50-duisburg",  # fullwidth letters
    "pp-du\u0131sburg",  # dotless i (U+0131)
    "abc\u200b",  # zero-width space
    "ab\x00c",
    "a\u0661\u0662",  # Arabic-Indic digits match \d but not [0-9]
]


@pytest.mark.parametrize("cls", SLUG_CLASSES)
@pytest.mark.parametrize("value", VALID_SLUGS)
def test_valid_slugs(cls: type[str], value: str) -> None:
    slug = cls(value)
    assert slug == value
    assert type(slug) is cls
    assert isinstance(slug, str)


@pytest.mark.parametrize("cls", SLUG_CLASSES)
@pytest.mark.parametrize("value", INVALID_SLUGS, ids=ascii)
def test_invalid_slugs(cls: type[str], value: str) -> None:
    with pytest.raises(MalformedInput) as info:
        cls(value)
    assert type(info.value) is MalformedInput
    message = str(info.value)
    assert "3-63 characters" in message
    assert "starting with a letter" in message
    assert "pp-duisburg" in message  # an example of a good slug


def test_slug_messages_name_the_kind() -> None:
    with pytest.raises(MalformedInput, match="agency id"):
        AgencyId("X")
    with pytest.raises(MalformedInput, match="channel id"):
        ChannelId("X")


@pytest.mark.parametrize("cls", SLUG_CLASSES)
@pytest.mark.parametrize("value", [b"pp-duisburg", None, 123, ["pp-duisburg"], bytearray(b"abc")])
def test_slugs_must_be_text(cls: type[str], value: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        cls(value)
    assert str(info.value).endswith(": expected text")


def test_slug_of_slug() -> None:
    agency = AgencyId("pp-duisburg")
    assert ChannelId(agency) == "pp-duisburg"
    assert type(ChannelId(agency)) is ChannelId


# -- 16-byte ids ---------------------------------------------------------------------------

ID_CLASSES = [MessageId, KeyId]


@pytest.mark.parametrize("cls", ID_CLASSES)
def test_ids_are_sixteen_bytes(cls: type[bytes]) -> None:
    raw = bytes(range(16))
    value = cls(raw)
    assert value == raw
    assert type(value) is cls
    assert len(value) == 16


@pytest.mark.parametrize("cls", ID_CLASSES)
@pytest.mark.parametrize("size", [0, 1, 15, 17, 32])
def test_ids_refuse_other_lengths(cls: type[bytes], size: int) -> None:
    with pytest.raises(MalformedInput) as info:
        cls(b"\x00" * size)
    assert str(info.value).endswith("expected 16 bytes")


@pytest.mark.parametrize("cls", ID_CLASSES)
@pytest.mark.parametrize(
    "value", ["0" * 16, bytearray(16), memoryview(bytes(16)), None, 16, [0] * 16], ids=repr
)
def test_ids_refuse_non_bytes(cls: type[bytes], value: Any) -> None:
    with pytest.raises(MalformedInput, match="expected 16 bytes"):
        cls(value)


def test_id_messages_name_the_kind() -> None:
    with pytest.raises(MalformedInput, match=r"^malformed input: message id: "):
        MessageId(b"")
    with pytest.raises(MalformedInput, match=r"^malformed input: key id: "):
        KeyId(b"")


@pytest.mark.parametrize("cls", ID_CLASSES)
def test_hex_round_trip(cls: type[MessageId] | type[KeyId]) -> None:
    raw = bytes.fromhex("00112233445566778899aabbccddeeff")
    value = cls(raw)
    assert str(value) == "00112233445566778899aabbccddeeff"
    assert cls.from_hex(str(value)) == value
    assert type(cls.from_hex(str(value))) is cls
    assert repr(value) == f"{cls.__name__}('00112233445566778899aabbccddeeff')"


@pytest.mark.parametrize("cls", ID_CLASSES)
@pytest.mark.parametrize(
    "text",
    [
        "",
        "00",
        "0" * 30,
        "0" * 34,
        "0" * 31,  # odd number of digits
        "g" * 32,
        "0x" + "0" * 30,
        "\u0660" * 32,  # Arabic-Indic zeros
        None,
        b"00" * 16,
        16,
    ],
    ids=repr,
)
def test_from_hex_refuses_bad_text(cls: type[MessageId] | type[KeyId], text: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        cls.from_hex(text)
    assert type(info.value) is MalformedInput
    assert "hex digits" in str(info.value) or "expected 16 bytes" in str(info.value)


@pytest.mark.parametrize("cls", ID_CLASSES)
@pytest.mark.parametrize(
    "text",
    [
        " 00112233445566778899aabbccddeeff",
        "00112233445566778899aabbccddeeff\n",
        "00 11 22 33 44 55 66 77 88 99 aa bb cc dd ee ff",
        "00112233445566778899AABBCCDDEEFF",
    ],
    ids=repr,
)
def test_from_hex_accepts_only_the_canonical_text_form(
    cls: type[MessageId] | type[KeyId], text: str
) -> None:
    # Regression (fixed; keys/ids.py, _Id16.from_hex): the module docstring fixes the text form as
    # "32 lower-case hex digits", but from_hex uses bytes.fromhex, which also accepts
    # whitespace anywhere (leading, trailing, between pairs) and upper-case digits. So
    # many different strings name the same message/key id -- a non-canonical identifier
    # in URLs, logs and audit reports, in a codebase that is otherwise strict about
    # canonical forms.
    with pytest.raises(MalformedInput):
        cls.from_hex(text)


def test_message_ids_are_random() -> None:
    ids = {MessageId.new() for _ in range(64)}
    assert len(ids) == 64
    assert all(type(i) is MessageId and len(i) == 16 for i in ids)


# -- fingerprints ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "fingerprint"),
    [
        (bytes(range(16)), "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B4"),
        (bytes(16), "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AA"),
        (b"\xff" * 16, "7777-7777-7777-7777-7777-7777-74"),
    ],
)
def test_fingerprint_is_pinned(raw: bytes, fingerprint: str) -> None:
    assert KeyId(raw).fingerprint() == fingerprint


def test_fingerprint_format() -> None:
    key_id = KeyId(bytes.fromhex("4a846d0170200a3234256307415984ff"))
    text = key_id.fingerprint()
    # 16 bytes = 128 bits = 26 base32 characters (RFC 4648 section 6), no padding,
    # in groups of four separated by hyphens: six of four and one of two.
    assert re.fullmatch(r"(?:[A-Z2-7]{4}-){6}[A-Z2-7]{2}", text)
    assert base64.b32decode(text.replace("-", "") + "======") == key_id
    assert key_id.fingerprint() == text  # stable
