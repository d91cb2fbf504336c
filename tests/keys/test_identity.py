"""keys/identity.py: agency identities (private) and self-signed agency cards (public).

The card layout tested here is the one in the module docstring::

    card body = canonical {"agency", "created", "fmt", "kem_pk", "sig_pk", "suite", "v"}
    card      = canonical {"body": card body, "sig": Ed25519(SIG_CARD || card body)}
    key id    = SHA-256(KEY_ID || card body)[:16]
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keys import codec, labels
from keys._suites import KemPrivate, SigningKey, Suite
from keys.errors import InvalidSignature, LimitExceeded, MalformedInput
from keys.identity import MAX_CARD_BYTES, MAX_TIME_MS, AgencyCard, Identity, now_ms
from keys.ids import AgencyId, KeyId

SUITES = list(Suite)
SUITE_IDS = [s.value for s in SUITES]

# RFC 8032 section 7.1 TEST 1 and RFC 7748 section 6.1 (Alice) private keys.
ED_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
ED_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
X_SECRET = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
X_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
CREATED = 1_700_000_000_000


@pytest.fixture(scope="module")
def fixed() -> Identity:
    return Identity.from_raw_keys(
        "pp-duisburg", Suite.X25519, CREATED, signing_key=ED_SECRET, kem_key=X_SECRET
    )


@pytest.fixture(scope="module", params=SUITES, ids=SUITE_IDS)
def identity(request: pytest.FixtureRequest) -> Identity:
    return Identity.generate("stadt-essen", suite=request.param, now=CREATED)


def card_fields(identity: Identity) -> dict[str, Any]:
    return {
        "v": labels.CARD_VERSION,
        "fmt": labels.CARD_FORMAT,
        "agency": str(identity.agency),
        "suite": identity.suite.value,
        "created": identity.created,
        "sig_pk": identity.signing.public.raw,
        "kem_pk": identity.kem.public.raw,
    }


def signed_card(
    identity: Identity,
    *,
    drop: tuple[str, ...] = (),
    outer: dict[str, Any] | None = None,
    signer: SigningKey | None = None,
    **changes: Any,
) -> bytes:
    """A card for ``identity`` with ``changes`` to its body, validly self-signed."""
    fields = {**card_fields(identity), **changes}
    for name in drop:
        del fields[name]
    body = codec.encode(fields)
    signature = (signer or identity.signing).sign(labels.SIG_CARD, body)
    return codec.encode({"body": body, "sig": signature, **(outer or {})})


def refused(data: Any, exc: type[Exception] = MalformedInput) -> Exception:
    with pytest.raises(exc) as info:
        AgencyCard.parse(data)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    return info.value


# -- generation --------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_generate(suite: Suite) -> None:
    made = Identity.generate("pp-duisburg", suite=suite, now=CREATED)
    assert made.agency == "pp-duisburg"
    assert type(made.agency) is AgencyId
    assert made.suite is suite
    assert made.created == CREATED
    assert made.kem.suite is suite
    card = made.card
    assert (card.agency, card.suite, card.created) == (made.agency, suite, CREATED)
    assert card.sign_key.raw == made.signing.public.raw
    assert card.kem_key.raw == made.kem.public.raw
    assert len(card.kem_key.raw) == suite.public_size
    assert made.key_id == card.key_id
    assert type(made.key_id) is KeyId


def test_generate_defaults_to_the_hybrid_suite_and_now() -> None:
    before = now_ms()
    made = Identity.generate("pp-duisburg")
    after = now_ms()
    assert made.suite is Suite.MLKEM768_X25519
    assert before <= made.created <= after


def test_now_ms() -> None:
    value = now_ms()
    assert type(value) is int
    assert abs(value - time.time() * 1000) < 5_000


def test_generated_identities_differ() -> None:
    a = Identity.generate("pp-duisburg", suite=Suite.X25519, now=CREATED)
    b = Identity.generate("pp-duisburg", suite=Suite.X25519, now=CREATED)
    assert a.private_keys() != b.private_keys()
    assert a.card != b.card
    assert a.key_id != b.key_id


def test_the_card_can_receive_for_the_identity(identity: Identity) -> None:
    card = AgencyCard.parse(identity.card.serialize())
    wrapped = card.kem_key.wrap(b"k" * 32, b"info")
    assert identity.kem.unwrap(wrapped, b"info") == b"k" * 32
    signature = identity.signing.sign(b"ctx", b"msg")
    card.sign_key.verify(signature, b"ctx", b"msg")


@pytest.mark.parametrize("agency", ["PP", "pp", "1pp", "pp_duisburg", "", "\u0440p-duisburg"])
def test_generate_refuses_bad_agency(agency: str) -> None:
    with pytest.raises(MalformedInput, match="agency id"):
        Identity.generate(agency, suite=Suite.X25519)


@pytest.mark.parametrize("created", [0, 1, MAX_TIME_MS])
def test_created_bounds_accepted(created: int) -> None:
    made = Identity.generate("pp-duisburg", suite=Suite.X25519, now=created)
    assert made.created == created
    assert AgencyCard.parse(made.card.serialize()).created == created


@pytest.mark.parametrize("created", [-1, MAX_TIME_MS + 1, 2**64 - 1, True, 1.0, "0"], ids=repr)
def test_created_bounds_refused(created: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        Identity.generate("pp-duisburg", suite=Suite.X25519, now=created)
    assert "identity.created" in str(info.value)


def test_max_time_is_the_end_of_year_9999() -> None:
    # 9999-12-31T23:59:59.999Z
    assert MAX_TIME_MS == (253_402_300_800 * 1000) - 1


@pytest.mark.parametrize(("suite", "other"), [(SUITES[0], SUITES[1]), (SUITES[1], SUITES[0])])
def test_identity_refuses_a_key_of_another_suite(suite: Suite, other: Suite) -> None:
    with pytest.raises(MalformedInput) as info:
        Identity(
            AgencyId("pp-duisburg"),
            suite,
            CREATED,
            SigningKey.generate(),
            KemPrivate.generate(other),
        )
    assert str(info.value) == ("malformed input: identity: encryption key does not match its suite")


def test_identity_constructor_checks_the_agency() -> None:
    with pytest.raises(MalformedInput):
        Identity(
            "Not A Slug",  # type: ignore[arg-type]
            Suite.X25519,
            CREATED,
            SigningKey.generate(),
            KemPrivate.generate(Suite.X25519),
        )


def test_from_raw_keys_round_trip(identity: Identity) -> None:
    signing, kem = identity.private_keys()
    again = Identity.from_raw_keys(
        identity.agency, identity.suite, identity.created, signing_key=signing, kem_key=kem
    )
    assert again.card == identity.card
    assert again.card.serialize() == identity.card.serialize()  # Ed25519 is deterministic
    assert again.private_keys() == (signing, kem)


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_from_raw_keys_refuses_bad_sizes(suite: Suite) -> None:
    with pytest.raises(MalformedInput, match="signing key"):
        Identity.from_raw_keys(
            "pp-duisburg", suite, 0, signing_key=b"x" * 31, kem_key=b"x" * suite.private_size
        )
    with pytest.raises(MalformedInput, match="decryption key"):
        Identity.from_raw_keys(
            "pp-duisburg", suite, 0, signing_key=b"x" * 32, kem_key=b"x" * (suite.private_size + 1)
        )


def test_repr_names_the_identity_but_holds_no_secret(identity: Identity) -> None:
    text = repr(identity)
    assert text.startswith("Identity(agency='stadt-essen', suite=")
    assert str(identity.key_id) in text
    signing, kem = identity.private_keys()
    for secret in (signing, kem):
        assert secret.hex() not in text
        assert secret.hex() not in repr(identity.card)
    assert "stadt-essen" in repr(identity.card)


# -- card layout, key id ------------------------------------------------------------------------


def test_card_layout_is_pinned(fixed: Identity) -> None:
    """The card body, signature input and key id of keys/identity.py's docstring."""
    expected_body = (
        b"\x87"
        + b"\xa6agency\xabpp-duisburg"
        + b"\xa7created\xcf"
        + CREATED.to_bytes(8, "big")
        + b"\xa3fmt\xb0siko-agency-card"
        + b"\xa6kem_pk\xc4\x20"
        + X_PUBLIC
        + b"\xa6sig_pk\xc4\x20"
        + ED_PUBLIC
        + b"\xa5suite\xa6x25519"
        + b"\xa1v\x01"
    )
    card = fixed.card
    assert card.body == expected_body
    ed25519.Ed25519PublicKey.from_public_bytes(ED_PUBLIC).verify(
        card.signature, b"siko-hub/v1 agency card\x00" + expected_body
    )
    assert len(expected_body) == 156  # one bin8 header below
    assert card.serialize() == (
        b"\x82\xa4body\xc4\x9c" + expected_body + b"\xa3sig\xc4\x40" + card.signature
    )
    digest = hashlib.sha256(b"siko-hub/v1 key id\x00" + expected_body).digest()
    assert bytes(card.key_id) == digest[:16]
    # Regression values (Ed25519 is deterministic): any change here is a protocol change.
    assert card.signature.hex() == PINNED_SIGNATURE
    assert str(card.key_id) == "f4b0653be01b89fab7e9f58e36345cbf"
    assert card.key_id.fingerprint() == "6SYG-KO7A-DOE7-VN7J-6WHD-MNC4-X4"


PINNED_SIGNATURE = (
    "eda06d258d5c44351c63af67724833a9284401a2ab96047a0f3632972452ced4"
    "794cbf7c70e0dae42c5f911d80d2048ff0eedb5cdad97c8e3e66a64cecaa0207"
)


def test_key_id_is_deterministic(fixed: Identity) -> None:
    again = Identity.from_raw_keys(
        "pp-duisburg", Suite.X25519, CREATED, signing_key=ED_SECRET, kem_key=X_SECRET
    )
    assert again.key_id == fixed.key_id
    assert AgencyCard.parse(fixed.card.serialize()).key_id == fixed.key_id


@pytest.mark.parametrize(
    ("agency", "created"), [("pp-essen", CREATED), ("pp-duisburg", CREATED + 1)]
)
def test_key_id_changes_with_every_field(fixed: Identity, agency: str, created: int) -> None:
    other = Identity.from_raw_keys(
        agency, Suite.X25519, created, signing_key=ED_SECRET, kem_key=X_SECRET
    )
    assert other.key_id != fixed.key_id


def test_helper_reproduces_the_card(identity: Identity) -> None:
    assert signed_card(identity) == identity.card.serialize()


# -- parse / serialize / equality -------------------------------------------------------------


def test_card_round_trip(identity: Identity) -> None:
    data = identity.card.serialize()
    card = AgencyCard.parse(data)
    assert card.serialize() == data
    assert card == identity.card
    assert hash(card) == hash(identity.card)
    assert {card, identity.card} == {card}
    assert (card.agency, card.suite, card.created) == (
        identity.agency,
        identity.suite,
        identity.created,
    )
    assert card.key_id == identity.key_id
    assert type(card.agency) is AgencyId
    assert card.body == identity.card.body
    assert card.signature == identity.card.signature


def test_card_equality(identity: Identity) -> None:
    other = Identity.generate("stadt-essen", suite=identity.suite, now=identity.created)
    assert identity.card != other.card
    assert identity.card != identity.card.body
    assert identity.card != identity.card.serialize()
    assert identity.card != None  # noqa: E711
    assert len({identity.card, other.card, AgencyCard.parse(other.card.serialize())}) == 2


def test_card_size_fits_the_limit() -> None:
    hybrid = Identity.generate("a" * 63, suite=Suite.MLKEM768_X25519)
    assert len(hybrid.card.serialize()) <= MAX_CARD_BYTES


@pytest.mark.parametrize(
    "data", [None, "card", bytearray(b"\x80"), b"", b"\xc0", b"\x90"], ids=repr
)
def test_parse_refuses_non_cards(data: Any) -> None:
    refused(data)


def test_parse_refuses_oversize(fixed: Identity) -> None:
    data = signed_card(fixed, kem_pk=b"x" * MAX_CARD_BYTES)
    exc = refused(data, LimitExceeded)
    assert isinstance(exc, LimitExceeded)
    assert exc.limit == MAX_CARD_BYTES


def test_every_truncation_is_refused(fixed: Identity) -> None:
    data = fixed.card.serialize()
    for cut in range(len(data)):
        with pytest.raises(MalformedInput):
            AgencyCard.parse(data[:cut])


def test_trailing_bytes_are_refused(fixed: Identity) -> None:
    refused(fixed.card.serialize() + b"\x00")


def test_every_byte_of_the_card_is_protected(fixed: Identity) -> None:
    """Changing any byte of a card, anywhere, gets it refused; never a different card."""
    data = fixed.card.serialize()
    outcomes: dict[type[Exception], int] = {}
    for position in range(len(data)):
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF):
            altered = bytearray(data)
            altered[position] ^= mask
            try:
                card = AgencyCard.parse(bytes(altered))
            except (MalformedInput, InvalidSignature) as exc:
                outcomes[type(exc)] = outcomes.get(type(exc), 0) + 1
                continue
            pytest.fail(f"accepted a card altered at byte {position} (^{mask:#x}): {card!r}")
    assert outcomes[InvalidSignature] and outcomes[MalformedInput]


def test_signature_by_another_key_is_refused(fixed: Identity) -> None:
    exc = refused(signed_card(fixed, signer=SigningKey.generate()), InvalidSignature)
    assert str(exc) == "signature does not verify"


def test_signature_without_the_card_context_is_refused(fixed: Identity) -> None:
    body = fixed.card.body
    for context in (b"", labels.SIG_ENVELOPE, labels.SIG_CARD[:-1]):
        signature = fixed.signing.sign(context, body)
        refused(codec.encode({"body": body, "sig": signature}), InvalidSignature)


@pytest.mark.parametrize("size", [0, 63, 65])
def test_signature_of_bad_length_is_refused(fixed: Identity, size: int) -> None:
    data = codec.encode({"body": fixed.card.body, "sig": (fixed.card.signature * 2)[:size]})
    refused(data, InvalidSignature)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"fmt": "siko-identity"}, "card: not a version 1 siko agency card"),
        ({"fmt": "siko-agency-card "}, "card: not a version 1 siko agency card"),
        ({"v": 2}, "card: not a version 1 siko agency card"),
        ({"v": 0}, "card: not a version 1 siko agency card"),
        ({"suite": "rsa"}, "suite: expected one of mlkem768-x25519, x25519"),
        ({"suite": "X25519"}, "suite: expected one of mlkem768-x25519, x25519"),
        ({"v": True}, "card body.v: expected int"),
        ({"v": "1"}, "card body.v: expected int"),
        ({"fmt": b"siko-agency-card"}, "card body.fmt: expected str"),
        ({"created": True}, "card body.created: expected int"),
        ({"created": -1}, "card.created: out of range 0..253402300799999"),
        ({"created": MAX_TIME_MS + 1}, "card.created: out of range 0..253402300799999"),
        ({"agency": "PP-Duisburg"}, "agency id must be"),
        ({"agency": b"pp-duisburg"}, "card body.agency: expected str"),
        ({"sig_pk": b"x" * 31}, "verify key: expected 32 bytes"),
        ({"kem_pk": b"x" * 33}, "encryption key: expected 32 bytes"),
        ({"suite": "mlkem768-x25519"}, "encryption key: expected 1216 bytes"),
        ({"extra": 1}, "card body: unknown field 'extra'"),
    ],
    ids=lambda v: next(iter(v)) + "=" + repr(next(iter(v.values()))) if isinstance(v, dict) else "",
)
def test_signed_but_invalid_bodies_are_refused(
    fixed: Identity, changes: dict[str, Any], message: str
) -> None:
    exc = refused(signed_card(fixed, **changes))
    assert message in str(exc)


@pytest.mark.parametrize("name", ["v", "fmt", "agency", "suite", "created", "sig_pk", "kem_pk"])
def test_missing_body_fields_are_refused(fixed: Identity, name: str) -> None:
    exc = refused(signed_card(fixed, drop=(name,)))
    assert str(exc) == f"malformed input: card body: missing field {name!r}"


def test_outer_map_must_be_exact(fixed: Identity) -> None:
    exc = refused(signed_card(fixed, outer={"note": "hi"}))
    assert str(exc) == "malformed input: card: unknown field 'note'"
    exc = refused(codec.encode({"body": fixed.card.body}))
    assert str(exc) == "malformed input: card: missing field 'sig'"
    exc = refused(codec.encode({"body": fixed.card.body.hex(), "sig": fixed.card.signature}))
    assert str(exc) == "malformed input: card.body: expected bytes"
    refused(codec.encode([fixed.card.body, fixed.card.signature]))


def test_non_canonical_body_is_refused(fixed: Identity) -> None:
    # The same fields with an over-long int for "v": same value, different bytes.
    body = fixed.card.body
    assert body.endswith(b"\xa1v\x01")
    long_body = body[:-1] + b"\xcc\x01"
    data = codec.encode({"body": long_body, "sig": fixed.signing.sign(labels.SIG_CARD, long_body)})
    assert str(refused(data)) == "malformed input: not in canonical form"


def test_body_that_is_not_a_map_is_refused(fixed: Identity) -> None:
    body = codec.encode(["siko-agency-card"])
    data = codec.encode({"body": body, "sig": fixed.signing.sign(labels.SIG_CARD, body)})
    assert str(refused(data)) == "malformed input: card body: expected a map"
