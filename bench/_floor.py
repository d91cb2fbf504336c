"""What the hub benchmark's goals leave the hub on this machine, measured in the same run.

The throughput goal is relative: the hub must answer at least 60 % of the posts per
second of a bare aiohttp endpoint that XADDs the same bytes. On a machine whose cores
the servers share with the load generator and Redis, that fixes a CPU budget per post:

    budget = cores / (goal * bare rate)  -  load generator per post  -  Redis per post

A hub can only fit it if its own floor does: what the bare endpoint itself spends per
post (aiohttp and the XADD) plus the checks the issue requires of every post, each
measured alone here (:func:`required_checks`). When the floor is above the budget, no
hub of this process model reaches the goal on this machine, however the rest of it is
written; when it is below, the difference is what the rest of the hub may cost.

The latency goal is absolute. Its floor is the fan-out itself: ``rate * subscribers``
WebSocket frames a second, each costing the bare baseline's sender and the subscriber
process what the bare latency run measured per delivered frame; and below any design,
moving the same bytes over loopback sockets with no WebSocket and no per-note work
(:func:`transfer`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from keys import AgencyCard, Envelope, Identity, httpsig, verify_envelope
from keys.logkey import LogKey
from keys.statements import Receipt

REPEATS = 5


@dataclass(frozen=True)
class Step:
    """One required check and its CPU µs per post, measured alone."""

    name: str
    us: float


def sign_post(sender: Identity, url: str, body: bytes) -> dict[str, str]:
    """The signature headers of a post of ``body`` to ``url`` by ``sender``, made now.

    As the SDK signs a request (RFC 9421 with a fresh nonce); the benchmark signs ahead
    of time so that signing is not counted against the hub it measures.
    """
    return httpsig.sign_request(
        method="POST",
        target_uri=url,
        headers={},
        body=body,
        key=sender.signing,
        keyid=str(sender.key_id),
        created=int(time.time()),
        nonce=httpsig.new_nonce(),
    )


def per_call_us(call: Callable[[], object], count: int) -> float:
    """µs per call: the best of :data:`REPEATS` timed loops of ``count`` calls.

    The best, not the mean: on a shared machine every disturbance makes a loop slower,
    never faster, so the minimum is the closest to the work's own cost.
    """
    best = float("inf")
    for _ in range(REPEATS):
        began = time.perf_counter()
        for _ in range(count):
            call()
        best = min(best, time.perf_counter() - began)
    return 1e6 * best / count


def required_checks(
    *,
    body: bytes,
    headers: Mapping[str, str],
    url: str,
    card: AgencyCard,
    log_key: LogKey,
    also: Sequence[tuple[str, Callable[[Envelope, bytes], object]]] = (),
    count: int = 200,
) -> list[Step]:
    """The per-post work the hub issue requires, each step timed alone on this machine.

    ``headers`` are a post's signature headers for ``body`` at ``url``, signed by the
    holder of ``card``. Each step is what any hub must do for every post: authenticate
    the request (RFC 9421 with an RFC 9530 Content-Digest), check the envelope's
    signature against the sender's card, and sign the receipt; and each of ``also``,
    named work on the parsed envelope and its digest that the caller counts as required (the
    benchmark adds the audit record every accepted note becomes). Nothing else of the
    hub's own design is in here: no Redis, no policy, no idempotency, no sequencing.
    """
    parsed = httpsig.parse_signature(headers)
    verify_key = card.sign_key

    def verify_request() -> object:
        return httpsig.verify_parsed(
            parsed,
            method="POST",
            target_uri=url,
            body=body,
            lookup_key=lambda _: verify_key,
            now=parsed.created,
            max_skew=60,
        )

    envelope = verify_envelope(body, card)
    header, digest = envelope.header, envelope.digest()

    def sign_receipt() -> object:
        receipt = Receipt(header.channel, header.message_id, digest, 1, digest, 0)
        return log_key.sign_receipt(receipt)

    return [
        Step(
            "request: parse the signature headers (RFC 9421 structured fields)",
            per_call_us(lambda: httpsig.parse_signature(headers), count),
        ),
        Step(
            "request: verify (SHA-256 Content-Digest of the body, Ed25519)",
            per_call_us(verify_request, count),
        ),
        Step(
            "envelope: parse, verify the sender's Ed25519 signature, digest it",
            per_call_us(lambda: verify_envelope(Envelope.parse(body), card).digest(), count),
        ),
        Step("receipt: sign it with the log key (Ed25519)", per_call_us(sign_receipt, count)),
        *(_timed(name, work, envelope, digest, count) for name, work in also),
    ]


def _timed(
    name: str,
    work: Callable[[Envelope, bytes], object],
    envelope: Envelope,
    digest: bytes,
    count: int,
) -> Step:
    """``work`` on a parsed, verified envelope and its digest, timed as a step."""
    return Step(name, per_call_us(lambda: work(envelope, digest), count))


@dataclass(frozen=True)
class Budget:
    """The throughput goal's CPU budget per post for the hub, and the hub's floor."""

    cores: int
    goal: float
    bare_rate: float
    bare_us: float  # the bare server's own CPU per post
    loadgen_us: float  # the load generator's CPU per hub post
    redis_us: float  # Redis's CPU per hub post
    checks: tuple[Step, ...]
    measured_us: float  # what the hub's processes spent per post in the same runs

    @property
    def machine_us(self) -> float:
        """CPU µs the machine has per post at ``goal`` times the bare rate."""
        return self.cores * 1e6 / (self.goal * self.bare_rate)

    @property
    def hub_us(self) -> float:
        """What is left of it for the hub's processes."""
        return self.machine_us - self.loadgen_us - self.redis_us

    @property
    def floor_us(self) -> float:
        """The bare endpoint's own work plus the required checks."""
        return self.bare_us + sum(step.us for step in self.checks)

    @property
    def beyond_floor_us(self) -> float:
        """What the hub measured spends per post beyond its floor."""
        return self.measured_us - self.floor_us

    def verdict(self) -> str:
        """Whether a hub of this process model can reach the goal here, and this one."""
        gap = self.floor_us - self.hub_us
        spent = f"this hub spends {self.beyond_floor_us:,.0f} µs per post beyond its floor"
        if gap > 0:
            return (
                f"the floor is {gap:,.0f} µs above the budget: on this machine no hub that "
                "does the required checks in aiohttp reaches the goal, however the rest of "
                f"it is written ({spent})"
            )
        return f"the floor fits: the rest of the hub may cost up to {-gap:,.0f} µs; {spent}"


@dataclass(frozen=True)
class FanOut:
    """What the latency goal's load takes of the machine, at the least.

    ``post_us`` is the machine's CPU per post at the floor (:attr:`Budget.floor_us` plus
    the load generator's and Redis's share); ``transfers`` moved the goal's bytes raw.
    """

    cores: int
    rate: int
    subscribers: int
    frame_us: float  # bare server + subscriber process CPU per delivered frame
    post_us: float
    transfers: tuple[Transfer, ...]

    @property
    def frames_per_s(self) -> int:
        """WebSocket frames a second: one per note and subscriber."""
        return self.rate * self.subscribers

    @property
    def bare_cores(self) -> float:
        """Cores the frames take at the bare baseline's measured cost per frame."""
        return self.frames_per_s * self.frame_us / 1e6

    @property
    def post_cores(self) -> float:
        """Cores that posting ``rate`` notes a second takes at the floor."""
        return self.rate * self.post_us / 1e6

    @property
    def least_cores(self) -> float:
        """Posting at the floor plus the cheapest raw transfer: below any design."""
        return self.post_cores + min(t.cores for t in self.transfers)

    def verdict(self) -> str:
        """Whether the least the load needs leaves room on this machine, and how much."""
        if self.least_cores >= self.cores:
            return (
                f"posting at the floor and moving the bytes raw need {self.least_cores:.2f} "
                f"of the machine's {self.cores} cores: no design meets the goal here"
            )
        return (
            f"posting at the floor and moving the bytes raw need {self.least_cores:.2f} of "
            f"the machine's {self.cores} cores, leaving {self.cores - self.least_cores:.2f} "
            "for everything else: WebSocket framing, the hub's work per note and per "
            "socket, the subscribers' decoding, and the headroom a p99 needs"
        )


@dataclass(frozen=True)
class Transfer:
    """Raw loopback transfer of the goal's bytes: cores of the sender and of the receiver."""

    per_write: int  # notes per write to a socket
    sent: int  # notes sent to every socket
    seconds: float
    sender_cores: float
    receiver_cores: float

    @property
    def cores(self) -> float:
        """Both sides together."""
        return self.sender_cores + self.receiver_cores


class _Counter(asyncio.Protocol):
    """Counts the bytes a connection receives, and nothing else."""

    received = 0

    def data_received(self, data: bytes) -> None:
        _Counter.received += len(data)


def _receive(port: int, sockets: int, expected: int, limit_s: float, pipe: Connection) -> None:
    """Receiver process: connect ``sockets`` times, count bytes; report its CPU seconds."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(sockets):
            await loop.create_connection(_Counter, "127.0.0.1", port)
        pipe.send("ready")
        began, cpu = time.monotonic(), time.process_time()
        while _Counter.received < expected and time.monotonic() - began < limit_s:
            await asyncio.sleep(0.005)
        pipe.send((_Counter.received, time.process_time() - cpu))

    asyncio.run(main())


async def _send_at_rate(
    writers: list[asyncio.StreamWriter], chunk: bytes, writes: int, interval_s: float
) -> None:
    """Write ``chunk`` to every socket ``writes`` times, one round every ``interval_s``."""
    began = time.monotonic()
    for n in range(1, writes + 1):
        for writer in writers:
            writer.write(chunk)
        await asyncio.sleep(max(0.0, began + n * interval_s - time.monotonic()))
        for writer in writers:
            await writer.drain()


async def transfer(
    *, sockets: int, rate: int, size: int, seconds: float, per_write: int
) -> Transfer:
    """Send ``rate`` notes of ``size`` bytes a second to each of ``sockets`` sockets.

    The floor of any fan-out of these bytes on this machine: plain asyncio sockets on
    loopback, no WebSocket framing, no per-note work but one ``write`` of ``per_write``
    notes per socket, and a receiver that only counts bytes, in a process of its own as
    the benchmark's subscribers are. Bounded: ``seconds`` of sending, and the receiver
    waits at most four times that.
    """
    writers: list[asyncio.StreamWriter] = []

    async def accepted(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)

    server = await asyncio.start_server(accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    notes = max(1, int(rate * seconds) // per_write) * per_write
    parent, child = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=_receive, args=(port, sockets, notes * size * sockets, 4 * seconds, child)
    )
    proc.start()
    try:
        if not await asyncio.to_thread(parent.poll, 60.0) or parent.recv() != "ready":
            raise RuntimeError("the transfer receiver did not connect")
        async with asyncio.timeout(10.0):
            while len(writers) < sockets:
                await asyncio.sleep(0.005)
        began, cpu = time.monotonic(), time.process_time()
        chunk = os.urandom(size) * per_write
        await _send_at_rate(writers, chunk, notes // per_write, per_write / rate)
        sender_cpu, elapsed = time.process_time() - cpu, time.monotonic() - began
        if not await asyncio.to_thread(parent.poll, 4 * seconds + 10.0):
            raise RuntimeError("the transfer receiver did not report")
        received, receiver_cpu = parent.recv()
        if received < notes * size * sockets:
            raise RuntimeError(f"the transfer receiver got {received:,} bytes, too few")
    finally:
        for writer in writers:
            writer.close()
        server.close()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    return Transfer(per_write, notes, elapsed, sender_cpu / elapsed, receiver_cpu / elapsed)
