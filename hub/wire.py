"""Request and response bodies: msgpack for programs, JSON where a person types.

Requests: ``application/msgpack`` or ``application/json`` maps, bounded in size and
depth, decoded strictly (JSON with duplicate keys or non-finite numbers is refused).
Responses: msgpack when the client asks for it (``Accept: application/msgpack``), JSON
otherwise; in JSON, bytes are written as unpadded base64url strings.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, Final

import msgpack
from aiohttp import web

from hub.errors import BadRequest

MSGPACK: Final = "application/msgpack"
JSON: Final = "application/json"
MAX_FORM_BYTES: Final = 256 * 1024


async def read_map(request: web.Request) -> dict[str, Any]:
    """The request body as a map, from msgpack or JSON."""
    body = await request.read()
    if len(body) > MAX_FORM_BYTES:
        raise BadRequest(f"request body larger than {MAX_FORM_BYTES} bytes")
    if request.content_type == MSGPACK:
        value = _from_msgpack(body)
    elif request.content_type == JSON:
        value = _from_json(body)
    else:
        raise BadRequest(f"send {MSGPACK} or {JSON}, not {request.content_type or 'nothing'}")
    if not isinstance(value, dict):
        raise BadRequest("the request body must be a map of named fields")
    return value


def _from_msgpack(body: bytes) -> Any:
    try:
        return msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_FORM_BYTES,
            max_bin_len=MAX_FORM_BYTES,
            max_array_len=4096,
            max_map_len=4096,
            max_ext_len=0,
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadRequest("the body is not valid msgpack") from exc


def _from_json(body: bytes) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result = dict(pairs)
        if len(result) != len(pairs):
            raise ValueError("duplicate key")
        return result

    def no_constants(name: str) -> Any:
        raise ValueError(name)

    try:
        return json.loads(body, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise BadRequest("the body is not valid JSON (or repeats a key)") from exc


def respond(request: web.Request, data: Mapping[str, Any], *, status: int = 200) -> web.Response:
    """Answer with ``data`` in the format the client accepts."""
    if MSGPACK in request.headers.get("Accept", ""):
        payload = msgpack.packb(data, use_bin_type=True)
        return web.Response(body=payload, status=status, content_type=MSGPACK)
    return web.Response(
        text=json.dumps(data, default=_json_bytes, ensure_ascii=False),
        status=status,
        content_type=JSON,
    )


def _json_bytes(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


def field(data: Mapping[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    """One field of a request map, of exactly type ``kind``."""
    if name not in data:
        if required:
            raise BadRequest(f"missing field {name!r}")
        return None
    value = data[name]
    if type(value) is not kind:
        raise BadRequest(f"field {name!r} must be {kind.__name__}")
    return value


def binary(data: Mapping[str, Any], name: str) -> bytes:
    """A bytes field: msgpack bin, or an unpadded base64url string in JSON."""
    value = data.get(name)
    if type(value) is bytes:
        return value
    if type(value) is str:
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        except ValueError as exc:
            raise BadRequest(f"field {name!r} must be base64url") from exc
    raise BadRequest(f"field {name!r} must be bytes (base64url in JSON)")
