"""The protective markings every note header carries, readable by hub and auditors.

* :class:`Classification` — the German VS levels, ordered, so the hub can compare a
  note against a channel's ceiling (``OFFEN`` < ``VS-NfD`` < ``VS-VERTRAULICH`` <
  ``GEHEIM``).
* :class:`HandlingCode` — conditions of use H0-H3 (H0: no restriction; H1: not to be
  used as evidence in court without the originator's consent; H2: not to be passed on
  without the originator's consent; H3: other restrictions, named in the note).
* :class:`Tlp` — Traffic Light Protocol 2.0 labels.
* :class:`SourceReliability` (A, B, C, X) and :class:`InfoAssessment` (1-4) — the
  evaluation codes of Directive (EU) 2023/977 practice (the 4x4 system).

The wire form of each is its ``value`` string; :meth:`parse` is the only way in from
decoded input and raises :class:`~keys.errors.MalformedInput` naming the marking.
"""

from __future__ import annotations

import enum
from typing import Self

from keys.errors import MalformedInput

__all__ = ["Classification", "HandlingCode", "InfoAssessment", "SourceReliability", "Tlp"]


class _Marking(enum.Enum):
    @classmethod
    def parse(cls, value: object) -> Self:
        """The member whose wire value is ``value``; refuse anything else."""
        for member in cls:
            if member.value == value and type(value) is str:
                return member
        allowed = ", ".join(str(m.value) for m in cls)
        raise MalformedInput(f"{cls.__name__}: expected one of {allowed}")


class Classification(_Marking):
    """German classification levels (VSA), in ascending order of protection."""

    OFFEN = "OFFEN"
    VS_NFD = "VS-NfD"
    VS_VERTRAULICH = "VS-VERTRAULICH"
    GEHEIM = "GEHEIM"

    @property
    def rank(self) -> int:
        """Position in ascending order; compare ranks, never strings."""
        return list(type(self)).index(self)

    def within(self, ceiling: Classification) -> bool:
        """True when a note of this level may travel in a channel with ``ceiling``."""
        return self.rank <= ceiling.rank


class HandlingCode(_Marking):
    """Conditions of use of the information (H0-H3)."""

    H0 = "H0"
    H1 = "H1"
    H2 = "H2"
    H3 = "H3"


class Tlp(_Marking):
    """Traffic Light Protocol 2.0."""

    CLEAR = "CLEAR"
    GREEN = "GREEN"
    AMBER = "AMBER"
    AMBER_STRICT = "AMBER+STRICT"
    RED = "RED"


class SourceReliability(_Marking):
    """Reliability of the source: A (reliable) .. C (not reliable), X (cannot be judged)."""

    A = "A"
    B = "B"
    C = "C"
    X = "X"


class InfoAssessment(_Marking):
    """Assessment of the information: 1 (known true) .. 4 (cannot be judged)."""

    KNOWN_TRUE = "1"
    KNOWN_PERSONALLY = "2"
    KNOWN_BY_HEARSAY = "3"
    CANNOT_BE_JUDGED = "4"
