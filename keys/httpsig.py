"""Request signatures: HTTP Message Signatures (RFC 9421) with Ed25519, and Content-Digest.

Pure functions over plain values; the hub's middleware and the client's transport call
them. Every request carries one signature, labelled ``sig1``, over exactly ``"@method"``,
``"@target-uri"`` and ``"content-digest"`` (RFC 9530, ``sha-256`` only, also for an empty
body), with the parameters ``created``, ``nonce``, ``keyid``, ``alg="ed25519"`` and
``tag="siko-hub"``. docs/PROTOCOL.md describes the profile byte by byte. Replay is the
hub's job: :func:`verify_request` returns the nonce for it to remember. A verifier that
must fetch the key first parses the headers once (:func:`parse_signature`, which names
the claimed keyid) and then verifies the parsed signature (:func:`verify_parsed`).

Why not ``http-message-signatures`` (PyPI, pyauth): it needs no ``requests``, but its
verifier reads the wall clock itself (``datetime.now()``, skew as a class attribute), so
time cannot be a parameter as everywhere else in ``keys/``; it signs with its own
``cryptography`` key objects, around ``keys/_suites.py``, the one door to hazmat; it works
on duck-typed message objects, not plain values; its errors are a second tree with free
text; and its resolver for every component kind is far more surface than our fixed
profile, whose strict rules would still have to be written around it. So the profile is
implemented here, and RFC 8941 parsing and serialisation come from ``http-sfv``.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from http_sfv.dictionary import Dictionary
from http_sfv.item import InnerList, Item

from keys import labels
from keys._suites import DIGEST, ED25519_SIG, SigningKey, VerifyKey, random_bytes, sha256
from keys.errors import (
    InvalidSignature,
    LimitExceeded,
    MalformedInput,
    OutsideTimeWindow,
    WrongKey,
)

__all__ = [
    "ParsedSignature",
    "VerifiedRequest",
    "check_content_digest",
    "content_digest",
    "new_nonce",
    "parse_signature",
    "sign_request",
    "signature_base",
    "signature_params",
    "verify_parsed",
    "verify_request",
]

ALG: Final = "ed25519"
DEFAULT_LABEL: Final = "sig1"
COMPONENTS: Final = ("@method", "@target-uri", "content-digest")
PARAMS: Final = ("created", "nonce", "keyid", "alg", "tag")

MAX_SIGNATURE_INPUT: Final = 2048  # characters of the Signature-Input header
MAX_SIGNATURE: Final = 1024  # characters of the Signature header
MAX_CONTENT_DIGEST: Final = 256  # characters of the Content-Digest header
MAX_MEMBERS: Final = 4  # members of the Signature-Input and Signature dictionaries
MAX_TARGET_URI: Final = 4096
MAX_KEYID: Final = 128
NONCE_MAX: Final = 64

_SIGNED_HEADERS: Final = {
    "signature-input": MAX_SIGNATURE_INPUT,
    "signature": MAX_SIGNATURE,
    "content-digest": MAX_CONTENT_DIGEST,
}
_LABEL: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_METHOD: Final = re.compile(r"[A-Z]{1,16}")
_TARGET_URI: Final = re.compile(r"https?://[!-~]+")
_NONCE: Final = re.compile(r"[A-Za-z0-9_-]{16,}")  # base64url, at least 16 characters
_KEYID: Final = re.compile(r"[!-~]+")
_VISIBLE: Final = re.compile(r"[ -~]*")


@dataclass(frozen=True)
class VerifiedRequest:
    """What a verified request signature vouches for."""

    keyid: str
    created: int
    nonce: str
    covered: tuple[str, ...]


def new_nonce() -> str:
    """A fresh random nonce: 16 bytes from the CSPRNG as 22 base64url characters."""
    return base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    """The Content-Digest header value of ``body``: ``sha-256=:<base64>:`` (RFC 9530 §2)."""
    return f"sha-256=:{base64.b64encode(sha256(body)).decode('ascii')}:"


def check_content_digest(header: str, body: bytes) -> None:
    """Check a received Content-Digest header value against ``body``.

    Raises:
        MalformedInput: the header is not exactly one ``sha-256`` byte sequence.
        InvalidSignature: the digest does not match ``body`` (it was altered).
    """
    if len(header) > MAX_CONTENT_DIGEST:
        raise LimitExceeded("content-digest header", MAX_CONTENT_DIGEST)
    if not hmac.compare_digest(_digest_of(header), sha256(body)):
        raise InvalidSignature


def signature_params(components: Sequence[str], params: Mapping[str, object]) -> str:
    """Serialise covered component names and parameters as an RFC 8941 inner list.

    This is the Signature-Input member value and the ``@signature-params`` line
    (RFC 9421 §2.3), e.g. ``("@method" "@target-uri");created=1;keyid="k"``.
    """
    inner = InnerList()
    for name in components:
        inner.append(name)
    inner.params.update(params)
    try:
        return str(inner)
    except ValueError:
        raise MalformedInput("signature parameters: not serialisable (RFC 8941)") from None


def signature_base(components: Sequence[tuple[str, str]], params: str) -> bytes:
    """The signature base (RFC 9421 §2.5) of ``(name, value)`` pairs and serialised params."""
    lines = [f'"{name}": {_visible(name, value)}' for name, value in components]
    lines.append(f'"@signature-params": {_visible("@signature-params", params)}')
    return "\n".join(lines).encode("ascii")


def sign_request(
    *,
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    body: bytes,
    key: SigningKey,
    keyid: str,
    created: int,
    nonce: str,
    label: str = DEFAULT_LABEL,
) -> dict[str, str]:
    """Sign a request; return the Content-Digest, Signature-Input and Signature to add.

    ``headers`` are the request's other headers; they must not carry any of the three.
    Raises :class:`MalformedInput` for values outside the profile.
    """
    for name in headers:
        if name.lower() in _SIGNED_HEADERS:
            raise MalformedInput(f"{name}: already present; sign each request once")
    label = _check_label(label)
    params: dict[str, object] = {
        "created": created,
        "nonce": nonce,
        "keyid": keyid,
        "alg": ALG,
        "tag": labels.HTTPSIG_TAG,
    }
    _check_params(params)
    digest = content_digest(body)
    inner = signature_params(COMPONENTS, params)
    values = _component_values(method, target_uri, digest)
    base = signature_base([(name, values[name]) for name in COMPONENTS], inner)
    signature = base64.b64encode(key.sign(b"", base)).decode("ascii")
    return {
        "Content-Digest": digest,
        "Signature-Input": f"{label}={inner}",
        "Signature": f"{label}=:{signature}:",
    }


@dataclass(frozen=True)
class ParsedSignature:
    """A request's signature headers, parsed and checked against the profile, not verified.

    Nothing here is vouched for yet: :func:`verify_parsed` does that. ``keyid`` is what
    the request claims, so that an asynchronous verifier can fetch the key first.
    """

    keyid: str
    created: int
    nonce: str
    covered: tuple[str, ...]
    signature_params: str
    signature: bytes
    content_digest: str
    digest: bytes


def parse_signature(headers: Mapping[str, str], *, label: str = DEFAULT_LABEL) -> ParsedSignature:
    """Parse the three signature headers once, before any check of the signature.

    ``headers`` may be any mapping, including a multi-dict: header names are compared
    case-insensitively and a repeated signature header is refused.

    Raises:
        MalformedInput: a header is missing, repeated or outside the profile
            (:class:`LimitExceeded` when a size limit is hit).
    """
    found = _read_headers(headers)
    covered, params, inner = _read_signature_input(found["signature-input"], _check_label(label))
    signature = _read_signature(found["signature"], label)
    digest = _digest_of(found["content-digest"])
    created, nonce, keyid = _check_params(params)
    return ParsedSignature(
        keyid=keyid,
        created=created,
        nonce=nonce,
        covered=covered,
        signature_params=inner,
        signature=signature,
        content_digest=found["content-digest"],
        digest=digest,
    )


def verify_parsed(
    parsed: ParsedSignature,
    *,
    method: str,
    target_uri: str,
    body: bytes,
    lookup_key: Callable[[str], VerifyKey | None],
    now: int,
    max_skew: int,
) -> VerifiedRequest:
    """Verify a parsed signature (RFC 9421 §3.2) over this request's method, URI and body.

    ``lookup_key`` maps a keyid to the caller's verify key, or returns ``None`` (or
    raises :class:`WrongKey`) for an unknown keyid.

    Raises:
        MalformedInput: the method or URI is outside the profile, or ``created`` lies
            outside ``now`` ± ``max_skew`` (:class:`OutsideTimeWindow`).
        WrongKey: no key is known for the keyid.
        InvalidSignature: the signature or the body digest does not verify.
    """
    values = _component_values(method, target_uri, parsed.content_digest)
    _check_time(parsed.created, now, max_skew)
    key = lookup_key(parsed.keyid)
    if key is None:
        raise WrongKey(
            f"no key is registered under keyid {parsed.keyid!r}; register its card first"
        )
    base = signature_base(
        [(name, values[name]) for name in parsed.covered], parsed.signature_params
    )
    key.verify(parsed.signature, b"", base)
    if not hmac.compare_digest(parsed.digest, sha256(body)):
        raise InvalidSignature
    return VerifiedRequest(
        keyid=parsed.keyid, created=parsed.created, nonce=parsed.nonce, covered=parsed.covered
    )


def verify_request(
    *,
    method: str,
    target_uri: str,
    headers: Mapping[str, str],
    body: bytes,
    lookup_key: Callable[[str], VerifyKey | None],
    now: int,
    max_skew: int,
    label: str = DEFAULT_LABEL,
) -> VerifiedRequest:
    """Verify a request's signature under the siko-hub profile, in one call.

    :func:`parse_signature` then :func:`verify_parsed`; raises as they do.
    """
    return verify_parsed(
        parse_signature(headers, label=label),
        method=method,
        target_uri=target_uri,
        body=body,
        lookup_key=lookup_key,
        now=now,
        max_skew=max_skew,
    )


# -- checks and parsing -------------------------------------------------------------


def _read_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The three signature headers, each present once and within its size limit."""
    found: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key not in _SIGNED_HEADERS:
            continue
        if key in found:
            raise MalformedInput(f"{key}: header repeated; send it once")
        if len(value) > _SIGNED_HEADERS[key]:
            raise LimitExceeded(f"{key} header", _SIGNED_HEADERS[key])
        found[key] = value.strip(" \t")
    for key in _SIGNED_HEADERS:
        if key not in found:
            raise MalformedInput(f"{key}: header missing; sign the request")
    return found


def _component_values(method: str, target_uri: str, digest: str) -> dict[str, str]:
    if not _METHOD.fullmatch(method):
        raise MalformedInput("method: expected 1-16 upper-case letters")
    if len(target_uri) > MAX_TARGET_URI:
        raise LimitExceeded("target uri", MAX_TARGET_URI)
    if not _TARGET_URI.fullmatch(target_uri):
        raise MalformedInput("target uri: expected an absolute http(s) URI in visible ASCII")
    return {"@method": method, "@target-uri": target_uri, "content-digest": digest}


def _parse_member(name: str, value: str, label: str, limit: int = MAX_MEMBERS) -> object:
    """The member ``label`` of header ``name``, a canonical RFC 8941 dictionary."""
    parsed = Dictionary()
    try:
        parsed.parse(value.encode("ascii"))
        canonical = str(parsed)
    except ValueError:
        raise MalformedInput(f"{name}: not a structured-field dictionary (RFC 8941)") from None
    if canonical != value:
        raise MalformedInput(f"{name}: not in canonical form (RFC 8941 section 4.1)")
    if len(parsed) > limit:
        raise LimitExceeded(f"{name}: dictionary members", limit)
    if label not in parsed:
        raise MalformedInput(f"{name}: no member labelled {label!r}")
    return parsed[label]


def _byte_sequence(member: object, size: int, what: str) -> bytes:
    if not isinstance(member, Item) or type(member.value) is not bytes or member.params:
        raise MalformedInput(f"{what}: expected a byte sequence without parameters")
    if len(member.value) != size:
        raise MalformedInput(f"{what}: expected {size} bytes")
    return member.value


def _read_signature(header: str, label: str) -> bytes:
    return _byte_sequence(_parse_member("signature", header, label), ED25519_SIG, "signature")


def _digest_of(header: str) -> bytes:
    """The digest in a Content-Digest value: exactly one ``sha-256`` member (RFC 9530)."""
    member = _parse_member("content-digest", header, "sha-256", limit=1)
    return _byte_sequence(member, DIGEST, "content-digest")


def _read_signature_input(
    header: str, label: str
) -> tuple[tuple[str, ...], dict[str, object], str]:
    """Covered components, parameters and the member's text (the ``@signature-params``)."""
    member = _parse_member("signature-input", header, label)
    if not isinstance(member, InnerList):
        raise MalformedInput("signature-input: the member must be an inner list")
    covered = tuple(_component_name(item) for item in member)
    for name in COMPONENTS:
        if name not in covered:
            raise MalformedInput(f"signature-input: must cover {name!r}")
    if len(covered) != len(COMPONENTS):
        raise MalformedInput(f"signature-input: must cover exactly {' '.join(COMPONENTS)}")
    params = dict(member.params)
    # The header is canonical (checked above): when our member is its only one, the
    # header is ``label=`` and the member's serialisation, which need not be made again.
    if header.startswith(f"{label}=") and "," not in header:
        return covered, params, header[len(label) + 1 :]
    return covered, params, str(member)


def _component_name(item: Item) -> str:
    if type(item.value) is not str or item.params:
        raise MalformedInput("signature-input: components must be strings without parameters")
    return item.value


def _check_params(params: Mapping[str, object]) -> tuple[int, str, str]:
    """Check the signature parameters; return ``created``, ``nonce`` and ``keyid``."""
    for name in PARAMS:
        if name not in params:
            raise MalformedInput(f"signature-input: parameter {name!r} missing")
    if len(params) != len(PARAMS):
        raise MalformedInput(f"signature-input: parameters must be exactly {', '.join(PARAMS)}")
    if _string("alg", params["alg"]) != ALG:
        raise MalformedInput(f"signature-input: alg must be {ALG!r}")
    if _string("tag", params["tag"]) != labels.HTTPSIG_TAG:
        raise MalformedInput(f"signature-input: tag must be {labels.HTTPSIG_TAG!r}")
    nonce = _bounded("nonce", params["nonce"], _NONCE, NONCE_MAX)
    keyid = _bounded("keyid", params["keyid"], _KEYID, MAX_KEYID)
    return _created(params["created"]), nonce, keyid


def _string(name: str, value: object) -> str:
    if type(value) is not str:
        raise MalformedInput(f"signature-input: {name} must be a string")
    return value


def _created(value: object) -> int:
    if type(value) is not int or not 0 <= value < 10**15:
        raise MalformedInput("signature-input: created must be a Unix time in seconds")
    return value


def _bounded(name: str, value: object, pattern: re.Pattern[str], limit: int) -> str:
    text = _string(name, value)
    if len(text) > limit:
        raise LimitExceeded(f"signature-input: {name}", limit)
    if not pattern.fullmatch(text):
        raise MalformedInput(f"signature-input: {name} must match {pattern.pattern}")
    return text


def _check_time(created: int, now: int, max_skew: int) -> None:
    if abs(now - created) > max_skew:
        raise OutsideTimeWindow(
            f"signature created at {created}, outside {now} ± {max_skew} s; "
            "check the sending machine's clock"
        )


def _check_label(label: str) -> str:
    if not _LABEL.fullmatch(label):
        raise MalformedInput("label: expected 1-32 characters of a-z, 0-9, '_' and '-'")
    return label


def _visible(name: str, value: str) -> str:
    if not _VISIBLE.fullmatch(value):
        raise MalformedInput(f"{name}: only visible ASCII characters and spaces are allowed")
    return value
