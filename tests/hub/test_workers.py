"""hub/workers.py: ``siko hub serve --workers N`` as real processes on a real redis-server.

Each test starts ``python -m hub --workers 2`` (the same command as ``siko hub serve``)
on a free loopback port and looks at it from outside: HTTP and WebSocket on the one port,
the process tree in ``/proc``, the log, and the workers' metric files in
``DATA_DIR/metrics`` (one per worker pid), which tell which worker answered what without
the hub ever telling a client its pids. Every wait is bounded by ``STEP_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, Popen

import aiohttp
import pytest
import redis
from prometheus_client.multiprocess import MultiProcessCollector

from hub.embedded import free_loopback_port
from keys import Note, save_card
from keys.logkey import LogKey
from tests.hub.conftest import ADMIN, CHANNEL, MARKS, POLICE, PROSECUTOR, identity
from tests.hub.test_shutdown import next_frame, world_at

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT sharing and /proc are Linux"
)

REPO = Path(__file__).resolve().parents[2]
STEP_S = 15.0
WORKERS = 2


# -- the process tree, from /proc -----------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """State and parent pid of ``pid``, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as ended)."""
    found = _stat(pid)
    return found is not None and found[0] != "Z"


def children(parent: int) -> list[int]:
    """The live child processes of ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            if stat[1] == parent and stat[0] != "Z":
                found.append(int(entry.name))
    return sorted(found)


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


async def until(condition: Callable[[], bool], what: str, log: Path | None = None) -> None:
    """Wait (bounded) for ``condition``; fail naming ``what``, with the hub's log."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_S
    while not condition():
        if loop.time() > deadline:
            shown = log.read_text(errors="replace") if log is not None else ""
            pytest.fail(f"not within {STEP_S:.0f} s: {what}\n{shown}")
        await asyncio.sleep(0.02)


# -- the hub under test ---------------------------------------------------------------------


@dataclass
class Supervisor:
    """``python -m hub --workers N`` running, and how to look at it."""

    process: Popen[bytes]
    base_url: str
    data_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def workers(self) -> list[int]:
        return [pid for pid in children(self.pid) if "hub.workers" in cmdline(pid)]

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def served(self) -> dict[int, float]:
        """Requests answered so far, by worker pid (its own metrics file)."""
        return self._per_worker("counter", "siko_requests_total")

    def subscribers(self) -> dict[int, float]:
        """Open subscriptions, by worker pid."""
        return self._per_worker("gauge_livesum", "siko_subscribers")

    def _per_worker(self, kind: str, name: str) -> dict[int, float]:
        found: dict[int, float] = {}
        for path in (self.data_dir / "metrics").glob(f"{kind}_*.db"):
            metrics = MultiProcessCollector.merge([str(path)])  # type: ignore[no-untyped-call]
            samples = [s for m in metrics for s in m.samples if s.name == name]
            found[int(path.stem.rpartition("_")[2])] = sum(s.value for s in samples)
        return found

    async def exit_status(self) -> int:
        await until(lambda: self.process.poll() is not None, "the supervisor exits", self.log)
        return self.process.returncode


def hub_env(tmp_path: Path, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The environment of a supervisor: SIKO_* settings only from here."""
    card = tmp_path / "admin.card"
    if not card.exists():
        save_card(card, identity(ADMIN).card)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIKO_")}
    env |= {
        "SIKO_HOST": "127.0.0.1",
        "SIKO_PORT": str(free_loopback_port()),
        "SIKO_DATA_DIR": str(tmp_path / "data"),
        "SIKO_ADMIN_CARDS": str(card),
        "SIKO_SHUTDOWN_GRACE_S": "1",
        "SIKO_LOG_LEVEL": "INFO",
    }
    if redis_url is not None:
        env["SIKO_REDIS_URL"] = redis_url
    return env | extra


def start(tmp_path: Path, env: dict[str, str], *args: str) -> Supervisor:
    log = tmp_path / "hub.log"
    with log.open("ab") as handle:
        process = Popen(
            [sys.executable, "-m", "hub", *args],
            cwd=REPO,
            env=env,
            stdin=DEVNULL,
            stdout=handle,
            stderr=handle,
        )
    base_url = f"http://127.0.0.1:{env['SIKO_PORT']}"
    return Supervisor(process, base_url, Path(env["SIKO_DATA_DIR"]), log)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, redis_url: str | None, **extra: str) -> AsyncIterator[Supervisor]:
    """A supervisor with ``WORKERS`` workers that answers; everything killed afterwards."""
    hub = start(tmp_path, hub_env(tmp_path, redis_url, **extra), "--workers", str(WORKERS))
    everything: set[int] = set()
    try:
        await until(lambda: len(hub.workers()) == WORKERS, "both workers run", hub.log)
        everything.update(children(hub.pid))
        while await status(hub.base_url, "/readyz") != 200:
            assert hub.process.poll() is None, hub.text()
            await asyncio.sleep(0.05)
        yield hub
    finally:
        everything.update(children(hub.pid))
        if hub.process.poll() is None:
            hub.process.kill()
        hub.process.wait(timeout=STEP_S)
        for pid in everything:  # a failed test must not leave workers or Redis behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def status(base_url: str, path: str) -> int | str:
    """The status of one GET on a new connection, or "refused"."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        try:
            async with session.get(base_url + path) as response:
                await response.read()
                return response.status
        except aiohttp.ClientConnectionError:
            return "refused"


async def answered_by_every_worker(hub: Supervisor) -> int:
    """GET /healthz on new connections until every worker answered one; how many.

    Bounded by time, not by count: a worker just (re)started may not listen yet, and
    until it does the kernel sends every connection to the others.
    """
    sent = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_S
    while not all(hub.served().get(pid, 0) > 0 for pid in hub.workers()):
        assert loop.time() < deadline, f"{sent} connections, one worker took all: {hub.served()}"
        assert await status(hub.base_url, "/healthz") == 200
        sent += 1
        await asyncio.sleep(0.01)
    return sent


# -- one port, every worker, one hub --------------------------------------------------------


async def test_embedded_two_workers_share_one_port_and_sigterm_leaves_nothing(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, None) as hub:
        processes = children(hub.pid)
        [redis_pid] = [pid for pid in processes if "redis-server" in cmdline(pid)]
        assert sorted(hub.workers()) == sorted(set(processes) - {redis_pid})
        password = _embedded_password(hub.data_dir)
        for pid in processes:
            assert password not in cmdline(pid), "the Redis URL is never on a command line"

        sent = await answered_by_every_worker(hub)
        scrape = await _get_text(hub.base_url + "/metrics")
        line = 'siko_requests_total{route="/healthz",status="200"}'
        assert f"{line} {float(sent)}" in scrape, "any worker's /metrics counts them all"

        hub.process.send_signal(signal.SIGTERM)
        assert await hub.exit_status() == 0
        await until(lambda: not any(alive(pid) for pid in processes), "no process is left")
    text = hub.text()
    started = started_pids(text)
    assert len(started) == WORKERS
    for worker in started:
        assert f"(pid {worker}) exited with status 0" in text
    assert password not in text, "the embedded Redis password is never logged"
    assert "Traceback" not in text
    assert (hub.data_dir / "metrics").stat().st_mode & 0o777 == 0o700


def started_pids(text: str) -> list[str]:
    """The pids of the 'worker N started (pid P)' lines."""
    return [
        line.rpartition("(pid ")[2].rstrip(")")
        for line in text.splitlines()
        if " started (pid " in line
    ]


def _embedded_password(data_dir: Path) -> str:
    config = (data_dir / "redis" / "redis.conf").read_text()
    return next(line.split()[1] for line in config.splitlines() if line.startswith("requirepass"))


async def _get_text(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


async def test_a_post_through_one_worker_reaches_subscribers_on_every_worker(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    async with serving(tmp_path, redis_url) as hub, contextlib.AsyncExitStack() as stack:
        await answered_by_every_worker(hub)  # both listen, so sockets reach both
        agency = await world_at(hub.base_url, stack)
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        while not all(hub.subscribers().get(pid, 0) > 0 for pid in hub.workers()):
            assert len(sockets) < 16, f"every subscription on one worker: {hub.subscribers()}"
            ws = await agency[PROSECUTOR].transport.open_websocket(
                "/v1/subscribe", params=[("cursor", f"{CHANNEL}:0-0")]
            )
            stack.push_async_callback(ws.close)
            assert await next_frame(ws) == {"t": "live", "ch": CHANNEL}
            sockets.append(ws)

        posted = await agency[POLICE].post_note(CHANNEL, Note("Lage ruhig"), MARKS)
        for ws in sockets:  # one worker took the post: the others' subscribers get it too
            frame = await next_frame(ws)
            assert (frame["t"], frame["id"]) == ("note", posted.stream_id)
        hub.process.send_signal(signal.SIGINT)  # Ctrl-C: the same graceful stop as SIGTERM
        for ws in sockets:
            assert (await next_frame(ws))["t"] == "reconnect"
        assert await hub.exit_status() == 0
    assert "SIGINT: stopping the workers" in hub.text()


async def test_a_killed_worker_is_restarted_and_the_hub_keeps_answering(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    async with serving(tmp_path, redis_url) as hub:
        # both listen first: serving() returns once one of them answers, and if the victim
        # were the only one listening yet, nobody would be left to answer
        await answered_by_every_worker(hub)
        victim, survivor = hub.workers()
        os.kill(victim, signal.SIGKILL)
        # (a connection the kernel queued for the victim before it died is reset with it)
        await until(lambda: not alive(victim), "the victim is dead")
        for _ in range(10):  # the survivor answers every request meanwhile
            assert await status(hub.base_url, "/readyz") == 200
        await until(lambda: len(hub.workers()) == WORKERS, "a new worker runs", hub.log)
        assert victim not in hub.workers() and survivor in hub.workers()
        assert f"(pid {victim}) was killed by SIGKILL; restarting it in" in hub.text()
        await answered_by_every_worker(hub)
        assert hub.process.poll() is None


async def test_a_killed_supervisor_leaves_no_worker_and_no_redis(tmp_path: Path) -> None:
    async with serving(tmp_path, None) as hub:
        processes = children(hub.pid)
        assert len(processes) == WORKERS + 1
        hub.process.send_signal(signal.SIGKILL)
        hub.process.wait(timeout=STEP_S)
        await until(lambda: not any(alive(pid) for pid in processes), "workers end with it")
    assert await status(hub.base_url, "/healthz") == "refused"


async def test_workers_that_keep_dying_stop_the_hub_with_status_3(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    async with serving(tmp_path, redis_url) as hub:
        killed: set[int] = set()

        def kill_every_worker() -> bool:
            for pid in set(hub.workers()) - killed:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            return hub.process.poll() is not None

        await until(kill_every_worker, "the supervisor gives up", hub.log)
        assert hub.process.returncode == 3
        text = hub.text()
        assert "siko hub: stopped: the workers keep exiting (5 exits within 60 s" in text
        assert "Traceback" not in text
        await until(lambda: not any(alive(pid) for pid in killed), "no worker is left")


async def test_a_restarted_worker_never_makes_a_second_log_key(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    """The key file gone while the hub runs: restarted workers refuse, the hub stops."""
    async with serving(tmp_path, redis_url) as hub:
        key = hub.data_dir / "log.key"
        key.unlink()
        for pid in hub.workers():
            os.kill(pid, signal.SIGKILL)
        assert await hub.exit_status() == 3
    text = hub.text()
    assert f"cannot start: audit log key {key}: cannot read: No such file or directory" in text
    assert "siko hub: stopped: the workers keep exiting" in text
    assert not key.exists(), "no worker made a new key"


# -- refusals: nothing starts -----------------------------------------------------------------


async def _refused(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    """Run a supervisor that must stop at start: its status and output; no child left."""
    hub = start(tmp_path, env, *args)
    seen: set[int] = set()

    def ended() -> bool:
        seen.update(children(hub.pid))
        return hub.process.poll() is not None

    try:
        await until(ended, "the supervisor refuses to start", hub.log)
    finally:
        if hub.process.poll() is None:
            hub.process.kill()
            hub.process.wait(timeout=STEP_S)
    assert not [pid for pid in seen if "hub.workers" in cmdline(pid)], "no worker started"
    await until(lambda: not any(alive(pid) for pid in seen), "an embedded Redis is stopped")
    return hub.process.returncode, hub.text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers='0' (command line): expected an integer 1-64, or auto"),
        (["--workers", "65"], "--workers='65' (command line): expected an integer 1-64, or auto"),
        (["--workers", "two"], "--workers='two' (command line): expected an integer 1-64, or auto"),
        (
            ["--workers", "2", "--port", "0"],
            "--port='0' (command line): expected an integer 1-65535",
        ),
    ],
)
async def test_bad_workers_settings_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    code, text = await _refused(tmp_path, hub_env(tmp_path, None), *args)
    assert code == 2
    assert text == f"siko hub: configuration error: {message}\n"
    assert not (tmp_path / "data").exists(), "nothing was made"


async def test_an_unreachable_redis_is_one_line_and_status_1(tmp_path: Path) -> None:
    nobody = f"redis://:secret-pw@127.0.0.1:{free_loopback_port()}/0"
    code, text = await _refused(tmp_path, hub_env(tmp_path, nobody), "--workers", "2")
    assert code == 1
    assert text.endswith(
        "siko hub: cannot start: Redis at redis://:***@127.0.0.1:"
        f"{nobody.rpartition(':')[2]} does not answer; check the address and password in "
        "--redis (SIKO_REDIS_URL) and that the server is running\n"
    )
    assert "secret-pw" not in text and "Traceback" not in text


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_a_bad_admin_card_is_one_line_as_for_a_lone_hub_and_redis_stops(
    tmp_path: Path, workers: str
) -> None:
    env = hub_env(tmp_path, None)
    Path(env["SIKO_ADMIN_CARDS"]).write_bytes(b"not a card")
    code, text = await _refused(tmp_path, env, "--workers", workers)
    assert code == 1
    assert text.endswith(
        "siko hub: cannot start: cannot register the first administrators: administrator "
        f"card: {env['SIKO_ADMIN_CARDS']}: not a siko agency card (or it is damaged)\n"
    )
    assert "Traceback" not in text


async def test_a_log_key_of_another_log_is_one_line_and_kept(tmp_path: Path) -> None:
    env = hub_env(tmp_path, None, SIKO_LOG_KEY=str(tmp_path / "log.key"))
    LogKey.generate("other.example/siko-log").save(tmp_path / "log.key")
    kept = (tmp_path / "log.key").read_bytes()
    code, text = await _refused(tmp_path, env, "--workers", "2")
    assert code == 1
    assert "siko hub: cannot start: " in text and "fix --log-origin" in text
    assert (tmp_path / "log.key").read_bytes() == kept


async def test_a_damaged_log_key_is_one_line_and_kept(tmp_path: Path) -> None:
    env = hub_env(tmp_path, None, SIKO_LOG_KEY=str(tmp_path / "log.key"))
    (tmp_path / "log.key").write_bytes(b"damaged")
    code, text = await _refused(tmp_path, env, "--workers", "2")
    assert code == 1
    last = text.splitlines()[-1]
    assert last.startswith(f"siko hub: cannot start: audit log key {tmp_path / 'log.key'}: ")
    assert last.endswith("; restore the file from backup, or point --log-key at it")
    assert "Traceback" not in text
    assert (tmp_path / "log.key").read_bytes() == b"damaged"


async def test_a_port_in_use_is_refused_before_any_worker_shares_it(
    tmp_path: Path, redis_url: str, redis_db: redis.Redis
) -> None:
    """With SO_REUSEPORT a second hub would quietly share the port; it must refuse."""
    env = hub_env(tmp_path, redis_url)
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", int(env["SIKO_PORT"])))
        holder.listen()
        code, text = await _refused(tmp_path, env, "--workers", "2")
    assert code == 1
    assert text.endswith(
        f"siko hub: cannot start: 127.0.0.1:{env['SIKO_PORT']} is already in use "
        "(another hub, or another program); stop it or choose another --port\n"
    )
