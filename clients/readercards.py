"""Before a note is sealed: are the readers' cards the ones to seal for?

:meth:`clients.sdk.HubClient.post` asks :class:`ReaderCards` two things about the cards
of a channel's roster, which the hub hands out and whose operator is not trusted to read
notes (the module docstring of :mod:`clients.sdk` says what is and is not checked):

* :meth:`ReaderCards.changed_keys`: with a state file, each reader's key id is pinned on
  first use; a changed one must follow the pinned one in the hub's key history of that
  agency (a rotation appends, it never rewrites), and is reported so that people can
  compare the new fingerprint by phone;
* :meth:`ReaderCards.check_logged`: each card not yet confirmed is proved to be the one
  the audit log registered (:mod:`clients.keylog`), into a checkpoint signed by the
  trusted log key that extends every checkpoint seen before.

Confirmations and pins are kept in the state file, else for the client's life.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from clients import keylog
from clients.errors import NotFound
from clients.keylog import CardRefused
from clients.state import State, StateFile
from clients.transport import Transport
from keys import AgencyCard, KeysError
from keys.checkpoint import Checkpoint, NoteVerifier, open_signed_checkpoint

#: An agency's key ids as the hub's directory lists them, oldest first.
KeyHistory = Callable[[str], Awaitable[list[str]]]


@dataclass(frozen=True)
class KeyChange:
    """A reader's key id differs from the one pinned when this client last sealed for it."""

    agency: str
    pinned: str
    current: str


class ReaderCards:
    """The pins and log proofs of the cards one client seals for."""

    def __init__(
        self,
        transport: Transport,
        state: StateFile | None,
        log_key: NoteVerifier | None,
        key_history: KeyHistory,
    ) -> None:
        """``log_key``: the audit log's verifier key, from its operator out of band; without
        it the key the hub states the first time is trusted and pinned."""
        self._transport = transport
        self._state = state
        self._log_key = log_key
        self._key_history = key_history
        self._memory = State()  # the log pins, when there is no state file

    async def changed_keys(self, cards: Iterable[AgencyCard]) -> tuple[KeyChange, ...]:
        """Readers whose key changed since pinned; CardRefused if history was rewritten."""
        pinned = self._state.load().keys if self._state is not None else {}
        changes = []
        for card in cards:
            old, new = pinned.get(card.agency), str(card.key_id)
            if old is None or old == new:
                continue
            history = await self._key_history(card.agency)
            if old not in history or new not in history or history.index(old) > history.index(new):
                raise CardRefused(
                    f"the hub's key history of {card.agency} no longer shows the key "
                    f"{old} you sealed for before, followed by {new}"
                )
            changes.append(KeyChange(card.agency, old, new))
        return tuple(changes)

    async def check_logged(self, cards: list[AgencyCard]) -> None:
        """Every card not yet confirmed is proved to be the one the audit log registered.

        Raises:
            CardRefused: a card is not in the log as served, the checkpoint is not signed
                by the trusted log key, or the log does not extend the one seen before.
        """
        pins = self._state.load() if self._state is not None else self._memory
        todo = [card for card in cards if str(card.key_id) not in pins.logged]
        if not todo:
            return
        verifier = await self._log_verifier(pins)
        newest = self._pinned_checkpoint(pins, verifier)
        for card in todo:
            try:
                entry = await keylog.fetch_card_entry(self._transport, str(card.key_id))
            except NotFound as exc:
                raise CardRefused(
                    f"the audit log shows no registration of {card.agency}'s key "
                    f"{card.key_id}: {exc.detail}"
                ) from None
            checkpoint = keylog.verify_card_logged(card, entry, verifier)
            newest = await self._extended(newest, (checkpoint, entry.checkpoint))
        confirmed = {str(card.key_id): str(card.agency) for card in todo}
        if newest is not None:  # always: todo is not empty
            self._save_pins(confirmed, str(verifier), newest[1].decode())

    def pin(self, cards: Iterable[AgencyCard]) -> None:
        """Remember the key ids sealed for (with a state file)."""
        if self._state is not None:
            pinned = {str(card.agency): str(card.key_id) for card in cards}
            self._state.update(lambda state: state.keys.update(pinned))

    async def _log_verifier(self, pins: State) -> NoteVerifier:
        """The log key given, else the one pinned, else the hub's (trusted on first use)."""
        if self._log_key is not None:
            if pins.log_key and pins.log_key != str(self._log_key):
                raise CardRefused(
                    "the log key given differs from the one pinned earlier "
                    f"({pins.log_key}); if its operator changed it, confirm that out of band "
                    "and remove log_key, log_checkpoint and logged from the state file"
                )
            return self._log_key
        if pins.log_key:
            return NoteVerifier.parse(pins.log_key)
        return await keylog.fetch_log_verifier(self._transport)

    def _pinned_checkpoint(
        self, pins: State, verifier: NoteVerifier
    ) -> tuple[Checkpoint, bytes] | None:
        if not pins.log_checkpoint:
            return None
        note = pins.log_checkpoint.encode()
        try:
            return open_signed_checkpoint(note, verifier), note
        except KeysError:
            raise CardRefused(
                "the checkpoint pinned in the state file is not signed by the log key "
                "(was the file edited?)"
            ) from None

    async def _extended(
        self, old: tuple[Checkpoint, bytes] | None, new: tuple[Checkpoint, bytes]
    ) -> tuple[Checkpoint, bytes]:
        """The larger of two checkpoints, once the larger is proved to extend the smaller."""
        if old is None:
            return new
        small, large = sorted((old, new), key=lambda pair: pair[0].size)
        proof: list[bytes] = []
        if 0 < small[0].size < large[0].size:
            proof = await keylog.fetch_consistency_proof(
                self._transport, small[0].size, large[0].size
            )
        keylog.check_consistent(old[0], new[0], proof)
        return large

    def _save_pins(self, confirmed: dict[str, str], log_key: str, checkpoint: str) -> None:
        def change(state: State) -> None:
            state.logged.update(confirmed)
            state.log_key, state.log_checkpoint = log_key, checkpoint

        if self._state is not None:
            self._state.update(change)
        else:
            change(self._memory)
