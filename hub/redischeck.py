"""What the hub requires of the Redis it is given, checked once when it starts.

The hub keeps every note, the audit log and the request nonces in Redis, and promises
that an accepted note is never lost. Whether a server can keep that promise shows in
its ``INFO``, which even a managed Redis (where ``CONFIG`` may be disabled) answers:

* **the version**: 6.2 or later. The hub trims streams by id (``XADD``/``XTRIM`` with
  ``MINID``), which older servers refuse, and would fail on the first post instead.
* **eviction**: ``maxmemory-policy`` must be ``noeviction``. Under any other policy a
  full Redis drops keys instead of refusing writes: notes and audit leaves, or (the
  ``volatile-*`` policies) the nonces that stop a replayed request. The hub refuses to
  start on such a server rather than lose them silently later.
* **persistence**: without the append-only file a Redis restart loses what was written
  since the last snapshot. That may be the operator's deliberate choice (replicas, a
  managed service's own persistence), so the hub warns instead of refusing.

The embedded redis-server (:mod:`hub.embedded`) meets all three by its configuration.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

MIN_VERSION: Final = (6, 2)
_VERSION: Final = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})(?:\.[0-9]{1,6})?")


@dataclass(frozen=True)
class Verdict:
    """Why the hub may not use a server (``refusals``), and what it should warn about."""

    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def judge(info: Mapping[str, object]) -> Verdict:
    """The verdict on a server from its ``INFO`` (all sections, as redis-py parses it)."""
    verdict = Verdict()
    version = str(info.get("redis_version", ""))
    match = _VERSION.fullmatch(version)
    if match is None:
        verdict.refusals.append(f"it reports no usable version ({version[:40]!r})")
    elif (int(match[1]), int(match[2])) < MIN_VERSION:
        verdict.refusals.append(
            f"it is Redis {version}; the hub needs Redis 6.2 or later (or Valkey)"
        )
    policy = str(info.get("maxmemory_policy", ""))
    if policy != "noeviction":
        verdict.refusals.append(
            f"its maxmemory-policy is {policy[:40] or 'unknown'}: when memory runs short it "
            "would drop notes, audit leaves or nonces instead of refusing writes; set "
            "maxmemory-policy noeviction"
        )
    if info.get("aof_enabled") != 1:
        verdict.warnings.append(
            "its append-only file is off: a Redis restart loses what was written since its "
            "last snapshot, accepted notes included (appendonly yes keeps them)"
        )
    return verdict
