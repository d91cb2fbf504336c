"""What bench/hub.py and bench/audit.py share: statistics, tables, CPU time, a Redis.

Nothing here is timed itself. CPU time comes from /proc (Linux), so that the figures of
a server process can be told apart from the load generator's and from the rest of a
machine that other people may be using at the same time.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import redis.asyncio as aioredis

from hub.embedded import EmbeddedRedis

TICK: Final = os.sysconf("SC_CLK_TCK")


def progress(text: str) -> None:
    """A progress line on stderr (stdout carries only the report)."""
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Dist:
    """Summary of a sample of durations, in milliseconds."""

    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of_ns(cls, samples: Sequence[int]) -> Dist:
        """Summarise durations in nanoseconds (nearest-rank percentiles; empty gives 0)."""
        if not samples:
            return cls(0, 0.0, 0.0, 0.0)
        ordered = sorted(samples)

        def rank(pct: int) -> float:
            return ordered[max(0, -(-len(ordered) * pct // 100) - 1)] / 1e6

        return cls(len(ordered), rank(50), rank(99), ordered[-1] / 1e6)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds that process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, all users) so far."""
    first = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0].split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, first[1:9])
    return (user + nice + system + irq + softirq + steal) / TICK


class CpuMeter:
    """Cores kept busy by named processes (or groups of them), and by everything else."""

    def __init__(self, pids: dict[str, int | tuple[int, ...]]) -> None:
        self.pids = {name: (p,) if isinstance(p, int) else p for name, p in pids.items()}
        self._start = (0.0, 0.0, dict.fromkeys(pids, 0.0))
        self.used: dict[str, float] = {}
        self.wall_s = 0.0
        self.other_s = 0.0

    def start(self) -> None:
        """Open the window."""
        own = {name: sum(map(cpu_seconds, pids)) for name, pids in self.pids.items()}
        self._start = (time.monotonic(), machine_busy_seconds(), own)

    def stop(self) -> CpuMeter:
        """Close the window; the figures are on the meter."""
        began, busy, own = self._start
        self.wall_s = time.monotonic() - began
        self.used = {
            name: sum(map(cpu_seconds, pids)) - own[name] for name, pids in self.pids.items()
        }
        self.other_s = max(0.0, machine_busy_seconds() - busy - sum(self.used.values()))
        return self

    def cores(self, name: str) -> float:
        """Average cores ``name`` (or ``"other"``: processes not ours) kept busy."""
        used = self.other_s if name == "other" else self.used.get(name, 0.0)
        return used / max(self.wall_s, 1e-9)

    def describe(self) -> str:
        """``hub 0.95 / redis 0.20 / ... / other 0.40`` cores."""
        return " / ".join(f"{n} {self.cores(n):.2f}" for n in [*self.pids, "other"])


@functools.cache
def machine_lines() -> tuple[str, ...]:
    """What the figures depend on, as report lines; as they were at the first call.

    Call it when the run starts: later, the load average includes the run's own load.
    """
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"- machine: {model}, {os.cpu_count()} cores; {platform.platform()}",
        f"- Python {platform.python_version()}; load average at start {load} "
        "(anything above 0 is other people's work: the machine may be shared)",
    )


@dataclass(frozen=True)
class RedisHandle:
    """The Redis this benchmark started, how to reach it, and its process id."""

    url: str
    pid: int


@asynccontextmanager
async def embedded_redis(data_dir: Path) -> AsyncIterator[RedisHandle]:
    """Start our own redis-server (append-only, ``everysec``, as the hub's default)."""
    server = EmbeddedRedis(data_dir)
    url = await server.start()
    try:
        client = aioredis.Redis.from_url(url)
        pid = int((await client.info("server"))["process_id"])
        await client.aclose()
        yield RedisHandle(url, pid)
    finally:
        await server.stop()
