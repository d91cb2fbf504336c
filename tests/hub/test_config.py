"""hub/config.py: precedence of the sources, every refusal and its message, masking."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from hub.config import SETTINGS, ConfigError, Settings, available_cores, mask_redis_url
from hub.errors import HubError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-pa55"


def load(
    flags: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    return Settings.load(flags=flags or {}, env=env or {}, config_file=config_file)


def refusal(
    flags: dict[str, object] | None = None,
    env: dict[str, str] | None = None,
    config_file: Path | None = None,
) -> str:
    with pytest.raises(ConfigError) as caught:
        load(flags, env, config_file)
    return str(caught.value)


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "hub.toml"
    path.write_text("", encoding="utf-8")
    return path


@pytest.fixture
def card(tmp_path: Path) -> Path:
    path = tmp_path / "alice.card"
    path.write_bytes(b"card")
    return path


# -- the table and the defaults --------------------------------------------------------


def test_table_covers_every_field_in_order() -> None:
    assert [spec.name for spec in SETTINGS] == [f.name for f in dataclasses.fields(Settings)]


def test_environment_variable_names() -> None:
    assert [spec.env for spec in SETTINGS] == [
        "SIKO_HOST",
        "SIKO_PORT",
        "SIKO_WORKERS",
        "SIKO_PUBLIC_URL",
        "SIKO_REDIS_URL",
        "SIKO_DATA_DIR",
        "SIKO_REDIS_SERVER",
        "SIKO_APPENDFSYNC",
        "SIKO_ADMIN_CARDS",
        "SIKO_MAX_ENVELOPE_BYTES",
        "SIKO_CLOCK_SKEW_S",
        "SIKO_SHUTDOWN_GRACE_S",
        "SIKO_PAGE_LIMIT_MAX",
        "SIKO_LOG_LEVEL",
        "SIKO_LOG_KEY",
        "SIKO_LOG_ORIGIN",
        "SIKO_CHECKPOINT_INTERVAL_S",
        "SIKO_REFUSAL_SUMMARY_S",
    ]


def test_defaults() -> None:
    settings = load()
    assert settings == Settings()
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 8470, Path("data"))
    assert settings.redis_url is None and settings.embedded_redis
    assert settings.appendfsync == "everysec"
    assert settings.admin_cards == ()
    assert settings.max_envelope_bytes == 1_048_576
    assert (settings.clock_skew_s, settings.shutdown_grace_s) == (60, 10.0)
    assert (settings.page_limit_max, settings.log_level) == (500, "INFO")


def test_base_url_is_public_url_or_listen_address() -> None:
    assert Settings().base_url == "http://127.0.0.1:8470"
    assert Settings(host="::1", port=9000).base_url == "http://[::1]:9000"
    assert Settings(public_url="https://hub.example").base_url == "https://hub.example"


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


# -- precedence: flag > environment > file > default -----------------------------------


def test_flag_beats_environment_beats_file_beats_default(toml: Path) -> None:
    toml.write_text("port = 1001\nlog_level = 'ERROR'\nclock_skew_s = 30\n", encoding="utf-8")
    env = {"SIKO_PORT": "1002", "SIKO_LOG_LEVEL": "warning"}
    settings, origins = Settings.load_with_origins(
        flags={"port": "1003"}, env=env, config_file=toml
    )
    assert (settings.port, settings.log_level, settings.clock_skew_s) == (1003, "WARNING", 30)
    assert settings.max_envelope_bytes == 1_048_576
    assert origins["port"] == "--port (command line)"
    assert origins["log_level"] == "SIKO_LOG_LEVEL (environment)"
    assert origins["clock_skew_s"] == f"clock_skew_s (config file {toml})"
    assert origins["max_envelope_bytes"] == "default"


@pytest.mark.parametrize(
    ("flags", "env", "in_file", "expected"),
    [
        ({"port": "1003"}, {"SIKO_PORT": "1002"}, True, 1003),
        ({}, {"SIKO_PORT": "1002"}, True, 1002),
        ({}, {}, True, 1001),
        ({}, {}, False, 8470),
    ],
)
def test_each_layer_in_turn(
    toml: Path, flags: dict[str, object], env: dict[str, str], in_file: bool, expected: int
) -> None:
    toml.write_text("port = 1001\n", encoding="utf-8")
    assert load(flags, env, toml if in_file else None).port == expected


def test_config_file_from_siko_config_and_config_flag_wins(tmp_path: Path) -> None:
    by_env, by_flag = tmp_path / "env.toml", tmp_path / "flag.toml"
    by_env.write_text("port = 2001\n", encoding="utf-8")
    by_flag.write_text("port = 2002\n", encoding="utf-8")
    assert load(env={"SIKO_CONFIG": str(by_env)}).port == 2001
    assert load(env={"SIKO_CONFIG": str(by_env)}, config_file=by_flag).port == 2002


def test_empty_environment_variable_counts_as_unset(toml: Path) -> None:
    toml.write_text("port = 1001\n", encoding="utf-8")
    assert load(env={"SIKO_PORT": "", "SIKO_CONFIG": ""}, config_file=toml).port == 1001
    assert load(env={"SIKO_CONFIG": " "}).port == 8470


def test_flags_may_be_typed_values(card: Path) -> None:
    settings = load({"port": 9000, "data_dir": Path("/srv/siko"), "admin_cards": (card,)})
    assert (settings.port, settings.data_dir, settings.admin_cards) == (
        9000,
        Path("/srv/siko"),
        (card,),
    )


def test_unknown_flag_name_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="prot"):
        load({"prot": "1"})


def test_admin_cards_from_each_source(tmp_path: Path, card: Path, toml: Path) -> None:
    other = tmp_path / "bob.card"
    other.write_bytes(b"card")
    joined = f"{card}{os.pathsep}{other}"
    assert load(env={"SIKO_ADMIN_CARDS": joined}).admin_cards == (card, other)
    assert load({"admin_cards": (str(other),)}).admin_cards == (other,)
    toml.write_text(f"admin_cards = [{str(card)!r}]\n", encoding="utf-8")
    assert load(config_file=toml).admin_cards == (card,)


def test_text_is_normalised() -> None:
    settings = load(
        env={
            "SIKO_LOG_LEVEL": "debug",
            "SIKO_APPENDFSYNC": "ALWAYS",
            "SIKO_PUBLIC_URL": "https://hub.example/",
            "SIKO_SHUTDOWN_GRACE_S": "2.5",
            "SIKO_PORT": " 9000 ",
        }
    )
    assert (settings.log_level, settings.appendfsync) == ("DEBUG", "always")
    assert (settings.public_url, settings.shutdown_grace_s, settings.port) == (
        "https://hub.example",
        2.5,
        9000,
    )


@pytest.mark.parametrize(
    "url",
    [
        "redis://redis.internal:6379/0",
        "rediss://:pw@redis.internal:6380/2",
        "redis://user:pw@10.0.0.5",
        "unix:///run/redis/redis.sock",
        "unix://:pw@/run/redis/redis.sock?db=1",
    ],
)
def test_accepted_redis_urls(url: str) -> None:
    assert load(env={"SIKO_REDIS_URL": url}).redis_url == url


# -- refusals, each with a message naming setting, origin and what is allowed ----------


def test_unparsable_port_from_environment_message() -> None:
    assert refusal(env={"SIKO_PORT": "80x"}) == (
        "SIKO_PORT='80x' (environment): expected an integer 1-65535"
    )


def test_bad_flag_message_names_the_flag() -> None:
    assert refusal({"port": "0x"}) == "--port='0x' (command line): expected an integer 1-65535"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SIKO_PORT", "0", "expected an integer 1-65535"),
        ("SIKO_PORT", "65536", "expected an integer 1-65535"),
        ("SIKO_PORT", "0x10", "expected an integer 1-65535"),
        ("SIKO_HOST", "a host", "expected a host name or IP address"),
        ("SIKO_HOST", "http://x", "expected a host name or IP address"),
        ("SIKO_PUBLIC_URL", "ftp://hub.example", "expected an http:// or https:// URL"),
        ("SIKO_PUBLIC_URL", "https://hub.example/v1", "with no path, query or fragment"),
        ("SIKO_PUBLIC_URL", "https://hub.example?x=1", "with no path, query or fragment"),
        ("SIKO_PUBLIC_URL", "https://hub.example#top", "with no path, query or fragment"),
        ("SIKO_PUBLIC_URL", "https://u:p@hub.example", "expected an http:// or https:// URL"),
        ("SIKO_PUBLIC_URL", "https://hub.example:port", "expected an http:// or https:// URL"),
        ("SIKO_PUBLIC_URL", "hub.example", "expected an http:// or https:// URL"),
        ("SIKO_REDIS_URL", "http://redis.internal", "expected a redis://, rediss:// or unix://"),
        ("SIKO_REDIS_URL", "redis://", "expected a redis://, rediss:// or unix://"),
        ("SIKO_REDIS_URL", "redis://host/zero", "expected a redis://, rediss:// or unix://"),
        ("SIKO_REDIS_URL", "redis://host:port", "expected a redis://, rediss:// or unix://"),
        ("SIKO_REDIS_URL", "unix://", "expected a redis://, rediss:// or unix://"),
        ("SIKO_APPENDFSYNC", "no", "expected 'everysec' or 'always'"),
        ("SIKO_MAX_ENVELOPE_BYTES", "1023", "expected an integer 1024-2097152 (1 KiB to 2 MiB)"),
        ("SIKO_MAX_ENVELOPE_BYTES", "2097153", "expected an integer 1024-2097152"),
        ("SIKO_MAX_ENVELOPE_BYTES", "1MiB", "expected an integer 1024-2097152"),
        ("SIKO_CLOCK_SKEW_S", "4", "expected an integer 5-600 (seconds)"),
        ("SIKO_CLOCK_SKEW_S", "601", "expected an integer 5-600 (seconds)"),
        ("SIKO_CLOCK_SKEW_S", "60.5", "expected an integer 5-600 (seconds)"),
        ("SIKO_SHUTDOWN_GRACE_S", "-1", "expected a number of seconds 0-3600"),
        ("SIKO_SHUTDOWN_GRACE_S", "nan", "expected a number of seconds 0-3600"),
        ("SIKO_SHUTDOWN_GRACE_S", "inf", "expected a number of seconds 0-3600"),
        ("SIKO_SHUTDOWN_GRACE_S", "soon", "expected a number of seconds 0-3600"),
        ("SIKO_PAGE_LIMIT_MAX", "0", "expected an integer 1-10000"),
        ("SIKO_PAGE_LIMIT_MAX", "10001", "expected an integer 1-10000"),
        ("SIKO_LOG_LEVEL", "LOUD", "expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("SIKO_ADMIN_CARDS", "/no/such.card", "no readable file at '/no/such.card'"),
    ],
)
def test_environment_refusals(variable: str, value: str, expected: str) -> None:
    message = refusal(env={variable: value})
    assert message.startswith(f"{variable}=")
    assert "(environment): " in message
    assert expected in message


def test_edges_are_accepted() -> None:
    env = {"SIKO_MAX_ENVELOPE_BYTES": "1024", "SIKO_CLOCK_SKEW_S": "5", "SIKO_PORT": "1"}
    assert load(env=env).max_envelope_bytes == 1024
    env = {"SIKO_MAX_ENVELOPE_BYTES": "2097152", "SIKO_CLOCK_SKEW_S": "600", "SIKO_PORT": "65535"}
    assert (load(env=env).max_envelope_bytes, load(env=env).clock_skew_s) == (2097152, 600)


def test_error_carries_setting_and_origin_as_attributes() -> None:
    with pytest.raises(ConfigError) as caught:
        load(env={"SIKO_CLOCK_SKEW_S": "1"})
    assert caught.value.setting == "clock_skew_s"
    assert caught.value.origin == "SIKO_CLOCK_SKEW_S (environment)"
    assert not isinstance(caught.value, HubError)


def test_missing_admin_card_names_the_file(card: Path, tmp_path: Path) -> None:
    missing = tmp_path / "bob.card"
    message = refusal({"admin_cards": (str(card), str(missing))})
    assert message.startswith("--admin-card=")
    assert f"no readable file at {str(missing)!r}" in message
    assert "expected readable public card files of the first administrators" in message


def test_admin_card_that_is_a_folder(tmp_path: Path) -> None:
    assert f"no readable file at {str(tmp_path)!r}" in refusal({"admin_cards": (tmp_path,)})


def test_overridden_values_are_checked_too(toml: Path) -> None:
    toml.write_text("port = 'eighty'\n", encoding="utf-8")
    message = refusal({"port": "9000"}, {"SIKO_PORT": "9001"}, toml)
    assert message == (
        f"port='eighty' (config file {toml}): expected an integer 1-65535, got a string"
    )


# -- workers: one process, or a supervisor and N workers on one port -------------------


def test_workers_default_to_one_process_and_come_from_every_source(toml: Path) -> None:
    assert Settings().workers == 1
    assert load(flags={"workers": "4"}).workers == 4
    assert load(env={"SIKO_WORKERS": " 64 "}).workers == 64
    toml.write_text("workers = 2\n", encoding="utf-8")
    settings, origins = Settings.load_with_origins(flags={}, env={}, config_file=toml)
    assert settings.workers == 2
    assert origins["workers"] == f"workers (config file {toml})"


@pytest.mark.parametrize("value", ["0", "65", "two", "1.5", "-2", ""])
def test_workers_refusals_name_the_source_and_the_range(value: str) -> None:
    assert refusal({"workers": value}) == (
        f"--workers={value!r} (command line): expected an integer 1-64, or auto"
    )


def test_workers_refusals_from_environment_and_file(toml: Path) -> None:
    assert refusal(env={"SIKO_WORKERS": "65"}) == (
        "SIKO_WORKERS='65' (environment): expected an integer 1-64, or auto"
    )
    toml.write_text("workers = 'two'\n", encoding="utf-8")
    assert refusal(config_file=toml) == (
        f"workers='two' (config file {toml}): expected an integer 1-64, or auto"
    )
    toml.write_text("workers = 1.5\n", encoding="utf-8")
    assert refusal(config_file=toml) == (
        f"workers=1.5 (config file {toml}): expected an integer 1-64, or auto, got a number"
    )
    toml.write_text("workers = 0\n", encoding="utf-8")
    assert refusal(config_file=toml) == (
        f"workers=0 (config file {toml}): expected an integer 1-64, or auto"
    )


def test_workers_auto_is_one_per_core_this_process_may_use(toml: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert available_cores() == min(cores, 64) >= 1
    assert load(flags={"workers": "auto"}).workers == available_cores()
    assert load(env={"SIKO_WORKERS": " auto "}).workers == available_cores()
    toml.write_text("workers = 'auto'\n", encoding="utf-8")
    assert load(config_file=toml).workers == available_cores()
    assert refusal({"workers": "AUTO"}).endswith("expected an integer 1-64, or auto")


@pytest.mark.parametrize("value", [0, 65, True, 2.0, "2"])
def test_workers_constructor_refuses(value: object) -> None:
    with pytest.raises(
        ConfigError, match=r"^workers=.* \(Settings\): expected an integer 1-64, or auto$"
    ):
        Settings(workers=value)  # type: ignore[arg-type]


def test_workers_need_a_fixed_port() -> None:
    """Each worker binds HOST:PORT itself: a port chosen by the kernel (0) would differ."""
    message = refusal({"workers": "2", "port": "0"})
    assert message == "--port='0' (command line): expected an integer 1-65535"


# -- the TOML file ---------------------------------------------------------------------


def test_unknown_toml_key_suggests_the_near_one(toml: Path) -> None:
    toml.write_text("prot = 9000\n", encoding="utf-8")
    message = refusal(config_file=toml)
    assert message.startswith(f"unknown setting 'prot' in config file {toml}: ")
    assert "did you mean 'port'?" in message
    assert "allowed keys: host, port, workers, public_url" in message


def test_unknown_toml_table(toml: Path) -> None:
    toml.write_text("[hub]\nport = 9000\n", encoding="utf-8")
    assert refusal(config_file=toml).startswith("unknown setting 'hub' in config file")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("port = '9000'", "port='9000' ({where}): expected an integer 1-65535, got a string"),
        ("port = true", "port=True ({where}): expected an integer 1-65535, got true/false"),
        ("port = 90.0", "port=90.0 ({where}): expected an integer 1-65535, got a number"),
        ("host = 127", "host=127 ({where}): expected a host name or IP address"),
        ("admin_cards = 'a.card'", "admin_cards='a.card' ({where}): expected readable"),
        ("admin_cards = [1]", "admin_cards=['1'] ({where}): expected readable"),
        ("log_level = {}", "log_level={{}} ({where}): expected one of DEBUG"),
        ("clock_skew_s = 1", "clock_skew_s=1 ({where}): expected an integer 5-600"),
    ],
)
def test_toml_wrong_types_and_ranges(toml: Path, line: str, expected: str) -> None:
    toml.write_text(line + "\n", encoding="utf-8")
    assert expected.format(where=f"config file {toml}") in refusal(config_file=toml)


def test_toml_float_for_seconds_and_int_promoted(toml: Path) -> None:
    toml.write_text("shutdown_grace_s = 3\n", encoding="utf-8")
    assert load(config_file=toml).shutdown_grace_s == 3.0


def test_missing_config_file_from_flag_and_from_environment(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert refusal(config_file=missing) == (
        f"config file {missing} (from --config) does not exist; expected a readable TOML file"
    )
    assert "(from SIKO_CONFIG) does not exist" in refusal(env={"SIKO_CONFIG": str(missing)})


def test_config_file_that_is_a_folder(tmp_path: Path) -> None:
    assert "cannot be read" in refusal(config_file=tmp_path)


def test_config_file_that_is_not_toml(toml: Path) -> None:
    toml.write_text("port = \n", encoding="utf-8")
    assert refusal(config_file=toml).startswith(f"config file {toml} (from --config) is not valid")
    toml.write_bytes(b"\xff\xfe")
    assert "is not valid TOML" in refusal(config_file=toml)


# -- the checked constructor -----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("port", True),
        ("port", "8470"),
        ("host", ""),
        ("data_dir", "data"),
        ("log_level", "info"),
        ("appendfsync", "no"),
        ("admin_cards", [Path("x")]),
        ("admin_cards", ("x.card",)),
        ("shutdown_grace_s", float("nan")),
        ("redis_server", ""),
        ("public_url", "https://hub.example/"),
    ],
)
def test_constructor_refuses(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}=.* \(Settings\): "):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_constructor_accepts_readable_cards(card: Path) -> None:
    assert Settings(admin_cards=(card,)).admin_cards == (card,)


# -- masking the Redis password --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"redis://:{SECRET}@r:6379/0", "redis://:***@r:6379/0"),
        (f"redis://default:{SECRET}@r:6379/0", "redis://default:***@r:6379/0"),
        (f"rediss://{SECRET}@r", "rediss://***@r"),
        (f"redis://r:6379/0?password={SECRET}&db=1", "redis://r:6379/0?password=***&db=1"),
        (f"unix://:{SECRET}@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("redis://r:6379/0", "redis://r:6379/0"),
        (f"redis://:{SECRET[:3]}/{SECRET}@r", "<URL not shown: it may contain a password>"),
        (f"redis://:{SECRET}@[::1", "<URL not shown: it may contain a password>"),
    ],
)
def test_mask_redis_url(url: str, masked: str) -> None:
    assert mask_redis_url(url) == masked


def test_repr_and_describe_hide_the_password() -> None:
    settings = load(env={"SIKO_REDIS_URL": f"redis://:{SECRET}@redis.internal:6379/0"})
    assert settings.redis_url == f"redis://:{SECRET}@redis.internal:6379/0"
    for text in (repr(settings), str(settings), settings.describe()):
        assert SECRET not in text
        assert "redis://:***@redis.internal:6379/0" in text


def test_describe_is_one_line_naming_every_setting() -> None:
    line = Settings().describe()
    assert "\n" not in line
    assert "redis_url=embedded" in line and "port=8470" in line
    assert re.findall(r"(\w+)=", line) == [spec.name for spec in SETTINGS]


@pytest.mark.parametrize(
    "url",
    [f"http://:{SECRET}@redis.internal", f"redis://:{SECRET}@host/db", f"redis://:a/{SECRET}@h"],
)
def test_refusal_messages_hide_the_password(url: str) -> None:
    for message in (refusal(env={"SIKO_REDIS_URL": url}), refusal({"redis_url": url})):
        assert SECRET not in message
        assert "redis_url" in message.lower() or "--redis" in message


# -- the one reader of os.environ ------------------------------------------------------


def test_only_config_reads_the_environment() -> None:
    readers = [
        path.name
        for path in sorted((ROOT / "hub").rglob("*.py"))
        if re.search(r"os\.environ|getenv\(|environ\[", path.read_text(encoding="utf-8"))
    ]
    assert readers == ["config.py"]


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for spec in SETTINGS:
        monkeypatch.delenv(spec.env, raising=False)
    monkeypatch.delenv("SIKO_CONFIG", raising=False)
    monkeypatch.setenv("SIKO_PORT", "9123")
    assert Settings.from_env().port == 9123
    assert Settings.from_env(flags={"port": "9124"}).port == 9124


def test_operations_doc_lists_every_setting() -> None:
    """docs/OPERATIONS.md is written by hand: it must not fall behind the table."""
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    for spec in SETTINGS:
        row = f"| `{spec.flag} {spec.metavar}"
        assert row in doc and f"`{spec.env}`" in doc and f"`{spec.name}`" in doc, spec.name
