"""Seal and open throughput of siko-hub envelopes, next to a same-run primitive baseline.

Run from the repository root (docs/BENCHMARKS.md records a full run)::

    .venv/bin/python bench/seal.py              # full run, about a minute
    .venv/bin/python bench/seal.py --quick      # a few iterations per case (smoke test)
    .venv/bin/python bench/seal.py --profile    # also cProfile the target seal

For each suite (ML-KEM-768+X25519 and X25519), note size (1 KB, 64 KB) and number of
recipients (1, 5, 10, 30) it times, per call:

* ``seal``: :func:`keys.seal` from a :class:`keys.Note` to envelope bytes;
* ``open``: :func:`keys.open_envelope` of those bytes by one recipient (parse, verify
  the signature, unwrap the content key, decrypt, decode the note);

and, alternating call by call with them in the same loop so that both see the same
machine, a baseline made of the bare primitives of the libraries ``keys`` uses
(``cryptography`` for HPKE and AES-GCM, PyNaCl for Ed25519) on the same plaintext bytes:

* seal baseline: AES-256-GCM encryption of the body plus one HPKE wrap (same suite) of
  the 32-byte content key per recipient; no signature, no encoding, no hashing;
* open baseline: one Ed25519 verification of a header-sized message, one HPKE unwrap
  and one AES-256-GCM decryption.

``ratio`` is the median of ``keys`` divided by the median of the baseline: what the
protocol (signature, digests, canonical encoding, checks) costs on top of the bare
cryptography. Each measurement runs ``warmup`` untimed rounds, then at least
``min_iters`` timed rounds and further rounds until ``budget_s`` has passed, never more
than ``max_iters``. The garbage collector stays on, as in the hub.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import math
import os
import platform
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final, TypeAlias

# Run as a script (``python bench/seal.py``), this file's directory heads sys.path, not
# the repository root; make ``keys`` importable even without the editable install.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cryptography
import nacl
import nacl.signing
from cryptography.hazmat.backends.openssl import backend as openssl_backend
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import keys
from keys import (
    Classification,
    Envelope,
    HandlingCode,
    Identity,
    Markings,
    Note,
    Suite,
    open_envelope,
    seal,
)

BasePrivate: TypeAlias = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey
BasePublic: TypeAlias = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
Op: TypeAlias = Callable[[], object]

SUITES: Final = (Suite.MLKEM768_X25519, Suite.X25519)
NOTE_SIZES: Final = (1024, 64 * 1024)
RECIPIENT_COUNTS: Final = (1, 5, 10, 30)
CHANNEL: Final = "bench-lagebild"
MARKINGS: Final = Markings(Classification.VS_NFD, HandlingCode.H1)

# The targets of the issue: a 1 KB note for 10 recipients, hybrid suite.
TARGET_SUITE: Final = Suite.MLKEM768_X25519
TARGET_SIZE: Final = 1024
TARGET_RECIPIENTS: Final = 10
SEAL_TARGET_US: Final = 1000.0
OPEN_TARGET_US: Final = 200.0

# The HPKE suites keys._suites fixes, rebuilt here so the baseline does not reach into keys.
HPKE_KEM: Final = {
    Suite.MLKEM768_X25519: hpke.KEM.MLKEM768_X25519,
    Suite.X25519: hpke.KEM.X25519,
}
# Associated data and HPKE info of the lengths keys uses (about 60 and 90 bytes).
BASE_AAD: Final = b"siko-bench body aad\x00" + bytes(40)


@dataclass(frozen=True)
class Limits:
    """How long one measurement runs."""

    warmup: int
    min_iters: int
    max_iters: int
    budget_s: float


FULL: Final = Limits(warmup=20, min_iters=50, max_iters=20_000, budget_s=1.5)
QUICK: Final = Limits(warmup=1, min_iters=3, max_iters=3, budget_s=0.0)


@dataclass(frozen=True)
class Stats:
    """Summary of per-call timings, in microseconds."""

    n: int
    mean_us: float
    median_us: float
    p90_us: float
    min_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int]) -> Stats:
        """Summarise raw ``perf_counter_ns`` differences."""
        us = sorted(sample / 1000 for sample in samples_ns)
        p90 = statistics.quantiles(us, n=10, method="inclusive")[-1] if len(us) > 1 else us[0]
        return cls(len(us), statistics.fmean(us), statistics.median(us), p90, us[0])

    @property
    def ops_per_s(self) -> float:
        """Throughput of one core: calls per second at the mean time per call."""
        return 1e6 / self.mean_us


def measure(ops: Sequence[Op], limits: Limits) -> list[Stats]:
    """Time every call of each of ``ops``, round-robin, rotating which goes first."""
    for _ in range(limits.warmup):
        for op in ops:
            op()
    samples: list[list[int]] = [[] for _ in ops]
    clock = time.perf_counter_ns
    gc.collect()
    deadline = clock() + int(limits.budget_s * 1e9)
    rounds = 0
    while rounds < limits.max_iters and (rounds < limits.min_iters or clock() < deadline):
        for k in range(len(ops)):
            j = (rounds + k) % len(ops)
            op = ops[j]
            start = clock()
            op()
            samples[j].append(clock() - start)
        rounds += 1
    return [Stats.of(s) for s in samples]


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used by the whole machine and by this process, at one instant."""

    wall_s: float
    busy_s: float
    steal_s: float
    own_s: float

    @classmethod
    def now(cls) -> CpuSnapshot:
        """Read /proc/stat (all zero where it does not exist) and this process's times."""
        try:
            first = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0]
            user, nice, system, _, _, irq, softirq, steal = map(int, first.split()[1:9])
        except (OSError, IndexError, ValueError):
            user = nice = system = irq = softirq = steal = 0
        tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        own = os.times()
        return cls(
            wall_s=time.monotonic(),
            busy_s=(user + nice + system + irq + softirq) / tick,
            steal_s=steal / tick,
            own_s=own.user + own.system,
        )

    def other_cores(self, earlier: CpuSnapshot) -> float:
        """Cores other processes kept busy, on average, since ``earlier``."""
        others = (self.busy_s - earlier.busy_s) - (self.own_s - earlier.own_s)
        return max(others, 0.0) / max(self.wall_s - earlier.wall_s, 1e-9)

    def others_since(self, earlier: CpuSnapshot) -> str:
        """How busy other processes and the hypervisor kept the machine since ``earlier``."""
        steal = (self.steal_s - earlier.steal_s) / max(self.wall_s - earlier.wall_s, 1e-9)
        return (
            f"other processes kept {self.other_cores(earlier):.2f} of {os.cpu_count()} cores "
            f"busy on average, hypervisor steal {steal:.2f} cores"
        )


# -- fixtures -------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    """Keys of one suite: a sender, 30 readers (in seal order) and raw baseline keys."""

    suite: Suite
    hpke_suite: hpke.Suite
    sender: Identity
    readers: list[Identity]
    base_keys: list[tuple[BasePrivate, BasePublic]]
    base_signer: nacl.signing.SigningKey


def raw_keypair(suite: Suite) -> tuple[BasePrivate, BasePublic]:
    """A fresh HPKE key pair of ``suite``, straight from cryptography."""
    if suite is Suite.X25519:
        dh = x25519.X25519PrivateKey.generate()
        return dh, dh.public_key()
    hybrid = hpke.MLKEM768X25519PrivateKey(
        mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    )
    return hybrid, hybrid.public_key()


def make_fixture(suite: Suite) -> Fixture:
    """Generate every key one suite's cases need."""
    count = max(RECIPIENT_COUNTS)
    readers = [Identity.generate(f"bench-reader-{i:02d}", suite=suite) for i in range(count)]
    return Fixture(
        suite=suite,
        hpke_suite=hpke.Suite(HPKE_KEM[suite], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM),
        sender=Identity.generate("bench-sender", suite=suite),
        readers=sorted(readers, key=lambda reader: reader.agency),
        base_keys=[raw_keypair(suite) for _ in range(count)],
        base_signer=nacl.signing.SigningKey.generate(),
    )


def make_note(size: int) -> Note:
    """A note whose text is ``size`` bytes of ASCII prose."""
    words = "Lagebild Ruhr: Fahrzeug gesichtet, Halterabfrage veranlasst, Rueckmeldung folgt. "
    return Note((words * (size // len(words) + 1))[:size], subject="Bench", case_ref="AZ 1/26")


def hpke_info(index: int) -> bytes:
    """An HPKE info string per recipient, as long as the one keys builds."""
    return b"siko-bench content key\x00" + index.to_bytes(2, "big") + bytes(64)


def size_label(size: int) -> str:
    """``1 KB``, ``64 KB``."""
    return f"{size // 1024} KB"


# -- one case ----------------------------------------------------------------------


@dataclass(frozen=True)
class CaseResult:
    """Figures of one (suite, note size, recipient count)."""

    suite: Suite
    size: int
    recipients: int
    plaintext_bytes: int
    envelope_bytes: int
    header_bytes: int
    seal: Stats
    seal_base: Stats
    opened: Stats
    open_base: Stats
    other_cores: float  # cores other processes kept busy meanwhile (0 = undisturbed)


def baseline_ops(fx: Fixture, plaintext: bytes, n: int, header_bytes: int) -> tuple[Op, Op]:
    """The bare-primitive seal and open for ``n`` recipients of ``plaintext``."""
    suite = fx.hpke_suite
    publics = [public for _, public in fx.base_keys[:n]]
    infos = [hpke_info(i) for i in range(n)]

    def seal_raw() -> None:
        key = os.urandom(32)
        nonce = os.urandom(12)
        AESGCM(key).encrypt(nonce, plaintext, BASE_AAD)
        for public, info in zip(publics, infos, strict=True):
            suite.encrypt(key, public, info=info)

    key = os.urandom(32)
    nonce = os.urandom(12)
    private, public = fx.base_keys[n - 1]
    wrapped = suite.encrypt(key, public, info=infos[-1])
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, BASE_AAD)
    header = os.urandom(header_bytes)
    signature = fx.base_signer.sign(header).signature
    verify_key = fx.base_signer.verify_key

    def open_raw() -> None:
        verify_key.verify(header, signature)
        content_key = suite.decrypt(wrapped, private, info=infos[-1])
        AESGCM(content_key).decrypt(nonce, ciphertext, BASE_AAD)

    return seal_raw, open_raw


def seal_op(fx: Fixture, note: Note, n: int) -> Callable[[], bytes]:
    """``keys.seal`` of ``note`` for the first ``n`` readers."""
    cards = [reader.card for reader in fx.readers[:n]]

    def seal_once() -> bytes:
        return seal(note, sender=fx.sender, channel=CHANNEL, recipients=cards, markings=MARKINGS)

    return seal_once


def run_case(fx: Fixture, size: int, n: int, limits: Limits) -> CaseResult:
    """Measure seal and open of one case, each next to its baseline."""
    before = CpuSnapshot.now()
    note = make_note(size)
    seal_once = seal_op(fx, note, n)
    data = seal_once()
    reader = fx.readers[n - 1]  # the last wrapped key: the longest search in the header
    if open_envelope(data, reader, fx.sender.card).note != note:
        raise RuntimeError(f"{fx.suite.value}: the opened note differs from the sealed one")
    header_bytes = len(Envelope.parse(data).header_bytes)
    plaintext = note.serialize()
    seal_raw, open_raw = baseline_ops(fx, plaintext, n, header_bytes)
    seal_stats, seal_base = measure([seal_once, seal_raw], limits)
    sender_card = fx.sender.card
    open_stats, open_base = measure(
        [lambda: open_envelope(data, reader, sender_card), open_raw], limits
    )
    return CaseResult(
        suite=fx.suite,
        size=size,
        recipients=n,
        plaintext_bytes=len(plaintext),
        envelope_bytes=len(data),
        header_bytes=header_bytes,
        seal=seal_stats,
        seal_base=seal_base,
        opened=open_stats,
        open_base=open_base,
        other_cores=CpuSnapshot.now().other_cores(before),
    )


# -- primitives -----------------------------------------------------------------------


SEAL_LABEL: Final = "keys.seal, target case"
OPEN_LABEL: Final = "keys.open_envelope, target case"
SIGN_LABEL: Final = "Ed25519 sign, target-case header"
VERIFY_LABEL: Final = "Ed25519 verify, target-case header"
AEAD_LABEL: Final = "AES-256-GCM encrypt 1 KB"
KEM_PARTS: Final = ("X25519 key generation", "X25519 key agreement", "ML-KEM-768 encapsulation")


def wrap_label(suite: Suite) -> str:
    """Name of the primitive row of one HPKE wrap."""
    return f"HPKE wrap (encrypt 32 B), {suite.value}"


def unwrap_label(suite: Suite) -> str:
    """Name of the primitive row of one HPKE unwrap."""
    return f"HPKE unwrap, {suite.value}"


def target_ops(fx: Fixture) -> tuple[Op, Op, int]:
    """Seal and open of the target case, and the length of its header."""
    seal_once = seal_op(fx, make_note(TARGET_SIZE), TARGET_RECIPIENTS)
    data = seal_once()
    reader, sender_card = fx.readers[TARGET_RECIPIENTS - 1], fx.sender.card
    header_bytes = len(Envelope.parse(data).header_bytes)
    return seal_once, partial(open_envelope, data, reader, sender_card), header_bytes


def primitive_ops(fixtures: Sequence[Fixture], target: Fixture) -> list[tuple[str, Op]]:
    """The target seal and open and the primitive calls that make them up."""
    seal_target, open_target, header_bytes = target_ops(target)
    key = os.urandom(32)
    ops: list[tuple[str, Op]] = [(SEAL_LABEL, seal_target), (OPEN_LABEL, open_target)]
    for fx in fixtures:
        private, public = fx.base_keys[0]
        wrapped = fx.hpke_suite.encrypt(key, public, info=hpke_info(0))
        ops.append(
            (wrap_label(fx.suite), partial(fx.hpke_suite.encrypt, key, public, info=hpke_info(0)))
        )
        ops.append(
            (
                unwrap_label(fx.suite),
                partial(fx.hpke_suite.decrypt, wrapped, private, info=hpke_info(0)),
            )
        )
    dh = x25519.X25519PrivateKey.generate()
    peer = x25519.X25519PrivateKey.generate().public_key()
    kem = mlkem.MLKEM768PrivateKey.generate()
    _, encapsulated = kem.public_key().encapsulate()
    signer = nacl.signing.SigningKey.generate()
    header = os.urandom(header_bytes)
    signature = signer.sign(header).signature
    body_1k, body_64k = os.urandom(1024), os.urandom(64 * 1024)
    aead, nonce = AESGCM(key), os.urandom(12)
    ops += [
        ("X25519 key generation", x25519.X25519PrivateKey.generate),
        ("X25519 key agreement", partial(dh.exchange, peer)),
        ("ML-KEM-768 encapsulation", kem.public_key().encapsulate),
        ("ML-KEM-768 decapsulation", partial(kem.decapsulate, encapsulated)),
        (SIGN_LABEL, partial(signer.sign, header)),
        (VERIFY_LABEL, partial(signer.verify_key.verify, header, signature)),
        (AEAD_LABEL, partial(aead.encrypt, nonce, body_1k, BASE_AAD)),
        ("AES-256-GCM encrypt 64 KB", partial(aead.encrypt, nonce, body_64k, BASE_AAD)),
        ("SHA-256 of 64 KB", partial(hashlib.sha256, body_64k)),
    ]
    return ops


def measure_primitives(
    fixtures: Sequence[Fixture], target: Fixture, limits: Limits
) -> dict[str, Stats]:
    """Cost of the target seal, open and each primitive, measured round-robin in one loop."""
    ops = primitive_ops(fixtures, target)
    wide = Limits(limits.warmup, limits.min_iters, limits.max_iters, 3 * limits.budget_s)
    stats = measure([op for _, op in ops], wide)
    return {label: stat for (label, _), stat in zip(ops, stats, strict=True)}


def thread_rates(fx: Fixture, calls: int, repeats: int = 3) -> tuple[float, float]:
    """HPKE wraps per second with one thread, and with two threads sharing ``calls`` wraps.

    Tells whether a seal could spread its wraps over several cores within one process:
    only if ``cryptography`` releases the GIL while it encapsulates. Best of ``repeats``
    alternating tries of each, so that a burst of load elsewhere does not decide.
    """
    key, info = os.urandom(32), hpke_info(0)
    _, public = fx.base_keys[0]
    calls -= calls % 2

    def work(count: int) -> None:
        for _ in range(count):
            fx.hpke_suite.encrypt(key, public, info=info)

    def timed(thread_count: int) -> float:
        threads = [
            threading.Thread(target=work, args=(calls // thread_count,))
            for _ in range(thread_count)
        ]
        start = time.perf_counter_ns()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return calls * 1e9 / (time.perf_counter_ns() - start)

    work(max(calls // 10, 1))
    single = dual = 0.0
    for _ in range(repeats):
        single, dual = max(single, timed(1)), max(dual, timed(2))
    return single, dual


def print_thread_rates(fx: Fixture, calls: int) -> None:
    """One line on whether threads speed up HPKE wraps."""
    single, dual = thread_rates(fx, calls)
    speedup = dual / single
    print(
        f"\n## Threads: {fx.suite.value} HPKE wraps per second, 1 thread {single:,.0f}, "
        f"2 threads {dual:,.0f} (speedup {speedup:.2f}x)\n"
    )
    if speedup < 1.3:
        print(
            "  No gain: cryptography holds the GIL while it wraps, so one process cannot "
            "spread a seal's wraps over several cores."
        )
    else:
        print("  Threads help: a seal could spread its wraps over several cores.")


# -- reporting ------------------------------------------------------------------------


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown pipe table, aligned for the terminal; first column left, others right."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i == 0 else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def us(value: float) -> str:
    """Microseconds with one decimal."""
    return f"{value:,.1f}"


def case_cells(result: CaseResult) -> list[str]:
    """The columns naming a case."""
    return [result.suite.value, size_label(result.size), str(result.recipients)]


def seal_table(results: Sequence[CaseResult]) -> str:
    """Seal figures next to the baseline."""
    headers = ["suite", "note", "rcpts", "envelope B", "seal ops/s", "mean µs", "median µs"]
    headers += ["p90 µs", "base mean µs", "base median µs", "base p90 µs", "ratio", "n", "others"]
    rows = [
        [
            *case_cells(r),
            f"{r.envelope_bytes:,}",
            f"{r.seal.ops_per_s:,.0f}",
            us(r.seal.mean_us),
            us(r.seal.median_us),
            us(r.seal.p90_us),
            us(r.seal_base.mean_us),
            us(r.seal_base.median_us),
            us(r.seal_base.p90_us),
            f"{r.seal.median_us / r.seal_base.median_us:.2f}x",
            str(r.seal.n),
            f"{r.other_cores:.2f}",
        ]
        for r in results
    ]
    return md_table(headers, rows)


def open_table(results: Sequence[CaseResult]) -> str:
    """Open figures next to the baseline."""
    headers = ["suite", "note", "rcpts", "open ops/s", "mean µs", "median µs", "p90 µs"]
    headers += ["base mean µs", "base median µs", "base p90 µs", "ratio", "n"]
    rows = [
        [
            *case_cells(r),
            f"{r.opened.ops_per_s:,.0f}",
            us(r.opened.mean_us),
            us(r.opened.median_us),
            us(r.opened.p90_us),
            us(r.open_base.mean_us),
            us(r.open_base.median_us),
            us(r.open_base.p90_us),
            f"{r.opened.median_us / r.open_base.median_us:.2f}x",
            str(r.opened.n),
        ]
        for r in results
    ]
    return md_table(headers, rows)


def primitive_table(prims: dict[str, Stats]) -> str:
    """Cost of single primitive calls."""
    rows = [
        [label, us(s.median_us), us(s.p90_us), us(s.mean_us), us(s.min_us), str(s.n)]
        for label, s in prims.items()
    ]
    return md_table(["primitive", "median µs", "p90 µs", "mean µs", "min µs", "n"], rows)


def find(results: Sequence[CaseResult], suite: Suite, size: int, n: int) -> CaseResult:
    """The result of one case."""
    return next(r for r in results if (r.suite, r.size, r.recipients) == (suite, size, n))


def per_recipient_table(results: Sequence[CaseResult], prims: dict[str, Stats]) -> str:
    """Marginal seal cost of one more recipient, between the 1- and 30-recipient cases.

    From medians, and from minimums (the least disturbed calls: the best this machine
    does); ``fixed`` and ``rcpts in 1 ms`` extrapolate the minimums linearly.
    """
    few, many = min(RECIPIENT_COUNTS), max(RECIPIENT_COUNTS)
    rows = []
    for suite in SUITES:
        for size in NOTE_SIZES:
            low, high = find(results, suite, size, few), find(results, suite, size, many)
            slope = (high.seal.median_us - low.seal.median_us) / (many - few)
            best = (high.seal.min_us - low.seal.min_us) / (many - few)
            base = (high.seal_base.median_us - low.seal_base.median_us) / (many - few)
            fixed = low.seal.min_us - few * best
            wrap = prims[wrap_label(suite)]
            fits = math.floor((SEAL_TARGET_US - fixed) / best) if best > 0 else 0
            figures = [slope, best, base, wrap.median_us, wrap.min_us, fixed]
            rows.append([suite.value, size_label(size), *map(us, figures), str(max(fits, 0))])
    headers = ["suite", "note", "seal µs/rcpt", "min µs/rcpt", "base µs/rcpt", "1 wrap µs"]
    headers += ["1 wrap min µs", "fixed min µs", f"rcpts in {SEAL_TARGET_US:,.0f} µs"]
    return md_table(headers, rows)


def verdict(what: str, stats: Stats, target_us: float) -> str:
    """One line: the target, the measured figures and whether it is met."""
    met = "MET" if stats.median_us < target_us else "NOT MET"
    return (
        f"  {what} < {target_us:,.0f} µs: median {us(stats.median_us)} µs, "
        f"p90 {us(stats.p90_us)} µs, min {us(stats.min_us)} µs -> {met} "
        f"(median = {stats.median_us / target_us:.2f}x the target)"
    )


def print_targets(target: CaseResult) -> None:
    """The issue's targets and whether this run meets them (judged on the median)."""
    print(
        f"\n## Targets (issue): {TARGET_SUITE.value}, {size_label(TARGET_SIZE)} note, "
        f"{TARGET_RECIPIENTS} recipients, one core\n"
    )
    print(verdict("seal", target.seal, SEAL_TARGET_US))
    print(verdict("open", target.opened, OPEN_TARGET_US))


Parts: TypeAlias = Sequence[tuple[str, Sequence[str]]]


def breakdown_column(
    whole: str, parts: Parts, prims: dict[str, Stats], pick: Callable[[Stats], float]
) -> list[tuple[str, str]]:
    """(µs, share) of each part of ``whole``, of the rest and of the whole.

    A part whose label starts with spaces details the part above it; it is not subtracted.
    """
    total = pick(prims[whole])
    column, known = [], 0.0
    for label, names in parts:
        value = sum(pick(prims[name]) for name in names)
        known += 0.0 if label.startswith(" ") else value
        column.append((us(value), share(value, total)))
    column.append((us(total - known), share(total - known, total)))
    column.append((us(total), "100%"))
    return column


def breakdown_rows(whole: str, parts: Parts, prims: dict[str, Stats]) -> list[list[str]]:
    """Rows splitting ``whole`` into ``parts``, by median and by minimum."""
    labels = [label for label, _ in parts] + ["rest: keys/ Python code, msgpack, SHA-256", whole]
    medians = breakdown_column(whole, parts, prims, lambda stats: stats.median_us)
    minimums = breakdown_column(whole, parts, prims, lambda stats: stats.min_us)
    return [
        [label, *median, *minimum]
        for label, median, minimum in zip(labels, medians, minimums, strict=True)
    ]


def print_breakdown(prims: dict[str, Stats]) -> None:
    """Split the target seal and open into the primitives they call."""
    n, suite = TARGET_RECIPIENTS, TARGET_SUITE
    seal_parts = [
        (f"{n} x HPKE wrap", [wrap_label(suite)] * n),
        (f"  of which {n} x (X25519 keygen + X25519 DH + ML-KEM encaps)", list(KEM_PARTS) * n),
        ("Ed25519 sign", [SIGN_LABEL]),
        ("AES-256-GCM, 1 KB", [AEAD_LABEL]),
    ]
    open_parts = [
        ("Ed25519 verify", [VERIFY_LABEL]),
        ("HPKE unwrap", [unwrap_label(suite)]),
        ("AES-256-GCM, 1 KB", [AEAD_LABEL]),
    ]
    headers = ["part", "median µs", "share", "min µs", "share (min)"]
    print(
        "\n## Where the target seal's time goes (seal and primitives measured round-robin "
        "in one loop)\n"
    )
    print(md_table(headers, breakdown_rows(SEAL_LABEL, seal_parts, prims)))
    print("\n## Where the target open's time goes\n")
    print(md_table(headers, breakdown_rows(OPEN_LABEL, open_parts, prims)))


def share(part: float, whole: float) -> str:
    """``part`` as a percentage of ``whole``."""
    return f"{100 * part / whole:.0f}%"


# -- profile --------------------------------------------------------------------------

KEYS_DIR: Final = str(Path(keys.__file__).resolve().parent)


def profile_group(name: str, file_name: str) -> str:
    """The part of sealing a profiled function belongs to."""
    groups = (
        ("hpke.Suite", "HPKE wrap (hpke.Suite.encrypt, in Rust/OpenSSL)"),
        ("crypto_sign", "Ed25519 sign"),
        ("AESGCM", "AES-256-GCM body encryption"),
        ("_hashlib", "SHA-256 (digests, key commitment)"),
        ("urandom", "os.urandom"),
    )
    for needle, group in groups:
        if needle in name:
            return group
    if "msgpack" in file_name:
        return "msgpack packb"
    if file_name.startswith(KEYS_DIR):
        return "keys/ Python code (codec, envelope, ids)"
    return "other Python (abc, dataclasses, builtins)"


def profile_target(fx: Fixture, rounds: int) -> None:
    """cProfile ``rounds`` target seals; print the time per group and the top functions."""
    seal_once = seal_op(fx, make_note(TARGET_SIZE), TARGET_RECIPIENTS)
    for _ in range(10):
        seal_once()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        seal_once()
    profiler.disable()
    groups: dict[str, float] = {}
    for entry in profiler.getstats():
        code = entry.code
        name, file_name = (code, "~") if isinstance(code, str) else (code.co_name, code.co_filename)
        group = profile_group(name, file_name)
        groups[group] = groups.get(group, 0.0) + entry.inlinetime
    total = sum(groups.values())
    rows = [
        [group, us(1e6 * seconds / rounds), share(seconds, total)]
        for group, seconds in sorted(groups.items(), key=lambda item: -item[1])
    ]
    rows.append(["total (under the profiler)", us(1e6 * total / rounds), "100%"])
    print(
        f"\n## cProfile of {rounds} seals: {TARGET_SUITE.value}, {size_label(TARGET_SIZE)}, "
        f"{TARGET_RECIPIENTS} recipients (own time per seal; the profiler inflates Python)\n"
    )
    print(md_table(["group", "µs per seal", "share"], rows))
    print("\nTop functions by own time:\n")
    buffer = io.StringIO()
    pstats.Stats(profiler, stream=buffer).sort_stats("tottime").print_stats(12)
    print(buffer.getvalue().strip())


# -- machine --------------------------------------------------------------------------


def cpuinfo(field: str) -> str:
    """The first value of ``field`` in /proc/cpuinfo, or empty."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == field:
            return value.strip()
    return ""


def machine_info() -> list[tuple[str, str]]:
    """What the figures depend on."""
    wanted = ("aes", "vaes", "pclmulqdq", "vpclmulqdq", "avx2", "avx512f", "sha_ni", "adx")
    flags = set(cpuinfo("flags").split())
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mhz = cpuinfo("cpu MHz")
    return [
        ("CPU", (cpuinfo("model name") or platform.processor() or "unknown") + f" @ {mhz} MHz"),
        ("CPU flags", " ".join(flag for flag in wanted if flag in flags) or "n/a"),
        ("cores", f"{os.cpu_count()} logical, {usable} usable; the benchmark uses one"),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("cryptography", f"{cryptography.__version__}, {openssl_backend.openssl_version_text()}"),
        ("PyNaCl (Ed25519)", f"{nacl.__version__}, libsodium"),
        ("load average", " ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


# -- main -----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile the 1 KB / 10-recipient hybrid seal"
    )
    return parser.parse_args(argv)


def run_cases(fixtures: Sequence[Fixture], limits: Limits) -> list[CaseResult]:
    """Every case, with progress on stderr."""
    cases = [(fx, size, n) for fx in fixtures for size in NOTE_SIZES for n in RECIPIENT_COUNTS]
    results = []
    for index, (fx, size, n) in enumerate(cases, 1):
        result = run_case(fx, size, n, limits)
        results.append(result)
        print(
            f"[{index}/{len(cases)}] {fx.suite.value} {size_label(size)} {n} rcpts: "
            f"seal {us(result.seal.median_us)} µs, open {us(result.opened.median_us)} µs, "
            f"other processes {result.other_cores:.2f} cores",
            file=sys.stderr,
        )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its report."""
    args = parse_args(argv)
    limits = QUICK if args.quick else FULL
    before = CpuSnapshot.now()
    print("# siko-hub seal/open benchmark (bench/seal.py" + (" --quick)" if args.quick else ")"))
    print()
    for name, value in machine_info():
        print(f"- {name}: {value}")
    print(
        f"- limits per measurement: {limits.warmup} warm-up rounds, {limits.min_iters} to "
        f"{limits.max_iters:,} timed rounds, time budget {limits.budget_s} s"
    )
    fixtures = [make_fixture(suite) for suite in SUITES]
    results = run_cases(fixtures, limits)
    target = find(results, TARGET_SUITE, TARGET_SIZE, TARGET_RECIPIENTS)
    target_fixture = fixtures[SUITES.index(TARGET_SUITE)]
    prims = measure_primitives(fixtures, target_fixture, limits)
    print("\n## Seal (keys.seal) vs baseline (AES-256-GCM + one HPKE wrap per recipient)\n")
    print(seal_table(results))
    print("\n## Open (keys.open_envelope) vs baseline (Ed25519 verify + HPKE unwrap + AES-GCM)\n")
    print(open_table(results))
    print("\n## Target seal and open and single primitive calls, round-robin in one loop\n")
    print(primitive_table(prims))
    print("\n## Cost of one more recipient (seal, between 1 and 30 recipients)\n")
    print(per_recipient_table(results, prims))
    print_targets(target)
    print_breakdown(prims)
    print_thread_rates(target_fixture, 40 if args.quick else 2000)
    if args.profile:
        profile_target(target_fixture, 20 if args.quick else 500)
    after = CpuSnapshot.now()
    print(f"\nRun conditions: {after.wall_s - before.wall_s:.0f} s; {after.others_since(before)}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
