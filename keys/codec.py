"""Canonical msgpack encoding and strict, bounded decoding of untrusted bytes.

Everything that is signed or hashed is encoded with :func:`encode`, which has exactly
one output for a given value:

* allowed types: ``None``, ``bool``, ``int`` (-2**63 .. 2**64-1), ``str`` (UTF-8),
  ``bytes`` (msgpack bin), ``list`` and ``dict`` with ``str`` keys; no floats, no
  extension types;
* every integer, string, bin, array and map header in its shortest form (what msgpack
  itself writes);
* map entries sorted by the UTF-8 bytes of their keys.

:func:`decode` is the only door from untrusted bytes to values. It refuses input
larger than ``max_bytes`` before parsing, bounds every length and the nesting depth,
refuses floats and extension types, requires map keys to be strings in canonical order,
and finally re-encodes the value and requires the result to equal the input. That last
step rejects every other non-canonical form (duplicate map keys, over-long integers or
headers, trailing bytes), so two different byte strings never decode to the same signed
value. (The decoded value is re-packed as it is, without the sorting copy that
:func:`encode` makes: its keys were just checked to be in order.)

The ``expect_*`` helpers check the shape of decoded values with exact types
(``True`` is not an ``int`` here) and raise :class:`MalformedInput` naming the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, TypeAlias

import msgpack

from keys.errors import LimitExceeded, MalformedInput

Value: TypeAlias = bool | int | str | bytes | list["Value"] | dict[str, "Value"] | None

#: Default bound on nesting: no record of the protocol is deeper than this.
MAX_DEPTH: Final = 8
#: Default bound on the number of entries of one array or map.
MAX_ITEMS: Final = 1024

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1
_SCALARS: Final = (bool, int, str, bytes)
_CONTAINERS: Final = (list, dict)
#: What the canonical form keeps as it is: no range to check, nothing inside.
_LEAVES: Final = frozenset({type(None), bool, str, bytes})


def encode(value: Value, *, max_depth: int = MAX_DEPTH) -> bytes:
    """Return the one canonical msgpack encoding of ``value``.

    Raises:
        MalformedInput: ``value`` holds a type the canonical form does not allow, or
            text that is not valid Unicode (a lone surrogate).
        LimitExceeded: ``value`` nests deeper than ``max_depth``.
    """
    try:
        tree = _canonical(value, 0, max_depth)
        return msgpack.packb(tree, use_bin_type=True)  # type: ignore[no-any-return]
    except UnicodeEncodeError:
        raise MalformedInput("text is not valid Unicode (lone surrogate)") from None


def decode(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    max_items: int = MAX_ITEMS,
) -> Value:
    """Decode canonical msgpack ``data`` under the given bounds.

    Raises:
        LimitExceeded: ``data`` is longer than ``max_bytes``, or nests deeper than
            ``max_depth``, or holds an array or map of more than ``max_items`` entries.
        MalformedInput: anything else that is not one canonical msgpack value.
    """
    if type(data) is not bytes:
        raise MalformedInput("expected bytes")
    if len(data) > max_bytes:
        raise LimitExceeded("encoded size in bytes", max_bytes)
    value = _unpack(data, max_bytes=max_bytes, max_items=max_items)
    _check_tree(value, 0, max_depth)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise MalformedInput("not in canonical form")
    return value


def _unpack(data: bytes, *, max_bytes: int, max_items: int) -> Value:
    try:
        return msgpack.unpackb(  # type: ignore[no-any-return]
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=max_bytes,
            max_bin_len=max_bytes,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
        )
    except msgpack.ExtraData:
        raise MalformedInput("trailing bytes after the value") from None
    except msgpack.StackError:
        raise LimitExceeded("nesting depth", MAX_DEPTH) from None
    except ValueError as exc:
        if "exceeds max_array_len" in str(exc) or "exceeds max_map_len" in str(exc):
            raise LimitExceeded("number of entries of an array or map", max_items) from None
        raise MalformedInput("not a valid msgpack value") from None
    except (TypeError, msgpack.UnpackException, RecursionError):  # pragma: no cover
        # No input found reaches this (msgpack's own errors are ValueErrors, its stack is
        # bounded): kept so that a future msgpack cannot turn hostile bytes into a crash.
        raise MalformedInput("not a valid msgpack value") from None


def _canonical(value: Any, depth: int, max_depth: int) -> Any:
    if depth > max_depth:
        raise LimitExceeded("nesting depth", max_depth)
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise MalformedInput("integer out of range")
        return value
    # Entries that are leaves are taken as they are rather than by a call each (a header
    # holds many), unless they would be too deep: then every entry goes through the call.
    shortcut = _LEAVES if depth < max_depth else frozenset()
    if kind is list or kind is tuple:
        return [
            item if type(item) in shortcut else _canonical(item, depth + 1, max_depth)
            for item in value
        ]
    if kind is dict:
        if any(type(key) is not str for key in value):
            raise MalformedInput("map keys must be strings")
        # UTF-8 keeps code point order, so sorting the text sorts the encoded bytes.
        ordered = sorted(value)
        return {
            key: item
            if type(item := value[key]) in shortcut
            else _canonical(item, depth + 1, max_depth)
            for key in ordered
        }
    raise MalformedInput(f"type {kind.__name__} has no canonical encoding")


def _check_tree(value: Any, depth: int, max_depth: int) -> None:
    """Allowed types only, map keys in order, nothing deeper than ``max_depth``."""
    kind = type(value)
    if kind is list:
        items: Iterable[Any] = value
    elif kind is dict:
        if any(type(key) is not str for key in value):
            raise MalformedInput("map keys must be strings")
        keys = list(value)
        if keys != sorted(keys):  # text order is UTF-8 byte order (see _canonical)
            raise MalformedInput("not in canonical form")
        items = value.values()
    elif value is None or kind in _SCALARS:
        return
    else:
        raise MalformedInput(f"type {kind.__name__} is not allowed")
    if value and depth == max_depth:
        raise LimitExceeded("nesting depth", max_depth)  # its entries would be one deeper
    for item in items:
        # Scalars are checked here rather than by a call each: an envelope holds many.
        if type(item) in _CONTAINERS:
            _check_tree(item, depth + 1, max_depth)
        elif not (item is None or type(item) in _SCALARS):
            raise MalformedInput(f"type {type(item).__name__} is not allowed")


# -- shape checks for decoded values ---------------------------------------------------


def expect_map(
    value: Value,
    what: str,
    *,
    required: Mapping[str, type],
    optional: Mapping[str, type] | None = None,
) -> dict[str, Any]:
    """Check that ``value`` is a map with exactly these keys and exact value types.

    ``required`` keys must be present; ``optional`` keys may be; no other key is
    allowed, so a record cannot smuggle unsigned or unknown fields.
    """
    if type(value) is not dict:
        raise MalformedInput(f"{what}: expected a map")
    allowed = {**required, **(optional or {})}
    for key in value:
        if key not in allowed:
            raise MalformedInput(f"{what}: unknown field {key!r}")
    for key in required:
        if key not in value:
            raise MalformedInput(f"{what}: missing field {key!r}")
    for key, item in value.items():
        if type(item) is not allowed[key]:
            raise MalformedInput(f"{what}.{key}: expected {allowed[key].__name__}")
    return value


def expect_bytes(value: Any, what: str, *, size: int | None = None, max_size: int = 0) -> bytes:
    """Check ``value`` is bytes of exactly ``size`` bytes, or at most ``max_size``."""
    if type(value) is not bytes:
        raise MalformedInput(f"{what}: expected bytes")
    if size is not None and len(value) != size:
        raise MalformedInput(f"{what}: expected {size} bytes")
    if max_size and len(value) > max_size:
        raise LimitExceeded(f"{what}: length in bytes", max_size)
    return value


def expect_int(value: Any, what: str, *, low: int, high: int) -> int:
    """Check ``value`` is an int (not a bool) within ``low .. high`` inclusive."""
    if type(value) is not int:
        raise MalformedInput(f"{what}: expected an integer")
    if not low <= value <= high:
        raise MalformedInput(f"{what}: out of range {low}..{high}")
    return value


def expect_list(value: Any, what: str, *, max_items: int) -> list[Any]:
    """Check ``value`` is a list of at most ``max_items`` entries."""
    if type(value) is not list:
        raise MalformedInput(f"{what}: expected a list")
    if len(value) > max_items:
        raise LimitExceeded(f"{what}: number of entries", max_items)
    return value
