"""Small signed statements: the hub's receipt for a post, an agency's read acknowledgement.

A :class:`Receipt` is what a poster keeps: the hub, with its log key, states that the
envelope with this digest was accepted as leaf ``index`` of the audit log. The poster
later checks it against a checkpoint with an inclusion proof.

A :class:`ReadAck` is what a reading agency signs when it acknowledges a channel up to
a stream id; the hub keeps it in the audit log as evidence, so an auditor can show from
the log alone that agency B read note N at time T, without trusting the hub::

    receipt  = E({"at", "channel", "digest", "index", "leaf", "message_id", "v": 1})
    read ack = E({"agency", "at", "channel", "key_id", "position", "v": 1})
    each signed as Ed25519(label || statement bytes), label SIG_RECEIPT or SIG_ACK
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

from keys import codec, labels
from keys._suites import DIGEST, ED25519_SIG, SigningKey, VerifyKey
from keys.errors import MalformedInput
from keys.identity import MAX_TIME_MS, Identity
from keys.ids import AgencyId, ChannelId, KeyId, MessageId

__all__ = ["ReadAck", "Receipt"]

MAX_STATEMENT_BYTES: Final = 2048
MAX_LEAF_BYTES: Final = 1024
#: A Redis stream id in its canonical form: no leading zeros, ASCII digits only.
_STREAM_ID: Final = re.compile(r"(0|[1-9][0-9]{0,19})-(0|[1-9][0-9]{0,19})")


@dataclass(frozen=True)
class Receipt:
    """The hub's signed statement that a note became leaf ``index`` of the log."""

    channel: ChannelId
    message_id: MessageId
    digest: bytes
    index: int
    leaf: bytes
    at: int

    def __post_init__(self) -> None:
        ChannelId(self.channel)
        MessageId(self.message_id)
        codec.expect_bytes(self.digest, "receipt.digest", size=DIGEST)
        codec.expect_int(self.index, "receipt.index", low=0, high=2**63 - 1)
        codec.expect_bytes(self.leaf, "receipt.leaf", max_size=MAX_LEAF_BYTES)
        codec.expect_int(self.at, "receipt.at", low=0, high=MAX_TIME_MS)

    def statement(self) -> bytes:
        """The signed bytes."""
        return self._statement

    @functools.cached_property
    def _statement(self) -> bytes:
        # Encoded once: the hub both sends and signs it, a client both checks and keeps it.
        return codec.encode(
            {
                "v": 1,
                "channel": str(self.channel),
                "message_id": bytes(self.message_id),
                "digest": self.digest,
                "index": self.index,
                "leaf": self.leaf,
                "at": self.at,
            }
        )

    def sign(self, key: SigningKey) -> bytes:
        """The hub's signature over :meth:`statement`."""
        return key.sign(labels.SIG_RECEIPT, self.statement())

    def verify(self, signature: bytes, key: VerifyKey) -> None:
        """Raise :class:`~keys.errors.InvalidSignature` unless the log key signed it."""
        key.verify(signature, labels.SIG_RECEIPT, self.statement())

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        """Decode a receipt statement strictly."""
        fields = codec.expect_map(
            codec.decode(data, max_bytes=MAX_STATEMENT_BYTES),
            "receipt",
            required={
                "v": int,
                "channel": str,
                "message_id": bytes,
                "digest": bytes,
                "index": int,
                "leaf": bytes,
                "at": int,
            },
        )
        codec.expect_int(fields["v"], "receipt.v", low=1, high=1)
        return cls(
            ChannelId(fields["channel"]),
            MessageId(fields["message_id"]),
            codec.expect_bytes(fields["digest"], "receipt.digest", size=DIGEST),
            codec.expect_int(fields["index"], "receipt.index", low=0, high=2**63 - 1),
            codec.expect_bytes(fields["leaf"], "receipt.leaf", max_size=MAX_LEAF_BYTES),
            codec.expect_int(fields["at"], "receipt.at", low=0, high=MAX_TIME_MS),
        )


@dataclass(frozen=True)
class ReadAck:
    """An agency's signed statement: it has read ``channel`` up to ``position``."""

    agency: AgencyId
    key_id: KeyId
    channel: ChannelId
    position: str
    at: int

    def __post_init__(self) -> None:
        AgencyId(self.agency)
        KeyId(self.key_id)
        ChannelId(self.channel)
        if not isinstance(self.position, str) or not _STREAM_ID.fullmatch(self.position):
            raise MalformedInput("ack.position: expected a stream id like 1764100000000-0")
        codec.expect_int(self.at, "ack.at", low=0, high=MAX_TIME_MS)

    def statement(self) -> bytes:
        """The signed bytes."""
        return codec.encode(
            {
                "v": 1,
                "agency": str(self.agency),
                "key_id": bytes(self.key_id),
                "channel": str(self.channel),
                "position": self.position,
                "at": self.at,
            }
        )

    @classmethod
    def make(
        cls, identity: Identity, channel: str, position: str, at: int
    ) -> tuple[ReadAck, bytes]:
        """An acknowledgement by ``identity`` and its signature."""
        ack = cls(identity.agency, identity.key_id, ChannelId(channel), position, at)
        return ack, identity.signing.sign(labels.SIG_ACK, ack.statement())

    def verify(self, signature: bytes, key: VerifyKey) -> None:
        """Raise :class:`~keys.errors.InvalidSignature` unless the agency's key signed it."""
        if len(signature) != ED25519_SIG:
            raise MalformedInput("ack signature: expected 64 bytes")
        key.verify(signature, labels.SIG_ACK, self.statement())

    @classmethod
    def parse(cls, data: bytes) -> ReadAck:
        """Decode an acknowledgement statement strictly."""
        fields = codec.expect_map(
            codec.decode(data, max_bytes=MAX_STATEMENT_BYTES),
            "ack",
            required={
                "v": int,
                "agency": str,
                "key_id": bytes,
                "channel": str,
                "position": str,
                "at": int,
            },
        )
        codec.expect_int(fields["v"], "ack.v", low=1, high=1)
        return cls(
            AgencyId(fields["agency"]),
            KeyId(fields["key_id"]),
            ChannelId(fields["channel"]),
            fields["position"],
            fields["at"],
        )
