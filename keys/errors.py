"""Every exception raised by :mod:`keys`.

One tree, rooted in :class:`KeysError`, so a caller can catch everything from this
package in one clause and nothing else::

    KeysError
    ├── MalformedInput        bytes or values that do not have the required structure
    │   ├── LimitExceeded     a size, length, count or depth limit was hit
    │   └── OutsideTimeWindow a signed time is too far from now
    ├── InvalidSignature      a signature does not verify (opaque: no detail, ever)
    ├── DecryptionFailed      a ciphertext or wrapped key does not open (opaque)
    ├── InvalidProof          a Merkle proof or checkpoint does not verify
    ├── WrongKey              the key offered is not the one the data names
    ├── NotARecipient         the envelope was not sealed for this identity
    └── KeyFileError          a key or card file cannot be read; carries the path
        └── WrongPassphrase   wrong passphrase, or the file was altered

Structure errors are precise: they may name the field or the limit, which is public
information about the format. Cryptographic failures are deliberately opaque: they never
say which byte, field or step failed, so they cannot be used as an oracle.
Messages never contain key material, plaintext or passphrases.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "DecryptionFailed",
    "InvalidProof",
    "InvalidSignature",
    "KeyFileError",
    "KeysError",
    "LimitExceeded",
    "MalformedInput",
    "NotARecipient",
    "OutsideTimeWindow",
    "WrongKey",
    "WrongPassphrase",
]


class KeysError(Exception):
    """Base class of every error raised by :mod:`keys`."""


class MalformedInput(KeysError, ValueError):
    """The input does not have the structure the format requires.

    ``what`` names the part at fault (a field name, or a description of the rule);
    it is safe to show to the sender of the input.
    """

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return f"malformed input: {self.what}"


class LimitExceeded(MalformedInput):
    """The input is larger, longer or deeper than a named limit allows."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(what)
        self.limit = limit

    def __str__(self) -> str:
        return f"limit exceeded: {self.what} (at most {self.limit})"


class OutsideTimeWindow(MalformedInput):
    """A signed creation time lies outside the accepted window around now."""

    def __str__(self) -> str:
        return f"outside the time window: {self.what}"


class InvalidSignature(KeysError):
    """A signature does not verify. Deliberately carries no detail."""

    def __str__(self) -> str:
        return "signature does not verify"


class DecryptionFailed(KeysError):
    """Ciphertext could not be opened: wrong key, or the data was altered. Opaque."""

    def __str__(self) -> str:
        return "decryption failed: wrong key, or the data was altered"


class InvalidProof(KeysError):
    """A Merkle inclusion or consistency proof, or a checkpoint, does not verify."""

    def __init__(self, what: str = "proof does not verify") -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return self.what


class WrongKey(KeysError):
    """The key (card or identity) offered is not the one the data names.

    For example: verifying an envelope from ``pp-duisburg`` with the card of
    ``stadt-essen``. Both names are public; the message says which was expected.
    """

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return f"wrong key: {self.what}"


class NotARecipient(KeysError):
    """The envelope names no wrapped key for this identity; ask the sender to re-send."""

    def __init__(self, agency: str) -> None:
        super().__init__(agency)
        self.agency = agency

    def __str__(self) -> str:
        return (
            f"this note was not sealed for {self.agency} (with this key); "
            "ask the sender to include your current agency card"
        )


class KeyFileError(KeysError):
    """A private identity file or public card file cannot be read or written."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(str(path), reason)
        self.path = Path(path)
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class WrongPassphrase(KeyFileError):
    """The passphrase is wrong, or the file was altered. The two cannot be told apart."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(
            path,
            "wrong passphrase, or the file was altered; "
            "try again, or restore the file from your backup",
        )
