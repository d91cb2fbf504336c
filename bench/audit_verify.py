"""The auditor's verification core (clients/audit_verify.py) on realistic logs, in memory.

Run from the repository root::

    .venv/bin/python bench/audit_verify.py                # 20,000 leaves per log
    .venv/bin/python bench/audit_verify.py --leaves 5000  # quicker
    .venv/bin/python bench/audit_verify.py --profile mix  # cProfile of one log, top 25

bench/audit.py times the per-leaf work any auditor must do on a log held by the hub's
own Redis; this times the real core, :class:`clients.audit_verify.LogVerifier`, with
no I/O at all, on logs built as the hub builds them (:mod:`hub.events`):

- ``refusals``: refused-request records only (no signature to check);
- ``notes``: accepted notes only, each with a real envelope header (10 recipients,
  ML-KEM-768 + X25519 suite) and its sender's Ed25519 signature;
- ``mix``: 35 % notes, 45 % signed read acknowledgements, 18 % refusals, 2 % key
  rotations (a card whose self-signature is checked too).

Every log starts with the 11 agencies' registrations and ends with a checkpoint signed
by the log key, which the replay must reach: a clean run is asserted, so a broken
verifier cannot look fast. Leaves are fed in pages of 1,000 (the API's page) and timed
from the first page to :meth:`LogVerifier.finish`. The baseline is plain SHA-256 of the
same leaf bytes. Distinct records are built once (sealing is slow) and repeated with
fresh salts, so every leaf is distinct; the verifier keeps no cache of signatures.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import pstats
import random
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Final

# Run as a script, this file's folder heads sys.path and ``bench/hub.py`` would shadow
# the ``hub`` package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.audit_source import PAGE
from clients.audit_verify import Entry, LogVerifier
from hub import events
from hub.records import AgencyRecord, Kind, Status
from keys import Identity, MessageId, merkle
from keys.envelope import Envelope, Markings, Note, seal
from keys.leaf import event_leaf
from keys.logkey import LogKey
from keys.markings import Classification, HandlingCode
from keys.statements import ReadAck

AT: Final = 1_764_100_000_000
CHANNEL: Final = "lagebild-ruhr"
AGENCIES: Final = ("polizei-nrw", *(f"behoerde-{i:02d}" for i in range(1, 11)))
KINDS: Final = ("refusals", "mix", "notes")


class Builder:
    """Agencies, and a few hundred distinct records of each kind to draw leaves from."""

    def __init__(self, distinct: int = 200) -> None:
        self.rng = random.Random(9162)
        self.log = LogKey.generate("bench.siko.example/log")
        self.ids = [Identity.generate(a, now=AT) for a in AGENCIES]
        cards = [i.card for i in self.ids]
        self.registrations = [
            events.agency_registered(
                AgencyRecord(i.agency, Kind.AGENCY, Status.ACTIVE, (i.key_id,), AT),
                i.card,
                "admin",
                AT,
            ).record
            for i in self.ids
        ]
        markings = Markings(Classification.VS_NFD, HandlingCode.H1)
        self.notes = []
        for n in range(distinct):
            sender = self.ids[n % len(self.ids)]
            data = seal(
                Note("x" * 200, subject="Lage"),
                sender=sender,
                channel=CHANNEL,
                recipients=[c for c in cards if c.agency != sender.agency][:10],
                markings=markings,
                message_id=MessageId.new(),
                now=AT + n,
            )
            envelope = Envelope.parse(data)
            self.notes.append(events.note_accepted(envelope, envelope.digest(), AT + n).record)
        self.acks = []
        for n in range(distinct):
            ack, signature = ReadAck.make(self.ids[n % len(self.ids)], CHANNEL, f"{AT + n}-0", AT)
            self.acks.append(events.note_acknowledged(ack, signature, AT + n).record)
        self.refusals = [
            events.request_refused(
                agency=AGENCIES[n % len(AGENCIES)],
                method="POST",
                path=f"/v1/channels/{CHANNEL}/notes",
                problem="not-a-member",
                status=403,
                at=AT + n,
            ).record
            for n in range(distinct)
        ]
        rotated = [Identity.generate(a, now=AT + 1) for a in AGENCIES]
        self.rotations = [
            events.key_added(str(i.agency), i.card, str(i.agency), AT + 1).record for i in rotated
        ]

    def records(self, kind: str, count: int) -> list[bytes]:
        """The registrations, then ``count`` records of ``kind`` (see the module doc)."""
        pick = self.rng.choice
        if kind == "refusals":
            body = [pick(self.refusals) for _ in range(count)]
        elif kind == "notes":
            body = [pick(self.notes) for _ in range(count)]
        else:
            weighted = [
                (35, self.notes),
                (45, self.acks),
                (18, self.refusals),
                (2, self.rotations),
            ]
            pools = [pool for weight, pool in weighted for _ in range(weight)]
            body = [pick(pick(pools)) for _ in range(count)]
        return [*self.registrations, *body]

    def log_of(self, records: Sequence[bytes]) -> tuple[list[Entry], bytes]:
        """Entries (fresh salts) and a checkpoint note over all of them."""
        entries = []
        for index, record in enumerate(records):
            leaf, salt = event_leaf(record)
            entries.append(Entry(index, leaf, record, salt))
        root = merkle.root_from_leaf_hashes(merkle.leaf_hash(e.leaf) for e in entries)
        return entries, self.log.sign_checkpoint(len(entries), root)


def verify(builder: Builder, entries: Sequence[Entry], note: bytes) -> float:
    """Seconds to replay ``entries`` page by page, up to the finished report (clean)."""
    began = time.perf_counter()
    check = LogVerifier(builder.log.verifier)
    checkpoint = check.open_checkpoint(note, "latest")
    assert checkpoint is not None
    check.expect(checkpoint, "latest")
    for low in range(0, len(entries), PAGE):
        check.feed(entries[low : low + PAGE])
    report = check.finish(len(entries))
    spent = time.perf_counter() - began
    if report.anomalies or report.checkpoints != ((len(entries), "latest"),):
        raise RuntimeError(f"the replay is not clean: {report.anomalies[:3]}")
    return spent


def sha256(entries: Sequence[Entry]) -> float:
    """Seconds to hash every leaf with plain SHA-256."""
    began = time.perf_counter()
    for entry in entries:
        hashlib.sha256(entry.leaf).digest()
    return time.perf_counter() - began


def best(runs: int, timed: Callable[[], float]) -> float:
    """The fastest of ``runs`` (the machine is shared: the fastest is the least disturbed)."""
    return min(timed() for _ in range(runs))


def main(argv: Sequence[str] | None = None) -> int:
    """Build the logs, time them, print a Markdown table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--leaves", type=int, default=20_000, help="per log (1000-200000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per log, best kept")
    parser.add_argument("--profile", choices=KINDS, help="profile one log instead")
    args = parser.parse_args(argv)
    if not 1000 <= args.leaves <= 200_000 or not 1 <= args.runs <= 10:
        parser.error("--leaves must be 1000-200000 and --runs 1-10")
    builder = Builder()
    if args.profile:
        entries, note = builder.log_of(builder.records(args.profile, args.leaves))
        profile = cProfile.Profile()
        profile.runcall(verify, builder, entries, note)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return 0
    print(f"{args.leaves:,} leaves per log (+ 11 registrations), best of {args.runs}; ", end="")
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    print("| log | verify leaves/s | µs/leaf | SHA-256 leaves/s | verify / SHA-256 time |")
    print("|---|---|---|---|---|")
    for kind in KINDS:
        entries, note = builder.log_of(builder.records(kind, args.leaves))
        spent = best(args.runs, partial(verify, builder, entries, note))
        hashed = best(args.runs, partial(sha256, entries))
        n = len(entries)
        print(
            f"| {kind} | {n / spent:,.0f} | {1e6 * spent / n:.1f} | {n / hashed:,.0f} "
            f"| {spent / hashed:.0f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
