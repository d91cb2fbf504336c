"""Identifiers of the protocol: agencies, channels, messages and keys.

Each is a subclass of ``str`` or ``bytes`` whose constructor checks the rule, so an
invalid identifier cannot exist in a typed program:

* :class:`AgencyId` and :class:`ChannelId` are slugs such as ``pp-duisburg``: 3 to 63
  characters, lower-case ASCII letters, digits and single inner hyphens, starting with a
  letter. Slugs are shown to people and appear in audit reports, so they are plain.
* :class:`MessageId` is 16 bytes chosen by the posting client (random by default); it
  makes posting idempotent. Its text form is 32 lower-case hex digits.
* :class:`KeyId` is the 16-byte fingerprint of an agency card; its text form is
  :meth:`KeyId.fingerprint`, groups of four base32 characters that a person can read
  out over the phone to compare keys.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from typing import Final, Self

from keys.errors import MalformedInput

__all__ = ["AgencyId", "ChannelId", "KeyId", "MessageId"]

_SLUG: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
_HEX32: Final = re.compile(r"[0-9a-f]{32}")
SLUG_MIN: Final = 3
SLUG_MAX: Final = 63
ID_BYTES: Final = 16


@functools.lru_cache(maxsize=4096)
def _is_slug(value: str) -> bool:
    """The slug rule; remembered, since an envelope names the same agencies again and again."""
    return SLUG_MIN <= len(value) <= SLUG_MAX and _SLUG.fullmatch(value) is not None


def _check_slug(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise MalformedInput(f"{kind}: expected text")
    if not _is_slug(str(value)):
        raise MalformedInput(
            f"{kind} must be {SLUG_MIN}-{SLUG_MAX} characters of a-z, 0-9 and single "
            "inner hyphens, starting with a letter (for example 'pp-duisburg')"
        )
    return value


class AgencyId(str):
    """The slug naming an agency, e.g. ``pp-duisburg`` or ``stadt-essen-ordnungsamt``."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        return super().__new__(cls, _check_slug("agency id", value))


class ChannelId(str):
    """The slug naming a channel, e.g. ``clan-lagebild-ruhr``."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        return super().__new__(cls, _check_slug("channel id", value))


class _Id16(bytes):
    """Sixteen opaque bytes."""

    __slots__ = ()
    _kind: str = "id"

    def __new__(cls, value: bytes) -> Self:
        if not isinstance(value, bytes) or len(value) != ID_BYTES:
            raise MalformedInput(f"{cls._kind}: expected {ID_BYTES} bytes")
        return super().__new__(cls, value)

    @classmethod
    def from_hex(cls, text: str) -> Self:
        """Parse the text form: exactly 32 lower-case hex digits, nothing else."""
        if not isinstance(text, str) or not _HEX32.fullmatch(text):
            raise MalformedInput(f"{cls._kind}: expected {2 * ID_BYTES} lower-case hex digits")
        return cls(bytes.fromhex(text))

    def __str__(self) -> str:
        return self.hex()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.hex()!r})"


class MessageId(_Id16):
    """A note's id, chosen by the posting client; a retry reuses it."""

    __slots__ = ()
    _kind = "message id"

    @classmethod
    def new(cls) -> MessageId:
        """A fresh random message id."""
        return cls(os.urandom(ID_BYTES))


class KeyId(_Id16):
    """The fingerprint of one agency card (see :func:`keys.identity.key_id_of`)."""

    __slots__ = ()
    _kind = "key id"

    def fingerprint(self) -> str:
        """Groups of four base32 characters, e.g. ``KQ3M-7ZRT-...``, to read aloud."""
        text = base64.b32encode(self).decode("ascii").rstrip("=")
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))
