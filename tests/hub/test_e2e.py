"""End to end: police, prosecutor and city office share a note through a real hub."""

from __future__ import annotations

import asyncio

from keys import Classification, Note
from tests.hub.conftest import CHANNEL, CITY, MARKS, POLICE, PROSECUTOR, RunningHub


async def test_post_subscribe_open_ack_and_the_sender_sees_the_receipt(world: RunningHub) -> None:
    police = await world.client(POLICE)
    prosecutor = await world.client(PROSECUTOR)
    city = await world.client(CITY)
    posted = await police.post_note(CHANNEL, Note("Kontrolle Altendorfer Str."), MARKS)
    assert not posted.duplicate

    subscription = prosecutor.subscribe({CHANNEL: "0-0"})
    delivery = await asyncio.wait_for(anext(subscription), 5)
    opened = await prosecutor.open(delivery)
    assert opened.note.text == "Kontrolle Altendorfer Str."
    assert opened.header.sender == POLICE
    assert opened.header.markings.classification is Classification.VS_NFD

    live = await city.post_note(CHANNEL, Note("Gewerbeamt: Konzession fehlt"), MARKS)
    second = await asyncio.wait_for(anext(subscription), 5)
    assert second.stream_id == live.stream_id
    assert (await prosecutor.open(second)).header.sender == CITY

    await prosecutor.ack(CHANNEL, delivery.stream_id)
    receipts = await police.receipts(CHANNEL, posted.message_id)
    assert receipts["read_by"] == [PROSECUTOR]
    assert receipts["unread_by"] == sorted([CITY, POLICE])
    await subscription.close()


async def test_a_retried_post_is_stored_once(world: RunningHub) -> None:
    police = await world.client(POLICE)
    first = await police.post_note(CHANNEL, Note("einmal"), MARKS)
    page = await police.page_notes(CHANNEL)
    assert [n.stream_id for n in page.notes] == [first.stream_id]
    again = await police.post_envelope(CHANNEL, page.notes[0].envelope)
    assert again.duplicate and again.stream_id == first.stream_id
    assert len((await police.page_notes(CHANNEL)).notes) == 1
