"""/metrics, /healthz and /readyz: refusals counted by problem type, readiness follows Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.multiprocess import mark_process_dead
from prometheus_client.parser import text_string_to_metric_families

from clients import errors as sdk
from hub.metrics import Metrics
from keys import Note
from tests.hub.conftest import (
    CHANNEL,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
)
from tests.hub.test_problems import hub_without_redis
from tests.hub.test_refusals import http_session, send, signed

ROOT = Path(__file__).resolve().parents[2]

_http = pytest.fixture(http_session, name="http")
_down_hub = pytest.fixture(hub_without_redis, name="down_hub")


async def scrape(hub: RunningHub, http: aiohttp.ClientSession) -> str:
    answer = await send(http, hub.base_url + "/metrics", "GET", {}, b"")
    assert answer.status == 200
    assert answer.content_type == "text/plain"
    return answer.body.decode()


def samples(text: str, name: str) -> Counter[tuple[tuple[str, str], ...]]:
    """The values of the samples called ``name``, by their sorted labels."""
    found: Counter[tuple[tuple[str, str], ...]] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] += int(sample.value)
    return found


def refusals(text: str) -> Counter[str]:
    return Counter(
        {
            dict(labels)["problem"]: value
            for labels, value in samples(text, "siko_refusals_total").items()
        }
    )


async def test_refusals_are_counted_by_problem_type(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    before = refusals(await scrape(world, http))
    for _ in range(2):
        await send(http, world.base_url + "/v1/agencies", "GET", {}, b"")  # unsigned
    await signed(http, world, "GET", "/v1/nirgendwo")
    await signed(http, world, "GET", f"/v1/channels/{CHANNEL}/notes?limit=0")
    prosecutor = await world.client(PROSECUTOR)
    for _ in range(3):
        with pytest.raises(sdk.NotMember):
            await prosecutor.post_note(CHANNEL, Note("nur lesen"), MARKS)
    await (await world.client(POLICE)).page_notes(CHANNEL)  # accepted: no refusal
    after = refusals(await scrape(world, http))
    assert after - before == Counter(
        {"unauthenticated": 2, "not-found": 1, "bad-request": 1, "not-member": 3}
    )


async def test_requests_are_counted_by_route_template_and_status(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:

    await signed(http, world, "GET", "/v1/nirgendwo")
    prosecutor = await world.client(PROSECUTOR)
    with pytest.raises(sdk.NotMember):
        await prosecutor.post_note(CHANNEL, Note("nur lesen"), MARKS)
    text = await scrape(world, http)
    requests = samples(text, "siko_requests_total")
    assert requests[(("route", "/v1/channels/{channel}/notes"), ("status", "403"))] == 1
    assert requests[(("route", "/v1/channels/{channel}"), ("status", "200"))] >= 1
    assert requests[(("route", "unmatched"), ("status", "404"))] == 1
    assert (
        samples(text, "siko_request_seconds_count")[(("route", "/v1/channels/{channel}/notes"),)]
        == 1
    )


async def test_no_label_names_an_agency_a_channel_or_a_path_sent(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    await signed(http, world, "GET", "/v1/geheimer-pfad")
    await (await world.client(POLICE)).page_notes(CHANNEL)
    text = await scrape(world, http)
    for needle in (POLICE, PROSECUTOR, CHANNEL, "geheimer-pfad"):
        assert needle not in text


async def test_healthz_and_readyz_answer_without_a_signature(
    hub: RunningHub, http: aiohttp.ClientSession
) -> None:
    health = await send(http, hub.base_url + "/healthz", "GET", {}, b"")
    ready = await send(http, hub.base_url + "/readyz", "GET", {}, b"")
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})
    assert (ready.status, json.loads(ready.body)) == (200, {"status": "ready"})


async def test_readyz_is_503_while_redis_is_unreachable_and_healthz_stays_200(
    down_hub: RunningHub,
    http: aiohttp.ClientSession,
) -> None:
    health = await send(http, down_hub.base_url + "/healthz", "GET", {}, b"")
    ready = await send(http, down_hub.base_url + "/readyz", "GET", {}, b"")
    assert (health.status, json.loads(health.body)) == (200, {"status": "ok"})
    assert (ready.status, json.loads(ready.body)) == (503, {"status": "storage unreachable"})
    answer = await signed(http, down_hub, "GET", "/v1/agencies")
    assert answer.status == 503
    assert refusals(await scrape(down_hub, http))["unavailable"] == 1


# -- several workers: one hub's metrics, whichever worker is scraped --------------------

#: A worker's metrics: count requests and subscribers, then print its pid and a scrape.
_WORKER = """
import os, sys
from pathlib import Path

from prometheus_client import generate_latest

from hub.metrics import Metrics

metrics = Metrics(multiprocess_dir=Path(sys.argv[1]))
for _ in range(int(sys.argv[2])):
    metrics.answered("/v1/agencies", 200, 0.001)
metrics.refusals.labels("not-found").inc()
metrics.subscribers.inc(int(sys.argv[3]))
print(os.getpid())
print(generate_latest(metrics.registry).decode())
"""


def run_worker(folder: Path, requests: int, subscribers: int) -> tuple[int, str]:
    """A process in multiprocess mode, as hub.workers starts them: its pid and scrape."""
    env = dict(os.environ) | {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(folder), str(requests), str(subscribers)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    pid, _, text = done.stdout.partition("\n")
    return int(pid), text


def test_workers_metrics_add_up_and_an_exited_workers_gauge_leaves(tmp_path: Path) -> None:
    first, _ = run_worker(tmp_path, requests=3, subscribers=2)
    _, text = run_worker(tmp_path, requests=4, subscribers=1)
    route = (("route", "/v1/agencies"), ("status", "200"))
    assert samples(text, "siko_requests_total")[route] == 7
    assert samples(text, "siko_request_seconds_count")[(("route", "/v1/agencies"),)] == 7
    assert refusals(text) == Counter({"not-found": 2})
    assert samples(text, "siko_subscribers")[()] == 3

    mark_process_dead(first, str(tmp_path))  # type: ignore[no-untyped-call]  # as the supervisor does
    _, text = run_worker(tmp_path, requests=0, subscribers=0)
    assert samples(text, "siko_requests_total")[route] == 7, "counters never go back"
    assert samples(text, "siko_subscribers")[()] == 1, "only live workers' subscribers"


def test_a_metrics_folder_without_multiprocess_mode_is_a_programming_error(
    tmp_path: Path,
) -> None:
    """Without PROMETHEUS_MULTIPROC_DIR at import, values stay in memory: scrapes of the
    folder would silently miss this process, so the hub refuses to start that way."""
    with pytest.raises(RuntimeError, match="PROMETHEUS_MULTIPROC_DIR"):
        Metrics(multiprocess_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
