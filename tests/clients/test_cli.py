"""The ``siko`` root: help on every level, the real console script, registered groups."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from clients.cli import ENTRY_POINT_GROUP, root
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused


def command_paths(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every built-in command and group below ``group``, as the words a user types."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*path, name))


def test_root_help_says_what_siko_is_for_and_where_to_start(siko: Siko) -> None:
    result = siko("--help")
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    for expected in ("case notes", "police, prosecutors and city offices", "siko keys demo"):
        assert expected in flat
    assert "Exit status" in result.stdout and "refused" in result.stdout


@pytest.mark.parametrize("path", list(command_paths(root)), ids=" ".join)
def test_every_command_has_help_with_an_example(siko: Siko, path: tuple[str, ...]) -> None:
    result = siko(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: siko {' '.join(path)} ")
    summary = result.stdout.split("\n\n")[1].strip()
    assert len(summary.split()) >= 5, summary  # a sentence, not a placeholder
    assert "Example" in result.stdout or "typical day" in result.stdout
    assert f"siko {' '.join(path)}" in result.stdout.split("Options:")[0]


def test_version(siko: Siko) -> None:
    result = siko("--version")
    assert result.exit_code == 0 and result.stdout.startswith("siko, version ")


# -- the real program -----------------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("siko")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def test_python_m_clients_cli_shows_help() -> None:
    result = run(sys.executable, "-m", "clients.cli", "keys", "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage: siko keys" in result.stdout and "siko keys demo" in result.stdout


@pytest.mark.skipif(not SCRIPT.exists(), reason="the siko console script is not installed")
def test_console_script_fails_with_one_line_and_its_exit_status() -> None:
    assert run(str(SCRIPT), "--help").returncode == 0
    result = run(str(SCRIPT), "keys", "new", "--agency", "pp-essen", "--out", "/nonexistent/x",
                 "--passphrase-env", "SIKO_TEST_UNSET_VARIABLE")  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.splitlines() == [
        "siko: error: environment variable SIKO_TEST_UNSET_VARIABLE is not set or is empty; "
        "set it to the passphrase, or leave out --passphrase-env to be asked for it"
    ]


def test_siko_keys_never_imports_the_hub() -> None:
    code = (
        "import sys; from clients.cli import root; "
        "root.main(['keys', '--help'], standalone_mode=False); "
        "print('hub imported' if 'hub' in sys.modules else 'hub not imported')"
    )
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("hub not imported")


# -- command groups registered by other packages ---------------------------------------

PLUGIN = '''
import click

@click.group(help="Registered from outside: says hello.")
def hello():
    pass

@hello.command()
def world():
    """Print a greeting."""
    click.echo("hello from a registered group")

not_a_command = 42
'''


@pytest.fixture
def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install a package that registers siko command groups, the way hub/ will."""
    (tmp_path / "siko_test_plugin.py").write_text(PLUGIN)
    (tmp_path / "siko_test_broken.py").write_text("raise ImportError('a missing dependency')\n")
    meta = tmp_path / "siko_test_plugin-1.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: siko-test-plugin\nVersion: 1.0\n")
    (meta / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "hello = siko_test_plugin:hello\n"
        "broken = siko_test_broken:group\n"
        "number = siko_test_plugin:not_a_command\n"
        "keys = siko_test_plugin:hello\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for name in ("siko_test_plugin", "siko_test_broken"):
        sys.modules.pop(name, None)


@pytest.mark.usefixtures("register")
def test_a_registered_group_is_loaded_by_name(siko: Siko) -> None:
    listing = siko("--help")
    assert listing.exit_code == 0
    assert "hello" in listing.stdout and "Registered from outside" in listing.stdout
    result = siko("hello", "world")
    assert result.exit_code == 0 and result.stdout == "hello from a registered group\n"


@pytest.mark.usefixtures("register")
def test_a_broken_registered_group_is_listed_as_unavailable(siko: Siko) -> None:
    listing = siko("--help")
    assert listing.exit_code == 0
    assert "broken" in listing.stdout and "Unavailable: ImportError" in listing.stdout
    assert_refused(siko("broken", "serve", "--port", "1"), 1, "'siko broken' cannot be loaded")
    assert_refused(siko("number"), 1, "is not a click command")


@pytest.mark.usefixtures("register")
def test_built_in_groups_win_over_registered_ones(siko: Siko) -> None:
    result = siko("keys", "--help")
    assert result.exit_code == 0 and "Agency identities" in result.stdout
