"""The arithmetic behind bench/hub.py's verdicts on its goals (bench/_floor.py).

The verdicts decide what the benchmark report claims about the goals, so the budget and
the floor are checked here on figures worked out by hand, and the timed checks on real
keys and a real envelope.
"""

from __future__ import annotations

import time

import pytest

from bench._floor import (
    Budget,
    FanOut,
    Step,
    Transfer,
    per_call_us,
    required_checks,
    sign_post,
    transfer,
)
from keys import Identity, KeysError, Markings, Note, Suite, seal
from keys.logkey import LogKey
from keys.markings import Classification, HandlingCode


def budget(bare_us: float, *checks: float) -> Budget:
    # 2 cores at 60 % of 5,000 posts/s: 2e6 / 3,000 = 666.7 µs per post for everything
    return Budget(
        cores=2,
        goal=0.6,
        bare_rate=5000.0,
        bare_us=bare_us,
        loadgen_us=100.0,
        redis_us=200 / 3,
        checks=tuple(Step(f"check {i}", us) for i, us in enumerate(checks)),
        measured_us=900.0,
    )


def test_the_budget_is_the_machine_per_post_less_the_load_generator_and_redis() -> None:
    b = budget(150.0, 200.0)
    assert b.machine_us == pytest.approx(666.67, abs=0.01)
    assert b.hub_us == pytest.approx(500.0, abs=0.01)
    assert b.floor_us == pytest.approx(350.0)
    assert "the floor fits: the rest of the hub may cost up to 150 µs" in b.verdict()
    assert b.beyond_floor_us == pytest.approx(550.0)
    assert "this hub spends 550 µs per post beyond its floor" in b.verdict()


def test_a_floor_above_the_budget_says_no_hub_reaches_the_goal_here() -> None:
    b = budget(150.0, 200.0, 160.0)
    assert b.floor_us == pytest.approx(510.0)
    assert "the floor is 10 µs above the budget" in b.verdict()
    assert "no hub" in b.verdict()
    assert "(this hub spends 390 µs per post beyond its floor)" in b.verdict()


def fan_out(rate: int, post_us: float, *raw: float) -> FanOut:
    transfers = tuple(Transfer(1, rate, 1.0, cores / 2, cores / 2) for cores in raw)
    return FanOut(
        cores=2, rate=rate, subscribers=100, frame_us=25.0, post_us=post_us, transfers=transfers
    )


def test_fan_out_prices_the_frames_posting_and_the_cheapest_raw_transfer() -> None:
    load = fan_out(1000, 600.0, 1.3, 0.6)
    assert load.frames_per_s == 100_000
    assert load.bare_cores == pytest.approx(2.5)
    assert load.post_cores == pytest.approx(0.6)
    assert load.least_cores == pytest.approx(1.2)  # the cheaper transfer counts
    assert "need 1.20 of the machine's 2 cores, leaving 0.80" in load.verdict()


def test_a_load_beyond_the_machine_says_no_design_meets_the_goal() -> None:
    load = fan_out(1000, 900.0, 1.3, 1.1)
    assert load.least_cores == pytest.approx(2.0)
    assert "no design meets the goal here" in load.verdict()


async def test_transfer_moves_every_byte_and_measures_both_sides() -> None:
    moved = await transfer(sockets=3, rate=200, size=1000, seconds=0.2, per_write=4)
    assert moved.per_write == 4
    assert moved.sent == 40  # 200/s for 0.2 s, in whole writes of 4
    assert moved.sender_cores > 0 and moved.receiver_cores > 0
    assert moved.cores == moved.sender_cores + moved.receiver_cores


def test_per_call_us_is_the_best_loop_not_the_mean() -> None:
    slept: list[int] = []

    def call() -> None:
        # the first loop is slow (a disturbance); the best loop is the measure
        time.sleep(0.002 if len(slept) < 3 else 0.0)
        slept.append(1)

    assert per_call_us(call, 3) < 1000.0


URL = "https://hub.example/v1/channels/lage/notes"


def a_post() -> tuple[Identity, bytes, dict[str, str]]:
    """A sender, an envelope it sealed for itself and a reader, and the post's headers."""
    sender = Identity.generate("polizei-essen", suite=Suite.MLKEM768_X25519)
    reader = Identity.generate("sta-essen", suite=Suite.MLKEM768_X25519)
    envelope = seal(
        Note("Lagebild", subject="Bench", case_ref="AZ 1/26"),
        sender=sender,
        channel="lage",
        recipients=[sender.card, reader.card],
        markings=Markings(Classification.VS_NFD, HandlingCode.H1),
    )
    return sender, envelope, sign_post(sender, URL, envelope)


def test_required_checks_time_the_real_work_on_a_real_post() -> None:
    sender, envelope, headers = a_post()
    seen: list[tuple[object, bytes]] = []
    steps = required_checks(
        body=envelope,
        headers=headers,
        url=URL,
        card=sender.card,
        log_key=LogKey.generate("test"),
        also=[("audit record", lambda env, digest: seen.append((env.header.sender, digest)))],
        count=3,
    )
    assert len(steps) == 5 and steps[-1].name == "audit record"
    assert all(step.us > 0 for step in steps)
    # the extra work gets the verified envelope and its digest, as the hub has them
    assert {(str(sender_), len(digest)) for sender_, digest in seen} == {("polizei-essen", 32)}


def test_required_checks_refuse_a_post_that_would_not_verify() -> None:
    """A forged body must fail here, not be timed: the floor is of work that succeeds."""
    sender, envelope, headers = a_post()
    tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])
    with pytest.raises(KeysError):
        required_checks(
            body=tampered,
            headers=headers,
            url=URL,
            card=sender.card,
            log_key=LogKey.generate("test"),
            count=1,
        )
