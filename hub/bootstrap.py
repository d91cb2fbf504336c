"""Registering the first administrators from the card files named at start.

Idempotent: an administrator already in the directory is left as it is. A card file
for a name that is already an agency, or an administrator whose key differs, stops the
start with a clear message: silently replacing a key is exactly what must never happen.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from hub import events
from hub.records import AgencyRecord, Kind, Status
from hub.store import Store
from keys import KeysError, load_card, now_ms

log = logging.getLogger(__name__)

#: Who registers the first administrators, in the audit log: the hub's own start.
BOOTSTRAP = "hub-start"


class BootstrapError(Exception):
    """An administrator card given at start cannot be registered."""


async def register_first_admins(store: Store, paths: Sequence[Path]) -> None:
    """Make sure every card in ``paths`` is registered as an administrator."""
    for path in paths:
        try:
            card = load_card(path)
        except KeysError as exc:
            raise BootstrapError(f"administrator card: {exc}") from None
        existing = await store.get_agency(card.agency)
        if existing is None:
            at = now_ms()
            record = AgencyRecord(card.agency, Kind.ADMIN, Status.ACTIVE, (card.key_id,), at)
            event = events.agency_registered(record, card, BOOTSTRAP, at)
            await store.register_agency(record, card.serialize(), event)
            log.info("registered administrator %s (key %s)", card.agency, card.key_id.fingerprint())
        elif existing.kind is not Kind.ADMIN or card.key_id not in existing.key_ids:
            raise BootstrapError(
                f"{path}: {card.agency} is already registered with other keys or as an agency; "
                "rotate keys through the API, not by replacing the card file"
            )
