"""keys.checkpoint against c2sp.org/signed-note, c2sp.org/tlog-checkpoint and the Go vectors.

tests/vectors/checkpoint.json pins the published example of golang.org/x/mod/sumdb/note
(an independent implementation of signed notes) and the examples of the C2SP specs.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keys._suites import SigningKey
from keys.checkpoint import (
    MAX_EXTENSIONS,
    MAX_LINE_BYTES,
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    NoteVerifier,
    note_key_id,
    open_note,
    open_signed_checkpoint,
    sign_checkpoint,
    sign_note,
    verifier_key_string,
)
from keys.errors import InvalidProof, InvalidSignature, KeysError, LimitExceeded, MalformedInput
from tests.vectors_util import load_vectors

V = load_vectors("checkpoint")
GO = V["go_sumdb_note"]
PETER = NoteVerifier.parse(GO["verifier_key"])
ENOCH = NoteVerifier.parse(GO["enoch"]["verifier_key"])
PETER_KEY = SigningKey(bytes.fromhex(GO["signing_seed"]))
TEXT = GO["text"].encode()
NOTE = GO["note"].encode()
ROOT = bytes(range(32))
LOG_KEY = SigningKey(bytes.fromhex(V["generated"]["signing_seed"]))
LOG = NoteVerifier.parse(V["generated"]["verifier_key"])


def other_key(name: str) -> NoteVerifier:
    return NoteVerifier(name, SigningKey.generate().public.raw)


# -- c2sp.org/signed-note, "Ed25519 signatures": key ids and verifier keys ----------------


def test_ed25519_key_id_and_verifier_key_of_the_go_example() -> None:
    """key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4]."""
    assert GO["private_key"].split("+")[3] == GO["key_id"]
    assert note_key_id("PeterNeumann", PETER_KEY.public.raw).hex() == GO["key_id"]
    assert PETER == NoteVerifier("PeterNeumann", PETER_KEY.public.raw)
    assert PETER.key_id.hex() == GO["key_id"]
    assert verifier_key_string("PeterNeumann", PETER_KEY.public.raw) == GO["verifier_key"]
    assert str(PETER) == GO["verifier_key"]
    enoch = SigningKey(bytes.fromhex(GO["enoch"]["signing_seed"]))
    assert str(NoteVerifier("EnochRoot", enoch.public.raw)) == GO["enoch"]["verifier_key"]
    assert ENOCH.key_id.hex() == GO["enoch"]["key_id"]


def manglings(vkey: str) -> list[str]:
    """Every proper substring and every one-character increment (Go's TestNewVerifier)."""
    subs = [vkey[i:j] for i in range(len(vkey) + 1) for j in range(i + 1, len(vkey) + 1)]
    bumps = [vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :] for i in range(len(vkey))]
    return [s for s in subs + bumps if s != vkey]


def test_every_mangled_verifier_key_is_refused() -> None:
    for bad in manglings(GO["verifier_key"]):
        with pytest.raises(MalformedInput):
            NoteVerifier.parse(bad)


@pytest.mark.parametrize(
    "vkey",
    [
        # Go's note_test.go: wrong key length and unknown algorithm, key ids adjusted.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not lowercase
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",  # padding
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TX",  # other key
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann",
        "",
    ],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(MalformedInput):
        NoteVerifier.parse(vkey)


def test_verifier_key_size_is_bounded() -> None:
    with pytest.raises(LimitExceeded):
        NoteVerifier.parse("a" * (MAX_LINE_BYTES + 1))


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\u00a0b", "tab\there", "nl\n"])
def test_key_names_must_be_non_empty_without_spaces_or_plus(name: str) -> None:
    """Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus."""
    with pytest.raises(MalformedInput):
        NoteVerifier(name, PETER_KEY.public.raw)
    with pytest.raises(MalformedInput):
        sign_note(TEXT, name, PETER_KEY)


def test_verifier_needs_a_32_byte_key() -> None:
    with pytest.raises(MalformedInput):
        NoteVerifier("PeterNeumann", b"\x01" * 31)
    with pytest.raises(MalformedInput):
        verifier_key_string("PeterNeumann", b"\x01" * 33)


# -- c2sp.org/signed-note, "Format" and "Signatures": signing and opening notes -----------


def test_signing_reproduces_the_go_example_byte_for_byte() -> None:
    assert sign_note(TEXT, "PeterNeumann", PETER_KEY) == NOTE
    enoch = SigningKey(bytes.fromhex(GO["enoch"]["signing_seed"]))
    assert sign_note(TEXT, "EnochRoot", enoch) == GO["enoch"]["note"].encode()


def test_opening_the_go_example_returns_its_text() -> None:
    assert open_note(NOTE, PETER) == TEXT


def test_each_known_key_verifies_in_a_doubly_signed_note() -> None:
    """Verifiers MUST ignore signatures from unknown keys."""
    both = GO["two_signatures"].encode()
    assert open_note(both, PETER) == TEXT
    assert open_note(both, ENOCH) == TEXT


def test_unknown_keys_sharing_a_name_or_an_id_are_ignored() -> None:
    """Signatures from unknown keys are ignored even if they share a name or an ID."""
    with pytest.raises(InvalidSignature):
        open_note(NOTE, other_key("PeterNeumann"))
    misnamed = NOTE.replace(b"\xe2\x80\x94 PeterNeumann", "— CarmenSandiego".encode())
    assert misnamed != NOTE
    with pytest.raises(InvalidSignature):
        open_note(misnamed, PETER)
    wrong_id = NOTE.replace(b"x08g", b"xxxx")
    assert wrong_id != NOTE
    with pytest.raises(InvalidSignature):
        open_note(wrong_id, PETER)


def corrupt(signature_line: str) -> str:
    """Go's TestOpen: four base64 characters inserted into the signature."""
    return signature_line[:60] + "ABCD" + signature_line[60:]


def test_a_failing_signature_from_the_known_key_rejects_the_note() -> None:
    """If a signature from a known key fails to verify, clients SHOULD reject the note."""
    peter_line = GO["note"][len(GO["text"]) + 1 :]
    with pytest.raises(InvalidSignature):
        open_note((GO["text"] + "\n" + corrupt(peter_line)).encode(), PETER)
    with pytest.raises(InvalidSignature):
        open_note((GO["text"] + "\n" + peter_line + corrupt(peter_line)).encode(), PETER)


def test_duplicated_and_corrupt_unknown_signatures_are_ignored() -> None:
    peter_line = GO["note"][len(GO["text"]) + 1 :]
    enoch_line = GO["enoch"]["note"][len(GO["text"]) + 1 :]
    lines = peter_line * 2 + enoch_line * 2 + corrupt(enoch_line)
    assert open_note((GO["text"] + "\n" + lines).encode(), PETER) == TEXT


def test_a_note_signed_only_by_others_is_rejected() -> None:
    """If no signature from a known key verifies successfully, clients MUST reject the note."""
    with pytest.raises(InvalidSignature):
        open_note(GO["enoch"]["note"].encode(), PETER)


def test_the_last_blank_line_separates_text_from_signatures() -> None:
    """The note text MAY contain empty lines; the last empty line ends it."""
    example = V["c2sp_examples"][0]
    key = SigningKey.generate()
    mine = NoteVerifier("quasimodo.example/salvatore", key.public.raw)
    note = sign_note(example["text"].encode(), mine.name, key)
    assert open_note(note, mine) == example["text"].encode()
    tail = note[len(example["text"].encode()) :]
    assert open_note(example["note"].encode() + tail[1:], mine) == example["text"].encode()


@pytest.mark.parametrize("example", V["c2sp_examples"], ids=lambda e: e["source"])
def test_spec_examples_are_well_formed_but_not_signed_by_our_keys(example: Any) -> None:
    name = example["note"].rsplit("\n", 2)[-2].split(" ")[1]
    with pytest.raises(InvalidSignature):
        open_note(example["note"].encode(), other_key(name))


def bad_note(vector: dict[str, str]) -> bytes:
    return bytes.fromhex(vector["note_hex"]) if "note_hex" in vector else vector["note"].encode()


@pytest.mark.parametrize("vector", V["bad_notes"], ids=lambda v: v["description"])
def test_go_malformed_notes_are_refused(vector: dict[str, str]) -> None:
    """Signed notes MUST be valid UTF-8 and MUST NOT contain control characters."""
    with pytest.raises(MalformedInput):
        open_note(bad_note(vector), PETER)


@pytest.mark.parametrize(
    "signatures",
    [
        "- PeterNeumann AAAAAAAA\n",  # hyphen, not em dash
        "—PeterNeumann AAAAAAAA\n",
        "— PeterNeumann\n",
        "— PeterNeumann AAAA AAAA\n",
        "— Peter+Neumann AAAAAAAA\n",
        "— PeterNeumann AAAA\n",  # three bytes: no key id and signature
        "— PeterNeumann AAAAAAB=\n",  # not canonical base64
        "— PeterNeumann not*base64\n",
        "— PeterNeumann AAAAAAAA\n \n",
        "— PeterNeumann AAAAAAAA\n\u0085\n",
        "— PeterNeumann AAAAAAAA\n\x7f\n",
        "— PeterNeumann AAAAAAAA\r\n",
    ],
)
def test_malformed_signature_lines_are_refused(signatures: str) -> None:
    with pytest.raises(MalformedInput):
        open_note(TEXT + b"\n" + signatures.encode(), PETER)


def test_signature_count_is_bounded_above_the_required_16() -> None:
    """Verifiers MUST accept at least up to 16 signatures."""
    peter_line = GO["note"][len(GO["text"]) + 1 :]
    many = (GO["text"] + "\n" + peter_line * MAX_SIGNATURES).encode()
    assert MAX_SIGNATURES >= 16
    assert open_note(many, PETER) == TEXT
    with pytest.raises(LimitExceeded):
        open_note(many + peter_line.encode(), PETER)


def test_note_size_and_line_length_are_bounded() -> None:
    with pytest.raises(LimitExceeded):
        open_note(b"a\n" * (MAX_NOTE_BYTES // 2) + b"\n" + NOTE[len(TEXT) + 1 :], PETER)
    with pytest.raises(LimitExceeded):
        open_note(b"a" * (MAX_LINE_BYTES + 1) + b"\n" + NOTE[len(TEXT) :], PETER)
    big_text = (b"a" * (MAX_LINE_BYTES - 1) + b"\n") * (MAX_NOTE_BYTES // MAX_LINE_BYTES)
    with pytest.raises(LimitExceeded):
        sign_note(big_text, "PeterNeumann", PETER_KEY)


@pytest.mark.parametrize(
    "text", [b"", b"no newline", b"bad\x00byte\n", b"\xc3\x28\n", b"\x1b[0m\n"]
)
def test_only_valid_note_text_is_signed(text: bytes) -> None:
    with pytest.raises(MalformedInput):
        sign_note(text, "PeterNeumann", PETER_KEY)


@given(st.integers(min_value=0, max_value=len(NOTE) - 1), st.integers(min_value=1, max_value=255))
def test_any_changed_byte_makes_the_note_fail(position: int, mask: int) -> None:
    changed = NOTE[:position] + bytes([NOTE[position] ^ mask]) + NOTE[position + 1 :]
    with pytest.raises(KeysError):
        open_note(changed, PETER)


# -- c2sp.org/tlog-checkpoint, "Note text" ------------------------------------------------


def test_note_text_of_the_spec_example() -> None:
    example = V["c2sp_examples"][1]
    checkpoint = Checkpoint.parse(example["text"].encode())
    assert checkpoint == Checkpoint(
        example["origin"], example["size"], bytes.fromhex(example["root_hash"])
    )
    assert checkpoint.serialize() == example["text"].encode()


@pytest.mark.parametrize("vector", V["generated"]["checkpoints"], ids=lambda v: str(v["size"]))
def test_generated_checkpoints_round_trip(vector: dict[str, Any]) -> None:
    checkpoint = Checkpoint(
        vector["origin"],
        vector["size"],
        bytes.fromhex(vector["root_hash"]),
        tuple(vector["extensions"]),
    )
    assert checkpoint.serialize() == vector["text"].encode()
    assert sign_checkpoint(checkpoint, LOG.name, LOG_KEY) == vector["note"].encode()
    assert open_signed_checkpoint(vector["note"].encode(), LOG) == checkpoint


def root_line(root: bytes = ROOT) -> str:
    return base64.b64encode(root).decode()


@pytest.mark.parametrize(
    "text",
    [
        f"log\n8\n{root_line()}",  # no final newline
        f"log\n8\n{root_line()}\n\n",  # empty extension line
        f"\n8\n{root_line()}\n",  # empty origin
        "log\n8\n",
        f"log\n08\n{root_line()}\n",  # leading zero
        f"log\n-1\n{root_line()}\n",
        f"log\n+8\n{root_line()}\n",
        f"log\n 8\n{root_line()}\n",
        f"log\n\u0668\n{root_line()}\n",  # an Arabic-Indic digit eight
        f"log\n{2**64}\n{root_line()}\n",
        f"log\n{10**20}\n{root_line()}\n",
        f"log\n8\n{root_line(ROOT[:31])}\n",
        f"log\n8\n{root_line()[:-2]}9=\n",  # non-zero padding bits
        f"log\n8\n{root_line()}=\n",
        f"log\n8\n{root_line().replace('A', '-')}\n",
        f"log\tlog\n8\n{root_line()}\n",
    ],
)
def test_malformed_note_text_is_refused(text: str) -> None:
    """Three non-empty lines: origin, decimal size without leading zeroes, base64 root."""
    with pytest.raises(MalformedInput):
        Checkpoint.parse(text.encode())


def test_checkpoint_text_is_bounded() -> None:
    extensions = "".join(f"ext {i}\n" for i in range(MAX_EXTENSIONS + 1))
    with pytest.raises(LimitExceeded):
        Checkpoint.parse(f"log\n8\n{root_line()}\n{extensions}".encode())
    with pytest.raises(LimitExceeded):
        Checkpoint.parse(b"x" * (MAX_NOTE_BYTES + 1))
    with pytest.raises(LimitExceeded):
        Checkpoint("o" * (MAX_LINE_BYTES + 1), 8, ROOT)
    with pytest.raises(LimitExceeded):
        Checkpoint("log", 8, ROOT, ("ext",) * (MAX_EXTENSIONS + 1))


@pytest.mark.parametrize(
    "fields",
    [
        ("", 8, ROOT, ()),
        ("two\nlines", 8, ROOT, ()),
        (b"log", 8, ROOT, ()),
        ("log", -1, ROOT, ()),
        ("log", 2**64, ROOT, ()),
        ("log", True, ROOT, ()),
        ("log", "8", ROOT, ()),
        ("log", 8, ROOT[:31], ()),
        ("log", 8, bytearray(ROOT), ()),
        ("log", 8, ROOT, ["ext"]),
        ("log", 8, ROOT, ("",)),
        ("log", 8, ROOT, ("a\x00b",)),
    ],
)
def test_invalid_checkpoints_cannot_exist(fields: tuple[Any, Any, Any, Any]) -> None:
    with pytest.raises(MalformedInput):
        Checkpoint(*fields)


origins = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40
)


@given(
    origin=origins,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(origins, max_size=MAX_EXTENSIONS).map(tuple),
)
def test_any_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...]
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert Checkpoint.parse(checkpoint.serialize()) == checkpoint


# -- c2sp.org/tlog-checkpoint, "Signatures": signed checkpoints ---------------------------


def test_signed_checkpoint_round_trip_with_a_fresh_key() -> None:
    key = SigningKey.generate()
    verifier = NoteVerifier.parse(verifier_key_string("siko.example/log", key.public.raw))
    checkpoint = Checkpoint("siko.example/log", 12, ROOT)
    note = sign_checkpoint(checkpoint, "siko.example/log", key)
    assert open_signed_checkpoint(note, verifier) == checkpoint
    with pytest.raises(InvalidSignature):
        open_signed_checkpoint(note, LOG)


def test_the_origin_must_be_the_expected_log() -> None:
    """The log's key name SHOULD match the origin line; we require the expected origin."""
    note = sign_checkpoint(Checkpoint("another.example/log", 1, ROOT), LOG.name, LOG_KEY)
    with pytest.raises(InvalidProof, match="origin"):
        open_signed_checkpoint(note, LOG)
    checkpoint = open_signed_checkpoint(note, LOG, origin="another.example/log")
    assert checkpoint.origin == "another.example/log"


def test_a_signed_note_that_is_not_a_checkpoint_is_refused() -> None:
    with pytest.raises(MalformedInput):
        open_signed_checkpoint(NOTE, PETER)


def test_unknown_cosignatures_do_not_disturb_a_checkpoint() -> None:
    """Clients MUST ignore unknown signatures (key rotation, witness cosigning)."""
    vector = V["generated"]["checkpoints"][0]
    witness = SigningKey.generate()
    cosigned = sign_note(vector["text"].encode(), "witness.example", witness)
    note = vector["note"].encode() + cosigned[len(vector["text"]) + 1 :]
    assert open_signed_checkpoint(note, LOG).size == vector["size"]
