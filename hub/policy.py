"""The hub's access rules, as pure functions over records and headers.

Handlers gather the facts (who is calling, the channel record, the current keys of its
readers), then ask these functions, which either return or raise the
:class:`~hub.errors.HubError` that explains the refusal. Nothing here touches Redis or
the network, so every rule is tested without either.
"""

from __future__ import annotations

from collections.abc import Mapping

from hub.errors import (
    AboveCeiling,
    AgencySuspended,
    Forbidden,
    NotMember,
    RecipientsMismatch,
    SenderMismatch,
)
from hub.records import AgencyRecord, ChannelRecord, Kind, Role, Status
from keys import AgencyId, Header, KeyId


def require_active(caller: AgencyRecord) -> None:
    """A suspended agency or administrator may do nothing."""
    if caller.status is not Status.ACTIVE:
        raise AgencySuspended(f"{caller.agency} is suspended; ask an administrator")


def require_admin(caller: AgencyRecord) -> None:
    """Only administrators manage the directory and channels."""
    require_active(caller)
    if caller.kind is not Kind.ADMIN:
        raise Forbidden(f"{caller.agency} is not an administrator")


def require_role(channel: ChannelRecord, caller: AgencyRecord, role: Role) -> None:
    """The caller must be an active member of ``channel`` with ``role``."""
    require_active(caller)
    if role not in channel.roles_of(caller.agency):
        raise NotMember(f"{caller.agency} may not {role.value} in channel {channel.channel}")


def check_post(
    channel: ChannelRecord,
    caller: AgencyRecord,
    header: Header,
    reader_keys: Mapping[AgencyId, KeyId],
) -> None:
    """Every rule a note must pass before it is stored (DESIGN.md decision 3).

    ``reader_keys`` maps each reader of the channel to the key id of its current card.
    The envelope's signature is checked separately, against the sender's current card.
    """
    require_role(channel, caller, Role.POST)
    if header.channel != channel.channel:
        raise SenderMismatch(
            f"envelope is sealed for channel {header.channel}, posted to {channel.channel}"
        )
    if header.sender != caller.agency or header.sender_key != caller.current_key:
        raise SenderMismatch(
            f"envelope is from {header.sender}; sign it with the caller's current key"
        )
    check_recipients(channel, header, reader_keys)
    if not header.markings.classification.within(channel.ceiling):
        raise AboveCeiling(
            f"note is {header.markings.classification.value}; channel {channel.channel} "
            f"allows at most {channel.ceiling.value}"
        )


def check_recipients(
    channel: ChannelRecord, header: Header, reader_keys: Mapping[AgencyId, KeyId]
) -> None:
    """Recipients must be exactly the channel's readers, each under its current key."""
    sealed_for = {r.agency: r.key_id for r in header.recipients}
    readers = channel.readers()
    missing = sorted(readers - sealed_for.keys())
    extra = sorted(sealed_for.keys() - readers)
    if missing or extra:
        raise RecipientsMismatch(
            f"recipients must be exactly the readers of {channel.channel}; "
            f"missing: {', '.join(missing) or 'none'}; not readers: {', '.join(extra) or 'none'}"
        )
    stale = sorted(a for a, k in sealed_for.items() if reader_keys.get(a) != k)
    if stale:
        raise RecipientsMismatch(
            f"sealed to old keys of {', '.join(stale)}; fetch the current roster and seal again"
        )
