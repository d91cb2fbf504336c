"""keys/_suites.py: the primitives (Ed25519, HPKE, AES-256-GCM, Argon2id, SHA-256).

Every failure of a primitive must come out as the opaque InvalidSignature or
DecryptionFailed, and every badly sized key as MalformedInput.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys import _suites
from keys._suites import KemPrivate, KemPublic, SigningKey, Suite, VerifyKey
from keys.errors import DecryptionFailed, InvalidSignature, MalformedInput

SUITES = list(Suite)
SUITE_IDS = [s.value for s in SUITES]

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
    "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
# RFC 7748 section 6.1, Alice's key pair.
RFC7748_PRIVATE = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
RFC7748_PUBLIC = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")

CONTEXT = b"test context\x00"
SECRET = bytes(range(32))
INFO = b"test info\x00recipient"

# -- Suite ---------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
def test_suite_parse(suite: Suite) -> None:
    assert Suite.parse(suite.value) is suite


@pytest.mark.parametrize(
    "name", ["X25519", "mlkem768", "mlkem768_x25519", "", None, b"x25519", 1, Suite.X25519]
)
def test_suite_parse_refuses_unknown(name: object) -> None:
    with pytest.raises(MalformedInput) as info:
        Suite.parse(name)
    assert str(info.value) == "malformed input: suite: expected one of mlkem768-x25519, x25519"


def test_suite_sizes() -> None:
    assert Suite.X25519.public_size == 32
    assert Suite.X25519.private_size == 32
    assert Suite.X25519.wrapped_size == 32 + 32 + 16
    assert Suite.MLKEM768_X25519.public_size == 1184 + 32
    assert Suite.MLKEM768_X25519.private_size == 64 + 32
    assert Suite.MLKEM768_X25519.wrapped_size == 1088 + 32 + 32 + 16


# -- hashing and randomness ------------------------------------------------------------------


def test_sha256() -> None:
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2
    assert _suites.sha256(b"abc").hex() == abc
    assert _suites.sha256(b"a", b"", b"bc").hex() == abc
    assert _suites.sha256() == hashlib.sha256().digest()


def test_random_bytes() -> None:
    assert len(_suites.random_bytes(0)) == 0
    values = {_suites.random_bytes(16) for _ in range(32)}
    assert len(values) == 32
    assert all(len(v) == 16 for v in values)


# -- Ed25519 ---------------------------------------------------------------------------------


def test_ed25519_rfc8032_section_7_1_test_1() -> None:
    key = SigningKey(RFC8032_SECRET)
    assert key.public.raw == RFC8032_PUBLIC
    assert key.raw() == RFC8032_SECRET
    assert key.sign(b"", b"") == RFC8032_SIGNATURE
    VerifyKey(RFC8032_PUBLIC).verify(RFC8032_SIGNATURE, b"", b"")


def test_sign_verify_round_trip() -> None:
    key = SigningKey.generate()
    signature = key.sign(CONTEXT, b"message")
    assert len(signature) == 64
    key.public.verify(signature, CONTEXT, b"message")
    VerifyKey(key.public.raw).verify(signature, CONTEXT, b"message")
    assert SigningKey(key.raw()).public.raw == key.public.raw


def test_signature_covers_context_then_message() -> None:
    key = SigningKey.generate()
    signature = key.sign(CONTEXT, b"message")
    # Interoperable: a plain Ed25519 verifier over context || message accepts it.
    ed25519.Ed25519PublicKey.from_public_bytes(key.public.raw).verify(
        signature, CONTEXT + b"message"
    )


def test_generated_signing_keys_differ() -> None:
    assert SigningKey.generate().raw() != SigningKey.generate().raw()


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (b"other context\x00", b"message"),
        (CONTEXT, b"messagE"),
        (CONTEXT, b""),
        (CONTEXT + b"m", b"essage"),  # moving the boundary is fine, the input is the same
    ],
)
def test_verify_refuses_other_input(context: bytes, message: bytes) -> None:
    key = SigningKey.generate()
    signature = key.sign(CONTEXT, b"message")
    if context + message == CONTEXT + b"message":
        key.public.verify(signature, context, message)
        return
    with pytest.raises(InvalidSignature):
        key.public.verify(signature, context, message)


def test_verify_refuses_other_key() -> None:
    signature = SigningKey.generate().sign(CONTEXT, b"m")
    with pytest.raises(InvalidSignature):
        SigningKey.generate().public.verify(signature, CONTEXT, b"m")


@pytest.mark.parametrize("size", [0, 1, 32, 63, 65, 128])
def test_verify_refuses_bad_signature_length(size: int) -> None:
    key = SigningKey.generate()
    signature = (key.sign(CONTEXT, b"m") * 3)[:size]
    with pytest.raises(InvalidSignature) as info:
        key.public.verify(signature, CONTEXT, b"m")
    assert str(info.value) == "signature does not verify"


def test_verify_refuses_every_altered_signature_byte() -> None:
    key = SigningKey.generate()
    signature = key.sign(CONTEXT, b"m")
    for position in range(len(signature)):
        for mask in (0x01, 0x80, 0xFF):
            altered = bytearray(signature)
            altered[position] ^= mask
            with pytest.raises(InvalidSignature):
                key.public.verify(bytes(altered), CONTEXT, b"m")


def test_verify_refuses_non_canonical_s() -> None:
    # S + L (the group order) is the classic malleated signature (RFC 8032 section 5.1.7).
    order = 2**252 + 27742317777372353535851937790883648493
    r, s = RFC8032_SIGNATURE[:32], int.from_bytes(RFC8032_SIGNATURE[32:], "little")
    malleated = r + (s + order).to_bytes(32, "little")
    with pytest.raises(InvalidSignature):
        VerifyKey(RFC8032_PUBLIC).verify(malleated, b"", b"")


def test_verify_refuses_a_small_order_key_that_signs_everything() -> None:
    """The identity point as a public key, with R the identity and S = 0, passes a
    cofactorless check for every message; OpenSSL accepts it, libsodium (ours) does not."""
    identity_point = b"\x01" + bytes(31)
    trivial = identity_point + bytes(32)
    lax = ed25519.Ed25519PublicKey.from_public_bytes(identity_point)
    lax.verify(trivial, CONTEXT + b"any message at all")  # what a lax verifier allows
    for message in (b"", b"any message at all"):
        with pytest.raises(InvalidSignature):
            VerifyKey(identity_point).verify(trivial, CONTEXT, message)


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_ed25519_keys_refuse_bad_sizes(size: int) -> None:
    with pytest.raises(MalformedInput, match="signing key: expected 32 bytes"):
        SigningKey(b"\x01" * size)
    with pytest.raises(MalformedInput, match="verify key: expected 32 bytes"):
        VerifyKey(b"\x01" * size)


# -- HPKE ------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=SUITES, ids=SUITE_IDS)
def kem(request: pytest.FixtureRequest) -> KemPrivate:
    return KemPrivate.generate(request.param)


def test_x25519_rfc7748_section_6_1() -> None:
    key = KemPrivate(Suite.X25519, RFC7748_PRIVATE)
    assert key.public.raw == RFC7748_PUBLIC
    assert key.raw() == RFC7748_PRIVATE


def test_mlkem_private_key_is_seed_then_x25519() -> None:
    seed = bytes(range(64))
    key = KemPrivate(Suite.MLKEM768_X25519, seed + RFC7748_PRIVATE)
    assert key.raw() == seed + RFC7748_PRIVATE
    assert len(key.public.raw) == 1184 + 32
    assert key.public.raw[1184:] == RFC7748_PUBLIC
    again = KemPrivate(Suite.MLKEM768_X25519, seed + RFC7748_PRIVATE)
    assert again.public.raw == key.public.raw  # the seed determines the key


def test_kem_keys_round_trip_through_raw(kem: KemPrivate) -> None:
    assert len(kem.raw()) == kem.suite.private_size
    assert len(kem.public.raw) == kem.suite.public_size
    copy = KemPrivate(kem.suite, kem.raw())
    assert copy.public.raw == kem.public.raw
    assert KemPublic(kem.suite, kem.public.raw).raw == kem.public.raw
    assert kem.public.suite is kem.suite


def test_wrap_unwrap_round_trip(kem: KemPrivate) -> None:
    wrapped = kem.public.wrap(SECRET, INFO)
    assert len(wrapped) == kem.suite.wrapped_size
    assert kem.unwrap(wrapped, INFO) == SECRET
    # Through a public key rebuilt from its raw bytes, and a private key from raw bytes.
    again = KemPublic(kem.suite, kem.public.raw).wrap(SECRET, INFO)
    assert again != wrapped  # fresh ephemeral key every time
    assert KemPrivate(kem.suite, kem.raw()).unwrap(again, INFO) == SECRET


def test_unwrap_refuses_wrong_info(kem: KemPrivate) -> None:
    wrapped = kem.public.wrap(SECRET, INFO)
    for info in (b"", INFO + b"\x00", INFO[:-1], b"other"):
        with pytest.raises(DecryptionFailed) as exc:
            kem.unwrap(wrapped, info)
        assert str(exc.value) == "decryption failed: wrong key, or the data was altered"


def test_unwrap_refuses_wrong_key(kem: KemPrivate) -> None:
    wrapped = kem.public.wrap(SECRET, INFO)
    with pytest.raises(DecryptionFailed):
        KemPrivate.generate(kem.suite).unwrap(wrapped, INFO)


def test_unwrap_refuses_other_suite() -> None:
    x = KemPrivate.generate(Suite.X25519)
    hybrid = KemPrivate.generate(Suite.MLKEM768_X25519)
    with pytest.raises(DecryptionFailed):
        x.unwrap(hybrid.public.wrap(SECRET, INFO), INFO)
    with pytest.raises(DecryptionFailed):
        hybrid.unwrap(x.public.wrap(SECRET, INFO), INFO)


def test_unwrap_refuses_truncated_or_extended(kem: KemPrivate) -> None:
    wrapped = kem.public.wrap(SECRET, INFO)
    for cut in (0, 1, 32, len(wrapped) - 16, len(wrapped) - 1):
        with pytest.raises(DecryptionFailed):
            kem.unwrap(wrapped[:cut], INFO)
    for extra in (b"\x00", b"\x00" * 16):
        with pytest.raises(DecryptionFailed):
            kem.unwrap(wrapped + extra, INFO)


def test_unwrap_refuses_every_altered_byte(kem: KemPrivate) -> None:
    wrapped = kem.public.wrap(SECRET, INFO)
    for position in range(len(wrapped)):
        altered = bytearray(wrapped)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            kem.unwrap(bytes(altered), INFO)


def test_unwrap_refuses_low_order_x25519_share() -> None:
    kem = KemPrivate.generate(Suite.X25519)
    wrapped = kem.public.wrap(SECRET, INFO)
    with pytest.raises(DecryptionFailed):
        kem.unwrap(bytes(32) + wrapped[32:], INFO)


@pytest.mark.parametrize("suite", SUITES, ids=SUITE_IDS)
@pytest.mark.parametrize("delta", [-1, 1, -32])
def test_kem_keys_refuse_bad_sizes(suite: Suite, delta: int) -> None:
    with pytest.raises(MalformedInput) as info:
        KemPublic(suite, b"\x01" * (suite.public_size + delta))
    assert str(info.value) == f"malformed input: encryption key: expected {suite.public_size} bytes"
    with pytest.raises(MalformedInput) as info:
        KemPrivate(suite, b"\x01" * (suite.private_size + delta))
    assert (
        str(info.value) == f"malformed input: decryption key: expected {suite.private_size} bytes"
    )


def test_kem_public_refuses_invalid_mlkem_key() -> None:
    # Every 12-bit coefficient 0xfff is >= q = 3329: fails the FIPS 203 modulus check.
    with pytest.raises(MalformedInput, match="encryption key: not a valid public key"):
        KemPublic(Suite.MLKEM768_X25519, b"\xff" * (1184 + 32))


def test_wrap_refuses_low_order_x25519_key() -> None:
    public = KemPublic(Suite.X25519, bytes(32))  # the all-zero point: shared secret 0
    with pytest.raises(MalformedInput, match="encryption key: unusable public key"):
        public.wrap(SECRET, INFO)


# -- AES-256-GCM -----------------------------------------------------------------------------

KEY = bytes(range(32))
NONCE = bytes(range(12))


def test_aead_round_trip() -> None:
    sealed = _suites.aead_seal(KEY, NONCE, b"plaintext", b"aad")
    assert len(sealed) == len(b"plaintext") + 16
    assert _suites.aead_open(KEY, NONCE, sealed, b"aad") == b"plaintext"
    # Plain AES-256-GCM (interoperable).
    assert AESGCM(KEY).decrypt(NONCE, sealed, b"aad") == b"plaintext"
    assert _suites.aead_open(KEY, NONCE, _suites.aead_seal(KEY, NONCE, b"", b""), b"") == b""


def test_aead_open_refuses_every_altered_byte() -> None:
    sealed = _suites.aead_seal(KEY, NONCE, b"plaintext", b"aad")
    for position in range(len(sealed)):
        altered = bytearray(sealed)
        altered[position] ^= 0x01
        with pytest.raises(DecryptionFailed):
            _suites.aead_open(KEY, NONCE, bytes(altered), b"aad")


@pytest.mark.parametrize(
    ("key", "nonce", "cut", "aad"),
    [
        (bytes(32), NONCE, None, b"aad"),  # wrong key
        (KEY, bytes(12), None, b"aad"),  # wrong nonce
        (KEY, NONCE, None, b"aaD"),  # wrong associated data
        (KEY, NONCE, None, b""),
        (KEY, NONCE, -1, b"aad"),  # truncated
        (KEY, NONCE, 15, b"aad"),  # shorter than the tag
        (KEY, NONCE, 0, b"aad"),  # empty
        (KEY[:31], NONCE, None, b"aad"),  # bad key size
        (KEY, NONCE[:7], None, b"aad"),  # bad nonce size
    ],
)
def test_aead_open_refuses(key: bytes, nonce: bytes, cut: int | None, aad: bytes) -> None:
    sealed = _suites.aead_seal(KEY, NONCE, b"plaintext", b"aad")
    with pytest.raises(DecryptionFailed) as info:
        _suites.aead_open(key, nonce, sealed[:cut], aad)
    assert b"plaintext" not in str(info.value).encode()


# -- Argon2id --------------------------------------------------------------------------------


def test_argon2id_is_deterministic_and_parameter_bound() -> None:
    params = {"memory_kib": 64, "iterations": 1, "lanes": 1}
    key = _suites.argon2id(b"passphrase", b"s" * 16, **params)
    assert len(key) == 32
    assert _suites.argon2id(b"passphrase", b"s" * 16, **params) == key
    others = {
        _suites.argon2id(b"passphrasE", b"s" * 16, **params),
        _suites.argon2id(b"passphrase", b"S" * 16, **params),
        _suites.argon2id(b"passphrase", b"s" * 16, memory_kib=128, iterations=1, lanes=1),
        _suites.argon2id(b"passphrase", b"s" * 16, memory_kib=64, iterations=2, lanes=1),
        _suites.argon2id(b"passphrase", b"s" * 16, memory_kib=64, iterations=1, lanes=2),
    }
    assert key not in others
    assert len(others) == 5
