"""``siko post``, ``watch``, ``inbox``, ``channels``, ``read-receipts``: agencies at the hub.

Each command parses its line, unlocks the identity file (asked for, or from the
variable named by ``--passphrase-env``, as ``siko keys`` does), and calls
:class:`clients.sdk.HubClient`. Cursors live in a local state file
(:mod:`clients.state`), so ``siko watch`` resumes where it stopped. Every
:class:`~clients.errors.ClientError` reaches :func:`clients.cli.report` and becomes one
``siko: error:`` line and an exit status. Text chosen by a sender (note text, subject,
case reference) is printed through :func:`clients.terminal.printable`.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import click

import keys
from clients import keytool, terminal
from clients.errors import HubUnreachable, IdempotencyConflict, InternalError, Unavailable
from clients.sdk import HubClient, NoteRefused, Posted, Received
from clients.state import STATE_ENV, StateFile, default_state_path
from clients.terminal import CHANNEL, EXISTING, PASSPHRASE_ENV, choice, printable, utc_iso
from keys.checkpoint import NoteVerifier

__all__ = ["HUB_ENV", "channels", "connection", "inbox", "post", "read_receipts", "run", "watch"]

HUB_ENV: Final = "SIKO_HUB"
_T = TypeVar("_T")
_Command = TypeVar("_Command", bound=Callable[..., Any])


def _hub_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse, while the line is parsed, a hub address that is not http(s)://host."""
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("http", "https") or not rest.strip("/"):
        raise click.BadParameter("expected the hub's address, e.g. https://hub.example")
    return value


def connection(command: _Command) -> _Command:
    """The options every command that talks to the hub takes: who, where, passphrase."""
    for option in reversed(
        (
            click.option(
                "--key", required=True, type=EXISTING, help="Your agency's identity file."
            ),
            click.option(
                "--hub",
                "hub_url",
                required=True,
                envvar=HUB_ENV,
                show_envvar=True,
                callback=_hub_url,
                metavar="URL",
                help="The hub's address, e.g. https://hub.example.",
            ),
            PASSPHRASE_ENV,
        )
    ):
        command = option(command)
    return command


#: The environment variable that may hold ``--log-key``.
LOG_KEY_ENV: Final = "SIKO_LOG_KEY"

STATE_OPTION: Final = click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=STATE_ENV,
    show_envvar=True,
    help="Local state file (read cursors, pinned keys) "
    "[default: ~/.local/state/siko/AGENCY@HUB.json].",
)


def _log_key(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The log's verifier key: the string itself, or a file that holds it; checked."""
    if value is None:
        return None
    text = value
    if "+" not in value and Path(value).is_file():
        text = Path(value).read_text(encoding="utf-8").strip()
    try:
        return str(NoteVerifier.parse(text))
    except keys.KeysError as exc:
        raise click.BadParameter(f"not a log verifier key ({exc})") from None


LOG_KEY_OPTION: Final = click.option(
    "--log-key",
    envvar=LOG_KEY_ENV,
    show_envvar=True,
    callback=_log_key,
    metavar="VERIFIER",
    help="The audit log's verifier key from the operator (or a file holding it): every "
    "reader card is checked against the log it signs [default: the key the hub states "
    "the first time, pinned in the state file].",
)


def run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """Run one command's work on a fresh event loop."""
    return asyncio.run(coroutine)


def connect(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    state: Path | None = None,
    log_key: str | None = None,
) -> HubClient:
    """A client acting as the identity in ``key`` (not yet connected)."""
    identity = keys.load_identity(key, terminal.passphrase(key, passphrase_env))
    path = state or default_state_path(hub_url, identity.agency)
    return HubClient(hub_url, identity, state=StateFile(path), log_key=log_key)


# -- siko post -------------------------------------------------------------------------


@click.command("post")
@connection
@STATE_OPTION
@LOG_KEY_OPTION
@click.argument("channel", type=CHANNEL)
@click.option("--classification", required=True, type=choice(keys.Classification))
@click.option(
    "--handling",
    required=True,
    type=choice(keys.HandlingCode),
    help="Conditions of use: H0 none, H1 no court use, H2 no passing on, H3 other.",
)
@click.option("--tlp", type=choice(keys.Tlp), default="AMBER", show_default=True)
@click.option("--source", type=choice(keys.SourceReliability), help="Source reliability.")
@click.option("--info", type=choice(keys.InfoAssessment), help="Information assessment.")
@click.option("--subject", callback=terminal.utf8_text, help="Subject, sealed with the note.")
@click.option("--case-ref", callback=terminal.utf8_text, help="Case reference, sealed too.")
@click.option("--text", callback=terminal.utf8_text, help="The note text [default: --in].")
@click.option(
    "--in",
    "text_in",
    type=click.File("rb"),
    default="-",
    metavar="FILE",
    help="Note text file [default: stdin].",
)
@click.option(
    "--message-id",
    metavar="HEX",
    help="Repeat a post whose answer was lost, with the message id the error named.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
def post(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    state: Path | None,
    log_key: str | None,
    channel: str,
    classification: str,
    handling: str,
    tlp: str,
    source: str | None,
    info: str | None,
    subject: str | None,
    case_ref: str | None,
    text: str | None,
    text_in: IO[bytes],
    message_id: str | None,
    as_json: bool,
) -> None:
    """Seal a note for every reader of CHANNEL and post it to the hub.

    The note is sealed on this machine for the current cards of the channel's
    readers (the hub never sees the text, subject or case reference) and signed with
    your key. Prints where the hub stored it and the hub's signed receipt: the note's
    leaf index in the audit log. If a reader's key changed since you last posted,
    says so: compare the new fingerprint with that agency by phone. Before sealing,
    each reader card is proved to be the one the audit log registered (--log-key).

    \b
    Example:
      siko post --key pp-duisburg.identity --hub https://hub.example lage-ruhr \\
          --classification VS-NfD --handling H1 --subject "Patrol report" \\
          --in report.txt
    """
    body = text if text is not None else terminal.read_note(text_in)
    note = keys.Note(body, subject, case_ref)
    markings = keys.Markings(
        keys.Classification.parse(classification),
        keys.HandlingCode.parse(handling),
        keys.Tlp.parse(tlp),
        keys.SourceReliability.parse(source) if source else None,
        keys.InfoAssessment.parse(info) if info else None,
    )
    mid = _message_id(message_id)
    client = connect(key, hub_url, passphrase_env, state, log_key)
    try:
        posted = run(_post(client, channel, note, markings, mid, repeat=message_id is not None))
    except (HubUnreachable, Unavailable, InternalError) as exc:
        raise type(exc)(
            f"{exc.detail}; the note may or may not be stored: repeat the same command "
            f"with --message-id {mid} to post it at most once",
            status=exc.status,
            problem_type=exc.problem_type,
            retry_after=exc.retry_after,
        ) from None
    if isinstance(posted, str):
        click.echo(
            f"the hub already holds note {mid} in {channel} (stream id {posted}): "
            "the earlier attempt arrived; nothing more was posted"
        )
        return
    _echo_posted(posted, as_json)


def _message_id(text: str | None) -> keys.MessageId:
    if text is None:
        return keys.MessageId.new()
    try:
        return keys.MessageId.from_hex(text)
    except keys.KeysError:
        raise click.BadParameter(
            "expected the hex message id an earlier siko post named", param_hint="--message-id"
        ) from None


async def _post(
    client: HubClient,
    channel: str,
    note: keys.Note,
    marks: keys.Markings,
    mid: keys.MessageId,
    *,
    repeat: bool,
) -> Posted | str:
    """The post's result; for a repeat whose first attempt was stored, its stream id."""
    async with client:
        try:
            return await client.post(channel, note, marks, message_id=mid)
        except IdempotencyConflict:
            if not repeat:
                raise
            return str((await client.receipts(channel, str(mid)))["stream_id"])


def _echo_posted(posted: Posted, as_json: bool) -> None:
    for change in posted.key_changes:
        old, new = keys.KeyId.from_hex(change.pinned), keys.KeyId.from_hex(change.current)
        click.echo(
            f"siko: notice: {change.agency}'s key changed since you last posted "
            f"({old.fingerprint()} -> {new.fingerprint()}); compare the new fingerprint "
            f"with {change.agency} by phone",
            err=True,
        )
    if as_json:
        record = {
            "channel": posted.channel,
            "message_id": posted.message_id,
            "stream_id": posted.stream_id,
            "index": posted.index,
            "duplicate": posted.duplicate,
        }
        click.echo(json.dumps(record, sort_keys=True))
        return
    again = " (already posted before: the same note)" if posted.duplicate else ""
    click.echo(f"posted to {posted.channel}{again}")
    click.echo(f"  stream id:  {posted.stream_id}")
    click.echo(f"  message id: {posted.message_id}")
    click.echo(f"  receipt:    leaf {posted.index} of the audit log, signed by the hub")


# -- siko watch ------------------------------------------------------------------------


@click.command("watch")
@connection
@STATE_OPTION
@click.argument("channels", nargs=-1, required=True, type=CHANNEL, metavar="CHANNEL...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per note and line.")
@click.option("--from-start", is_flag=True, help="Replay every note the hub still keeps.")
@click.option("--ack", is_flag=True, help="Send a signed read receipt for each note shown.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after N notes.")
@click.option(
    "--until-idle",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop when no note came for SECONDS.",
)
def watch(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    state: Path | None,
    channels: tuple[str, ...],
    as_json: bool,
    from_start: bool,
    ack: bool,
    count: int | None,
    until_idle: float | None,
) -> None:
    """Show the notes of one or more channels as they arrive, decrypted and checked.

    Starts after the last note this client showed before (kept in the state file),
    so nothing is missed while it was stopped and nothing is shown twice; reconnects
    by itself after network drops and hub restarts. Each note shows sender, time,
    classification and handling code. A note that fails its checks is never shown:
    it is reported on stderr, and the exit status is then 4. Stop with Ctrl-C.

    \b
    Example:
      siko watch --key sta-essen.identity --hub https://hub.example lage-ruhr
      siko watch --key sta-essen.identity lage-ruhr --json --until-idle 5 > notes.jsonl
    """
    client = connect(key, hub_url, passphrase_env, state)
    refused: list[NoteRefused] = []
    try:
        run(_watch(client, channels, from_start, ack, as_json, count, until_idle, refused))
    except KeyboardInterrupt:
        pass
    if refused:
        raise keytool.EnvelopeRefused(
            f"{len(refused)} note(s) failed their checks and were not shown (see above)"
        )


async def _watch(
    client: HubClient,
    channels: tuple[str, ...],
    from_start: bool,
    ack: bool,
    as_json: bool,
    count: int | None,
    until_idle: float | None,
    refused: list[NoteRefused],
) -> None:
    def report_refused(exc: NoteRefused) -> None:
        refused.append(exc)
        click.echo(f"siko: refused: {' '.join(str(exc).split())}", err=True)

    async with client:
        feed = client.live(channels, from_start=from_start, on_refused=report_refused)
        shown = 0
        async for received in _until_idle(feed, until_idle):
            _echo_note(received, as_json)
            if ack:
                await client.ack(received.channel, received.stream_id)
            shown += 1
            if count is not None and shown >= count:
                break


async def _until_idle(
    feed: AsyncIterator[Received], seconds: float | None
) -> AsyncIterator[Received]:
    """``feed`` until it is quiet for ``seconds`` (forever when None)."""
    try:
        while True:
            try:
                async with asyncio.timeout(seconds):
                    received = await anext(feed)
            except (TimeoutError, StopAsyncIteration):
                return
            yield received
    finally:
        await feed.aclose()  # type: ignore[attr-defined]


def _echo_note(received: Received, as_json: bool) -> None:
    header, note = received.header, received.note
    marks = header.markings
    if as_json:
        record = {
            "channel": received.channel,
            "stream_id": received.stream_id,
            "message_id": str(header.message_id),
            "sender": str(header.sender),
            "sender_key": str(header.sender_key),
            "sent_at": utc_iso(header.created),
            "classification": marks.classification.value,
            "handling": marks.handling.value,
            "tlp": marks.tlp.value,
            "source": marks.source.value if marks.source else None,
            "info": marks.info.value if marks.info else None,
            "subject": note.subject,
            "case_ref": note.case_ref,
            "text": note.text,
            "verified": True,
        }
        click.echo(json.dumps(record, ensure_ascii=False, sort_keys=True))
        return
    click.echo(
        f"=== {received.channel}  {utc_iso(header.created)}  from {header.sender}  "
        f"{marks.classification.value} / {marks.handling.value} / TLP:{marks.tlp.value}  "
        f"[{received.stream_id}]"
    )
    if note.subject is not None:
        click.echo(f"subject:  {printable(note.subject)}")
    if note.case_ref is not None:
        click.echo(f"case ref: {printable(note.case_ref)}")
    click.echo(printable(note.text, keep_lines=True))
    sys.stdout.flush()


# -- siko inbox, channels, read-receipts --------------------------------------------------


@click.command("inbox")
@connection
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def inbox(key: Path, hub_url: str, passphrase_env: str | None, as_json: bool) -> None:
    """Count the unread notes in each channel your agency reads.

    Unread means after your agency's read position at the hub, which moves with the
    signed read receipts any of your agency's clients send (``siko watch --ack``).

    \b
    Example:
      siko inbox --key sta-essen.identity --hub https://hub.example
    """
    client = connect(key, hub_url, passphrase_env)
    counts = run(_inbox(client))
    if as_json:
        click.echo(json.dumps(counts, sort_keys=True))
        return
    if not counts:
        click.echo("You read no channel yet.")
    for channel, unread in counts.items():
        click.echo(f"{channel}: {unread} unread")


async def _inbox(client: HubClient) -> dict[str, int]:
    async with client:
        listed = await client.channels()
        readable = [c["channel"] for c in listed if "read" in c["roles"]]
        return {channel: await client.unread(channel) for channel in sorted(readable)}


@click.command("channels")
@connection
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def channels(key: Path, hub_url: str, passphrase_env: str | None, as_json: bool) -> None:
    """List the channels your agency belongs to, your roles and every member's.

    Shows each channel's classification ceiling and retention, and each member's
    roles, status and key fingerprint (compare fingerprints by phone).

    \b
    Example:
      siko channels --key pp-duisburg.identity --hub https://hub.example
    """
    client = connect(key, hub_url, passphrase_env)
    listing = run(_channels(client))
    if as_json:
        click.echo(json.dumps(listing, sort_keys=True))
        return
    if not listing:
        click.echo("Your agency is a member of no channel yet.")
    for entry in listing:
        click.echo(
            f"{entry['channel']}: your roles {', '.join(entry['roles']) or '-'}; "
            f"ceiling {entry['ceiling']}, kept {entry['retention_days']} days"
        )
        for agency, member in entry["members"].items():
            click.echo(
                f"  {agency:<24} {','.join(member['roles']):<10} {member['status']:<10} "
                f"key {member['fingerprint']}"
            )


async def _channels(client: HubClient) -> list[dict[str, Any]]:
    async with client:
        result = []
        for listed in await client.channels():
            roster = await client.roster(listed["channel"])
            members = {
                agency: {
                    "roles": sorted(m.roles),
                    "status": m.status,
                    "fingerprint": m.card.key_id.fingerprint(),
                }
                for agency, m in roster.members.items()
            }
            result.append(
                {
                    "channel": roster.channel,
                    "roles": sorted(listed["roles"]),
                    "ceiling": roster.ceiling,
                    "retention_days": roster.retention_days,
                    "members": members,
                }
            )
        return result


@click.command("read-receipts")
@connection
@click.argument("channel", type=CHANNEL)
@click.argument("message_id", metavar="MESSAGE_ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def read_receipts(
    key: Path,
    hub_url: str,
    passphrase_env: str | None,
    channel: str,
    message_id: str,
    as_json: bool,
) -> None:
    """Show which reading agencies have read a note, and which have not yet.

    MESSAGE_ID is the one ``siko post`` printed (or ``siko watch --json`` shows).
    An agency has read the note when its signed read position reached it.

    \b
    Example:
      siko read-receipts --key pp-duisburg.identity --hub https://hub.example \\
          lage-ruhr 0f3c9a...
    """
    try:
        keys.MessageId.from_hex(message_id)
    except keys.KeysError:
        raise click.BadParameter(
            "expected the hex message id that siko post printed", param_hint="MESSAGE_ID"
        ) from None
    client = connect(key, hub_url, passphrase_env)
    receipts = run(_receipts(client, channel, message_id))
    if as_json:
        click.echo(json.dumps(receipts, sort_keys=True))
        return
    click.echo(f"note {receipts['message_id']} in {channel} [{receipts['stream_id']}]")
    click.echo(f"  read by:     {', '.join(receipts['read_by']) or '-'}")
    click.echo(f"  not yet by:  {', '.join(receipts['unread_by']) or '-'}")


async def _receipts(client: HubClient, channel: str, message_id: str) -> dict[str, Any]:
    async with client:
        return await client.receipts(channel, message_id)


AGENCY_COMMANDS: Final = (post, watch, inbox, channels, read_receipts)
