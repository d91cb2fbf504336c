"""``siko keys``: identities, cards, sealing and opening, through the command line.

Identity files are made once per module with the real (default) Argon2id cost; every
test that needs one uses these, so the suite makes only a handful of them.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

import keys
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused

PASSPHRASE = "korrekt pferd batterie heftklammer"
ENV = {"SIKO_TEST_PASSPHRASE": PASSPHRASE}
USE_ENV = ("--passphrase-env", "SIKO_TEST_PASSPHRASE")
TEXT = "Kontrolle Altendorfer Strasse, 02:10 Uhr.\nDrei Insassen, Fahrzeug E-AB 123.\n"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@dataclass(frozen=True)
class Agency:
    name: str
    suite: str
    identity: Path
    card: Path
    created_output: str


@dataclass(frozen=True)
class World:
    police: Agency  # mlkem768-x25519, the default
    prosecutor: Agency  # x25519
    city: Agency  # mlkem768-x25519
    sealed: Path  # police -> prosecutor + city, VS-NfD, H1


@pytest.fixture(scope="module")
def world(siko: Siko, tmp_path_factory: pytest.TempPathFactory) -> World:
    folder = tmp_path_factory.mktemp("keys")

    def agency(name: str, *suite: str) -> Agency:
        identity, card = folder / f"{name}.identity", folder / f"{name}.card"
        created = siko(
            "keys", "new", "--agency", name, *suite, "--out", str(identity), *USE_ENV, env=ENV
        )
        assert created.exit_code == 0, created.output
        exported = siko("keys", "export-card", str(identity), "--out", str(card))
        assert exported.exit_code == 0, exported.output
        return Agency(
            name, suite[-1] if suite else "mlkem768-x25519", identity, card, created.stdout
        )

    police = agency("pp-duisburg")
    prosecutor = agency("sta-essen", "--suite", "x25519")
    city = agency("stadt-essen-ordnungsamt")
    sealed = folder / "report.sealed"
    result = siko(
        "keys", "seal", "--key", str(police.identity), "--channel", "clan-lagebild-ruhr",
        "--to", str(prosecutor.card), "--to", str(city.card),
        "--classification", "VS-NfD", "--handling", "H1", "--subject", "Streifenbericht",
        "--case-ref", "PP-DU 4711/25", "--out", str(sealed), *USE_ENV,
        input=TEXT, env=ENV,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return World(police, prosecutor, city, sealed)


def open_args(reader: Agency, sender: Agency, envelope: Path, *extra: str) -> list[str]:
    return [
        "keys", "open", "--key", str(reader.identity), "--from", str(sender.card),
        "--in", str(envelope), *extra,
    ]  # fmt: skip


def fingerprint(path: Path) -> str:
    return keys.load_card(path).key_id.fingerprint()


# -- new, show, export-card -----------------------------------------------------------


@pytest.mark.parametrize("who", ["police", "prosecutor"])
def test_new_prints_agency_suite_fingerprint_and_path(world: World, who: str) -> None:
    agency: Agency = getattr(world, who)
    for expected in (agency.name, agency.suite, fingerprint(agency.card), str(agency.identity)):
        assert expected in agency.created_output
    assert stat.S_IMODE(agency.identity.stat().st_mode) == 0o600


def test_show_names_a_private_identity_file_without_passphrase(siko: Siko, world: World) -> None:
    result = siko("keys", "show", str(world.prosecutor.identity))
    assert result.exit_code == 0, result.output
    assert "PRIVATE identity file" in result.stdout
    for expected in ("sta-essen", "x25519", fingerprint(world.prosecutor.card)):
        assert expected in result.stdout
    assert ISO_UTC.search(result.stdout)


def test_show_names_a_public_card(siko: Siko, world: World) -> None:
    result = siko("keys", "show", str(world.police.card))
    assert result.exit_code == 0, result.output
    assert "PUBLIC agency card" in result.stdout
    assert "PRIVATE" not in result.stdout
    for expected in ("pp-duisburg", "mlkem768-x25519", fingerprint(world.police.card)):
        assert expected in result.stdout
    assert ISO_UTC.search(result.stdout)


def test_show_refuses_a_file_that_is_no_key(siko: Siko, world: World) -> None:
    assert_refused(siko("keys", "show", str(world.sealed)), 3, "neither")


def test_export_card_is_the_identity_s_public_card(world: World) -> None:
    assert keys.load_card(world.city.card) == keys.load_card(world.city.identity)
    assert keys.AgencyCard.parse(world.city.card.read_bytes()).agency == "stadt-essen-ordnungsamt"


# -- seal, open, verify ---------------------------------------------------------------


@pytest.mark.parametrize("who", ["prosecutor", "city"])  # an x25519 and an ML-KEM reader
def test_each_recipient_opens_the_note(siko: Siko, world: World, who: str) -> None:
    reader: Agency = getattr(world, who)
    result = siko(*open_args(reader, world.police, world.sealed, *USE_ENV), env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == TEXT.encode()
    assert "*** VS-NfD / handling H1 / TLP:AMBER ***" in result.stderr
    for expected in ("Streifenbericht", "PP-DU 4711/25", "clan-lagebild-ruhr", "pp-duisburg"):
        assert expected in result.stderr


def test_x25519_sender_seals_from_stdin_and_reader_opens_to_a_file(
    siko: Siko, world: World, tmp_path: Path
) -> None:
    envelope, text = tmp_path / "answer.sealed", tmp_path / "answer.txt"
    sealed = siko(
        "keys", "seal", "--key", str(world.prosecutor.identity), "--channel", "clan-lagebild-ruhr",
        "--to", str(world.police.card), "--classification", "OFFEN", "--handling", "H0",
        "--tlp", "GREEN", "--subject", "Antwort \x1b[2J", "--out", str(envelope), *USE_ENV,
        input="Ermittlungsverfahren eingeleitet.", env=ENV,
    )  # fmt: skip
    assert sealed.exit_code == 0, sealed.output
    opened = siko(
        *open_args(world.police, world.prosecutor, envelope, "--out", str(text), *USE_ENV), env=ENV
    )
    assert opened.exit_code == 0, opened.output
    assert text.read_text("utf-8") == "Ermittlungsverfahren eingeleitet."
    assert stat.S_IMODE(text.stat().st_mode) == 0o600
    assert "OFFEN / handling H0 / TLP:GREEN" in opened.stderr
    assert "\x1b" not in opened.stderr and "Antwort \\x1b[2J" in opened.stderr


def test_verify_needs_only_the_sender_s_card(siko: Siko, world: World) -> None:
    result = siko("keys", "verify", "--from", str(world.police.card), "--in", str(world.sealed))
    assert result.exit_code == 0, result.output
    assert "signature valid" in result.stdout
    for expected in ("VS-NfD", "H1", "sta-essen, stadt-essen-ordnungsamt", "digest:"):
        assert expected in result.stdout
    assert TEXT.splitlines()[0] not in result.stdout


def test_passphrase_is_asked_for_without_echo(siko: Siko, world: World) -> None:
    result = siko(*open_args(world.city, world.police, world.sealed), input=PASSPHRASE + "\n")
    assert result.exit_code == 0, result.output
    assert "Passphrase for" in result.stderr
    assert PASSPHRASE not in result.output
    assert result.stdout_bytes == TEXT.encode()


def test_new_asks_twice_and_again_after_a_mismatch_or_a_short_one(
    siko: Siko, tmp_path: Path
) -> None:
    out = tmp_path / "stadt-essen-jugendamt.identity"
    typed = "kurz\npassphrase-one\npassphrase-two\npassphrase-one\npassphrase-one\n"
    result = siko(
        "keys", "new", "--agency", "stadt-essen-jugendamt", "--out", str(out), input=typed
    )
    assert result.exit_code == 0, result.output
    assert "at least 8 characters" in result.output
    assert "do not match" in result.output
    assert "passphrase-one" not in result.output and "kurz" not in result.output
    assert keys.load_identity(out, "passphrase-one").agency == "stadt-essen-jugendamt"


# -- refusals -------------------------------------------------------------------------


def test_wrong_passphrase_is_exit_3_with_a_clear_message(siko: Siko, world: World) -> None:
    wrong = {"SIKO_TEST_PASSPHRASE": "not the passphrase at all"}
    result = siko(*open_args(world.city, world.police, world.sealed, *USE_ENV), env=wrong)
    line = assert_refused(result, 3, str(world.city.identity), "wrong passphrase")
    assert "not the passphrase" not in result.output and TEXT[:10] not in result.output
    assert "restore" in line


@pytest.mark.parametrize("env", [{}, {"SIKO_TEST_PASSPHRASE": ""}], ids=["unset", "empty"])
def test_missing_passphrase_variable_is_exit_3(
    siko: Siko, world: World, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SIKO_TEST_PASSPHRASE", raising=False)
    result = siko(*open_args(world.city, world.police, world.sealed, *USE_ENV), env=env)
    assert_refused(result, 3, "SIKO_TEST_PASSPHRASE", "not set or is empty")


def test_new_refuses_a_short_passphrase_from_the_environment(siko: Siko, tmp_path: Path) -> None:
    out = tmp_path / "x.identity"
    result = siko(
        "keys",
        "new",
        "--agency",
        "pp-essen",
        "--out",
        str(out),
        *USE_ENV,
        env={"SIKO_TEST_PASSPHRASE": "kurz"},
    )
    assert_refused(result, 3, "at least 8 characters")
    assert not out.exists()


@pytest.mark.parametrize("command", ["new", "export-card"])
def test_key_files_are_never_overwritten(
    siko: Siko, world: World, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "precious"
    out.write_bytes(b"precious bytes")
    args = {
        "new": ["keys", "new", "--agency", "pp-essen", "--out", str(out), *USE_ENV],
        "export-card": ["keys", "export-card", str(world.police.identity), "--out", str(out)],
    }[command]
    assert_refused(siko(*args, env=ENV), 3, str(out), "already exists")
    assert out.read_bytes() == b"precious bytes"


@pytest.mark.parametrize("command", ["seal", "open"])
def test_note_and_envelope_files_are_never_overwritten(
    siko: Siko, world: World, tmp_path: Path, command: str
) -> None:
    out = tmp_path / "precious"
    out.write_bytes(b"precious bytes")
    args = {
        "seal": [
            "keys", "seal", "--key", str(world.police.identity), "--channel", "lage",
            "--to", str(world.city.card), "--classification", "OFFEN", "--handling", "H0",
            "--out", str(out),
        ],
        "open": open_args(world.city, world.police, world.sealed, "--out", str(out)),
    }[command]  # fmt: skip
    assert_refused(siko(*args, input="text"), 1, str(out), "already exists")
    assert out.read_bytes() == b"precious bytes"


@pytest.mark.parametrize("where", [0, 7, 0.2, 0.5, 0.8, -1])
def test_a_one_byte_change_is_refused_with_exit_4_and_no_output(
    siko: Siko, world: World, tmp_path: Path, where: float
) -> None:
    data = bytearray(world.sealed.read_bytes())
    data[int(where * len(data)) if isinstance(where, float) else where] ^= 0x01
    altered, out = tmp_path / "altered.sealed", tmp_path / "out.txt"
    altered.write_bytes(bytes(data))
    opened = siko(
        *open_args(world.city, world.police, altered, "--out", str(out), *USE_ENV), env=ENV
    )
    assert_refused(opened, 4, str(altered))
    assert not out.exists()
    checked = siko("keys", "verify", "--from", str(world.police.card), "--in", str(altered))
    assert_refused(checked, 4, "refused")


def test_a_non_recipient_is_told_so_before_any_passphrase(siko: Siko, world: World) -> None:
    result = siko(*open_args(world.police, world.police, world.sealed))
    assert_refused(result, 4, "not sealed for pp-duisburg", "ask the sender")
    assert "Passphrase" not in result.output


def test_the_wrong_sender_card_is_refused(siko: Siko, world: World) -> None:
    result = siko("keys", "verify", "--from", str(world.city.card), "--in", str(world.sealed))
    assert_refused(result, 4, "pp-duisburg", "stadt-essen-ordnungsamt")


@pytest.mark.parametrize("bad", ["PP-Duisburg", "pp_duisburg", "pp", "-pp-duisburg", "pp--du"])
def test_a_bad_agency_id_is_a_usage_error(siko: Siko, tmp_path: Path, bad: str) -> None:
    out = tmp_path / "x.identity"
    result = siko("keys", "new", "--agency", bad, "--out", str(out), *USE_ENV, env=ENV)
    assert result.exit_code == 2
    assert "agency id must be" in result.stderr and "pp-duisburg" in result.stderr
    assert not out.exists()


def test_a_bad_channel_or_marking_is_a_usage_error(
    siko: Siko, world: World, tmp_path: Path
) -> None:
    base = ["keys", "seal", "--key", str(world.police.identity), "--to", str(world.city.card)]
    out = ["--out", str(tmp_path / "x.sealed")]
    bad_channel = siko(
        *base, "--channel", "Lage Ruhr", "--classification", "OFFEN", "--handling", "H0", *out
    )
    assert bad_channel.exit_code == 2 and "channel id must be" in bad_channel.stderr
    bad_marking = siko(
        *base, "--channel", "lage", "--classification", "SECRET", "--handling", "H0", *out
    )
    assert bad_marking.exit_code == 2 and "VS-NfD" in bad_marking.stderr


def test_a_note_that_is_not_text_is_refused(siko: Siko, world: World, tmp_path: Path) -> None:
    args = [
        "keys", "seal", "--key", str(world.police.identity), "--channel", "lage",
        "--to", str(world.city.card), "--classification", "OFFEN", "--handling", "H0",
        "--out", str(tmp_path / "x.sealed"),
    ]  # fmt: skip
    assert_refused(siko(*args, input=b"\xff\xfe\x00"), 1, "not UTF-8")


def test_bytes_that_are_not_utf8_in_a_passphrase_or_subject_are_refused(
    siko: Siko, world: World, tmp_path: Path
) -> None:
    undecodable = {"SIKO_TEST_PASSPHRASE": "abc\udcffdefghij"}  # how Python reads byte 0xff
    opened = siko(*open_args(world.city, world.police, world.sealed, *USE_ENV), env=undecodable)
    assert_refused(opened, 3, "SIKO_TEST_PASSPHRASE", "not valid UTF-8")
    sealed = siko(
        "keys", "seal", "--key", str(world.police.identity), "--channel", "lage",
        "--to", str(world.city.card), "--classification", "OFFEN", "--handling", "H0",
        "--subject", "a\udcffb", "--out", str(tmp_path / "x.sealed"), input="text",
    )  # fmt: skip
    assert sealed.exit_code == 2 and "not valid UTF-8" in sealed.stderr


def test_an_unwritable_output_is_one_line_exit_1(siko: Siko, world: World, tmp_path: Path) -> None:
    out = tmp_path / "no-such-folder" / "x.txt"
    result = siko(
        *open_args(world.city, world.police, world.sealed, "--out", str(out), *USE_ENV), env=ENV
    )
    assert_refused(result, 1, str(out), "No such file or directory")


# -- the demo -------------------------------------------------------------------------


def test_demo_walks_through_and_keeps_its_files_in_dir(siko: Siko, tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = siko("keys", "demo", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    flat = " ".join(result.stdout.split())
    assert "sta-essen opens it" in flat and "stadt-essen-ordnungsamt opens it" in flat
    assert "not addressed, tries to open it and is refused" in flat
    assert "One byte of a copy is changed" in flat and "it is refused" in flat
    assert "cheap key derivation" in flat
    names = {path.name for path in folder.iterdir()}
    assert {"pp-duisburg.identity", "sta-essen.card", "note.sealed"} <= names


def test_demo_runs_in_a_temporary_folder(siko: Siko) -> None:
    result = siko("keys", "demo")
    assert result.exit_code == 0, result.output
    assert "temporary folder is removed" in result.stdout


def test_demo_refuses_a_folder_that_is_not_empty(siko: Siko, tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    assert_refused(siko("keys", "demo", "--dir", str(tmp_path)), 1, "not empty")
