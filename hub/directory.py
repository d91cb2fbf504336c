"""The directory as the hub's handlers see it: agencies, their cards, with a card cache.

Cards are immutable and named by their key id (a hash of the card), so a parsed card
can be cached forever without going stale; parsing checks the card's self-signature,
which costs as much as a request signature, so the cache saves one verification per
request. Directory entries (status, current key) change, and are always read fresh.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from hub.errors import HubError, NotFound
from hub.records import AgencyRecord
from hub.store import Store
from keys import AgencyCard, KeyId, KeysError

CARD_CACHE_SIZE: Final = 4096


class DamagedRecord(HubError):
    """A record in storage does not parse: an operator must look at it."""


class Directory:
    """Look-ups of agencies and cards, over a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._cards: OrderedDict[str, AgencyCard] = OrderedDict()

    async def agency(self, agency: str) -> AgencyRecord:
        """The directory entry of ``agency``; :class:`NotFound` if not registered."""
        record = await self._store.get_agency(agency)
        if record is None:
            raise NotFound(f"no agency {agency} is registered")
        return record

    async def agencies(self, agencies: list[str]) -> list[AgencyRecord]:
        """The directory entries of ``agencies``, read fresh in one round trip."""
        records = await self._store.get_agencies(agencies)
        for name, record in zip(agencies, records, strict=True):
            if record is None:
                raise NotFound(f"no agency {name} is registered")
        return [r for r in records if r is not None]

    async def card(self, key_id: KeyId | str) -> AgencyCard | None:
        """The card with this key id, current or historical, if registered."""
        name = str(key_id)
        cached = self._cards.get(name)
        if cached is not None:
            self._cards.move_to_end(name)
            return cached
        data = await self._store.get_card(name)
        return None if data is None else self._remember(name, data)

    async def current_card(self, record: AgencyRecord) -> AgencyCard:
        """The card in force of a directory entry."""
        card = await self.card(record.current_key)
        if card is None:
            raise DamagedRecord(f"card {record.current_key} is missing from the directory")
        return card

    async def current_cards(self, records: list[AgencyRecord]) -> dict[str, AgencyCard]:
        """The card in force of each record, by agency id, in one round trip."""
        wanted = [str(r.current_key) for r in records if str(r.current_key) not in self._cards]
        for name, data in zip(wanted, await self._store.get_cards(wanted), strict=True):
            if data is None:
                raise DamagedRecord(f"card {name} is missing from the directory")
            self._remember(name, data)
        return {str(r.agency): self._cards[str(r.current_key)] for r in records}

    def _remember(self, name: str, data: bytes) -> AgencyCard:
        try:
            card = AgencyCard.parse(data)
        except KeysError as exc:
            raise DamagedRecord(f"card {name} in the directory does not parse") from exc
        if str(card.key_id) != name:
            raise DamagedRecord(f"card stored under {name} has key id {card.key_id}")
        self._cards[name] = card
        if len(self._cards) > CARD_CACHE_SIZE:
            self._cards.popitem(last=False)
        return card
