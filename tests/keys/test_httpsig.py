"""keys/httpsig.py: request signatures (RFC 9421, Ed25519) and Content-Digest (RFC 9530).

The fixed vectors live in tests/vectors/httpsig.json; docs/PROTOCOL.md explains them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
from http_sfv.types import Token
from hypothesis import assume, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from keys import httpsig
from keys._suites import SigningKey, VerifyKey
from keys.errors import (
    InvalidSignature,
    KeysError,
    LimitExceeded,
    MalformedInput,
    OutsideTimeWindow,
    WrongKey,
)
from tests.vectors_util import load_vectors

V = load_vectors("httpsig")
B26 = V["rfc9421_b26"]
KEY = SigningKey(bytes.fromhex(B26["private_key"]))
OTHER_KEY = SigningKey(bytes(range(32)))

METHOD = "POST"
URI = "https://hub.example/v1/channels/clan-lagebild-ruhr/notes"
BODY = b'{"hello": "world"}'
NOW = 1764000000
SKEW = 300
NONCE = "AAECAwQFBgcICQoLDA0ODw"
KEYID = "test-key-ed25519"
PARAMS: dict[str, object] = {
    "created": NOW,
    "nonce": NONCE,
    "keyid": KEYID,
    "alg": "ed25519",
    "tag": "siko-hub",
}


def sign(**overrides: Any) -> dict[str, str]:
    args: dict[str, Any] = {
        "method": METHOD,
        "target_uri": URI,
        "headers": {},
        "body": BODY,
        "key": KEY,
        "keyid": KEYID,
        "created": NOW,
        "nonce": NONCE,
    }
    args.update(overrides)
    return httpsig.sign_request(**args)


def verify(headers: Mapping[str, str], **overrides: Any) -> httpsig.VerifiedRequest:
    args: dict[str, Any] = {
        "method": METHOD,
        "target_uri": URI,
        "headers": headers,
        "body": BODY,
        "lookup_key": {KEYID: KEY.public}.get,
        "now": NOW,
        "max_skew": SKEW,
    }
    args.update(overrides)
    return httpsig.verify_request(**args)


def sign_custom(
    components: Sequence[str], params: Mapping[str, object], label: str = "sig1"
) -> dict[str, str]:
    """Headers validly signed over any components and parameters, outside the profile.

    A refusal of these proves the profile rule refuses, not the signature check.
    """
    digest = httpsig.content_digest(BODY)
    values = {"@method": METHOD, "@target-uri": URI, "content-digest": digest}
    inner = httpsig.signature_params(components, params)
    base = httpsig.signature_base([(c, values.get(c, "text/plain")) for c in components], inner)
    signature = base64.b64encode(KEY.sign(b"", base)).decode()
    return {
        "Content-Type": "text/plain",
        "Content-Digest": digest,
        "Signature-Input": f"{label}={inner}",
        "Signature": f"{label}=:{signature}:",
    }


def refused(
    exc: type[KeysError], fragment: str, headers: Mapping[str, str], **overrides: Any
) -> KeysError:
    with pytest.raises(exc) as info:
        verify(headers, **overrides)
    assert type(info.value) is exc
    assert fragment in str(info.value)
    return info.value


# -- fixed vectors --------------------------------------------------------------------


def b26_request() -> tuple[str, str, dict[str, str]]:
    head, _, _body = B26["request"].partition("\r\n\r\n")
    request_line, *lines = head.split("\r\n")
    method, target, _version = request_line.split(" ")
    fields = dict(line.split(": ", 1) for line in lines)
    return method, target, {name.lower(): value for name, value in fields.items()}


def test_rfc9421_b26_key_is_the_appendix_b14_key() -> None:
    """RFC 9421 B.1.4: the raw keys are the PKCS#8 / SPKI PEM bodies past their prefix."""
    private = base64.b64decode(B26["private_key_pkcs8_pem_body"])
    public = base64.b64decode(B26["public_key_spki_pem_body"])
    assert private[:16].hex() == "302e020100300506032b657004220420"
    assert public[:12].hex() == "302a300506032b6570032100"
    assert private[16:] == KEY.raw()
    assert public[12:] == KEY.public.raw == bytes.fromhex(B26["public_key"])


def test_rfc9421_b26_signature_input() -> None:
    """RFC 9421 B.2.6: the Signature-Input member, serialised byte for byte."""
    inner = httpsig.signature_params(B26["components"], dict(B26["params"]))
    assert f"{B26['label']}={inner}" == B26["signature_input"]


def test_rfc9421_b26_signature_base() -> None:
    """RFC 9421 B.2.6 / section 2.5: the signature base of the test request."""
    method, target, fields = b26_request()
    values = {"@method": method, "@path": target.split("?")[0], "@authority": fields["host"]}
    components = [(name, values.get(name) or fields[name]) for name in B26["components"]]
    inner = B26["signature_input"].split("=", 1)[1]
    assert httpsig.signature_base(components, inner) == B26["signature_base"].encode()


def test_rfc9421_b26_signature_matches_byte_for_byte() -> None:
    """RFC 9421 B.2.6: Ed25519 is deterministic, so our signature is the RFC's."""
    base = B26["signature_base"].encode()
    signature = KEY.sign(b"", base)
    assert f"{B26['label']}=:{base64.b64encode(signature).decode()}:" == B26["signature"]
    VerifyKey(bytes.fromhex(B26["public_key"])).verify(signature, b"", base)


@pytest.mark.parametrize("case", V["rfc9530_content_digest"], ids=lambda c: c["source"])
def test_rfc9530_content_digest(case: dict[str, str]) -> None:
    """RFC 9530 Appendix B: sha-256 Content-Digest values."""
    body = case["body"].encode()
    assert httpsig.content_digest(body) == case["content_digest"]
    httpsig.check_content_digest(case["content_digest"], body)


@pytest.mark.parametrize("case", V["siko_profile"], ids=lambda c: c["name"])
def test_profile_vector(case: dict[str, Any]) -> None:
    """Our own profile, pinned: the headers and the base a third party must reproduce."""
    given_ = case["input"]
    body = given_["body"].encode()
    headers = sign(
        method=given_["method"],
        target_uri=given_["target_uri"],
        body=body,
        keyid=given_["keyid"],
        created=given_["created"],
        nonce=given_["nonce"],
        label=given_["label"],
    )
    assert headers == case["headers"]
    digest = headers["Content-Digest"]
    values = {"@method": given_["method"], "@target-uri": given_["target_uri"]}
    values["content-digest"] = digest
    inner = headers["Signature-Input"].split("=", 1)[1]
    base = httpsig.signature_base([(c, values[c]) for c in httpsig.COMPONENTS], inner)
    assert base == case["signature_base"].encode()
    verified = verify(headers, method=given_["method"], target_uri=given_["target_uri"], body=body)
    assert verified.nonce == given_["nonce"]


# -- round trip -----------------------------------------------------------------------


def test_round_trip() -> None:
    seen: list[str] = []

    def lookup(keyid: str) -> VerifyKey:
        seen.append(keyid)
        return OTHER_KEY.public

    headers = sign(key=OTHER_KEY, keyid="pp-duisburg/0011aabb")
    verified = verify(headers, lookup_key=lookup)
    assert verified == httpsig.VerifiedRequest(
        keyid="pp-duisburg/0011aabb",
        created=NOW,
        nonce=NONCE,
        covered=("@method", "@target-uri", "content-digest"),
    )
    assert seen == ["pp-duisburg/0011aabb"]


def test_round_trip_empty_body_still_carries_a_digest() -> None:
    headers = sign(method="GET", body=b"")
    assert headers["Content-Digest"] == httpsig.content_digest(b"")
    verify(headers, method="GET", body=b"")


def test_header_names_are_case_insensitive_and_others_ignored() -> None:
    headers = {name.upper(): value for name, value in sign().items()}
    headers["Content-Type"] = "application/msgpack"
    assert verify(headers).keyid == KEYID
    assert verify(CIMultiDict(sign())).keyid == KEYID


def test_surrounding_whitespace_of_header_values_is_ignored() -> None:
    verify({name: f" {value}\t" for name, value in sign().items()})


def test_covered_components_in_another_order_verify() -> None:
    order = ("content-digest", "@method", "@target-uri")
    assert verify(sign_custom(order, PARAMS)).covered == order


def test_another_label_alongside_ours_is_ignored() -> None:
    headers = sign()
    headers["Signature-Input"] += ', proxy=("@method");created=1'
    headers["Signature"] += ", proxy=:AAAA:"
    verify(headers)


def test_custom_label_round_trip() -> None:
    verify(sign(label="sig2"), label="sig2")


def test_time_window_edges_are_accepted() -> None:
    verify(sign(), now=NOW + SKEW)
    verify(sign(), now=NOW - SKEW)


def test_new_nonce() -> None:
    nonces = {httpsig.new_nonce() for _ in range(20)}
    assert len(nonces) == 20
    for nonce in nonces:
        assert len(nonce) == 22
        verify(sign(nonce=nonce))


# -- refusals: profile rules (validly signed, still refused) --------------------------


@pytest.mark.parametrize("missing", httpsig.COMPONENTS)
def test_each_missing_component_is_refused(missing: str) -> None:
    components = [c for c in httpsig.COMPONENTS if c != missing]
    refused(MalformedInput, f"must cover {missing!r}", sign_custom(components, PARAMS))


@pytest.mark.parametrize("extra", ["content-type", "@method"])
def test_extra_or_repeated_component_is_refused(extra: str) -> None:
    headers = sign_custom((*httpsig.COMPONENTS, extra), PARAMS)
    refused(MalformedInput, "must cover exactly", headers)


def test_component_with_parameters_is_refused() -> None:
    headers = sign()
    headers["Signature-Input"] = headers["Signature-Input"].replace(
        '"content-digest"', '"content-digest";sf'
    )
    refused(MalformedInput, "components must be strings without parameters", headers)


@pytest.mark.parametrize("missing", httpsig.PARAMS)
def test_each_missing_parameter_is_refused(missing: str) -> None:
    params = {k: v for k, v in PARAMS.items() if k != missing}
    refused(
        MalformedInput, f"parameter {missing!r} missing", sign_custom(httpsig.COMPONENTS, params)
    )


PARAM_CASES = [
    ({"expires": NOW + 60}, MalformedInput, "parameters must be exactly"),
    ({"alg": "rsa-pss-sha512"}, MalformedInput, "alg must be 'ed25519'"),
    ({"alg": Token("ed25519")}, MalformedInput, "alg must be a string"),
    ({"tag": "other-app"}, MalformedInput, "tag must be 'siko-hub'"),
    ({"tag": Token("siko-hub")}, MalformedInput, "tag must be a string"),
    ({"created": str(NOW)}, MalformedInput, "created must be a Unix time"),
    ({"created": True}, MalformedInput, "created must be a Unix time"),
    ({"nonce": NONCE[:15]}, MalformedInput, "nonce must match"),
    ({"nonce": NONCE[:-1] + "+"}, MalformedInput, "nonce must match"),
    ({"nonce": "A" * 65}, LimitExceeded, "nonce"),
    ({"nonce": 12345}, MalformedInput, "nonce must be a string"),
    ({"keyid": ""}, MalformedInput, "keyid must match"),
    ({"keyid": "pp duisburg"}, MalformedInput, "keyid must match"),
    ({"keyid": "k" * 129}, LimitExceeded, "keyid"),
]


@pytest.mark.parametrize(("change", "exc", "fragment"), PARAM_CASES)
def test_parameter_outside_the_profile_is_refused(
    change: dict[str, object], exc: type[KeysError], fragment: str
) -> None:
    headers = sign_custom(httpsig.COMPONENTS, {**PARAMS, **change})
    refused(exc, fragment, headers)


def test_negative_created_is_refused() -> None:
    headers = sign_custom(httpsig.COMPONENTS, {**PARAMS, "created": -1})
    refused(MalformedInput, "created must be a Unix time", headers, now=0)


@pytest.mark.parametrize("now", [NOW + SKEW + 1, NOW - SKEW - 1])
def test_created_outside_the_time_window_is_refused(now: int) -> None:
    refused(OutsideTimeWindow, "check the sending machine's clock", sign(), now=now)


def test_wrong_label_is_refused() -> None:
    refused(MalformedInput, "no member labelled 'sig1'", sign(label="sig2"))
    refused(MalformedInput, "no member labelled 'other'", sign(), label="other")


def test_label_only_in_one_header_is_refused() -> None:
    headers = sign()
    headers["Signature"] = headers["Signature"].replace("sig1=", "sig2=")
    refused(MalformedInput, "signature: no member labelled 'sig1'", headers)


# -- refusals: altered requests -------------------------------------------------------


def flip_signature_bit(headers: dict[str, str]) -> dict[str, str]:
    raw = bytearray(base64.b64decode(headers["Signature"].split(":")[1]))
    raw[10] ^= 0x01
    return {**headers, "Signature": f"sig1=:{base64.b64encode(bytes(raw)).decode()}:"}


TAMPERED: list[tuple[str, Callable[[dict[str, str]], dict[str, Any]]]] = [
    ("body altered", lambda h: {"headers": h, "body": BODY + b" "}),
    ("method altered", lambda h: {"headers": h, "method": "PUT"}),
    ("uri altered", lambda h: {"headers": h, "target_uri": URI + "x"}),
    ("signature altered", lambda h: {"headers": flip_signature_bit(h)}),
    (
        "body and digest altered",
        lambda h: {
            "headers": {**h, "Content-Digest": httpsig.content_digest(b"other")},
            "body": b"other",
        },
    ),
    (
        "created altered",
        lambda h: {"headers": {**h, "Signature-Input": h["Signature-Input"].replace("00;", "01;")}},
    ),
    (
        "nonce altered",
        lambda h: {"headers": {**h, "Signature-Input": h["Signature-Input"].replace("AAE", "AAF")}},
    ),
    ("another agency's key", lambda h: {"headers": h, "lookup_key": lambda _: OTHER_KEY.public}),
]


@pytest.mark.parametrize(("name", "tamper"), TAMPERED, ids=[t[0] for t in TAMPERED])
def test_altered_request_is_refused(
    name: str, tamper: Callable[[dict[str, str]], dict[str, Any]]
) -> None:
    changes = tamper(sign())
    with pytest.raises(InvalidSignature) as info:
        verify(**changes)
    assert str(info.value) == "signature does not verify"


def test_unknown_keyid_is_wrong_key() -> None:
    error = refused(WrongKey, "no key is registered under keyid", sign(), lookup_key=lambda _: None)
    assert KEYID in str(error)


def test_wrong_key_raised_by_lookup_propagates() -> None:
    def lookup(keyid: str) -> VerifyKey:
        raise WrongKey(f"{keyid} was revoked")

    refused(WrongKey, "was revoked", sign(), lookup_key=lookup)


# -- refusals: headers ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Signature-Input", "Signature", "Content-Digest"])
def test_missing_header_is_refused(name: str) -> None:
    headers = sign()
    del headers[name]
    refused(MalformedInput, f"{name.lower()}: header missing", headers)


@pytest.mark.parametrize("name", ["Signature-Input", "Signature", "Content-Digest"])
def test_duplicate_header_is_refused(name: str) -> None:
    headers = sign()
    refused(MalformedInput, "header repeated", {**headers, name.lower(): headers[name]})
    multi = CIMultiDict(headers)
    multi.add(name, headers[name])
    refused(MalformedInput, "header repeated", multi)


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("Signature-Input", httpsig.MAX_SIGNATURE_INPUT),
        ("Signature", httpsig.MAX_SIGNATURE),
        ("Content-Digest", httpsig.MAX_CONTENT_DIGEST),
    ],
)
def test_oversized_header_is_refused(name: str, limit: int) -> None:
    headers = {**sign(), name: "a" * (limit + 1)}
    assert refused(LimitExceeded, name.lower(), headers).limit == limit  # type: ignore[attr-defined]


def test_too_many_dictionary_members_are_refused() -> None:
    headers = sign()
    extra = "".join(f", x{i}=:AAAA:" for i in range(httpsig.MAX_MEMBERS))
    refused(
        LimitExceeded,
        "signature: dictionary members",
        {**headers, "Signature": headers["Signature"] + extra},
    )


SIG = sign()
B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def nonzero_pad_bits(field: str) -> str:
    """The same bytes with a pad bit set: base64 that decodes but is not canonical."""
    last = field.index("==:") - 1
    return field[:last] + B64[B64.index(field[last]) | 1] + field[last + 1 :]


MALFORMED = [
    ("Signature-Input", "sig1=(", "not a structured-field dictionary"),
    ("Signature-Input", 'sig1=("@methöd")', "not a structured-field dictionary"),
    ("Signature-Input", SIG["Signature-Input"].upper(), "not a structured-field dictionary"),
    ("Signature-Input", SIG["Signature-Input"].replace(";", "; "), "not in canonical form"),
    ("Signature-Input", SIG["Signature-Input"] + ";created=1", "not in canonical form"),
    ("Signature-Input", "sig1=:AAAA:", "the member must be an inner list"),
    ("Signature", "sig1=:!!:", "not a structured-field dictionary"),
    ("Signature", "sig1=abc", "expected a byte sequence"),
    ("Signature", SIG["Signature"] + ";x=1", "expected a byte sequence without parameters"),
    ("Signature", "sig1=:AAAA:", "expected 64 bytes"),
    ("Signature", SIG["Signature"] + ", " + SIG["Signature"], "not in canonical form"),
    ("Signature", SIG["Signature"].replace("==:", "=:"), "not a structured-field dictionary"),
    ("Signature", nonzero_pad_bits(SIG["Signature"]), "not in canonical form"),
    ("Content-Digest", "sha-512=:" + "A" * 86 + "==:", "no member labelled 'sha-256'"),
    ("Content-Digest", "sha-256=:AAAA:", "expected 32 bytes"),
    ("Content-Digest", "sha-256=abc", "expected a byte sequence"),
    ("Content-Digest", "", "not a structured-field dictionary"),
]


@pytest.mark.parametrize(("name", "value", "fragment"), MALFORMED)
def test_malformed_structured_field_is_refused(name: str, value: str, fragment: str) -> None:
    refused(MalformedInput, fragment, {**SIG, name: value})


def test_content_digest_with_two_algorithms_is_refused() -> None:
    value = SIG["Content-Digest"] + ", sha-512=:" + "A" * 86 + "==:"
    refused(LimitExceeded, "content-digest: dictionary members", {**SIG, "Content-Digest": value})


@pytest.mark.parametrize(
    ("overrides", "exc", "fragment"),
    [
        ({"method": "post"}, MalformedInput, "method: expected"),
        ({"method": ""}, MalformedInput, "method: expected"),
        ({"target_uri": "/v1/notes"}, MalformedInput, "target uri: expected"),
        ({"target_uri": URI + " x"}, MalformedInput, "target uri: expected"),
        ({"target_uri": URI + "ä"}, MalformedInput, "target uri: expected"),
        ({"target_uri": "https://" + "a" * 4096}, LimitExceeded, "target uri"),
        ({"label": "Sig1"}, MalformedInput, "label: expected"),
    ],
)
def test_bad_method_uri_or_label_is_refused_on_both_sides(
    overrides: dict[str, str], exc: type[KeysError], fragment: str
) -> None:
    refused(exc, fragment, SIG, **overrides)
    with pytest.raises(exc, match=fragment):
        sign(**overrides)


# -- signing rules --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Signature", "signature-input", "CONTENT-DIGEST"])
def test_sign_refuses_headers_already_signed(name: str) -> None:
    with pytest.raises(MalformedInput, match="already present"):
        sign(headers={"Content-Type": "text/plain", name: "x"})


@pytest.mark.parametrize(
    ("overrides", "exc"),
    [
        ({"nonce": "short"}, MalformedInput),
        ({"nonce": "A" * 65}, LimitExceeded),
        ({"keyid": "has space"}, MalformedInput),
        ({"created": -5}, MalformedInput),
        ({"created": 10**15}, MalformedInput),
    ],
)
def test_sign_refuses_parameters_outside_the_profile(
    overrides: dict[str, object], exc: type[KeysError]
) -> None:
    with pytest.raises(exc):
        sign(**overrides)


def test_signature_base_refuses_line_breaks() -> None:
    with pytest.raises(MalformedInput, match="@method: only visible ASCII"):
        httpsig.signature_base([("@method", "POST\nX")], "()")


def test_signature_params_refuses_what_rfc8941_cannot_carry() -> None:
    with pytest.raises(MalformedInput, match="not serialisable"):
        httpsig.signature_params(["@method"], {"keyid": "line\nbreak"})


def test_check_content_digest_refusals() -> None:
    digest = httpsig.content_digest(BODY)
    with pytest.raises(InvalidSignature):
        httpsig.check_content_digest(digest, BODY + b"!")
    with pytest.raises(LimitExceeded):
        httpsig.check_content_digest("a" * (httpsig.MAX_CONTENT_DIGEST + 1), BODY)
    with pytest.raises(MalformedInput):
        httpsig.check_content_digest("sha-256=:AAAA:", BODY)


# -- properties -----------------------------------------------------------------------

SIGNED_NAMES = ["Signature-Input", "Signature", "Content-Digest"]


@st.composite
def mutations(draw: st.DrawFn) -> tuple[str, str]:
    """One signed header and a one-character replacement, insertion or deletion of it."""
    name = draw(st.sampled_from(SIGNED_NAMES))
    value = SIG[name]
    at = draw(st.integers(0, len(value)))
    char = draw(st.characters(min_codepoint=0, max_codepoint=0x17F))
    kind = draw(st.sampled_from(["replace", "insert", "delete"]))
    if kind == "insert":
        return name, value[:at] + char + value[at:]
    at = min(at, len(value) - 1)
    if kind == "delete":
        return name, value[:at] + value[at + 1 :]
    return name, value[:at] + char + value[at + 1 :]


@given(mutations())
def test_any_mutation_of_a_signed_header_is_refused(mutation: tuple[str, str]) -> None:
    name, mutated = mutation
    assume(mutated.strip(" \t") != SIG[name])
    with pytest.raises(KeysError):
        verify({**SIG, name: mutated})


@given(st.sampled_from(SIGNED_NAMES), st.text(max_size=300))
def test_arbitrary_header_text_only_raises_keys_errors(name: str, text: str) -> None:
    with pytest.raises(KeysError):
        verify({**SIG, name: text})


@given(
    body=st.binary(max_size=512),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-/?=&%", max_size=80),
    drift=st.integers(-SKEW, SKEW),
)
def test_round_trip_property(body: bytes, method: str, path: str, drift: int) -> None:
    uri = f"https://hub.example/{path}"
    headers = sign(method=method, target_uri=uri, body=body, nonce=httpsig.new_nonce())
    verify(headers, method=method, target_uri=uri, body=body, now=NOW + drift)


def test_parse_signature_names_the_claimed_key_before_any_check() -> None:
    headers = sign()
    parsed = httpsig.parse_signature(headers)
    assert (parsed.keyid, parsed.nonce, parsed.created) == (KEYID, NONCE, NOW)
    with pytest.raises(MalformedInput, match="header missing"):
        httpsig.parse_signature({})


@pytest.mark.parametrize(
    ("others", "keyid"),
    [("", KEYID), (', proxy=("@method");created=1', KEYID), ("", "key,with,commas")],
)
def test_parsed_signature_params_are_our_member_serialised(others: str, keyid: str) -> None:
    headers = sign(keyid=keyid)
    headers["Signature-Input"] += others
    expected = httpsig.signature_params(httpsig.COMPONENTS, {**PARAMS, "keyid": keyid})
    assert httpsig.parse_signature(headers).signature_params == expected


def test_a_parsed_signature_verifies_like_verify_request() -> None:
    headers = sign()
    parsed = httpsig.parse_signature(headers)
    verified = httpsig.verify_parsed(
        parsed,
        method=METHOD,
        target_uri=URI,
        body=BODY,
        lookup_key={KEYID: KEY.public}.get,
        now=NOW,
        max_skew=SKEW,
    )
    assert verified == verify(headers)
