"""keys/codec.py: canonical msgpack encoding and strict, bounded decoding.

The module docstring of keys/codec.py is the specification these tests check: one
encoding per value (shortest headers, map keys sorted by their UTF-8 bytes), and a
decoder that refuses everything else with :class:`MalformedInput`.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keys import codec
from keys.errors import KeysError, LimitExceeded, MalformedInput

BIG = 1 << 20

# -- helpers ----------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality that also requires equal types all the way down (``True`` is not ``1``)."""
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def refused(data: Any, exc: type[MalformedInput] = MalformedInput, **bounds: int) -> MalformedInput:
    """Decode ``data`` and return the exception, which must be exactly ``exc``."""
    bounds.setdefault("max_bytes", BIG)
    with pytest.raises(MalformedInput) as info:
        codec.decode(data, **bounds)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    return info.value


def limited(data: Any, **bounds: int) -> LimitExceeded:
    """Decode ``data``, which must raise exactly LimitExceeded, and return it."""
    exc = refused(data, LimitExceeded, **bounds)
    assert isinstance(exc, LimitExceeded)
    return exc


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=40)
    | st.binary(max_size=300)
)


def _values(depth: int) -> st.SearchStrategy[codec.Value]:
    if depth == 0:
        return SCALARS
    inner = _values(depth - 1)
    return (
        SCALARS
        | st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    )


VALUES = _values(4)
FAST = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)

# -- canonical encoding -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (2**32 - 1, "ceffffffff"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-32768, "d18000"),
        (-32769, "d2ffff7fff"),
        (-(2**31), "d280000000"),
        (-(2**31) - 1, "d3ffffffff7fffffff"),
        (-(2**63), "d38000000000000000"),
    ],
)
def test_integers_use_the_shortest_form(value: int, expected: str) -> None:
    assert codec.encode(value).hex() == expected
    assert same(codec.decode(bytes.fromhex(expected), max_bytes=9), value)


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("", "a0"),
        ("x" * 31, "bf"),
        ("x" * 32, "d920"),
        ("x" * 255, "d9ff"),
        ("x" * 256, "da0100"),
        ("x" * 65536, "db00010000"),
        (b"", "c400"),
        (b"x" * 255, "c4ff"),
        (b"x" * 256, "c50100"),
        (b"x" * 65536, "c600010000"),
        ([None] * 15, "9f"),
        ([None] * 16, "dc0010"),
        ({f"k{i:02}": None for i in range(15)}, "8f"),
        ({f"k{i:02}": None for i in range(16)}, "de0010"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 12 else type(v).__name__,
)
def test_headers_use_the_shortest_form(value: codec.Value, header: str) -> None:
    data = codec.encode(value)
    assert data.hex().startswith(header)
    assert same(codec.decode(data, max_bytes=BIG, max_items=64), value)


def test_constants() -> None:
    assert codec.encode(None) == b"\xc0"
    assert codec.encode(False) == b"\xc2"
    assert codec.encode(True) == b"\xc3"


def test_bool_and_int_are_distinct() -> None:
    assert codec.encode(True) != codec.encode(1)
    assert codec.encode(False) != codec.encode(0)
    assert codec.decode(b"\xc3", max_bytes=1) is True
    assert type(codec.decode(b"\x01", max_bytes=1)) is int


def test_bytes_and_str_are_distinct() -> None:
    assert codec.encode("ab") == b"\xa2ab"
    assert codec.encode(b"ab") == b"\xc4\x02ab"
    assert type(codec.decode(b"\xa2ab", max_bytes=3)) is str
    assert type(codec.decode(b"\xc4\x02ab", max_bytes=4)) is bytes


def test_map_keys_are_sorted_by_utf8_bytes() -> None:
    # Lexicographic on the UTF-8 bytes (not shortest-first as in CBOR's old canonical form).
    expected = bytes.fromhex("83a16102a2616103a16201")
    assert codec.encode({"b": 1, "a": 2, "aa": 3}) == expected
    assert codec.encode({"aa": 3, "b": 1, "a": 2}) == expected
    # "Z" (0x5a) sorts before "a" (0x61); "é" (0xc3 0xa9) sorts after "z".
    decoded = codec.decode(codec.encode({"z": 0, "é": 0, "a": 0, "Z": 0}), max_bytes=99)
    assert isinstance(decoded, dict)
    assert list(decoded) == [
        "Z",
        "a",
        "z",
        "é",
    ]


@FAST
@given(st.dictionaries(st.text(max_size=6), SCALARS, max_size=8), st.data())
def test_map_encoding_is_independent_of_insertion_order(
    value: dict[str, codec.Value], data: st.DataObject
) -> None:
    shuffled = dict(data.draw(st.permutations(list(value.items()))))
    assert codec.encode(shuffled) == codec.encode(value)


_NO_SURROGATES = st.text(st.characters(exclude_categories=("Cs",)), max_size=6)


@FAST
@given(st.dictionaries(_NO_SURROGATES, SCALARS, max_size=8))
def test_map_keys_come_out_in_utf8_byte_order_for_any_text(value: dict[str, codec.Value]) -> None:
    """Any code points (astral ones too): keys sorted as text are sorted as UTF-8 bytes,
    and decode accepts exactly that order back."""
    decoded = codec.decode(codec.encode(value), max_bytes=1 << 16)
    assert isinstance(decoded, dict)
    encoded_keys = [key.encode("utf-8") for key in decoded]
    assert encoded_keys == sorted(encoded_keys)


def test_nested_maps_are_sorted_too() -> None:
    a = codec.encode({"x": [{"b": 1, "a": 2}], "w": {"d": None, "c": b""}})
    b = codec.encode({"w": {"c": b"", "d": None}, "x": [{"a": 2, "b": 1}]})
    assert a == b


def test_tuples_encode_as_arrays() -> None:
    assert codec.encode((1, "a")) == codec.encode([1, "a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [1.0, 1.5, float("nan"), set(), frozenset(), bytearray(b"x"), memoryview(b"x"), object(), 1j],
    ids=lambda v: type(v).__name__,
)
def test_encode_refuses_types_without_a_canonical_form(value: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        codec.encode(value)
    assert type(info.value) is MalformedInput
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("value", [[1.0], {"a": 1.0}, {"a": [{"b": {1, 2}}]}])
def test_encode_refuses_bad_types_nested(value: Any) -> None:
    with pytest.raises(MalformedInput):
        codec.encode(value)


@pytest.mark.parametrize("key", [1, b"a", None, True, ("a",)], ids=repr)
def test_encode_refuses_non_str_map_keys(key: Any) -> None:
    with pytest.raises(MalformedInput, match="map keys must be strings"):
        codec.encode({key: 1})


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, 2**100])
def test_encode_refuses_integers_out_of_range(value: int) -> None:
    with pytest.raises(MalformedInput, match="integer out of range"):
        codec.encode(value)


@pytest.mark.parametrize("leaf", [None, True, "text", b"bytes", 7], ids=repr)
@pytest.mark.parametrize("container", ["list", "map"])
def test_encode_bounds_the_depth_of_every_kind_of_leaf(leaf: codec.Value, container: str) -> None:
    """A leaf one level too deep is refused whatever its type, in a list or a map: the
    encoder's shortcut for leaves must not skip the depth check."""

    def nest(levels: int) -> codec.Value:
        value = leaf
        for _ in range(levels):
            value = [value] if container == "list" else {"k": value}
        return value

    assert codec.encode(nest(codec.MAX_DEPTH)) == msgpack.packb(
        nest(codec.MAX_DEPTH), use_bin_type=True
    )
    with pytest.raises(LimitExceeded):
        codec.encode(nest(codec.MAX_DEPTH + 1))


def test_encode_bounds_nesting() -> None:
    ok: codec.Value = None
    for _ in range(codec.MAX_DEPTH):
        ok = [ok]
    codec.encode(ok)
    with pytest.raises(LimitExceeded) as info:
        codec.encode([ok])
    assert info.value.limit == codec.MAX_DEPTH
    assert str(info.value) == f"limit exceeded: nesting depth (at most {codec.MAX_DEPTH})"


@pytest.mark.parametrize("value", ["\ud800", "ok\udfff", {"\ud800": 1}, ["\udc80"]], ids=ascii)
def test_encode_refuses_lone_surrogates_with_malformed_input(value: Any) -> None:
    # Regression (fixed; keys/codec.py, encode): a str holding a lone surrogate has no UTF-8
    # form, so it has no canonical encoding; encode() lets msgpack's (or str.encode's)
    # UnicodeEncodeError escape instead of raising MalformedInput. That breaks the
    # promise "every error is a KeysError" (keys/__init__.py): e.g. note text arriving
    # from a client as JSON "\ud800" crashes seal() with a non-KeysError.
    with pytest.raises(MalformedInput):
        codec.encode(value)


# -- round trips ----------------------------------------------------------------------------


@FAST
@given(VALUES)
def test_round_trip(value: codec.Value) -> None:
    data = codec.encode(value)
    decoded = codec.decode(data, max_bytes=len(data))
    assert same(decoded, value)
    assert codec.encode(decoded) == data


@settings(max_examples=1000, deadline=None, database=None)
@given(st.binary(max_size=64))
def test_decode_of_random_bytes_only_raises_malformed_input(data: bytes) -> None:
    try:
        value = codec.decode(data, max_bytes=64)
    except MalformedInput:
        return
    assert codec.encode(value) == data  # anything accepted is canonical


@FAST
@given(VALUES, st.data())
def test_decode_of_mutated_encodings_only_raises_malformed_input(
    value: codec.Value, data: st.DataObject
) -> None:
    raw = bytearray(codec.encode(value))
    position = data.draw(st.integers(0, len(raw) - 1))
    raw[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw.insert(data.draw(st.integers(0, len(raw))), data.draw(st.integers(0, 255)))
    try:
        decoded = codec.decode(bytes(raw), max_bytes=BIG)
    except MalformedInput:
        return
    assert codec.encode(decoded) == bytes(raw)


# -- decode refusals -----------------------------------------------------------------------

SAMPLE: codec.Value = {
    "a": [1, -200, 70000, 2**40, -(2**40), "x" * 40, b"y" * 300, None, True, False],
    "b": {"c": {}, "d": []},
    "é": "ü",
}


@pytest.mark.parametrize(
    "data", ["\xc0", bytearray(b"\xc0"), memoryview(b"\xc0"), None, 0, [192]], ids=repr
)
def test_decode_refuses_non_bytes(data: Any) -> None:
    assert str(refused(data)) == "malformed input: expected bytes"


def test_decode_refuses_oversize_input_before_parsing() -> None:
    data = codec.encode("x" * 100)
    assert codec.decode(data, max_bytes=len(data)) == "x" * 100
    exc = limited(data, max_bytes=len(data) - 1)
    assert exc.limit == len(data) - 1
    assert str(exc) == f"limit exceeded: encoded size in bytes (at most {len(data) - 1})"
    # Size is checked before anything else: even garbage is refused as "too large".
    limited(b"\xc1" * 11, max_bytes=10)


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", b"\xc1", b"\x91"])
def test_decode_refuses_trailing_bytes(extra: bytes) -> None:
    exc = refused(codec.encode(SAMPLE) + extra)
    assert "trailing bytes" in str(exc)


def test_decode_refuses_every_truncation() -> None:
    data = codec.encode(SAMPLE)
    for cut in range(len(data)):
        with pytest.raises(MalformedInput) as info:
            codec.decode(data[:cut], max_bytes=BIG)
        assert type(info.value) is MalformedInput, cut


@pytest.mark.parametrize(
    "hexdata",
    [
        "cc01",  # uint8 for a positive fixint
        "cd0001",  # uint16 for 1
        "cd00ff",  # uint16 for a value that fits uint8
        "ce000000ff",  # uint32
        "cf00000000000000ff",  # uint64
        "d001",  # int8 for a positive value
        "d0ff",  # int8 for a negative fixint
        "d1ffff",  # int16 for -1
        "d2ffffff80",  # int32 for -128
        "d3ffffffffffffff80",  # int64 for -128
        "d9036162 63",  # str8 for a short string
        "da0003616263",  # str16 for a short string
        "db00000003616263",  # str32
        "c50003616263",  # bin16 for a short bin
        "c600000003616263",  # bin32
        "dc000101",  # array16 for one item
        "dd0000000101",  # array32
        "de0001a16101",  # map16 for one entry
        "df00000001a16101",  # map32
        "82a16201a16102",  # unsorted keys
        "82a16101a16102",  # duplicate keys
        "82a16101a16101",  # duplicate keys, same value
        "82a2616101a16102",  # "aa" before "a"
    ],
)
def test_decode_refuses_non_canonical_forms(hexdata: str) -> None:
    data = bytes.fromhex(hexdata.replace(" ", ""))
    assert str(refused(data)) == "malformed input: not in canonical form"


@pytest.mark.parametrize(
    "hexdata",
    ["ca3f800000", "cb3ff0000000000000", "91ca00000000", "81a161cb0000000000000000"],
    ids=["float32", "float64", "nested", "in-map"],
)
def test_decode_refuses_floats(hexdata: str) -> None:
    exc = refused(bytes.fromhex(hexdata))
    assert "float" in str(exc) or "not a valid msgpack value" in str(exc)


@pytest.mark.parametrize(
    "hexdata",
    [
        "d40100",  # fixext1
        "d50100 00",  # fixext2
        "d6ff00000000",  # timestamp32
        "c70005",  # ext8 with zero length
        "c700ff",  # ext8, timestamp type, zero length
        "c8000105",  # ext16, zero length
        "c90000000005",  # ext32, zero length
        "91c70005",  # nested
    ],
)
def test_decode_refuses_extension_types(hexdata: str) -> None:
    refused(bytes.fromhex(hexdata.replace(" ", "")))


@pytest.mark.parametrize(
    "hexdata",
    [
        "810101",  # int key
        "81c001",  # nil key
        "81c301",  # bool key
        "81c4016101",  # bin key
        "8191a16101",  # array key
        "8180 01",  # map key
    ],
)
def test_decode_refuses_non_str_map_keys(hexdata: str) -> None:
    refused(bytes.fromhex(hexdata.replace(" ", "")))


@pytest.mark.parametrize(
    "hexdata", ["a1ff", "a2c3 28", "a3eda080", "81a1ff01", "a2c0 80", "a4f4908080"]
)
def test_decode_refuses_invalid_utf8(hexdata: str) -> None:
    # 0xff never occurs in UTF-8; c3 28 is a broken sequence; ed a0 80 is an encoded
    # surrogate; c0 80 an over-long NUL; f4 90 80 80 is above U+10FFFF.
    assert "not a valid msgpack value" in str(refused(bytes.fromhex(hexdata.replace(" ", ""))))


@pytest.mark.parametrize("hexdata", ["c1", "", "91", "a5ab", "c403ab"])
def test_decode_refuses_invalid_and_incomplete_values(hexdata: str) -> None:
    refused(bytes.fromhex(hexdata))


def msgpack_nested(depth: int, kind: str) -> bytes:
    """``depth`` arrays (or one-entry maps) around the integer 1, written by hand."""
    header = b"\x91" if kind == "list" else b"\x81\xa1k"
    return header * depth + b"\x01"


@pytest.mark.parametrize("kind", ["list", "map"])
def test_decode_bounds_nesting(kind: str) -> None:
    assert codec.decode(msgpack_nested(8, kind), max_bytes=BIG) is not None
    exc = limited(msgpack_nested(9, kind))
    assert exc.limit == codec.MAX_DEPTH
    assert codec.decode(msgpack_nested(2, kind), max_bytes=BIG, max_depth=2) is not None
    exc = limited(msgpack_nested(3, kind), max_depth=2)
    assert exc.limit == 2
    assert str(exc) == "limit exceeded: nesting depth (at most 2)"


def test_decode_bounds_nesting_at_depth_zero() -> None:
    assert codec.decode(b"\x01", max_bytes=1, max_depth=0) == 1
    assert codec.decode(b"\x90", max_bytes=1, max_depth=0) == []
    limited(b"\x91\x01", max_depth=0)


def test_decode_refuses_very_deep_nesting() -> None:
    limited(msgpack_nested(100, "list"))
    with pytest.raises(MalformedInput):  # exact class: see the regression test below
        codec.decode(msgpack_nested(100_000, "list"), max_bytes=BIG)


def test_decode_honours_a_max_depth_above_the_default() -> None:
    # Regression (fixed; keys/codec.py, decode -> encode -> _canonical): decode() re-encodes with
    # encode(), whose depth check is the fixed MAX_DEPTH (8), so decode(max_depth=12)
    # refuses a canonical depth-10 value with "nesting depth (at most 8)" although the
    # caller allowed 12. The max_depth argument can only lower the bound, not raise it,
    # and the error names a limit the caller did not set.
    data = msgpack_nested(10, "list")
    assert codec.decode(data, max_bytes=BIG, max_depth=12) is not None


def test_decode_accepts_exactly_max_items() -> None:
    assert codec.decode(codec.encode([0] * 16), max_bytes=BIG, max_items=16) == [0] * 16
    big: dict[str, codec.Value] = {f"k{i:04}": i for i in range(codec.MAX_ITEMS)}
    assert codec.decode(codec.encode(big), max_bytes=BIG) == big


ITEM_BOMBS = {
    "array32 claiming 2**32-1": b"\xdd\xff\xff\xff\xff",
    "map32 claiming 2**32-1": b"\xdf\xff\xff\xff\xff",
    "array16 claiming 65535": b"\xdc\xff\xff" + b"\x00" * 100,
    "array of MAX_ITEMS+1": codec.encode([0] * (codec.MAX_ITEMS + 1)),
    "map of MAX_ITEMS+1": codec.encode({f"k{i:04}": 0 for i in range(codec.MAX_ITEMS + 1)}),
    "nested array of MAX_ITEMS+1": codec.encode([[0] * (codec.MAX_ITEMS + 1)]),
}


@pytest.mark.parametrize("data", ITEM_BOMBS.values(), ids=ITEM_BOMBS.keys())
def test_decode_refuses_too_many_items_fast_and_with_little_memory(data: bytes) -> None:
    tracemalloc.start()
    try:
        started = time.perf_counter()
        with pytest.raises(MalformedInput):  # exact class: see the regression test below
            codec.decode(data, max_bytes=BIG)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.5
    assert peak < 1 << 20


@pytest.mark.parametrize(
    ("data", "max_items"),
    [
        (ITEM_BOMBS["array32 claiming 2**32-1"], codec.MAX_ITEMS),
        (ITEM_BOMBS["map32 claiming 2**32-1"], codec.MAX_ITEMS),
        (codec.encode([0] * 5), 4),
        (codec.encode({"a": 0, "b": 0, "c": 0}), 2),
    ],
    ids=["array32-bomb", "map32-bomb", "array-5-of-4", "map-3-of-2"],
)
def test_decode_reports_too_many_items_as_limit_exceeded(data: bytes, max_items: int) -> None:
    # Regression (fixed; keys/codec.py, decode/_unpack): decode's docstring promises LimitExceeded
    # when data "holds an array or map of more than max_items entries", but msgpack's
    # max_array_len/max_map_len ValueError is mapped to the generic
    # MalformedInput("not a valid msgpack value"): the exact class is wrong and the
    # limit is not named (no .limit). The refusal itself is fast and cheap (see the
    # test above). Likewise nesting deeper than msgpack's own stack (StackError, e.g.
    # 100,000 nested arrays) comes out as MalformedInput rather than LimitExceeded.
    exc = limited(data, max_items=max_items)
    assert exc.limit == max_items


def test_decode_messages_do_not_echo_the_input() -> None:
    secret = "TOPSECRET-4711"
    bad = [
        codec.encode({"k": secret}) + b"\x00",
        codec.encode({"k": secret})[:-1],
        bytes.fromhex("cd0001") + secret.encode(),
        bytes.fromhex("82")
        + codec.encode("b")
        + codec.encode(secret)
        + codec.encode("a")
        + b"\x01",
        b"\x92" + codec.encode(secret) + b"\xca\x00\x00\x00\x00",
    ]
    for data in bad:
        with pytest.raises(MalformedInput) as info:
            codec.decode(data, max_bytes=BIG)
        assert secret not in str(info.value)
        assert secret not in repr(info.value.args)


def test_errors_are_keys_errors_and_value_errors() -> None:
    exc = refused(b"\xc1")
    assert exc.what == "not a valid msgpack value"
    assert isinstance(exc, KeysError)
    assert isinstance(exc, ValueError)


# -- expect_* ---------------------------------------------------------------------------------

REQUIRED = {"n": int, "s": str, "b": bytes}


def test_expect_map_accepts_the_exact_shape() -> None:
    value: dict[str, codec.Value] = {"n": 1, "s": "x", "b": b""}
    assert codec.expect_map(value, "rec", required=REQUIRED) is value
    assert codec.expect_map(value, "rec", required=REQUIRED, optional={"o": list}) is value
    with_optional: dict[str, codec.Value] = {**value, "o": []}
    assert codec.expect_map(with_optional, "rec", required=REQUIRED, optional={"o": list})


@pytest.mark.parametrize("value", [[], "n", b"", None, 1, [("n", 1)]], ids=repr)
def test_expect_map_refuses_non_maps(value: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        codec.expect_map(value, "rec", required=REQUIRED)
    assert str(info.value) == "malformed input: rec: expected a map"


def test_expect_map_refuses_unknown_field() -> None:
    with pytest.raises(MalformedInput) as info:
        codec.expect_map({"n": 1, "s": "x", "b": b"", "zz": 0}, "rec", required=REQUIRED)
    assert str(info.value) == "malformed input: rec: unknown field 'zz'"


def test_expect_map_refuses_missing_field() -> None:
    with pytest.raises(MalformedInput) as info:
        codec.expect_map({"n": 1, "b": b""}, "rec", required=REQUIRED, optional={"s": str})
    assert type(info.value) is MalformedInput
    with pytest.raises(MalformedInput) as info:
        codec.expect_map({"n": 1, "b": b""}, "rec", required=REQUIRED)
    assert str(info.value) == "malformed input: rec: missing field 's'"


@pytest.mark.parametrize(
    ("field", "bad", "type_name"),
    [
        ("n", True, "int"),
        ("n", False, "int"),
        ("n", "1", "int"),
        ("n", None, "int"),
        ("s", b"x", "str"),
        ("b", "x", "bytes"),
        ("b", bytearray(b"x"), "bytes"),
    ],
    ids=repr,
)
def test_expect_map_refuses_wrong_types(field: str, bad: Any, type_name: str) -> None:
    value: dict[str, Any] = {"n": 1, "s": "x", "b": b"", field: bad}
    with pytest.raises(MalformedInput) as info:
        codec.expect_map(value, "rec", required=REQUIRED)
    assert str(info.value) == f"malformed input: rec.{field}: expected {type_name}"


def test_expect_map_checks_optional_field_types() -> None:
    with pytest.raises(MalformedInput, match=r"rec\.o: expected list"):
        codec.expect_map(
            {"n": 1, "s": "", "b": b"", "o": {}}, "rec", required=REQUIRED, optional={"o": list}
        )


def test_expect_bytes() -> None:
    assert codec.expect_bytes(b"abc", "f") == b"abc"
    assert codec.expect_bytes(b"abc", "f", size=3) == b"abc"
    assert codec.expect_bytes(b"abc", "f", max_size=3) == b"abc"
    assert codec.expect_bytes(b"x" * 10_000, "f") == b"x" * 10_000  # max_size=0: no bound
    with pytest.raises(MalformedInput) as info:
        codec.expect_bytes(b"ab", "f", size=3)
    assert type(info.value) is MalformedInput
    assert str(info.value) == "malformed input: f: expected 3 bytes"
    with pytest.raises(MalformedInput, match="f: expected 3 bytes"):
        codec.expect_bytes(b"abcd", "f", size=3)
    with pytest.raises(LimitExceeded) as limit:
        codec.expect_bytes(b"abcd", "f", max_size=3)
    assert limit.value.limit == 3
    assert str(limit.value) == "limit exceeded: f: length in bytes (at most 3)"


@pytest.mark.parametrize("value", ["abc", bytearray(b"abc"), memoryview(b"abc"), None, 3])
def test_expect_bytes_refuses_non_bytes(value: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        codec.expect_bytes(value, "f", size=3)
    assert str(info.value) == "malformed input: f: expected bytes"


def test_expect_int() -> None:
    assert codec.expect_int(0, "i", low=0, high=10) == 0
    assert codec.expect_int(10, "i", low=0, high=10) == 10
    assert codec.expect_int(-5, "i", low=-5, high=-5) == -5
    for bad in (-1, 11, 2**64):
        with pytest.raises(MalformedInput) as info:
            codec.expect_int(bad, "i", low=0, high=10)
        assert str(info.value) == "malformed input: i: out of range 0..10"


@pytest.mark.parametrize("value", [True, False, "1", 1.0, None, b"\x01"], ids=repr)
def test_expect_int_refuses_non_int(value: Any) -> None:
    # bool is a subclass of int in Python, but never an integer on the wire.
    with pytest.raises(MalformedInput) as info:
        codec.expect_int(value, "i", low=0, high=10)
    assert str(info.value) == "malformed input: i: expected an integer"


def test_expect_list() -> None:
    assert codec.expect_list([], "l", max_items=0) == []
    assert codec.expect_list([1, 2], "l", max_items=2) == [1, 2]
    with pytest.raises(LimitExceeded) as info:
        codec.expect_list([1, 2, 3], "l", max_items=2)
    assert info.value.limit == 2
    assert str(info.value) == "limit exceeded: l: number of entries (at most 2)"


@pytest.mark.parametrize("value", [(1,), {"a": 1}, "ab", b"ab", None], ids=repr)
def test_expect_list_refuses_non_lists(value: Any) -> None:
    with pytest.raises(MalformedInput) as info:
        codec.expect_list(value, "l", max_items=5)
    assert str(info.value) == "malformed input: l: expected a list"
