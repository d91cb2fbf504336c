"""The cryptographic primitives behind :mod:`keys`; the only module that imports hazmat.

Nothing outside :mod:`keys` imports this module. It fixes every algorithm choice:

* signatures: Ed25519 (RFC 8032), raw 32-byte keys, 64-byte signatures, made and
  verified with PyNaCl (libsodium): its verification is twice as fast as OpenSSL's here
  (~46 µs against ~95 µs) and stricter: it also refuses small-order keys and ``R``
  points and non-canonical encodings, which no honest signer produces, so a signature it
  accepts every RFC 8032 verifier accepts. Signing is deterministic, so the signatures
  are the bytes any RFC 8032 signer makes;
* key encapsulation: HPKE (RFC 9180) base mode, single-shot, HKDF-SHA256 and
  AES-256-GCM, with one of two KEMs (:class:`Suite`):
  ``mlkem768-x25519`` (default; the ML-KEM-768 + X25519 hybrid, secure as long as
  either part is) or ``x25519`` (DHKEM(X25519, HKDF-SHA256));
* content encryption: AES-256-GCM with a 96-bit nonce;
* passphrase hashing: Argon2id (RFC 9106);
* hashing: SHA-256.

Raw key encodings (what cards and key files hold):

* ``x25519`` KEM: public 32 bytes, private 32 bytes (RFC 7748).
* ``mlkem768-x25519`` KEM: public = ML-KEM-768 encapsulation key (1184 bytes) ||
  X25519 public (32 bytes); private = ML-KEM-768 seed d||z (64 bytes) || X25519
  private (32 bytes).

Every failure of a primitive becomes :class:`~keys.errors.InvalidSignature` or
:class:`~keys.errors.DecryptionFailed` with no detail.
"""

from __future__ import annotations

import enum
import hashlib
import os
from typing import Final, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey as _NaclVerifyKey

from keys.errors import DecryptionFailed, InvalidSignature, MalformedInput

ED25519_KEY: Final = 32
ED25519_SIG: Final = 64
X25519_KEY: Final = 32
MLKEM768_PUBLIC: Final = 1184
MLKEM768_SEED: Final = 64
AEAD_KEY: Final = 32
AEAD_NONCE: Final = 12
AEAD_TAG: Final = 16
DIGEST: Final = 32


class Suite(enum.Enum):
    """The HPKE suite of an agency's encryption key; the value is its wire name."""

    MLKEM768_X25519 = "mlkem768-x25519"
    X25519 = "x25519"

    @classmethod
    def parse(cls, value: object) -> Suite:
        """The suite named ``value``; refuse unknown names."""
        for suite in cls:
            if suite.value == value and type(value) is str:
                return suite
        raise MalformedInput(f"suite: expected one of {', '.join(s.value for s in cls)}")

    @property
    def public_size(self) -> int:
        """Length of the raw KEM public key."""
        if self is Suite.X25519:
            return X25519_KEY
        return MLKEM768_PUBLIC + X25519_KEY

    @property
    def private_size(self) -> int:
        """Length of the raw KEM private key."""
        if self is Suite.X25519:
            return X25519_KEY
        return MLKEM768_SEED + X25519_KEY

    @property
    def wrapped_size(self) -> int:
        """Length of an HPKE-wrapped content key: enc || AEAD(key) || tag."""
        enc = X25519_KEY if self is Suite.X25519 else 1088 + X25519_KEY
        return enc + AEAD_KEY + AEAD_TAG

    def _hpke(self) -> hpke.Suite:
        return _HPKE[self]


_HPKE: Final = {
    Suite.X25519: hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
    Suite.MLKEM768_X25519: hpke.Suite(
        hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM
    ),
}


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG."""
    return os.urandom(size)


def sha256(*parts: bytes) -> bytes:
    """SHA-256 of the concatenation of ``parts``."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.digest()


# -- Ed25519 ------------------------------------------------------------------------


class SigningKey:
    """An Ed25519 private key (its 32-byte seed, RFC 8032)."""

    __slots__ = ("_key", "_seed", "public")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != ED25519_KEY:
            raise MalformedInput("signing key: expected 32 bytes")
        self._seed = bytes(raw)
        self._key = _NaclSigningKey(self._seed)
        self.public = VerifyKey(bytes(self._key.verify_key))

    @classmethod
    def generate(cls) -> Self:
        """A fresh random signing key."""
        return cls(os.urandom(ED25519_KEY))

    def raw(self) -> bytes:
        """The 32-byte private key; only the key file ever sees it."""
        return self._seed

    def sign(self, context: bytes, message: bytes) -> bytes:
        """Sign ``context || message`` (deterministic: the same bytes as any RFC 8032 signer)."""
        return self._key.sign(context + message).signature


class VerifyKey:
    """An Ed25519 public key."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != ED25519_KEY:
            raise MalformedInput("verify key: expected 32 bytes")
        self.raw = raw
        self._key = _NaclVerifyKey(raw)

    def verify(self, signature: bytes, context: bytes, message: bytes) -> None:
        """Raise :class:`InvalidSignature` unless ``signature`` signs ``context || message``."""
        if len(signature) != ED25519_SIG:
            raise InvalidSignature
        try:
            self._key.verify(context + message, signature)
        except BadSignatureError:
            raise InvalidSignature from None


# -- HPKE -------------------------------------------------------------------------


class KemPublic:
    """A recipient's HPKE public key under one :class:`Suite`."""

    __slots__ = ("_key", "raw", "suite")

    def __init__(self, suite: Suite, raw: bytes) -> None:
        if len(raw) != suite.public_size:
            raise MalformedInput(f"encryption key: expected {suite.public_size} bytes")
        self.suite = suite
        self.raw = raw
        self._key: x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
        try:
            if suite is Suite.X25519:
                self._key = x25519.X25519PublicKey.from_public_bytes(raw)
            else:
                self._key = hpke.MLKEM768X25519PublicKey(
                    mlkem.MLKEM768PublicKey.from_public_bytes(raw[:MLKEM768_PUBLIC]),
                    x25519.X25519PublicKey.from_public_bytes(raw[MLKEM768_PUBLIC:]),
                )
        except ValueError:
            raise MalformedInput("encryption key: not a valid public key") from None

    def wrap(self, secret: bytes, info: bytes) -> bytes:
        """HPKE-seal ``secret`` to this key with ``info``; returns enc || ciphertext."""
        try:
            return self.suite._hpke().encrypt(secret, self._key, info=info)
        except ValueError:
            raise MalformedInput("encryption key: unusable public key") from None


class KemPrivate:
    """An HPKE private key under one :class:`Suite`."""

    __slots__ = ("_key", "_raw", "public", "suite")

    def __init__(self, suite: Suite, raw: bytes) -> None:
        if len(raw) != suite.private_size:
            raise MalformedInput(f"decryption key: expected {suite.private_size} bytes")
        self.suite = suite
        self._raw = raw
        self._key: x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
        if suite is Suite.X25519:
            dh = x25519.X25519PrivateKey.from_private_bytes(raw)
            self._key = dh
            public = dh.public_key().public_bytes_raw()
        else:
            kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:MLKEM768_SEED])
            dh = x25519.X25519PrivateKey.from_private_bytes(raw[MLKEM768_SEED:])
            self._key = hpke.MLKEM768X25519PrivateKey(kem, dh)
            public = kem.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()
        self.public = KemPublic(suite, public)

    @classmethod
    def generate(cls, suite: Suite) -> Self:
        """A fresh random key of ``suite``."""
        dh = x25519.X25519PrivateKey.generate().private_bytes_raw()
        if suite is Suite.X25519:
            return cls(suite, dh)
        return cls(suite, mlkem.MLKEM768PrivateKey.generate().private_bytes_raw() + dh)

    def raw(self) -> bytes:
        """The raw private key; only the key file ever sees it."""
        return self._raw

    def unwrap(self, wrapped: bytes, info: bytes) -> bytes:
        """Open an HPKE-wrapped secret; :class:`DecryptionFailed` on any failure."""
        if len(wrapped) != self.suite.wrapped_size:
            raise DecryptionFailed
        try:
            return self.suite._hpke().decrypt(wrapped, self._key, info=info)
        except (InvalidTag, ValueError):
            raise DecryptionFailed from None


# -- AEAD -------------------------------------------------------------------------


def aead_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt; returns ciphertext || tag."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_open(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM decrypt; :class:`DecryptionFailed` on any failure."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError):
        raise DecryptionFailed from None


# -- Argon2id -----------------------------------------------------------------------


def argon2id(
    passphrase: bytes, salt: bytes, *, memory_kib: int, iterations: int, lanes: int
) -> bytes:
    """Derive a 32-byte key from ``passphrase`` (RFC 9106 Argon2id)."""
    kdf = Argon2id(
        salt=salt, length=AEAD_KEY, iterations=iterations, lanes=lanes, memory_cost=memory_kib
    )
    return kdf.derive(passphrase)
