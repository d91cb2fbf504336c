"""keys/markings.py: the protective markings of a note header."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from keys.errors import MalformedInput
from keys.markings import Classification, HandlingCode, InfoAssessment, SourceReliability, Tlp

MARKINGS = [Classification, HandlingCode, Tlp, SourceReliability, InfoAssessment]

WIRE_VALUES = {
    Classification: ["OFFEN", "VS-NfD", "VS-VERTRAULICH", "GEHEIM"],
    HandlingCode: ["H0", "H1", "H2", "H3"],
    Tlp: ["CLEAR", "GREEN", "AMBER", "AMBER+STRICT", "RED"],
    SourceReliability: ["A", "B", "C", "X"],
    InfoAssessment: ["1", "2", "3", "4"],
}


@pytest.mark.parametrize(
    ("cls", "value"),
    [(cls, value) for cls, values in WIRE_VALUES.items() for value in values],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_parse_each_member(cls: Any, value: str) -> None:
    member = cls.parse(value)
    assert isinstance(member, cls)
    assert member.value == value


@pytest.mark.parametrize("cls", MARKINGS, ids=lambda c: c.__name__)
def test_wire_values_are_exactly_the_documented_ones(cls: Any) -> None:
    assert [m.value for m in cls] == WIRE_VALUES[cls]


UNKNOWN = {
    Classification: ["offen", "VS-NFD", "VS_NFD", "VS_NfD", "STRENG GEHEIM", "OFFEN ", ""],
    HandlingCode: ["h1", "H4", "H", "1", ""],
    Tlp: ["WHITE", "AMBER STRICT", "amber", "AMBER+", "TLP:RED", ""],
    SourceReliability: ["D", "a", "E", "AB", ""],
    InfoAssessment: ["0", "5", "6", "01", "1 ", "\u0661", ""],
}


@pytest.mark.parametrize(
    ("cls", "value"),
    [(cls, value) for cls, values in UNKNOWN.items() for value in values],
    ids=lambda v: ascii(v) if isinstance(v, str) else v.__name__,
)
def test_parse_refuses_unknown_values(cls: Any, value: str) -> None:
    with pytest.raises(MalformedInput) as info:
        cls.parse(value)
    assert type(info.value) is MalformedInput
    message = str(info.value)
    assert message.startswith(f"malformed input: {cls.__name__}: expected one of ")
    assert message.endswith(", ".join(WIRE_VALUES[cls]))


NON_STR: dict[Any, list[Any]] = {
    InfoAssessment: [1, 2, 4, 1.0, b"1", True, None],
    SourceReliability: [b"A", None, ["A"]],
    Classification: [b"OFFEN", 0, None, Classification.OFFEN],
    HandlingCode: [0, b"H0", HandlingCode.H0],
    Tlp: [None, b"RED", {"RED"}],
}


@pytest.mark.parametrize(
    ("cls", "value"),
    [(cls, value) for cls, values in NON_STR.items() for value in values],
    ids=lambda v: getattr(v, "__name__", None) or repr(v),
)
def test_parse_refuses_non_str(cls: Any, value: Any) -> None:
    with pytest.raises(MalformedInput, match=f"^malformed input: {cls.__name__}: "):
        cls.parse(value)


def test_parse_refuses_str_subclasses() -> None:
    class Sneaky(str):
        pass

    with pytest.raises(MalformedInput):
        Tlp.parse(Sneaky("RED"))


def test_parse_does_not_accept_member_names() -> None:
    with pytest.raises(MalformedInput):
        Classification.parse("VS_NFD")
    with pytest.raises(MalformedInput):
        InfoAssessment.parse("KNOWN_TRUE")


def test_classification_ranks_ascend() -> None:
    ranked = [Classification.OFFEN, Classification.VS_NFD, Classification.VS_VERTRAULICH]
    ranked.append(Classification.GEHEIM)
    assert [c.rank for c in ranked] == [0, 1, 2, 3]
    assert sorted(Classification, key=lambda c: c.rank, reverse=True) == ranked[::-1]


@pytest.mark.parametrize(
    ("level", "ceiling"),
    list(itertools.product(Classification, repeat=2)),
    ids=lambda c: c.value,
)
def test_classification_within(level: Classification, ceiling: Classification) -> None:
    order = list(WIRE_VALUES[Classification])
    expected = order.index(level.value) <= order.index(ceiling.value)
    assert level.within(ceiling) is expected


def test_classification_within_examples() -> None:
    assert Classification.VS_NFD.within(Classification.VS_NFD)
    assert Classification.OFFEN.within(Classification.GEHEIM)
    assert not Classification.GEHEIM.within(Classification.VS_VERTRAULICH)
    # String order would say "VS-NfD" > "GEHEIM"; rank order must not.
    assert "VS-NfD" > "GEHEIM"
    assert not Classification.GEHEIM.within(Classification.VS_NFD)
