"""The hub's log key: it signs checkpoints, tombstones and post receipts.

The key belongs to the hub's operator, not to an agency. Auditors and clients configure
its verifier key string (``<origin>+<key hash>+<base64 key>``, c2sp.org/signed-note)
and then need to trust nothing else the operator says: a checkpoint the key signed
commits the operator to one history, and two different checkpoints of the same size are
proof of a fork.

The key file is one canonical map, written once with mode 0600::

    E({"fmt": "siko-log-key", "origin": str, "sk": bin 32, "v": 1})

It is not passphrase-protected: the hub must sign unattended. Protect it like a TLS
private key (docs/THREATS.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from keys import codec
from keys._suites import SigningKey
from keys.checkpoint import Checkpoint, NoteVerifier, sign_checkpoint, verifier_key_string
from keys.errors import KeyFileError, KeysError, MalformedInput
from keys.keyfile import write_new_file
from keys.leaf import Tombstone
from keys.statements import Receipt

__all__ = ["LogKey"]

FORMAT: Final = "siko-log-key"
MAX_FILE_BYTES: Final = 1024
_ORIGIN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-/]{0,127}")


class LogKey:
    """An Ed25519 key that signs for one log, named by the log's origin."""

    __slots__ = ("_key", "origin")

    def __init__(self, origin: str, key: SigningKey) -> None:
        if not isinstance(origin, str) or not _ORIGIN.fullmatch(origin):
            raise MalformedInput("log origin: 1-128 of A-Z a-z 0-9 . - /, e.g. siko.example/log")
        self.origin = origin
        self._key = key

    @classmethod
    def generate(cls, origin: str) -> LogKey:
        """A fresh log key for ``origin``."""
        return cls(origin, SigningKey.generate())

    @property
    def verifier(self) -> NoteVerifier:
        """What an auditor verifies this key's checkpoints with."""
        return NoteVerifier(self.origin, self._key.public.raw)

    @property
    def verifier_key(self) -> str:
        """The verifier key string to publish to auditors and clients."""
        return verifier_key_string(self.origin, self._key.public.raw)

    def sign_checkpoint(self, size: int, root_hash: bytes) -> bytes:
        """The signed note of the checkpoint of a tree of ``size`` with ``root_hash``."""
        return sign_checkpoint(Checkpoint(self.origin, size, root_hash), self.origin, self._key)

    def sign_tombstone(self, tombstone: Tombstone) -> Tombstone:
        """``tombstone`` with this key's signature."""
        return tombstone.signed(self._key)

    def sign_receipt(self, receipt: Receipt) -> bytes:
        """The signature of ``receipt``."""
        return receipt.sign(self._key)

    def serialize(self) -> bytes:
        """The key file's bytes."""
        return codec.encode({"v": 1, "fmt": FORMAT, "origin": self.origin, "sk": self._key.raw()})

    @classmethod
    def parse(cls, data: bytes) -> LogKey:
        """Read a key file's bytes."""
        fields = codec.expect_map(
            codec.decode(data, max_bytes=MAX_FILE_BYTES),
            "log key",
            required={"v": int, "fmt": str, "origin": str, "sk": bytes},
        )
        if fields["fmt"] != FORMAT or fields["v"] != 1:
            raise MalformedInput("not a version 1 siko log key file")
        return cls(fields["origin"], SigningKey(fields["sk"]))

    def save(self, path: Path) -> None:
        """Write a new key file (mode 0600); never overwrites."""
        write_new_file(path, self.serialize(), mode=0o600)

    @classmethod
    def load(cls, path: Path) -> LogKey:
        """Read the key file at ``path``."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise KeyFileError(path, f"cannot read: {exc.strerror}") from None
        try:
            return cls.parse(data)
        except KeysError as exc:
            raise KeyFileError(path, f"not a siko log key file ({exc})") from None
