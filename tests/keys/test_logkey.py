"""keys/logkey.py: the hub's log key, its key file and its verifier key string.

The key file layout tested here is the one in the module docstring::

    E({"fmt": "siko-log-key", "origin": str, "sk": bin 32, "v": 1})

The verifier key is the c2sp.org/signed-note one, ``<origin>+<8 hex key id>+<base64>``;
tests/vectors/leaf.json pins it for a fixed key, which is the key of the "generated"
checkpoints of tests/vectors/checkpoint.json.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from keys import codec
from keys._suites import SigningKey, VerifyKey
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.errors import InvalidProof, InvalidSignature, KeyFileError, LimitExceeded, MalformedInput
from keys.ids import ChannelId, MessageId
from keys.leaf import Tombstone
from keys.logkey import FORMAT, MAX_FILE_BYTES, LogKey
from keys.merkle import MAX_TREE_SIZE
from keys.statements import Receipt
from tests.vectors_util import load_vectors

V = load_vectors("leaf")["log_key"]
CHECKPOINTS = load_vectors("checkpoint")["generated"]

ORIGIN = "siko-hub.example/audit"
SEED = bytes(range(32))
ROOT = bytes(range(32))
_DROP = object()


def fixed() -> LogKey:
    return LogKey(ORIGIN, SigningKey(SEED))


def file_map(**changes: Any) -> dict[str, Any]:
    value = {"v": 1, "fmt": "siko-log-key", "origin": ORIGIN, "sk": SEED, **changes}
    return {k: v for k, v in value.items() if v is not _DROP}


def refused(call: Any, *args: Any, exc: type[Exception] = MalformedInput) -> Exception:
    with pytest.raises(exc) as info:
        call(*args)
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    return info.value


# -- keys and origins ----------------------------------------------------------------------------


def test_generate() -> None:
    a = LogKey.generate(ORIGIN)
    b = LogKey.generate(ORIGIN)
    assert a.origin == b.origin == ORIGIN
    assert a.verifier.name == ORIGIN
    assert len(a.verifier.public_key) == 32
    assert a.verifier.public_key != b.verifier.public_key
    assert a.serialize() != b.serialize()


@pytest.mark.parametrize(
    "origin",
    ["a", "A", "0", "siko-hub.example/audit", "x-1.example/a/b", "Log.Example/2026", "a" * 128],
)
def test_good_origins(origin: str) -> None:
    key = LogKey.generate(origin)
    assert key.origin == origin
    assert key.verifier_key.startswith(origin + "+")
    assert LogKey.parse(key.serialize()).origin == origin


@pytest.mark.parametrize(
    "origin",
    [
        "",
        "-log",
        ".log",
        "/log",
        "a" * 129,
        "siko hub",
        "siko+hub",
        "siko_hub",
        "siko:hub",
        "siko\\hub",
        "log\n",
        "\nlog",
        "log\x00",
        "log\t",
        "lög",
        "\u2014log",
        "log\u00a0",
        b"siko-hub",
        None,
        5,
    ],
    ids=repr,
)
def test_bad_origins_are_refused(origin: Any) -> None:
    error = refused(LogKey.generate, origin)
    assert "log origin" in str(error)
    refused(LogKey, origin, SigningKey(SEED))
    refused(LogKey.parse, codec.encode(file_map(origin=origin)))


# -- the verifier key and checkpoints ------------------------------------------------------------


def test_verifier_key_string_format() -> None:
    key = LogKey.generate(ORIGIN)
    public = key.verifier.public_key
    match = re.fullmatch(r"(.+)\+([0-9a-f]{8})\+([A-Za-z0-9+/]{44})", key.verifier_key)
    assert match is not None, key.verifier_key
    assert match[1] == ORIGIN
    key_id = hashlib.sha256(ORIGIN.encode() + b"\n\x01" + public).digest()[:4]
    assert match[2] == key_id.hex()
    assert base64.b64decode(match[3], validate=True) == b"\x01" + public
    assert NoteVerifier.parse(key.verifier_key) == key.verifier
    assert str(key.verifier) == key.verifier_key


def test_verifier_holds_the_public_half_of_the_key() -> None:
    public = ed25519.Ed25519PrivateKey.from_private_bytes(SEED).public_key()
    assert fixed().verifier.public_key == public.public_bytes_raw()
    assert fixed().verifier == NoteVerifier(ORIGIN, public.public_bytes_raw())


@pytest.mark.parametrize("size", [0, 1, 8, 2**32, MAX_TREE_SIZE])
def test_signed_checkpoint_opens_with_the_verifier_key(size: int) -> None:
    key = LogKey.generate(ORIGIN)
    note = key.sign_checkpoint(size, ROOT)
    verifier = NoteVerifier.parse(key.verifier_key)
    assert open_signed_checkpoint(note, verifier) == Checkpoint(ORIGIN, size, ROOT)
    assert note.startswith(Checkpoint(ORIGIN, size, ROOT).serialize() + "\n\u2014 ".encode())


def test_signed_checkpoint_of_another_log_key_is_refused() -> None:
    key = LogKey.generate(ORIGIN)
    verifier = NoteVerifier.parse(key.verifier_key)
    same_origin = LogKey.generate(ORIGIN)
    refused(
        open_signed_checkpoint, same_origin.sign_checkpoint(8, ROOT), verifier, exc=InvalidSignature
    )
    other_origin = LogKey.generate("other.example/log")
    refused(
        open_signed_checkpoint,
        other_origin.sign_checkpoint(8, ROOT),
        verifier,
        exc=InvalidSignature,
    )
    refused(
        open_signed_checkpoint,
        key.sign_checkpoint(8, ROOT),
        NoteVerifier.parse(same_origin.verifier_key),
        exc=InvalidSignature,
    )


def test_signed_checkpoint_is_for_this_origin() -> None:
    note = fixed().sign_checkpoint(8, ROOT)
    verifier = NoteVerifier.parse(fixed().verifier_key)
    with pytest.raises(InvalidProof):
        open_signed_checkpoint(note, verifier, origin="other.example/log")


def test_tampered_checkpoint_is_refused() -> None:
    key = fixed()
    note = key.sign_checkpoint(8, ROOT)
    tampered = note.replace(b"\n8\n", b"\n9\n", 1)
    assert tampered != note
    refused(
        open_signed_checkpoint, tampered, NoteVerifier.parse(key.verifier_key), exc=InvalidSignature
    )


@pytest.mark.parametrize(
    ("size", "root"), [(-1, ROOT), (MAX_TREE_SIZE + 1, ROOT), (8, bytes(31)), (8, b"")]
)
def test_checkpoint_of_bad_values_is_refused(size: int, root: bytes) -> None:
    refused(fixed().sign_checkpoint, size, root)


def test_tombstones_and_receipts_verify_with_the_verifier_public_key() -> None:
    key = LogKey.generate(ORIGIN)
    public = NoteVerifier.parse(key.verifier_key).verify_key
    assert public.raw == VerifyKey(key.verifier.public_key).raw
    key.sign_tombstone(Tombstone(0, "Löschfrist", 1)).verify(public)
    receipt = Receipt(
        ChannelId("clan-lage-ruhr"),
        MessageId(bytes(16)),
        bytes(32),
        0,
        b"leaf",
        1,
    )
    receipt.verify(key.sign_receipt(receipt), public)
    other = LogKey.generate(ORIGIN).verifier.verify_key
    refused(receipt.verify, key.sign_receipt(receipt), other, exc=InvalidSignature)


# -- the key file --------------------------------------------------------------------------------


def test_key_file_layout() -> None:
    data = fixed().serialize()
    assert data == codec.encode(file_map())
    assert codec.decode(data, max_bytes=MAX_FILE_BYTES) == file_map()
    assert FORMAT == "siko-log-key"


def test_parse_round_trip_keeps_the_key() -> None:
    key = LogKey.generate(ORIGIN)
    again = LogKey.parse(key.serialize())
    assert again.origin == key.origin
    assert again.verifier == key.verifier
    assert again.verifier_key == key.verifier_key
    assert again.serialize() == key.serialize()
    # Ed25519 is deterministic: the same key makes the same signatures.
    assert again.sign_checkpoint(3, ROOT) == key.sign_checkpoint(3, ROOT)


def test_repr_shows_no_key_material() -> None:
    key = fixed()
    for text in [repr(key), str(key)]:
        assert SEED.hex() not in text
        assert repr(SEED) not in text


@pytest.mark.parametrize(
    ("changes", "what"),
    [
        ({"fmt": "siko-identity"}, "not a version 1 siko log key file"),
        ({"fmt": "siko-log-key "}, "not a version 1 siko log key file"),
        ({"v": 0}, "not a version 1 siko log key file"),
        ({"v": 2}, "not a version 1 siko log key file"),
        ({"v": True}, "log key.v: expected int"),
        ({"v": "1"}, "log key.v: expected int"),
        ({"fmt": b"siko-log-key"}, "log key.fmt: expected str"),
        ({"origin": b"siko"}, "log key.origin: expected str"),
        ({"sk": SEED.hex()}, "log key.sk: expected bytes"),
        ({"sk": SEED[:31]}, "signing key: expected 32 bytes"),
        ({"sk": SEED + b"\x00"}, "signing key: expected 32 bytes"),
        ({"sk": b""}, "signing key: expected 32 bytes"),
        ({"v": _DROP}, "missing field 'v'"),
        ({"fmt": _DROP}, "missing field 'fmt'"),
        ({"origin": _DROP}, "missing field 'origin'"),
        ({"sk": _DROP}, "missing field 'sk'"),
        ({"pk": bytes(32)}, "unknown field 'pk'"),
    ],
    ids=repr,
)
def test_parse_refuses_other_files(changes: dict[str, Any], what: str) -> None:
    error = refused(LogKey.parse, codec.encode(file_map(**changes)))
    assert what in str(error)
    assert SEED.hex() not in str(error)


def test_parse_refuses_oversize_non_canonical_and_garbage() -> None:
    refused(LogKey.parse, b"\x80" * (MAX_FILE_BYTES + 1), exc=LimitExceeded)
    refused(LogKey.parse, codec.encode(file_map(pad="x" * MAX_FILE_BYTES)), exc=LimitExceeded)
    canonical = codec.encode(file_map())
    unsorted = msgpack.packb(dict(reversed(list(file_map().items()))), use_bin_type=True)
    assert unsorted != canonical
    for data in [unsorted, canonical + b"\x00", canonical[:-1], b"", b"\xc1", codec.encode([])]:
        refused(LogKey.parse, data)


def test_save_writes_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    key = LogKey.generate(ORIGIN)
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key.serialize()
    assert os.listdir(tmp_path) == ["log.key"]  # no temporary file left behind


def test_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    key = LogKey.generate(ORIGIN)
    key.save(path)
    loaded = LogKey.load(path)
    assert loaded.origin == ORIGIN
    assert loaded.verifier_key == key.verifier_key
    assert loaded.serialize() == key.serialize()


@pytest.mark.parametrize("existing", [b"", b"precious", None], ids=["empty", "data", "dir"])
def test_save_never_overwrites(tmp_path: Path, existing: bytes | None) -> None:
    path = tmp_path / "log.key"
    if existing is None:
        path.mkdir()
    else:
        path.write_bytes(existing)
    error = refused(LogKey.generate(ORIGIN).save, path, exc=KeyFileError)
    assert isinstance(error, KeyFileError)
    assert error.path == path
    assert str(path) in str(error)
    if existing is not None:
        assert path.read_bytes() == existing
    assert os.listdir(tmp_path) == ["log.key"]


def test_save_into_a_missing_folder_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "log.key"
    error = refused(fixed().save, path, exc=KeyFileError)
    assert str(path) in str(error)
    assert not path.parent.exists()


def test_load_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing.key"
    error = refused(LogKey.load, path, exc=KeyFileError)
    assert isinstance(error, KeyFileError)
    assert error.path == path
    assert str(path) in str(error)
    assert "cannot read" in str(error)


def test_load_a_folder(tmp_path: Path) -> None:
    error = refused(LogKey.load, tmp_path, exc=KeyFileError)
    assert str(tmp_path) in str(error)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"\x00" * 32,
        b"-----BEGIN PRIVATE KEY-----\n",
        b"\x80" * (MAX_FILE_BYTES + 1),
        b"\x80" * 100_000,
        codec.encode(file_map(fmt="siko-identity")),
        codec.encode(file_map(sk=SEED[:31])),
        codec.encode(file_map(origin="bad origin")),
        codec.encode(file_map()) + b"\x00",
    ],
    ids=[
        "empty",
        "text",
        "zeros",
        "pem",
        "one-byte-too-long",
        "long",
        "other-format",
        "short-key",
        "bad-origin",
        "trailing",
    ],
)
def test_load_garbage_names_the_path(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "log.key"
    path.write_bytes(data)
    error = refused(LogKey.load, path, exc=KeyFileError)
    assert isinstance(error, KeyFileError)
    assert error.path == path
    assert str(error).startswith(f"{path}: not a siko log key file (")
    assert SEED.hex() not in str(error)
    assert error.__cause__ is None


def test_load_accepts_a_file_of_exactly_the_limit(tmp_path: Path) -> None:
    data = codec.encode(file_map())
    assert len(data) <= MAX_FILE_BYTES
    path = tmp_path / "log.key"
    path.write_bytes(data)
    assert LogKey.load(path).serialize() == data


# -- tests/vectors/leaf.json ---------------------------------------------------------------------


def test_vector_log_key() -> None:
    key = LogKey(V["origin"], SigningKey(bytes.fromhex(V["signing_seed"])))
    assert key.verifier.public_key.hex() == V["verify_key"]
    assert key.verifier_key == V["verifier_key"]
    assert key.serialize().hex() == V["key_file"]
    assert LogKey.parse(bytes.fromhex(V["key_file"])).verifier_key == V["verifier_key"]
    # The same key as the generated checkpoints of tests/vectors/checkpoint.json.
    assert V["signing_seed"] == CHECKPOINTS["signing_seed"]
    assert V["verifier_key"] == CHECKPOINTS["verifier_key"]


def test_vector_checkpoint() -> None:
    key = LogKey(V["origin"], SigningKey(bytes.fromhex(V["signing_seed"])))
    pinned = V["checkpoint"]
    note = key.sign_checkpoint(pinned["size"], bytes.fromhex(pinned["root_hash"]))
    assert note.decode() == pinned["note"]
    assert pinned["note"] == CHECKPOINTS["checkpoints"][0]["note"]
    opened = open_signed_checkpoint(note, NoteVerifier.parse(V["verifier_key"]))
    assert opened == Checkpoint(V["origin"], pinned["size"], bytes.fromhex(pinned["root_hash"]))
