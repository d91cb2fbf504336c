"""Agency identities (private) and agency cards (public).

An :class:`Identity` is what an agency keeps: its :class:`~keys.ids.AgencyId`, an
Ed25519 signing key and an HPKE decryption key of one :class:`Suite`. Its public half
is an :class:`AgencyCard`, which the agency hands to the hub and to its partners.

A card is self-signed (proof that its owner holds the signing key) and named by its
:class:`~keys.ids.KeyId`::

    card body = canonical {"agency", "created", "fmt", "kem_pk", "sig_pk", "suite", "v"}
    card      = canonical {"body": card body, "sig": Ed25519(SIG_CARD || card body)}
    key id    = SHA-256(KEY_ID || card body)[:16]

Rotation makes a new card (new keys, new ``created``), hence a new key id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Final

from keys import codec, labels
from keys._suites import KemPrivate, KemPublic, SigningKey, Suite, VerifyKey, sha256
from keys.errors import MalformedInput
from keys.ids import ID_BYTES, AgencyId, KeyId

__all__ = ["AgencyCard", "Identity", "Suite", "now_ms"]

#: A card holds at most a hybrid public key and a few short fields.
MAX_CARD_BYTES: Final = 4096
#: Times are milliseconds since the Unix epoch, UTC; this bounds them to year 9999.
MAX_TIME_MS: Final = 253_402_300_799_999


def now_ms() -> int:
    """The current time as the protocol writes it: integer milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, eq=False)
class AgencyCard:
    """The public half of an agency identity; build with :meth:`parse` or from an identity."""

    agency: AgencyId
    suite: Suite
    created: int
    sign_key: VerifyKey = field(repr=False)
    kem_key: KemPublic = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    key_id: KeyId

    @classmethod
    def parse(cls, data: bytes) -> AgencyCard:
        """Decode and check a card, including its self-signature.

        Raises:
            MalformedInput: not a well-formed card.
            InvalidSignature: the self-signature does not verify.
        """
        outer = codec.expect_map(
            codec.decode(data, max_bytes=MAX_CARD_BYTES),
            "card",
            required={"body": bytes, "sig": bytes},
        )
        body = outer["body"]
        fields = codec.expect_map(
            codec.decode(body, max_bytes=MAX_CARD_BYTES),
            "card body",
            required={
                "v": int,
                "fmt": str,
                "agency": str,
                "suite": str,
                "created": int,
                "sig_pk": bytes,
                "kem_pk": bytes,
            },
        )
        if fields["fmt"] != labels.CARD_FORMAT or fields["v"] != labels.CARD_VERSION:
            raise MalformedInput("card: not a version 1 siko agency card")
        suite = Suite.parse(fields["suite"])
        sign_key = VerifyKey(fields["sig_pk"])
        sign_key.verify(outer["sig"], labels.SIG_CARD, body)
        return cls(
            agency=AgencyId(fields["agency"]),
            suite=suite,
            created=codec.expect_int(fields["created"], "card.created", low=0, high=MAX_TIME_MS),
            sign_key=sign_key,
            kem_key=KemPublic(suite, fields["kem_pk"]),
            body=body,
            signature=outer["sig"],
            key_id=key_id_of(body),
        )

    def serialize(self) -> bytes:
        """The card's canonical bytes, as :meth:`parse` reads them."""
        return codec.encode({"body": self.body, "sig": self.signature})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AgencyCard) and other.body == self.body

    def __hash__(self) -> int:
        return hash(self.body)


def key_id_of(card_body: bytes) -> KeyId:
    """The key id naming a card: the first 16 bytes of SHA-256(KEY_ID || card body)."""
    return KeyId(sha256(labels.KEY_ID, card_body)[:ID_BYTES])


class Identity:
    """An agency's private keys. Never leaves the agency; see :mod:`keys.keyfile`."""

    __slots__ = ("agency", "card", "created", "kem", "signing", "suite")

    def __init__(
        self,
        agency: AgencyId,
        suite: Suite,
        created: int,
        signing: SigningKey,
        kem: KemPrivate,
    ) -> None:
        if kem.suite is not suite:
            raise MalformedInput("identity: encryption key does not match its suite")
        self.agency = AgencyId(agency)
        self.suite = suite
        self.created = codec.expect_int(created, "identity.created", low=0, high=MAX_TIME_MS)
        self.signing = signing
        self.kem = kem
        self.card = self._make_card()

    @classmethod
    def generate(
        cls,
        agency: str,
        *,
        suite: Suite = Suite.MLKEM768_X25519,
        now: int | None = None,
    ) -> Identity:
        """A fresh identity for ``agency`` with new random keys."""
        return cls(
            AgencyId(agency),
            suite,
            now_ms() if now is None else now,
            SigningKey.generate(),
            KemPrivate.generate(suite),
        )

    @classmethod
    def from_raw_keys(
        cls, agency: str, suite: Suite, created: int, *, signing_key: bytes, kem_key: bytes
    ) -> Identity:
        """Rebuild an identity from raw private keys (key files and test vectors only)."""
        return cls(
            AgencyId(agency), suite, created, SigningKey(signing_key), KemPrivate(suite, kem_key)
        )

    def private_keys(self) -> tuple[bytes, bytes]:
        """The raw (signing, encryption) private keys, for key files and test vectors."""
        return self.signing.raw(), self.kem.raw()

    @property
    def key_id(self) -> KeyId:
        """The key id of this identity's card."""
        return self.card.key_id

    def __repr__(self) -> str:
        return f"Identity(agency={self.agency!r}, suite={self.suite.value!r}, key_id={self.key_id})"

    def _make_card(self) -> AgencyCard:
        body = codec.encode(
            {
                "v": labels.CARD_VERSION,
                "fmt": labels.CARD_FORMAT,
                "agency": str(self.agency),
                "suite": self.suite.value,
                "created": self.created,
                "sig_pk": self.signing.public.raw,
                "kem_pk": self.kem.public.raw,
            }
        )
        signature = self.signing.sign(labels.SIG_CARD, body)
        return AgencyCard(
            agency=self.agency,
            suite=self.suite,
            created=self.created,
            sign_key=self.signing.public,
            kem_key=self.kem.public,
            body=body,
            signature=signature,
            key_id=key_id_of(body),
        )
