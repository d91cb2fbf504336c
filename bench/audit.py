"""Audit log: append rate, inclusion proofs at 10^3..10^6 leaves, auditor verify rate.

Run from the repository root (docs/BENCHMARKS.md records a run)::

    .venv/bin/python bench/audit.py            # full run, bounded to about 5 minutes
    .venv/bin/python bench/audit.py --quick    # 10^3 and 10^4 leaves, a smoke test

Everything runs on 127.0.0.1 on a Redis this script starts (:mod:`hub.embedded`,
append-only, ``everysec``), through the hub's own code: :class:`hub.logstore.LogStore`
and :class:`hub.auditlog.AuditLog` with a fresh :class:`keys.logkey.LogKey`.

1. Growth, tier by tier to 10^3, 10^4, 10^5 and 10^6 leaves. Each chunk of events
   (a ~400-byte note-accepted record, a fresh salt and its leaf, built untimed) is
   written into the log's inbox stream with pipelined ``XADD`` (*write*), then
   :meth:`AuditLog.drain` sequences it as the hub does: ``XRANGE``, leaf and node
   hashes, the ``SEQUENCE`` Lua script, ``XTRIM``, 512 events a batch (*drain*).
   *append rate* = leaves / (write + drain). A tier whose estimated time exceeds what is
   left of the time budget is skipped, and the report says so.
2. At every tier: a signed checkpoint, then random inclusion proofs
   (:meth:`AuditLog.inclusion_proof`: the log size and one ``HMGET`` of the O(log n)
   subtree hashes), each checked against the checkpoint's root (untimed). For scale, one
   bare Redis ``PING`` round trip is timed beside each proof.
3. The auditor: the first leaves of the largest tier (records and salts included) are
   fetched (untimed) and verified leaf by leaf, as an auditor must at least:
   :func:`keys.leaf.check_record` (the leaf commits to record and salt), then
   :func:`keys.merkle.leaf_hash` into a :class:`keys.merkle.Frontier` whose root must be
   the checkpoint's. Baseline, alternating page by page: plain SHA-256 of the same
   leaves. The real auditor core (``clients/audit_verify.py``) was not committed when
   this was written, so it is not what is measured; see the report's note.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Run as a script, this file's folder heads sys.path and ``bench/hub.py`` would shadow
# the ``hub`` package: put the repository root first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench._harness import CpuMeter, Dist, embedded_redis, machine_lines, md_table, progress
from hub import keyspace
from hub.auditlog import AuditLog
from hub.events import AuditEvent
from hub.logstore import LogStore, StoredLeaf
from keys import merkle
from keys.checkpoint import open_signed_checkpoint
from keys.leaf import EventKind, check_record, event_leaf
from keys.logkey import LogKey

ORIGIN: Final = "bench.siko.example/log"
CHUNK: Final = 20_000
PAGE: Final = 1000  # the API's largest page of leaves
PROOF_GOAL_MS: Final = 2.0
VERIFY_GOAL: Final = 50_000  # leaves per second


@dataclass(frozen=True)
class Limits:
    """Counts and bounds of one run."""

    sizes: tuple[int, ...] = (10**3, 10**4, 10**5, 10**6)
    budget_s: float = 200.0  # for growing the log
    proofs: int = 1000  # per tier
    audit_leaves: int = 100_000


FULL: Final = Limits()
QUICK: Final = Limits(sizes=(10**3, 10**4), budget_s=30.0, proofs=200, audit_leaves=10_000)


@dataclass(frozen=True)
class Tier:
    """The log grown to ``size`` leaves, and its proofs."""

    size: int
    write_s: float  # cumulative, from the empty log
    drain_s: float
    build_s: float
    proof: Dist
    ping: Dist
    hashes: float  # proof length, mean
    root: bytes

    @property
    def append_rate(self) -> float:
        """Leaves per second, write + drain."""
        return self.size / max(self.write_s + self.drain_s, 1e-9)


class Log:
    """The log under test: the hub's AuditLog over a LogStore on our own Redis."""

    def __init__(self, url: str) -> None:
        self.client = aioredis.Redis.from_url(url)
        self.key = LogKey.generate(ORIGIN)
        self.audit = AuditLog(LogStore(self.client), self.key, checkpoint_interval_s=3600.0)
        self.rng = random.Random(9162)
        self.records = [self.record(i) for i in range(256)]
        self.size = 0
        self.write_s = self.drain_s = self.build_s = 0.0

    def record(self, i: int) -> bytes:
        """A note-accepted record as the hub writes one (~400 bytes)."""
        rand = self.rng.randbytes
        return AuditEvent.of(
            EventKind.NOTE_ACCEPTED,
            1_764_100_000_000 + i,
            channel="lagebild-ruhr",
            message_id=rand(16),
            sender="polizei-nrw",
            sender_key=rand(16).hex(),
            recipients=["polizei-nrw", "sta-essen", "stadt-essen"],
            markings={"c": "VS-NfD", "h": "H1"},
            digest=rand(32),
            header=rand(240),
            signature=rand(64),
        ).record

    async def grow(self, target: int) -> None:
        """Append leaves until the log has ``target``; the times add up on the log."""
        while self.size < target:
            count = min(CHUNK, target - self.size)
            began = time.perf_counter()
            events = []
            for i in range(count):
                record = self.records[i % len(self.records)]
                leaf, salt = event_leaf(record)
                events.append({"leaf": leaf, "rec": record, "salt": salt})
            wrote = time.perf_counter()
            async with self.client.pipeline(transaction=False) as pipe:
                for fields in events:
                    pipe.xadd(keyspace.log_inbox(), fields)  # type: ignore[arg-type]
                await pipe.execute()
            drained = time.perf_counter()
            await self.audit.drain(keyspace.log_inbox())
            done = time.perf_counter()
            self.build_s += wrote - began
            self.write_s += drained - wrote
            self.drain_s += done - drained
            self.size += count

    async def tier(self, proofs: int) -> Tier:
        """Sign a checkpoint at the current size, time ``proofs`` inclusion proofs."""
        checkpoint = open_signed_checkpoint(
            await self.audit.sign_checkpoint() or b"", self.key.verifier
        )
        if checkpoint.size != self.size:
            raise RuntimeError(f"the log has {checkpoint.size} leaves, expected {self.size}")
        proof_ns, ping_ns, lengths = [], [], []
        clock = time.perf_counter_ns
        for _ in range(proofs):
            index = self.rng.randrange(self.size)
            start = clock()
            proof = await self.audit.inclusion_proof(index, self.size)
            mid = clock()
            await self.client.ping()
            ping_ns.append(clock() - mid)
            proof_ns.append(mid - start)
            lengths.append(len(proof))
            leaf = (await self.audit.leaves(index, index + 1))[0].leaf
            merkle.verify_inclusion(
                merkle.leaf_hash(leaf), index, self.size, proof, checkpoint.root_hash
            )
        return Tier(
            self.size,
            self.write_s,
            self.drain_s,
            self.build_s,
            Dist.of_ns(proof_ns),
            Dist.of_ns(ping_ns),
            sum(lengths) / max(len(lengths), 1),
            checkpoint.root_hash,
        )


# -- the auditor ---------------------------------------------------------------------


def verify_page(frontier: merkle.Frontier, page: Sequence[StoredLeaf]) -> merkle.Frontier:
    """The per-leaf work of an auditor: record commitment, then the leaf into the tree."""
    for item in page:
        if item.record is not None and item.salt is not None:
            check_record(item.leaf, item.record, item.salt)
        frontier, _ = frontier.append(merkle.leaf_hash(item.leaf))
    return frontier


def sha256_page(page: Sequence[StoredLeaf]) -> None:
    """The baseline: plain SHA-256 of every leaf."""
    for item in page:
        hashlib.sha256(item.leaf).digest()


@dataclass(frozen=True)
class Auditor:
    """Verify and baseline times over the same leaves."""

    leaves: int
    verify_s: float
    sha_s: float
    fetch_s: float

    def rate(self, seconds: float) -> float:
        """Leaves per second."""
        return self.leaves / max(seconds, 1e-9)


async def audit(log: Log, tier: Tier) -> Auditor:
    """Fetch ``tier.size`` leaves, verify them against the tier's root, page by page."""
    frontier, verify_s, sha_s, fetch_s = merkle.Frontier(), 0.0, 0.0, 0.0
    clock = time.perf_counter
    for start in range(0, tier.size, PAGE):
        began = clock()
        page = await log.audit.leaves(start, min(tier.size, start + PAGE))
        fetched = clock()
        frontier = verify_page(frontier, page)
        verified = clock()
        sha256_page(page)
        fetch_s += fetched - began
        verify_s += verified - fetched
        sha_s += clock() - verified
    if frontier.root() != tier.root:
        raise RuntimeError("the auditor's root is not the checkpoint's: the log is broken")
    return Auditor(tier.size, verify_s, sha_s, fetch_s)


# -- report --------------------------------------------------------------------------


def tier_table(tiers: Sequence[Tier]) -> str:
    """Growth and proofs, one row per tier."""
    rows = [
        [
            f"10^{round(math.log10(t.size))}",
            f"{t.append_rate:,.0f}",
            f"{t.size / max(t.drain_s, 1e-9):,.0f}",
            f"{t.write_s + t.drain_s:,.1f}",
            f"{t.proof.p50:.3f}",
            f"{t.proof.p99:.3f}",
            f"{t.ping.p50:.3f} / {t.ping.p99:.3f}",
            f"{t.hashes:.1f} ({math.log2(t.size):.1f})",
            f"{32 * t.hashes:,.0f}",
        ]
        for t in tiers
    ]
    headers = ["leaves", "append leaves/s", "drain leaves/s", "grow s (total)"]
    headers += ["proof p50 ms", "proof p99 ms", "PING p50 / p99 ms", "hashes (log2 n)", "bytes"]
    return md_table(headers, rows)


def report(limits: Limits, tiers: Sequence[Tier], skipped: str, a: Auditor, cpu: str) -> str:
    """The whole report, Markdown."""
    command = " ".join(["bench/audit.py", *sys.argv[1:]])
    top = tiers[-1]
    at_goal = top.size == 10**6

    def met(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    verify = a.rate(a.verify_s)
    lines = [
        f"# Audit log benchmark: `{command}`\n",
        *machine_lines(),
        f"- CPU used while growing the log: {cpu} cores",
        f"\n## Growth and inclusion proofs ({limits.proofs} random proofs per size)\n",
        tier_table(tiers),
        f"\nBuilding the events (records, salts, leaves) took {top.build_s:.2f} s, not counted.",
        *([skipped] if skipped else []),
        f"\n**Goal: inclusion proof < {PROOF_GOAL_MS:g} ms at 10^6 leaves: median "
        f"{met(at_goal and top.proof.p50 < PROOF_GOAL_MS)}, p99 "
        f"{met(at_goal and top.proof.p99 < PROOF_GOAL_MS)}** (p50 {top.proof.p50:.3f} ms, "
        f"p99 {top.proof.p99:.3f} ms at {top.size:,} leaves"
        + ("" if at_goal else "; 10^6 was not reached")
        + ")",
        f"\n## Auditor: {a.leaves:,} leaves verified against the signed checkpoint\n",
        md_table(
            ["work per leaf", "leaves/s", "µs per leaf"],
            [
                [name, f"{a.rate(s):,.0f}", f"{1e6 * s / a.leaves:.2f}"]
                for name, s in (
                    ("check_record + leaf_hash + Frontier.append", a.verify_s),
                    ("baseline: plain SHA-256 of the leaf", a.sha_s),
                    ("(fetching the leaves from Redis, for scale)", a.fetch_s),
                )
            ],
        ),
        f"\n**Goal: auditor >= {VERIFY_GOAL:,} leaves/s: "
        + met(verify >= VERIFY_GOAL)
        + f"** ({verify:,.0f} leaves/s, {a.verify_s / a.sha_s:.1f}x the baseline's time)",
        "\nNote: the auditor's verification core, clients/audit_verify.py, was not yet "
        "committed when this benchmark was written (its API was still moving). This "
        "measures the per-leaf work any auditor must do (keys.leaf.check_record and the "
        "keys.merkle frontier); the real core also checks signatures of note and key "
        "records, so its rate will be lower.",
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------


def too_long(log: Log, size: int, left_s: float, budget_s: float) -> str:
    """Why growing to ``size`` would overrun the budget, at the rate so far ("" if not)."""
    if not log.size:
        return ""
    per_leaf = (log.write_s + log.drain_s + log.build_s) / log.size
    needed = per_leaf * (size - log.size)
    if needed <= left_s:
        return ""
    return (
        f"\n**Skipped {size:,} leaves and beyond**: at the {1 / per_leaf:,.0f} leaves/s "
        f"measured so far they would take ~{needed:,.0f} s, and {max(left_s, 0):,.0f} s of "
        f"the {budget_s:g} s budget are left (raise it with --budget)."
    )


async def run(limits: Limits) -> str:
    """Grow tier by tier within the budget, then audit; the report."""
    with tempfile.TemporaryDirectory(prefix="siko-bench-audit-") as tmp:
        async with embedded_redis(Path(tmp) / "redis") as redis_server:
            log = Log(redis_server.url)
            meter = CpuMeter({"bench": os.getpid(), "redis": redis_server.pid})
            meter.start()
            tiers: list[Tier] = []
            deadline = time.monotonic() + limits.budget_s
            for size in limits.sizes:
                skipped = too_long(log, size, deadline - time.monotonic(), limits.budget_s)
                if skipped:
                    progress(skipped.strip())
                    break
                progress(f"growing to {size:,} leaves ...")
                await log.grow(size)
                tiers.append(await log.tier(limits.proofs))
                rate, p99 = tiers[-1].append_rate, tiers[-1].proof.p99
                progress(f"  {rate:,.0f} leaves/s; proof p99 {p99:.3f} ms")
            cpu = meter.stop().describe()
            audited = max((t for t in tiers if t.size <= limits.audit_leaves), key=lambda t: t.size)
            progress(f"auditing {audited.size:,} leaves ...")
            auditor = await audit(log, audited)
            await log.client.aclose()
    return report(limits, tiers, skipped, auditor, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; the report on stdout."""
    machine_lines()  # the machine as the run starts
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10^3 and 10^4 leaves (< 60 s)")
    parser.add_argument("--budget", type=float, help="seconds for growing the log (10-600)")
    args = parser.parse_args(argv)
    limits = QUICK if args.quick else FULL
    if args.budget is not None:
        if not 10 <= args.budget <= 600:
            parser.error("--budget must be 10-600 seconds")
        limits = Limits(limits.sizes, args.budget, limits.proofs, limits.audit_leaves)
    print(asyncio.run(run(limits)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
