"""The client's small local state: read cursors per channel, and the reader keys seen.

A restarted ``siko watch`` (or any :class:`~clients.sdk.HubClient` given a
:class:`StateFile`) resumes after the last note it handed over, and ``siko post``
notices when a partner's key changed since it last sealed for it. The file holds no
secret — channel names, stream ids, agency ids and key ids — but it tells who works
on which channels, so it is created with mode 0600 like every file siko writes.

Each change is a read-modify-write under an exclusive ``flock`` on ``FILE.lock``, and
the new content is written to a temporary file in the same folder, flushed, fsynced
and moved over the old one with ``os.replace``: a crash leaves the old state or the
new one, never half a file, and two processes sharing the file lose no cursor.
Cursors only move forward.

Format (JSON, so a person can read it)::

    {"v": 1, "cursors": {"lage-ruhr": "1733100000000-0"}, "keys": {"sta-essen": "<key id>"},
     "logged": {"<key id>": "sta-essen"}, "log_key": "<verifier key>",
     "log_checkpoint": "<signed checkpoint note>"}

``logged`` are the cards found registered in the audit log (:mod:`clients.keylog`),
``log_key`` the log's verifier key (given, or trusted on first use) and
``log_checkpoint`` the newest checkpoint seen, which every later one must extend.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from clients.errors import ClientError

__all__ = ["STATE_ENV", "State", "StateError", "StateFile", "default_state_path", "stream_key"]

VERSION: Final = 1
MAX_STATE_BYTES: Final = 1024 * 1024
STATE_ENV: Final = "SIKO_STATE"


class StateError(ClientError):
    """The local state file cannot be read or written."""

    slug, title = "state-file", "The local state file cannot be used"
    hint = "Fix its permissions, or delete it to start over (notes are then shown again)."


def stream_key(stream_id: str) -> tuple[int, int]:
    """A stream id ``<ms>-<seq>`` as a sortable pair; ValueError when malformed."""
    ms, dash, seq = stream_id.partition("-")
    if not dash or not ms.isdigit() or not seq.isdigit() or len(stream_id) > 41:
        raise ValueError(f"not a stream id: {stream_id!r}")
    return int(ms), int(seq)


@dataclass
class State:
    """Cursors (last note handed over, per channel) and pinned key ids (per agency)."""

    cursors: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    logged: dict[str, str] = field(default_factory=dict)
    log_key: str = ""
    log_checkpoint: str = ""

    def advance(self, channel: str, stream_id: str) -> None:
        """Move ``channel``'s cursor to ``stream_id`` unless it is already further."""
        current = self.cursors.get(channel)
        if current is None or stream_key(current) < stream_key(stream_id):
            self.cursors[channel] = stream_id

    def serialize(self) -> bytes:
        record = {"v": VERSION, "cursors": self.cursors, "keys": self.keys, "logged": self.logged}
        record |= {"log_key": self.log_key, "log_checkpoint": self.log_checkpoint}
        return json.dumps(record, indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> State:
        """Decode and check a state file's bytes; ValueError when they are not one."""
        record = json.loads(data.decode("utf-8"))
        if not isinstance(record, dict) or record.get("v") != VERSION:
            raise ValueError(f"not a version-{VERSION} siko state file")
        cursors, pinned = record.get("cursors", {}), record.get("keys", {})
        logged, log_key = record.get("logged", {}), record.get("log_key", "")
        log_checkpoint = record.get("log_checkpoint", "")
        if not isinstance(log_key, str) or not isinstance(log_checkpoint, str):
            raise ValueError("log_key and log_checkpoint must be text")
        for mapping in (cursors, pinned, logged):
            if not isinstance(mapping, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                raise ValueError("cursors and keys must map text to text")
        for stream_id in cursors.values():
            stream_key(stream_id)
        return cls(dict(cursors), dict(pinned), dict(logged), log_key, log_checkpoint)


class StateFile:
    """One state file on disk; every change is locked, atomic and durable."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> State:
        """The saved state, or an empty one when the file does not exist yet."""
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return State()
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read: {exc.strerror}") from None
        if len(data) > MAX_STATE_BYTES:
            raise StateError(f"{self.path}: larger than {MAX_STATE_BYTES} bytes")
        try:
            return State.parse(data)
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise StateError(f"{self.path}: damaged ({exc})") from None

    def update(self, change: Callable[[State], None]) -> State:
        """Apply ``change`` to the current state and save it; the new state."""
        with self._locked():
            state = self.load()
            change(state)
            self._write(state.serialize())
            return state

    def advance(self, channel: str, stream_id: str) -> None:
        """Persist that every note of ``channel`` up to ``stream_id`` was handed over."""
        self.update(lambda state: state.advance(channel, stream_id))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write(self, data: bytes) -> None:
        folder = self.path.parent
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=folder)  # mode 0600
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            _fsync_folder(folder)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write: {exc.strerror}") from None


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def default_state_path(hub_url: str, agency: str, environ: dict[str, str] | None = None) -> Path:
    """Where ``siko`` keeps the state of ``agency`` at ``hub_url`` unless told otherwise.

    ``$SIKO_STATE`` names the file directly; else it is
    ``$XDG_STATE_HOME/siko/<agency>@<host_port>.json`` (``~/.local/state`` by default).
    """
    env = dict(os.environ) if environ is None else environ
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV])
    base = Path(env.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    where = hub_url.split("://", 1)[-1].rstrip("/")
    safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in where)
    return base / "siko" / f"{agency}@{safe}.json"
