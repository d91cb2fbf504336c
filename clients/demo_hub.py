"""``siko demo``: a whole case exchange through a real hub on this machine, narrated.

What ``siko keys demo`` shows offline (identities, sealing, opening), this shows end to
end: a hub on its embedded Redis, an administrator who registers a police headquarters,
a prosecutor's office, a city's public-order office and an auditor and opens a channel
for a shared case; notes posted by the police and the city, read (verified, decrypted,
with their markings) and acknowledged by the prosecutor; the senders' read receipts;
and at the end the auditor's replay of the audit log (the core of ``siko audit verify``).

Why a child process for the hub: ``clients`` never imports ``hub`` (import contracts),
and a person would run the hub as its own program too. Everything lives in one folder
(a temporary one by default): identities, cards, the audit log key, the hub's data and
Redis, the agencies' state files. Whatever happens (success, a failure, Ctrl-C or
SIGTERM), the hub is stopped, and so is its Redis; the demo checks that, because a
``redis-server`` left behind would hold the folder. Every wait polls with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

import aiohttp
import click

import keys
from clients.audit_report import summary
from clients.audit_run import verify_log
from clients.audit_source import HubSource
from clients.demo import DEMO_KDF, DEMO_PASSPHRASE
from clients.errors import BadRequest, ClientError, HubProblem
from clients.keytool import ToolError
from clients.sdk import HubClient, Posted, Received
from clients.state import StateFile
from clients.terminal import printable
from clients.transport import Transport
from keys.checkpoint import open_signed_checkpoint
from keys.logkey import LogKey

__all__ = ["DemoFailed", "demo", "run_demo"]

#: Exit status after Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
EXIT_INTERRUPTED: Final = 130
#: How long the hub (and its Redis) may take to answer /readyz.
READY_TIMEOUT_S: Final = 30.0
#: How long the scenario may take once the hub is ready (pauses included).
SCENARIO_TIMEOUT_S: Final = 45.0
#: How long the hub may take to stop on SIGTERM before it is killed.
STOP_TIMEOUT_S: Final = 15.0
#: How long its redis-server may take to end after the hub.
REDIS_STOP_TIMEOUT_S: Final = 10.0
POLL_S: Final = 0.05
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>

ORIGIN: Final = "demo.siko.invalid/siko-log"
CHANNEL: Final = "fall-essen-altendorf"
ADMIN: Final = ("admin-nrw", "administrator")
AUDITOR: Final = ("ldi-nrw", "auditor")  # the state's data-protection commissioner
POLICE: Final = ("pp-duisburg", "police")  # Polizeipraesidium Duisburg
PROSECUTOR: Final = ("sta-essen", "prosecutor")  # Staatsanwaltschaft Essen
CITY: Final = ("stadt-essen-ordnungsamt", "city office")  # Ordnungsamt der Stadt Essen
AGENCIES: Final = (POLICE, PROSECUTOR, CITY)
MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {
    POLICE[0]: ("post", "read"),
    CITY[0]: ("post", "read"),
    PROSECUTOR[0]: ("read",),
}
POLICE_NOTE: Final = keys.Note(
    "Vehicle check at 02:10 on Altendorfer Strasse: three occupants, one of them the "
    "operator of the shisha bar at no. 112. Cash of about 8,000 EUR found in the car.",
    subject="Patrol report, night shift",
    case_ref="PP-DU 4711/25",
)
POLICE_MARKINGS: Final = keys.Markings(keys.Classification.VS_NFD, keys.HandlingCode.H1)
CITY_NOTE: Final = keys.Note(
    "Inspection of the shisha bar at Altendorfer Strasse 112 on Friday: the licence "
    "lapsed in March; a closure order is being prepared.",
    subject="Trade inspection, Altendorfer Str. 112",
    case_ref="PP-DU 4711/25",
)
CITY_MARKINGS: Final = keys.Markings(
    keys.Classification.OFFEN, keys.HandlingCode.H0, keys.Tlp.GREEN
)


class DemoFailed(ToolError):
    """A step of the demo did not do what it must; the message says which."""


# -- narration -------------------------------------------------------------------------


class Narrator:
    """Numbered steps, wrapped for a terminal, with details indented below them."""

    def __init__(self, pace: float) -> None:
        self.pace = pace
        self._steps = itertools.count(1)

    def step(self, text: str) -> None:
        """One thing the demo does, in plain words; a short pause first, to follow it."""
        if self.pace:
            time.sleep(self.pace)
        self._print(text)

    async def astep(self, text: str) -> None:
        """:meth:`step` inside the event loop: the pause must not block it."""
        if self.pace:
            await asyncio.sleep(self.pace)
        self._print(text)

    def _print(self, text: str) -> None:
        number = f"{next(self._steps):>2}. "
        click.echo(
            textwrap.fill(
                text,
                88,
                initial_indent=number,
                subsequent_indent="    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )

    def verbatim(self, text: str) -> None:
        """Lines printed as they are (a report with its own layout), indented."""
        for line in text.splitlines():
            click.echo(f"      {line}")

    def detail(self, text: str) -> None:
        """A line below the current step (facts, not actions)."""
        click.echo(
            textwrap.fill(
                text,
                88,
                initial_indent="      ",
                subsequent_indent="        ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )


# -- the hub as a child process -----------------------------------------------------------


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the demo dies (Linux; elsewhere a no-op).

    The hub runs in its own session, so a Ctrl-C reaches only the demo, which then stops
    the hub in order; a demo killed outright must still not leave the hub behind.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class HubProcess:
    """``python -m hub`` on the embedded Redis, with its data and log in ``folder``."""

    folder: Path
    port: int
    admin_card: Path
    log_key: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.folder / "hub-data"

    @property
    def log_file(self) -> Path:
        return self.folder / "hub.log"

    def start(self) -> None:
        """Start the hub; :meth:`wait_ready` tells when it answers."""
        command = [
            sys.executable,
            "-m",
            "hub",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--admin-card",
            str(self.admin_card),
            "--log-key",
            str(self.log_key),
            "--log-origin",
            ORIGIN,
            "--checkpoint-interval",
            "0.2",
            "--shutdown-grace",
            "1",
        ]
        # SIKO_* settings of the person's shell (SIKO_REDIS_URL above all) must not
        # point the demo's hub at anything but its own Redis in the demo's folder.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIKO_")}
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                preexec_fn=_end_with_parent,  # only a ctypes call between fork and exec
            )

    async def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Poll /readyz until it answers 200; the seconds it took. DemoFailed otherwise."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout
        probe = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=probe) as session:
            while loop.time() < deadline:
                if self.process is None or self.process.poll() is not None:
                    code = None if self.process is None else self.process.returncode
                    raise DemoFailed(
                        f"the hub exited (status {code}) before it was ready; {self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.get(f"{self.url}/readyz") as answer:
                        if answer.status == 200:
                            return loop.time() - began
                await asyncio.sleep(POLL_S)
        raise DemoFailed(f"the hub did not become ready within {timeout:.0f} s; {self.log_tail()}")

    def log_tail(self, lines: int = 4) -> str:
        """The last lines of the hub's log, for a failure message."""
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "it wrote no log"
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return "its log ends: " + " | ".join(tail) if tail else "its log is empty"

    def redis_pids(self) -> list[int]:
        """The redis-server processes started with this hub's config file (Linux /proc)."""
        config = str(self.data_dir / "redis" / "redis.conf").encode()
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if config in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
        return found

    def stop(self) -> tuple[int | None, bool]:
        """SIGTERM the hub, then make sure its Redis ended; (hub status, Redis stopped).

        The hub stops its own Redis; a hub that had to be killed leaves that to the
        kernel (the Redis child asked for SIGTERM when the hub dies), and only if the
        Redis outlives both deadlines is it ended here, by the pid found for our folder.
        """
        code: int | None = None
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
        deadline = time.monotonic() + REDIS_STOP_TIMEOUT_S
        while (left := self.redis_pids()) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return code, not left


# -- the scenario -----------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The demo's identities and the audit log's key, made in the demo's folder."""

    identities: Mapping[str, keys.Identity]
    log_key: LogKey
    log_key_path: Path
    admin_card: Path


def make_keys(folder: Path, say: Narrator) -> Keys:
    """Identity files and cards for everyone, and the audit log's signing key."""
    identities = {}
    for agency, role in (ADMIN, *AGENCIES, AUDITOR):
        identity = keys.Identity.generate(agency)
        keys.save_identity(folder / f"{agency}.identity", identity, DEMO_PASSPHRASE, kdf=DEMO_KDF)
        keys.save_card(folder / f"{agency}.card", identity.card)
        identities[agency] = identity
        say.detail(f"{agency:<24} {role:<14} key {identity.key_id.fingerprint()}")
    log_key = LogKey.generate(ORIGIN)
    log_key_path = folder / "log.key"
    log_key.save(log_key_path)
    return Keys(identities, log_key, log_key_path, folder / f"{ADMIN[0]}.card")


def _client(url: str, identity: keys.Identity, folder: Path) -> HubClient:
    """An agency's client with its own state file; short timeouts keep the demo bounded."""
    transport = Transport(url, identity, timeout=5.0, retries=2)
    return HubClient(
        url, identity, transport=transport, state=StateFile(folder / f"{identity.agency}.state")
    )


def _markings(markings: keys.Markings) -> str:
    return (
        f"{markings.classification.value}, handling {markings.handling.value}, "
        f"TLP:{markings.tlp.value}"
    )


def _show(received: Received, say: Narrator) -> None:
    header, note = received.header, received.note
    say.detail(
        f"from {header.sender} (key {header.sender_key.fingerprint()}): signature verified, "
        f"decrypted with {PROSECUTOR[0]}'s own key"
    )
    say.detail(f"markings: {_markings(header.markings)}; case {printable(note.case_ref or '-')}")
    say.detail(f"subject: {printable(note.subject or '-')}")
    say.detail(f"text: {printable(note.text)}")


def _receipt_checked(posted: Posted, log_key: LogKey) -> None:
    """The hub's receipt must be signed by the audit log's key, for this note."""
    try:
        posted.receipt.verify(posted.receipt_signature, log_key.verifier.verify_key)
    except keys.KeysError:
        raise DemoFailed("the hub's receipt is not signed by the audit log's key") from None


async def _post(
    client: HubClient, note: keys.Note, markings: keys.Markings, demo_keys: Keys, say: Narrator
) -> Posted:
    posted = await client.post(CHANNEL, note, markings)
    _receipt_checked(posted, demo_keys.log_key)
    say.detail(
        f"accepted as message {posted.message_id}, leaf {posted.index} of the audit log; "
        "the hub's receipt is signed with the log key and verifies"
    )
    return posted


async def _read_receipt(
    client: HubClient, posted: Posted, expect_read_by: set[str], say: Narrator
) -> None:
    sender = client.identity.agency
    receipts = await client.receipts(CHANNEL, posted.message_id)
    read_by = [a for a in receipts["read_by"] if a != sender]
    unread = [a for a in receipts["unread_by"] if a != sender]
    say.detail(f"read by: {', '.join(read_by) or 'nobody yet'}")
    say.detail(f"not yet read by: {', '.join(unread) or 'nobody'} (the sender itself not counted)")
    if not expect_read_by <= set(read_by):
        raise DemoFailed(f"the read receipt does not show {', '.join(sorted(expect_read_by))}")


async def scenario(hub: HubProcess, demo_keys: Keys, folder: Path, say: Narrator) -> None:
    """From the administrator's first request to the auditor's clean report."""
    ids = demo_keys.identities
    async with contextlib.AsyncExitStack() as stack:
        admin = await stack.enter_async_context(_client(hub.url, ids[ADMIN[0]], folder))
        police = await stack.enter_async_context(_client(hub.url, ids[POLICE[0]], folder))
        prosecutor = await stack.enter_async_context(_client(hub.url, ids[PROSECUTOR[0]], folder))
        city = await stack.enter_async_context(_client(hub.url, ids[CITY[0]], folder))

        await say.astep(
            f"The administrator {ADMIN[0]} registers the three agencies and the auditor "
            "from their public cards (every request is signed with the sender's key)."
        )
        for agency, _role in AGENCIES:
            await admin.register_agency(ids[agency].card, kind="agency")
            say.detail(f"registered {agency} as an agency")
        await admin.register_agency(ids[AUDITOR[0]].card, kind="auditor")
        say.detail(f"registered {AUDITOR[0]} as an auditor (it may read the log, no notes)")

        await say.astep(
            f"{ADMIN[0]} opens channel {CHANNEL} for the shared case PP-DU 4711/25: at most "
            "VS-NfD, notes kept 365 days; police and city may post and read, the "
            "prosecutor's office reads."
        )
        roster = await admin.create_channel(
            CHANNEL, ceiling="VS-NfD", retention_days=365, members=MEMBERS
        )
        for agency, member in sorted(roster.members.items()):
            say.detail(f"{agency:<24} {', '.join(sorted(member.roles))}")

        await say.astep(
            f"{POLICE[0]} seals a patrol report for the channel's three readers, marked "
            f"{_markings(POLICE_MARKINGS)}, signs it and posts it."
        )
        police_note = await _post(police, POLICE_NOTE, POLICE_MARKINGS, demo_keys, say)

        await say.astep(
            f"{CITY[0]} reads the police report (verified and decrypted) and acknowledges it."
        )
        read = [r async for r in city.history(CHANNEL)]
        if [r.header.message_id for r in read] != [keys.MessageId.from_hex(police_note.message_id)]:
            raise DemoFailed(f"{CITY[0]} did not receive exactly the police report")
        say.detail(f"subject: {printable(read[0].note.subject or '-')}; signature verified")
        await city.ack(CHANNEL, read[-1].stream_id)

        await say.astep(
            f"{CITY[0]} answers with the result of its trade inspection, marked "
            f"{_markings(CITY_MARKINGS)}."
        )
        city_note = await _post(city, CITY_NOTE, CITY_MARKINGS, demo_keys, say)

        await say.astep(
            f"{PROSECUTOR[0]} may only read here; the hub refuses a note it tries to post."
        )
        try:
            await prosecutor.post(CHANNEL, keys.Note("test"), CITY_MARKINGS)
        except HubProblem as exc:
            say.detail(f"refused: {' '.join(str(exc).split())}")
        else:
            raise DemoFailed(f"the hub let {PROSECUTOR[0]}, a reader only, post a note")

        await say.astep(
            f"{PROSECUTOR[0]} reads the channel: each note is verified, then decrypted."
        )
        received = [r async for r in prosecutor.history(CHANNEL)]
        expected = [police_note.message_id, city_note.message_id]
        if [str(r.header.message_id) for r in received] != expected:
            raise DemoFailed(f"{PROSECUTOR[0]} did not receive both notes in order")
        for item in received:
            _show(item, say)

        await say.astep(
            f"{PROSECUTOR[0]} acknowledges that it has read both (a signed read receipt)."
        )
        position = await prosecutor.ack(CHANNEL, received[-1].stream_id)
        say.detail(f"its read position in {CHANNEL} is now {position}")

        await say.astep(f"{POLICE[0]} asks who has read its patrol report.")
        await _read_receipt(police, police_note, {PROSECUTOR[0], CITY[0]}, say)
        await say.astep(f"{CITY[0]} asks who has read its inspection note.")
        await _read_receipt(city, city_note, {PROSECUTOR[0]}, say)

        await say.astep(
            f"The auditor {AUDITOR[0]} replays the whole audit log (as 'siko audit verify'): "
            "every leaf, every signature, every root, against the log's signed checkpoint "
            "and the verifier key it was given out of band."
        )
        await _audit(hub.url, ids[AUDITOR[0]], demo_keys.log_key, city_note.index, say)


async def _audit(
    url: str, auditor: keys.Identity, log_key: LogKey, last_note: int, say: Narrator
) -> None:
    verifier = log_key.verifier
    transport = Transport(url, auditor, timeout=10.0, retries=2)
    async with HubSource(url, auditor, transport=transport) as source:
        size = await _settled_size(source, log_key, last_note)
        outcome = await verify_log(source, verifier)
    say.verbatim(summary(outcome.report, seconds=outcome.seconds))
    if not outcome.report.clean:
        raise DemoFailed("the auditor found anomalies in the log (listed above)")
    if outcome.report.end < size:
        raise DemoFailed(f"the audit covered {outcome.report.end} of {size} leaves")


async def _settled_size(source: HubSource, log_key: LogKey, last_note: int) -> int:
    """Wait until a signed checkpoint covers the whole log written so far; its size.

    The hub signs checkpoints every 0.2 s here; the log is settled when the latest one
    covers the last note and the hub has no leaf beyond it (asking for the next leaf
    is then refused as out of range).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while True:
        note = await source.latest_checkpoint()
        with contextlib.suppress(keys.KeysError):
            size = open_signed_checkpoint(note, log_key.verifier).size
            if size > last_note:
                try:
                    await source.leaves(size, size + 1)
                except BadRequest:
                    return size
        if loop.time() > deadline:
            raise DemoFailed("no signed checkpoint covered the whole log within 10 s")
        await asyncio.sleep(POLL_S)


# -- running it -----------------------------------------------------------------------


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: stop, clean up, exit with :data:`EXIT_INTERRUPTED`."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (e.g. from a CI runner or ``timeout``) stops the demo like Ctrl-C does.

    It goes to whatever handles SIGINT at that moment: inside :func:`asyncio.run` that is
    the runner's handler, which cancels the main task, so cleanup runs at an ``await``;
    raising there from a signal handler instead could land in the middle of a
    constructor (an aiohttp connector half built, complaining when it is collected).
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(folder: Path, say: Narrator, *, port: int | None = None) -> None:
    """Run the whole scenario in ``folder``; the hub and its Redis are stopped at the end.

    Raises:
        DemoFailed: a step failed (the message says which); cleanup has run.
        Interrupted: Ctrl-C or SIGTERM; cleanup has run.
    """
    say.step(
        f"Working in {folder}. Everyone's identity file is locked with the published demo "
        f"passphrase {DEMO_PASSPHRASE!r} and a cheap key derivation 'siko keys new' never "
        "uses. Each party creates its identity and hands out its public card: the police "
        "headquarters Duisburg, the public prosecutor's office Essen, the city of Essen's "
        "public-order office, the hub's administrator and the auditor (the state's "
        "data-protection commissioner)."
    )
    demo_keys = make_keys(folder, say)
    say.detail("audit log key: log.key; its verifier key, published to auditors out of band:")
    say.detail(demo_keys.log_key.verifier_key)

    hub = HubProcess(folder, port or free_port(), demo_keys.admin_card, demo_keys.log_key_path)
    say.step(
        f"Starting the hub on {hub.url} with its own embedded Redis (data in hub-data/, "
        f"its log in hub.log) and {ADMIN[0]} as its first administrator."
    )
    stopped = False
    try:
        with _sigterm_interrupts():
            try:
                hub.start()
                asyncio.run(_ready_then(hub, demo_keys, folder, say))
            except KeyboardInterrupt:
                raise Interrupted from None
            finally:
                code, redis_stopped = hub.stop()
                stopped = True
        if not redis_stopped:
            raise DemoFailed("the hub's redis-server did not stop; it was killed")
        say.step(f"The hub is stopped (exit status {code}) and so is its Redis.")
        if code != 0:
            raise DemoFailed(f"the hub exited with status {code}; {hub.log_tail()}")
    finally:
        if not stopped:  # an interrupt between start and the inner finally
            hub.stop()


async def _ready_then(hub: HubProcess, demo_keys: Keys, folder: Path, say: Narrator) -> None:
    seconds = await hub.wait_ready()
    say.detail(f"ready after {seconds:.1f} s (GET /readyz answers 200)")
    try:
        async with asyncio.timeout(SCENARIO_TIMEOUT_S):
            await scenario(hub, demo_keys, folder, say)
    except TimeoutError:
        raise DemoFailed(f"the scenario took longer than {SCENARIO_TIMEOUT_S:.0f} s") from None
    except (ClientError, keys.KeysError) as exc:
        if hub.process is not None and hub.process.poll() is not None:
            # The step failed because the hub died: that is the news, with its log.
            code, tail = hub.process.returncode, hub.log_tail()
            raise DemoFailed(f"the hub exited (status {code}) during the demo; {tail}") from None
        refused = "the hub refused a step: " if isinstance(exc, HubProblem) else ""
        raise DemoFailed(f"{refused}{type(exc).__name__}: {exc}") from None


def _empty(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise ToolError(f"{folder}: not empty; choose a new or empty folder")
    return folder.resolve()


@click.command("demo")
@click.option(
    "--dir",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the demo's files in this new or empty folder [default: a temporary one].",
)
@click.option(
    "--pace",
    type=click.FloatRange(0, 5),
    default=0.5,
    show_default=True,
    help="Seconds to pause before each step, to follow along.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="The hub's port on 127.0.0.1 [default: a free one].",
)
@click.pass_context
def demo(ctx: click.Context, folder: Path | None, pace: float, port: int | None) -> None:
    """Guided tour of a real hub: three agencies share a case, an auditor checks the log.

    Starts a hub with its own Redis on this machine, registers a police headquarters,
    a prosecutor's office, a city office and an auditor, opens a channel, posts notes
    from the police and the city, reads and acknowledges them as the prosecutor, shows
    the read receipts, and ends with the auditor's verification of the audit log. The
    hub and its Redis are stopped at the end, also on Ctrl-C or an error. Needs no
    setup and no network beyond 127.0.0.1.

    \b
    Examples:
      siko demo
      siko demo --pace 0 --dir siko-hub-demo
    """
    say = Narrator(pace)
    try:
        if folder is not None:
            run_demo(_empty(folder), say, port=port)
        else:
            with tempfile.TemporaryDirectory(prefix="siko-hub-demo-") as tmp:
                run_demo(Path(tmp).resolve(), say, port=port)
            click.echo("Done. The temporary folder is removed again; use --dir DIR to keep it.")
            return
    except Interrupted:
        click.echo("siko demo: interrupted; the hub and its Redis are stopped.", err=True)
        ctx.exit(EXIT_INTERRUPTED)
    except DemoFailed as exc:
        raise DemoFailed(f"demo failed: {exc}; the hub and its Redis are stopped") from None
    click.echo(f"Done. The demo's files are kept in {folder}.")
