"""``siko hub serve --workers N``: one hub on N cores, as N worker processes on one port.

The hub spends about a millisecond of CPU per post in Python, so one process uses one
core. With ``workers > 1`` the ``serve`` process becomes a supervisor that serves nothing
itself:

1. it checks that HOST:PORT is free: the workers bind with SO_REUSEPORT, with which
   Linux lets any socket of the same user join the port, so a second hub started on it
   by mistake would silently take half the traffic;
2. it does the once-only start work as a lone hub would: starts the embedded Redis when
   no URL is configured, makes the audit log key if it is missing and registers the
   first administrators (:func:`hub.app.prepare`), with the same one-line errors;
3. it starts N workers, ``python -m hub.workers``, and tells each on its stdin (never on
   a command line: the embedded Redis URL holds a password) the settings, the Redis URL
   and the metrics folder. Each runs the normal app (:func:`hub.app.serve`) as a
   :class:`~hub.app.Replica`: bound with SO_REUSEPORT, so the kernel spreads connections
   over the workers, and never starting Redis, making a key or registering anyone;
4. it restarts a worker that exits, after a short back-off, and gives up
   (:class:`WorkersFailed`) after :data:`RESTART_LIMIT` exits within
   :data:`RESTART_WINDOW_S`;
5. on SIGTERM or SIGINT it sends SIGTERM to every worker (each shuts down gracefully,
   as a lone hub does), waits for them (at most grace + drain + :data:`STOP_MARGIN_S`,
   or until a second signal, then SIGKILL) and stops the embedded Redis.

The workers are replicas of one hub, like replicas behind a load balancer: one Redis,
one log key; the audit sequencer, checkpoints and the retention sweep are safe with
several (docs/ARCHITECTURE.md, "The audit log"). Their metrics go to files in one folder
(prometheus_client's multiprocess mode), so any worker's ``/metrics`` reports the whole
hub. Each worker asks the kernel for SIGTERM when the supervisor dies
(PR_SET_PDEATHSIG), so a supervisor killed outright leaves no worker behind; the
embedded Redis does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from prometheus_client.multiprocess import mark_process_dead

from hub.app import (
    DRAIN_S,
    Replica,
    StartError,
    configure_logging,
    prepare,
    serve,
    start_embedded_redis,
)
from hub.config import Settings, process_env

__all__ = ["WorkersFailed", "supervise", "worker_main"]

log = logging.getLogger("hub.workers")

#: This many worker exits within RESTART_WINDOW_S stop the hub: they keep dying.
RESTART_LIMIT: Final = 5
RESTART_WINDOW_S: Final = 60.0
#: The wait before a restart, by the number of exits within the window (1, 2, 3, 4+).
BACKOFF_S: Final = (0.2, 0.5, 1.0, 2.0)
#: On stop, what workers get beyond shutdown_grace_s and DRAIN_S before SIGKILL (their
#: audit log's last drain and checkpoint, closing Redis).
STOP_MARGIN_S: Final = 10.0
#: How often the supervisor looks at its workers.
TICK_S: Final = 0.05
#: The folder under DATA_DIR where the workers keep their metric values.
METRICS_FOLDER: Final = "metrics"
_PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>
_WORKER: Final = (sys.executable, "-m", "hub.workers")
_BY_HAND: Final = "python -m hub.workers is started by 'siko hub serve --workers N' only"


class WorkersFailed(Exception):
    """The workers kept exiting, so the supervisor stopped the hub; the message says how."""


# -- the supervisor ----------------------------------------------------------------------


def supervise(settings: Settings) -> None:
    """Serve as ``settings.workers`` worker processes until SIGTERM or SIGINT.

    Raises:
        StartError: the port is taken, or the once-only start work failed.
        EmbeddedRedisError: the embedded redis-server cannot be found or started.
        WorkersFailed: the workers kept exiting; every process was stopped.
    """
    configure_logging(settings, tag="[supervisor] ")
    log.info("starting siko hub with %d workers: %s", settings.workers, settings.describe())
    asyncio.run(_supervise(settings))


async def _supervise(settings: Settings) -> None:
    signals = _Signals()
    _check_port_free(settings.host, settings.port)
    if settings.redis_url is not None:
        await _run(settings, settings.redis_url, signals)
        return
    embedded = await start_embedded_redis(settings)
    try:
        await _run(settings, embedded.url, signals)
    finally:
        await embedded.stop()


async def _run(settings: Settings, redis_url: str, signals: _Signals) -> None:
    await prepare(settings, redis_url)
    workers = _Workers(settings, Replica(redis_url, _fresh_metrics_dir(settings.data_dir)))
    try:
        await workers.keep_running(signals)
    finally:
        await workers.stop(signals)


class _Signals:
    """SIGTERM and SIGINT, counted: the first stops the hub gracefully, a second at once."""

    def __init__(self) -> None:
        self.received = 0
        self.event = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: signal.Signals) -> None:
        self.received += 1
        self.event.set()
        log.info("%s: stopping the workers", signum.name)


def _check_port_free(host: str, port: int) -> None:
    """Refuse a HOST:PORT that another socket holds, with or without SO_REUSEPORT.

    The probe binds as asyncio will (SO_REUSEADDR, IPv6 sockets IPv6-only) but without
    SO_REUSEPORT, so it fails where a worker would silently share the port.
    """
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in found:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise StartError(
                        f"{host}:{port} is already in use (another hub, or another program); "
                        "stop it or choose another --port"
                    ) from None
                raise StartError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """DATA_DIR/metrics, private (0700) and empty: old workers' counts must not add up."""
    folder = (data_dir / METRICS_FOLDER).absolute()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        for entry in folder.iterdir():
            if not entry.is_dir() or entry.is_symlink():
                entry.unlink()
    except OSError as exc:
        raise StartError(f"cannot prepare the metrics folder {folder}: {exc.strerror}") from None
    return folder


@dataclass
class _Slot:
    """One worker's place: its process while it runs, else when to start the next one."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    due: float = 0.0


class _Workers:
    """The worker processes of one hub, started, restarted and stopped."""

    def __init__(self, settings: Settings, replica: Replica) -> None:
        self._settings = settings
        self._replica = replica
        self._env = dict(process_env()) | {"PROMETHEUS_MULTIPROC_DIR": str(replica.metrics_dir)}
        self._slots = [_Slot(index) for index in range(1, settings.workers + 1)]
        self._exits: deque[float] = deque()

    async def keep_running(self, signals: _Signals) -> None:
        """Start every worker and restart those that exit, until a signal.

        Raises:
            WorkersFailed: :data:`RESTART_LIMIT` exits within :data:`RESTART_WINDOW_S`.
        """
        while not signals.event.is_set():
            now = time.monotonic()
            for slot in self._slots:
                if slot.process is None and now >= slot.due:
                    self._start(slot)
                elif slot.process is not None and slot.process.poll() is not None:
                    self._restart_later(slot, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signals.event.wait(), TICK_S)

    def _start(self, slot: _Slot) -> None:
        # From the event loop's thread, the main one: PR_SET_PDEATHSIG fires when the
        # thread that started the child ends, not only the process.
        try:
            process = subprocess.Popen(
                _WORKER, stdin=subprocess.PIPE, env=self._env, start_new_session=True
            )
        except OSError as exc:  # out of processes or memory: no use retrying at once
            raise WorkersFailed(f"cannot start worker {slot.index}: {exc.strerror}") from None
        order = (self._settings, self._replica, slot.index, os.getpid())
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):  # it died at once: seen on the next tick
            process.stdin.write(pickle.dumps(order))
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
        slot.process = process
        log.info("worker %d started (pid %d)", slot.index, process.pid)

    def _restart_later(self, slot: _Slot, now: float) -> None:
        process = self._ended(slot)
        self._exits.append(now)
        while now - self._exits[0] > RESTART_WINDOW_S:
            self._exits.popleft()
        how = f"worker {slot.index} (pid {process.pid}) {_how(process.returncode)}"
        if len(self._exits) >= RESTART_LIMIT:
            log.error("%s", how)
            raise WorkersFailed(
                f"the workers keep exiting ({len(self._exits)} exits within "
                f"{RESTART_WINDOW_S:.0f} s, the last: {how}); the hub stopped, "
                "and the log lines above say why"
            )
        delay = BACKOFF_S[min(len(self._exits), len(BACKOFF_S)) - 1]
        slot.due = now + delay
        log.warning("%s; restarting it in %.1f s", how, delay)

    def _ended(self, slot: _Slot) -> subprocess.Popen[bytes]:
        """Forget the slot's process, which has exited, and its live gauges' values."""
        process, slot.process = slot.process, None
        assert process is not None
        mark_process_dead(process.pid, str(self._replica.metrics_dir))  # type: ignore[no-untyped-call]
        return process

    async def stop(self, signals: _Signals) -> None:
        """SIGTERM to every worker; wait for them, SIGKILL after the deadline or a signal."""
        seen = signals.received
        for running in self._running():
            with contextlib.suppress(ProcessLookupError):
                running.process.send_signal(signal.SIGTERM)
        settings = self._settings
        deadline = time.monotonic() + settings.shutdown_grace_s + DRAIN_S + STOP_MARGIN_S
        while self._running():
            for running in self._running():
                if running.process.poll() is not None:
                    self._stopped(running)
            if time.monotonic() > deadline or signals.received > seen:
                self._kill_the_rest()
            await asyncio.sleep(TICK_S)

    def _running(self) -> list[_RunningSlot]:
        return [_RunningSlot(slot, slot.process) for slot in self._slots if slot.process]

    def _stopped(self, running: _RunningSlot) -> None:
        process = self._ended(running.slot)
        log.info("worker %d (pid %d) %s", running.slot.index, process.pid, _how(process.returncode))

    def _kill_the_rest(self) -> None:
        for running in self._running():
            log.warning("worker %d (pid %d) did not stop: SIGKILL", running.slot.index, running.pid)
            running.process.kill()
            running.process.wait()
            self._stopped(running)


@dataclass(frozen=True)
class _RunningSlot:
    """A slot with its running process (typed: no None to check)."""

    slot: _Slot
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid


def _how(status: int | None) -> str:
    """How a worker ended, from its exit status: ``exited with status 1``, ``was killed
    by SIGKILL``."""
    if status is not None and status < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-status).name}"
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


# -- a worker ----------------------------------------------------------------------------


def worker_main() -> None:
    """``python -m hub.workers``: read the supervisor's order, then serve until SIGTERM."""
    _end_with_parent()
    settings, replica, index, supervisor = _read_order(sys.stdin.buffer)
    if os.getppid() != supervisor:
        return  # the supervisor died before this process asked to end with it
    configure_logging(settings, tag=f"[worker {index}] ")
    try:
        asyncio.run(serve(settings, replica=replica))
    except StartError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        raise SystemExit(1) from None


def _end_with_parent() -> None:
    """SIGTERM to this process when the supervisor dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _read_order(stdin: BinaryIO) -> tuple[Settings, Replica, int, int]:
    """The order the supervisor wrote to this process's stdin before it started reading.

    Pickled: the pipe was made by the parent for this child alone, so unpickling it trusts
    no one new; what is read is still checked to be an order.
    """
    try:
        settings, replica, index, supervisor = pickle.load(stdin)
    except Exception:  # not an order: garbage fails to unpickle in many ways
        raise SystemExit(_BY_HAND) from None
    kinds = ((settings, Settings), (replica, Replica), (index, int), (supervisor, int))
    if not all(isinstance(part, kind) for part, kind in kinds):
        raise SystemExit(_BY_HAND)
    return settings, replica, index, supervisor


if __name__ == "__main__":
    worker_main()
