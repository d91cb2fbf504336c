"""What an auditor remembers between runs: the last signed checkpoint it verified.

A hub that rolls its log back, or shows this auditor a different history than before
(a fork), can only be caught by comparing with what was seen earlier. So after every
clean run the newest verified checkpoint is written here, and the next run requires
the hub's log to extend it (:mod:`clients.audit_run`). The file is JSON, one per log::

    {"v": 1, "origin": "...", "size": N, "root": "<hex>", "checkpoint": "<signed note>"}

The signed note is kept whole, so the state proves itself: it is verified again with
the log key on every run, and a state file that someone edited is refused, not trusted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Final

from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint
from keys.errors import KeysError

MAX_STATE_BYTES: Final = 256 * 1024
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9.\-]+")


class StateError(ValueError):
    """The state file cannot be read or is not one this log's key signed."""


def default_state_path(config_dir: Path, origin: str) -> Path:
    """``<config dir>/audit/<origin>.json``, the origin made safe as a file name."""
    return config_dir / "audit" / f"{_UNSAFE.sub('_', origin)}.json"


def load_state(path: Path, verifier: NoteVerifier) -> tuple[Checkpoint, bytes] | None:
    """The remembered checkpoint and its signed note, or None when there is no file yet.

    Raises:
        StateError: the file is unreadable, malformed, or not signed by the log key.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{path}: cannot read the audit state ({exc.strerror})") from None
    try:
        value = json.loads(data)
        note = str(value["checkpoint"]).encode()
        checkpoint = open_signed_checkpoint(note, verifier)
    except (ValueError, KeyError, TypeError, KeysError) as exc:
        raise StateError(
            f"{path}: not an audit state signed by this log's key ({exc}); "
            "restore it from backup, or move it away to start over"
        ) from None
    return checkpoint, note


def save_state(path: Path, checkpoint: Checkpoint, note: bytes) -> None:
    """Remember ``checkpoint`` (written to a temporary file, then renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    value = {
        "v": 1,
        "origin": checkpoint.origin,
        "size": checkpoint.size,
        "root": checkpoint.root_hash.hex(),
        "checkpoint": note.decode(),
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
