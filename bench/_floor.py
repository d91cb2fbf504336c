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
process what the bare latency run measured per delivered frame.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from keys import AgencyCard, Envelope, httpsig, verify_envelope
from keys.logkey import LogKey
from keys.statements import Receipt

REPEATS = 5


@dataclass(frozen=True)
class Step:
    """One required check and its CPU µs per post, measured alone."""

    name: str
    us: float


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
    count: int = 200,
) -> list[Step]:
    """The per-post work the hub issue requires, each step timed alone on this machine.

    ``headers`` are a post's signature headers for ``body`` at ``url``, signed by the
    holder of ``card``. Each step is what any hub must do for every post: authenticate
    the request (RFC 9421 with an RFC 9530 Content-Digest), check the envelope's
    signature against the sender's card, and sign the receipt. Nothing of the hub's own
    design is in here: no Redis, no policy, no audit record.
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
    ]


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

    def verdict(self) -> str:
        """Whether a hub of this process model can reach the goal here."""
        gap = self.floor_us - self.hub_us
        if gap > 0:
            return (
                f"the floor is {gap:,.0f} µs above the budget: on this machine no hub that "
                "does the required checks in aiohttp reaches the goal, however the rest of "
                "it is written"
            )
        return f"the floor fits: the rest of the hub may cost up to {-gap:,.0f} µs per post"


@dataclass(frozen=True)
class FanOut:
    """The latency goal's delivery load, priced at the bare baseline's cost per frame."""

    cores: int
    rate: int
    subscribers: int
    frame_us: float  # bare server + subscriber process CPU per delivered frame

    @property
    def cores_needed(self) -> float:
        """Cores that ``rate * subscribers`` frames a second take at ``frame_us``."""
        return self.rate * self.subscribers * self.frame_us / 1e6

    def verdict(self) -> str:
        """Whether the delivery alone fits in the machine."""
        if self.cores_needed >= self.cores:
            return (
                f"delivery alone needs {self.cores_needed:.1f} of the machine's {self.cores} "
                "cores, before any post is verified or stored: queues grow without bound, "
                "whatever the p99 target"
            )
        return (
            f"delivery alone needs {self.cores_needed:.1f} of the machine's {self.cores} "
            "cores; the rest is left for posting"
        )
