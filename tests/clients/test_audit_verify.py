"""The verification core on logs built in memory: no hub, no Redis (keys/ makes them)."""

from __future__ import annotations

import pytest

from clients import audit_report, audit_verify
from clients.audit_verify import (
    Entry,
    LogVerifier,
    Problem,
    decode_record,
    frontier_from_inclusion_proof,
)
from hub import events
from hub.records import AgencyRecord, Kind, Status
from keys import Identity, merkle
from keys.checkpoint import Checkpoint
from keys.envelope import Envelope, Markings, Note, seal
from keys.leaf import EventKind, EventRecord, Tombstone, event_leaf
from keys.logkey import LogKey
from keys.markings import Classification, HandlingCode
from keys.statements import ReadAck

LOG = LogKey.generate("test.example/log")


def refusal(at: int) -> Entry:
    record = EventRecord(
        EventKind.REQUEST_REFUSED, at, {"method": "GET", "path": "/x", "problem": "p", "status": 4}
    ).serialize()
    leaf, salt = event_leaf(record)
    return Entry(at, leaf, record, salt)


def log(size: int) -> tuple[list[Entry], Checkpoint, bytes]:
    entries = [refusal(i) for i in range(size)]
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    note = LOG.sign_checkpoint(size, root)
    return entries, Checkpoint(LOG.origin, size, root), note


def replay(entries: list[Entry], note: bytes, end: int) -> list[tuple[int | None, Problem]]:
    check = LogVerifier(LOG.verifier)
    checkpoint = check.open_checkpoint(note, "latest")
    assert checkpoint is not None
    check.expect(checkpoint, "latest")
    check.feed(entries)
    return [(a.index, a.problem) for a in check.finish(end).anomalies]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8, 13, 64, 100])
def test_the_left_siblings_of_an_inclusion_proof_are_the_prefix_frontier(size: int) -> None:
    """RFC 9162 section 2.1.3.2: the siblings hashed in on the left tile leaves 0..index-1."""
    entries, checkpoint, _ = log(size)
    hashes = [merkle.leaf_hash(e.leaf) for e in entries]
    for index in range(size):
        proof = merkle.inclusion_proof(
            index,
            size,
            lambda level, at: merkle.root_from_leaf_hashes(hashes[at << level : (at + 1) << level]),
        )
        frontier = frontier_from_inclusion_proof(entries[index].leaf, index, checkpoint, proof)
        assert frontier.root() == merkle.root_from_leaf_hashes(hashes[:index])


def test_a_clean_log_has_no_anomaly() -> None:
    entries, _, note = log(10)
    assert replay(entries, note, 10) == []


def test_a_gap_a_repeat_and_a_short_log_are_named() -> None:
    entries, _, note = log(10)
    served = [*entries[:3], entries[2], *entries[4:8]]
    assert replay(served, note, 10) == [
        (2, Problem.MALFORMED_LEAF),
        (3, Problem.MISSING_LEAF),
        (8, Problem.MISSING_LEAF),
    ]


def test_a_tombstone_must_be_signed_by_the_log_key() -> None:
    entries, _, _ = log(4)
    other = LogKey.generate(LOG.origin)
    entries[1] = Entry(1, entries[1].leaf)  # record withheld
    entries.append(Entry(4, other.sign_tombstone(Tombstone(1, "erasure", 5)).leaf()))
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    assert replay(entries, LOG.sign_checkpoint(5, root), 5) == [
        (1, Problem.RECORD_WITHHELD),
        (4, Problem.BAD_TOMBSTONE),
    ]
    entries[4] = Entry(4, LOG.sign_tombstone(Tombstone(1, "erasure", 5)).leaf())
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    assert replay(entries, LOG.sign_checkpoint(5, root), 5) == []


def test_records_of_an_unknown_kind_or_version_do_not_decode() -> None:
    with pytest.raises(ValueError, match="version 1"):
        decode_record(b"\x81\xa1v\x02")
    with pytest.raises(ValueError, match="unknown kind"):
        decode_record(b"\x83\xa1v\x01\xa4kind\xa1x\xa2at\x01")
    with pytest.raises(ValueError):
        decode_record(b"\xc1")


# -- refusals-summarized records ---------------------------------------------------------


def entry(index: int, kind: EventKind, fields: dict[str, object]) -> Entry:
    record = EventRecord(kind, 1_764_100_000_000 + index, fields).serialize()
    leaf, salt = event_leaf(record)
    return Entry(index, leaf, record, salt)


def summary_fields(
    *counts: list[object], start: int = 1000, end: int = 61_000
) -> dict[str, object]:
    return {"from": start, "to": end, "counts": list(counts)}


def verified(entries: list[Entry]) -> audit_verify.Report:
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    check = LogVerifier(LOG.verifier, workers=0)
    checkpoint = check.open_checkpoint(LOG.sign_checkpoint(len(entries), root), "latest")
    assert checkpoint is not None
    check.expect(checkpoint, "latest")
    check.feed(entries)
    return check.finish(len(entries))


def test_summaries_are_tallied_beside_the_refusals_logged_one_by_one() -> None:
    single = {"agency": "pp-duisburg", "method": "GET", "path": "/v1/x", "problem": "not-found"}
    entries = [
        entry(0, EventKind.REQUEST_REFUSED, {**single, "status": 404}),
        entry(1, EventKind.REFUSALS_SUMMARIZED, summary_fields(["unauthenticated", 401, 270])),
        entry(
            2, EventKind.REQUEST_REFUSED, {**single, "problem": "unauthenticated", "status": 401}
        ),
        entry(
            3,
            EventKind.REFUSALS_SUMMARIZED,
            summary_fields(["replayed-request", 401, 100], ["unauthenticated", 401, 30]),
        ),
    ]
    report = verified(entries)
    assert report.clean, report.anomalies
    tally = report.tally
    assert tally.summaries == 2 and len(tally.refusals) == 2
    assert tally.by_kind["refusals-summarized"] == 2
    assert tally.refusals_by_problem() == [
        ("not-found", 404, 1, 0),
        ("replayed-request", 401, 0, 100),
        ("unauthenticated", 401, 1, 300),
    ]
    text = audit_report.summary(report)
    assert "Refused requests: 2 logged one by one, 400 counted in 2 summaries" in text
    assert [line.split() for line in text.splitlines() if "unauthenticated" in line] == [
        ["unauthenticated", "401", "1", "300"]
    ]
    page = audit_report.html_page(report)
    assert "<h2>Refused requests by problem</h2>" in page
    assert "<td>unauthenticated</td><td>401</td><td>1</td><td>300</td>" in page


MALFORMED_SUMMARIES: dict[str, dict[str, object]] = {
    "to before from": summary_fields(["unauthenticated", 401, 1], start=5000, end=4000),
    "a negative count": summary_fields(["unauthenticated", 401, -3]),
    "a zero count": summary_fields(["unauthenticated", 401, 0]),
    "a count as text": summary_fields(["unauthenticated", 401, "3"]),
    "a status as text": summary_fields(["unauthenticated", "401", 3]),
    "a path as problem": summary_fields(["/v1/agencies", 401, 3]),
    "from as text": {**summary_fields(["x", 401, 1]), "from": "1000"},
    "no counts": {"from": 1, "to": 2},
    "empty counts": summary_fields(),
    "counts not a list": {**summary_fields(), "counts": {"x": 1}},
    "unsorted": summary_fields(["b", 401, 1], ["a", 401, 1]),
    "an extra field": {**summary_fields(["x", 401, 1]), "path": "/v1/x"},
}


@pytest.mark.parametrize("fields", MALFORMED_SUMMARIES.values(), ids=MALFORMED_SUMMARIES.keys())
def test_a_malformed_summary_is_an_anomaly_and_counts_nothing(fields: dict[str, object]) -> None:
    good = entry(0, EventKind.REFUSALS_SUMMARIZED, summary_fields(["unauthenticated", 401, 5]))
    report = verified([good, entry(1, EventKind.REFUSALS_SUMMARIZED, fields)])
    [anomaly] = report.anomalies
    assert (anomaly.index, anomaly.problem) == (1, Problem.MALFORMED_RECORD)
    assert anomaly.detail.startswith("the summary of refusals is malformed (")
    assert "summary" in anomaly.detail.removeprefix("the summary")
    assert report.tally.summaries == 1
    assert report.tally.summarized == {("unauthenticated", 401): 5}


# -- signatures, in worker processes -------------------------------------------------

AT = 1_764_100_000_000


def signed_log(size: int, bad: dict[int, str]) -> list[bytes]:
    """Records: two registrations, then notes and acknowledgements in turn; ``bad`` maps
    an index to what is wrong there: "ack" or "note" (a signature), "header"."""
    police, city = Identity.generate("polizei-nrw"), Identity.generate("stadt-essen")
    records = [
        events.agency_registered(
            AgencyRecord(i.agency, Kind.AGENCY, Status.ACTIVE, (i.key_id,), AT), i.card, "admin", AT
        ).record
        for i in (police, city)
    ]
    envelope = Envelope.parse(
        seal(
            Note("Lage"),
            sender=police,
            channel="lagebild",
            recipients=[city.card],
            markings=Markings(Classification.VS_NFD, HandlingCode.H1),
        )
    )
    note = events.note_accepted(envelope, envelope.digest(), AT).record
    ack, signature = ReadAck.make(city, "lagebild", f"{AT}-0", AT)
    acked = events.note_acknowledged(ack, signature, AT).record
    _, _, fields = decode_record(note)
    forged = {
        "note": EventRecord(EventKind.NOTE_ACCEPTED, AT, {**fields, "signature": bytes(64)}),
        "header": EventRecord(EventKind.NOTE_ACCEPTED, AT, {**fields, "channel": "other"}),
    }
    _, _, fields = decode_record(acked)
    forged["ack"] = EventRecord(
        EventKind.NOTE_ACKNOWLEDGED,
        AT,
        {**fields, "signature": signature[:-1] + bytes([signature[-1] ^ 1])},
    )
    for index in range(len(records), size):
        wrong = bad.get(index)
        records.append(forged[wrong].serialize() if wrong else (note if index % 2 else acked))
    return records


def replay_report(
    records: list[bytes], workers: int | None = None
) -> tuple[list[tuple[int | None, Problem, str]], LogVerifier]:
    """Replay ``records`` in pages of 1,000 against a signed checkpoint of them all."""
    entries = []
    for index, record in enumerate(records):
        leaf, salt = event_leaf(record)
        entries.append(Entry(index, leaf, record, salt))
    root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
    check = LogVerifier(LOG.verifier, workers=workers)
    checkpoint = check.open_checkpoint(LOG.sign_checkpoint(len(entries), root), "latest")
    assert checkpoint is not None
    check.expect(checkpoint, "latest")
    for low in range(0, len(entries), 1000):
        check.feed(entries[low : low + 1000])
    report = check.finish(len(entries))
    assert report.tally.signatures == len(records) - 2  # all but the registrations
    return [(a.index, a.problem, a.detail) for a in report.anomalies], check


def test_bad_signatures_deep_in_pages_checked_in_parallel_are_named_at_their_leaf() -> None:
    """The checks of pages after the first POOL_FROM signatures go to worker processes;
    each failure comes back at its exact leaf, as the same replay in process finds it."""
    size = audit_verify.POOL_FROM + 3000
    bad = {size - 1234: "ack", size - 1233: "note", size - 1000: "header", size - 1: "ack"}
    records = signed_log(size, bad)
    found, check = replay_report(records)
    assert check.in_workers >= 2000  # the last pages were checked in the workers
    what = {
        "ack": (Problem.BAD_ACK, "the reader's signature over its acknowledgement"),
        "note": (Problem.BAD_ENVELOPE_SIGNATURE, "the sender's signature over the envelope"),
        "header": (Problem.HEADER_MISMATCH, "the signed header disagrees with the record on"),
    }
    assert [(i, p) for i, p, _ in found] == [(i, what[kind][0]) for i, kind in sorted(bad.items())]
    for (_, _, detail), kind in zip(found, [bad[i] for i in sorted(bad)], strict=True):
        assert detail.startswith(what[kind][1])
    assert found[2][2].endswith("on channel")
    in_process, alone = replay_report(records, workers=0)
    assert alone.in_workers == 0
    assert in_process == found


def test_a_small_log_is_checked_in_process() -> None:
    """Below POOL_FROM signatures no worker is started: it would cost more than it saves."""
    found, check = replay_report(signed_log(1500, {1400: "note"}))
    assert check.in_workers == 0
    assert [(i, p) for i, p, _ in found] == [(1400, Problem.BAD_ENVELOPE_SIGNATURE)]
