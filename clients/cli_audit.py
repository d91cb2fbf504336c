"""``siko audit``: the auditor's tool (docs/AUDIT.md).

Each command parses its line, runs :func:`clients.audit_run.verify_log` against the hub
or a bundle, and prints through :mod:`clients.audit_report`. Hub, bundle, state and
evidence problems become :class:`clients.keytool.ToolError` (exit 1); anomalies found
in the log exit with :data:`EXIT_ANOMALIES`.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import click

import keys
from clients import terminal
from clients.audit_evidence import Evidence, EvidenceError, check_evidence, gather_evidence
from clients.audit_report import html_page, summary
from clients.audit_run import Outcome, verify_log
from clients.audit_source import AuditSource, Bundle, BundleError, BundleSource, HubSource, Recorder
from clients.audit_state import StateError, default_state_path, load_state, save_state
from clients.errors import ClientError
from clients.keytool import EnvelopeRefused, ToolError
from clients.terminal import EXISTING, NEW, PASSPHRASE_ENV
from keys.checkpoint import NoteVerifier

__all__ = ["EXIT_ANOMALIES", "audit_group"]

#: Exit status when the log shows at least one anomaly.
EXIT_ANOMALIES: Final = 5
T = TypeVar("T")


def _verifier(ctx: click.Context, param: click.Parameter, value: str) -> NoteVerifier:
    """The log's verifier key: the string itself, or a file that holds it."""
    text = value
    if "+" not in value and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8").strip()
    try:
        return NoteVerifier.parse(text)
    except keys.KeysError as exc:
        raise click.BadParameter(f"not a log verifier key ({exc})") from None


LOG_KEY: Final = click.option(
    "--log-key",
    "verifier",
    required=True,
    callback=_verifier,
    metavar="VERIFIER",
    help="The log's verifier key (name+id+key), as the operator published it out of band, "
    "or a file holding it. Never taken from the hub.",
)
HUB: Final = click.option("--hub", metavar="URL", help="The hub's base URL.")
KEY: Final = click.option(
    "--key", type=EXISTING, help="Your identity file (registered at the hub as an auditor)."
)
BUNDLE: Final = click.option(
    "--bundle", type=EXISTING, help="Verify an exported bundle offline instead of a hub."
)
RANGE: Final = (
    click.option("--from", "start", type=click.IntRange(0), default=0, help="First leaf."),
    click.option("--to", "end", type=click.IntRange(0), help="Stop before this leaf."),
)
STATE: Final = click.option(
    "--state",
    type=NEW,
    help="Where this auditor remembers the last checkpoint it verified "
    "[default: audit/<origin>.json in the siko config folder].",
)


def _options(*decorators: Callable[[Any], Any]) -> Callable[[T], T]:
    def apply(function: T) -> T:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


@click.group("audit", short_help="Verify the hub's audit log without trusting the hub.")
def audit_group() -> None:
    """Replay and verify the hub's audit log, export it, and prove single notes.

    You need the log's verifier key from the operator, handed over out of band (on
    paper, signed mail), and an identity registered at the hub as an auditor.

    \b
    Examples:
      siko audit verify --hub https://hub.example --key me.identity --log-key VERIFIER
      siko audit export --hub https://hub.example --key me.identity --log-key VERIFIER \\
          --out log.bundle
      siko audit verify --bundle log.bundle --log-key VERIFIER
      siko audit report --bundle log.bundle --log-key VERIFIER --out report.html
      siko audit evidence MESSAGE_ID --hub ... --key ... --log-key ... --out note.evidence
      siko audit check-evidence note.evidence --log-key VERIFIER

    \b
    Exit status: 0 no anomaly; 5 anomalies found (each printed with its leaf index);
    4 evidence that does not verify; 1 hub, file or state problems; 2 usage.
    """


@audit_group.command("verify")
@_options(HUB, KEY, PASSPHRASE_ENV, BUNDLE, LOG_KEY, *RANGE, STATE)
@click.option("--no-state", is_flag=True, help="Neither read nor update the state file.")
def verify(no_state: bool, **options: Any) -> None:
    """Replay the log, recompute every root, check every signature; report anomalies.

    Every clean run remembers the latest checkpoint in the state file; the next run
    requires the log to extend it, so a rollback or a forked history is caught.

    \b
    Example:
      siko audit verify --hub https://hub.example --key ldi.identity \\
          --log-key "hub.example/siko-log+1a2b3c4d+AaBb..."
    """
    outcome = _run(options, use_state=not no_state)
    click.echo(
        summary(outcome.report, seconds=outcome.seconds, verify_seconds=outcome.verify_seconds)
    )
    _exit_for(outcome)


@audit_group.command("export")
@_options(HUB, KEY, PASSPHRASE_ENV, LOG_KEY, *RANGE)
@click.option("--out", type=NEW, required=True, help="The bundle file to write.")
def export(out: Path, **options: Any) -> None:
    """Write a self-contained bundle (leaves, records, checkpoints, proofs) to verify offline.

    \b
    Example:
      siko audit export --hub https://hub.example --key ldi.identity \\
          --log-key log.verifier --out 2025-q4.bundle
    """
    if options["hub"] is None:
        raise click.UsageError("give --hub URL and --key FILE")
    holder: list[Recorder] = []

    def record(source: AuditSource) -> AuditSource:
        holder.append(Recorder(source, options["verifier"].name))
        return holder[0]

    outcome = _run(options, use_state=False, wrap=record)
    holder[0].bundle.save(out)
    click.echo(summary(outcome.report, seconds=outcome.seconds))
    click.echo(f"Bundle written to {out} ({len(holder[0].bundle.leaves)} leaves).")
    _exit_for(outcome)


@audit_group.command("report")
@_options(HUB, KEY, PASSPHRASE_ENV, BUNDLE, LOG_KEY, *RANGE, STATE)
@click.option("--out", type=NEW, required=True, help="The HTML file to write.")
def report(out: Path, **options: Any) -> None:
    """Verify, then write an HTML report: activity per agency and channel, refusals.

    The page is one file with no script and no outside resource: archive it as it is.

    \b
    Example:
      siko audit report --bundle 2025-q4.bundle --log-key log.verifier --out report.html
    """
    outcome = _run(options, use_state=True, update_state=False)
    out.write_text(html_page(outcome.report), encoding="utf-8")
    click.echo(f"Report written to {out}.")
    _exit_for(outcome)


@audit_group.command("evidence")
@click.argument("message_id")
@_options(HUB, KEY, PASSPHRASE_ENV, LOG_KEY)
@click.option("--envelope", type=EXISTING, help="The note's envelope, if a member gave it.")
@click.option("--out", type=NEW, required=True, help="The evidence file to write.")
def evidence(message_id: str, envelope: Path | None, out: Path, **options: Any) -> None:
    """Gather the evidence for one note (MESSAGE_ID, 32 hex digits) into a file.

    \b
    Example:
      siko audit evidence 3f9c0d1e2a4b5c6d7e8f90a1b2c3d4e5 --hub https://hub.example \\
          --key ldi.identity --log-key log.verifier --out note.evidence
    """
    wanted = bytes(keys.MessageId.from_hex(message_id))
    data = envelope.read_bytes() if envelope is not None else None

    async def gather(source: HubSource) -> Evidence:
        return await gather_evidence(source, options["verifier"], wanted, data)

    found = _with_hub(options, gather)
    lines = _checked(found, options["verifier"])
    out.write_bytes(found.serialize())
    click.echo("\n".join(lines))
    click.echo(f"Evidence written to {out}.")


@audit_group.command("check-evidence")
@click.argument("file", type=EXISTING)
@_options(LOG_KEY)
def check_evidence_command(file: Path, verifier: NoteVerifier) -> None:
    """Verify an evidence file offline with the log's verifier key alone.

    \b
    Example:
      siko audit check-evidence note.evidence --log-key log.verifier
    """
    with _translated():
        found = Evidence.parse(file.read_bytes())
    click.echo("\n".join(_checked(found, verifier)))
    click.echo("The evidence verifies.")


# -- plumbing ------------------------------------------------------------------------


def _checked(found: Evidence, verifier: NoteVerifier) -> list[str]:
    try:
        return check_evidence(found, verifier)
    except EvidenceError as exc:
        raise EnvelopeRefused(f"the evidence does not verify: {exc}") from None


def _run(
    options: dict[str, Any],
    *,
    use_state: bool,
    update_state: bool = True,
    wrap: Callable[[AuditSource], AuditSource] | None = None,
) -> Outcome:
    verifier: NoteVerifier = options["verifier"]
    state_path = _state_path(options.get("state"), verifier) if use_state else None
    with _translated():
        remembered = load_state(state_path, verifier) if state_path else None

    async def run(source: AuditSource) -> Outcome:
        with _progress() as progress:
            return await verify_log(
                wrap(source) if wrap else source,
                verifier,
                remembered=remembered,
                start=options["start"],
                end=options["end"],
                progress=progress,
            )

    if options.get("bundle") is not None:
        with _translated():
            source = BundleSource(Bundle.load(options["bundle"]))
        outcome = asyncio.run(run(source))
    else:
        outcome = _with_hub(options, run)
    latest, note = outcome.latest, outcome.latest_note
    if state_path and update_state and outcome.report.clean and latest and note:
        save_state(state_path, latest, note)
    return outcome


def _with_hub(options: dict[str, Any], work: Callable[[HubSource], Awaitable[T]]) -> T:
    if options["hub"] is None or options["key"] is None:
        raise click.UsageError("give --hub URL and --key FILE, or --bundle FILE")
    identity = keys.load_identity(
        options["key"], terminal.passphrase(options["key"], options["passphrase_env"])
    )

    async def run() -> T:
        async with HubSource(options["hub"], identity) as source:
            return await work(source)

    with _translated():
        return asyncio.run(run())


def _state_path(given: Path | None, verifier: NoteVerifier) -> Path:
    return given or default_state_path(Path(click.get_app_dir("siko")), verifier.name)


@contextmanager
def _translated() -> Iterator[None]:
    """Errors of the hub, bundle, state and evidence files as one-line tool errors."""
    try:
        yield
    except ClientError as exc:
        raise ToolError(f"the hub: {exc}") from None
    except (BundleError, StateError) as exc:
        raise ToolError(str(exc)) from None
    except EvidenceError as exc:
        raise EnvelopeRefused(str(exc)) from None


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield None
        return
    bars: list[Any] = []

    def advance(done: int, total: int) -> None:
        if not bars:
            bars.append(click.progressbar(length=total, label="verifying", file=sys.stderr))
            bars[0].__enter__()
        bars[0].update(done)

    try:
        yield advance
    finally:
        if bars:
            bars[0].__exit__(None, None, None)


def _exit_for(outcome: Outcome) -> None:
    if not outcome.report.clean:
        click.get_current_context().exit(EXIT_ANOMALIES)
