"""Where an audit reads the log from: the hub's /v1/audit API, or a bundle file.

Both answer the same five questions (:class:`AuditSource`), so one driver
(:mod:`clients.audit_run`) verifies a live hub and an exported bundle the same way.
Nothing here checks anything: answers are values for :mod:`clients.audit_verify`.

A *bundle* is the answers an export recorded, written as one msgpack map::

    {"fmt": "siko-audit-bundle", "v": 1, "origin": str,
     "checkpoints": [signed note, ...],             # the latest first
     "leaves": [[index, leaf, record | nil, salt | nil], ...],   # by index
     "inclusion": [[index, size, [hash, ...]], ...],
     "consistency": [[old, new, [hash, ...]], ...]}

It is self-contained: ``siko audit verify --bundle FILE --log-key VERIFIER`` needs
nothing else, and trusts nothing in it but what the log key signed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import msgpack

from clients.audit_verify import Entry
from clients.errors import BadRequest, NotFound, ProtocolError
from clients.transport import Transport
from keys import Identity

FORMAT: Final = "siko-audit-bundle"
#: Leaves per request; the hub serves at most 1000.
PAGE: Final = 1000
#: The largest bundle read (a log of a few million leaves).
MAX_BUNDLE_BYTES: Final = 4 * 1024**3


class BundleError(ValueError):
    """A bundle file that is not one: the message names what is wrong."""


class AuditSource(Protocol):
    """The questions an audit asks; a proof that cannot be had is ``None``."""

    async def latest_checkpoint(self) -> bytes: ...

    async def checkpoints(self) -> list[bytes]: ...

    async def checkpoint_at(self, size: int) -> bytes | None: ...

    async def leaves(self, start: int, end: int) -> list[Entry]: ...

    async def inclusion_proof(self, index: int, size: int) -> list[bytes] | None: ...

    async def consistency_proof(self, old: int, new: int) -> list[bytes] | None: ...


class HubSource:
    """The hub's /v1/audit API, asked as a registered auditor (records need that kind)."""

    def __init__(self, base_url: str, identity: Identity, *, transport: Transport | None = None):
        self.transport = transport or Transport(base_url, identity, timeout=60.0)

    async def __aenter__(self) -> HubSource:
        await self.transport.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.transport.__aexit__(*exc_info)

    async def latest_checkpoint(self) -> bytes:
        return (await self.transport.request("GET", "/v1/audit/checkpoint")).body

    async def checkpoints(self) -> list[bytes]:
        return [await self.latest_checkpoint()]

    async def checkpoint_at(self, size: int) -> bytes | None:
        try:
            return (await self.transport.request("GET", f"/v1/audit/checkpoints/{size}")).body
        except NotFound:
            return None

    async def leaves(self, start: int, end: int) -> list[Entry]:
        data = await self._get("/v1/audit/leaves", start=start, end=end)
        try:
            return [
                Entry(item["index"], item["leaf"], item.get("record"), item.get("salt"))
                for item in data["leaves"]
            ]
        except (KeyError, TypeError) as exc:
            raise ProtocolError(f"the hub sent a malformed page of leaves: {exc}") from None

    async def inclusion_proof(self, index: int, size: int) -> list[bytes] | None:
        return await self._proof("/v1/audit/proofs/inclusion", index=index, size=size)

    async def consistency_proof(self, old: int, new: int) -> list[bytes] | None:
        return await self._proof("/v1/audit/proofs/consistency", old=old, new=new)

    async def _proof(self, path: str, **params: int) -> list[bytes] | None:
        """A proof, or None when the hub refuses it (e.g. for a size it no longer has)."""
        try:
            return _hashes(await self._get(path, **params))
        except (BadRequest, NotFound):
            return None

    async def _get(self, path: str, **params: int) -> Any:
        query = {name: str(value) for name, value in params.items()}
        data = (await self.transport.request("GET", path, params=query)).msgpack()
        if not isinstance(data, dict):
            raise ProtocolError(f"the hub's answer to {path} is not a map")
        return data


def _hashes(data: dict[str, Any]) -> list[bytes]:
    proof = data.get("proof")
    if not isinstance(proof, list) or not all(isinstance(h, bytes) for h in proof):
        raise ProtocolError("the hub sent a malformed proof")
    return proof


@dataclass
class Bundle:
    """The recorded answers of one export (see the module docstring)."""

    origin: str
    checkpoints: list[bytes] = field(default_factory=list)
    leaves: list[Entry] = field(default_factory=list)
    inclusion: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)
    consistency: dict[tuple[int, int], list[bytes]] = field(default_factory=dict)

    def serialize(self) -> bytes:
        """The bundle file's bytes."""
        return bytes(
            msgpack.packb(
                {
                    "fmt": FORMAT,
                    "v": 1,
                    "origin": self.origin,
                    "checkpoints": self.checkpoints,
                    "leaves": [[e.index, e.leaf, e.record, e.salt] for e in self.leaves],
                    "inclusion": [[i, s, p] for (i, s), p in self.inclusion.items()],
                    "consistency": [[o, n, p] for (o, n), p in self.consistency.items()],
                },
                use_bin_type=True,
            )
        )

    @classmethod
    def parse(cls, data: bytes) -> Bundle:
        """Read a bundle's bytes; :class:`BundleError` names what is wrong."""
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, max_ext_len=0)
            if value.get("fmt") != FORMAT or value.get("v") != 1:
                raise BundleError("not a version 1 siko audit bundle")
            leaves = sorted(
                (
                    Entry(int(i), bytes(leaf), _opt(rec), _opt(salt))
                    for i, leaf, rec, salt in value["leaves"]
                ),
                key=lambda e: e.index,
            )
            return cls(
                str(value["origin"]),
                [bytes(note) for note in value["checkpoints"]],
                leaves,
                {(int(i), int(s)): _proof(p) for i, s, p in value["inclusion"]},
                {(int(o), int(n)): _proof(p) for o, n, p in value["consistency"]},
            )
        except BundleError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException) as exc:
            raise BundleError(f"the bundle does not decode ({exc})") from None

    def save(self, path: Path) -> None:
        """Write the bundle to ``path`` (replacing it)."""
        path.write_bytes(self.serialize())

    @classmethod
    def load(cls, path: Path) -> Bundle:
        """Read the bundle at ``path``."""
        if path.stat().st_size > MAX_BUNDLE_BYTES:
            raise BundleError(f"{path}: larger than {MAX_BUNDLE_BYTES} bytes")
        return cls.parse(path.read_bytes())


def _opt(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _proof(value: object) -> list[bytes]:
    if not isinstance(value, list) or not all(isinstance(h, bytes) for h in value):
        raise BundleError("a proof in the bundle is not a list of hashes")
    return value


class BundleSource:
    """Answers from a :class:`Bundle`; what it does not hold is ``None`` (or a gap)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._indexes = [e.index for e in bundle.leaves]

    async def latest_checkpoint(self) -> bytes:
        if not self.bundle.checkpoints:
            raise BundleError("the bundle holds no checkpoint")
        return self.bundle.checkpoints[0]

    async def checkpoints(self) -> list[bytes]:
        return list(self.bundle.checkpoints)

    async def checkpoint_at(self, size: int) -> bytes | None:
        return None  # sizes are only known once verified; checkpoints() gives them all

    async def leaves(self, start: int, end: int) -> list[Entry]:
        low = bisect.bisect_left(self._indexes, start)
        high = bisect.bisect_left(self._indexes, end)
        return self.bundle.leaves[low:high]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes] | None:
        return self.bundle.inclusion.get((index, size))

    async def consistency_proof(self, old: int, new: int) -> list[bytes] | None:
        return self.bundle.consistency.get((old, new))


class Recorder:
    """A source that keeps every answer of another one, to write them as a bundle."""

    def __init__(self, source: AuditSource, origin: str) -> None:
        self.source = source
        self.bundle = Bundle(origin)
        self._seen: set[int] = set()

    async def latest_checkpoint(self) -> bytes:
        note = await self.source.latest_checkpoint()
        self._keep(note, first=True)
        return note

    async def checkpoints(self) -> list[bytes]:
        notes = await self.source.checkpoints()
        for note in notes:
            self._keep(note)
        return notes

    async def checkpoint_at(self, size: int) -> bytes | None:
        note = await self.source.checkpoint_at(size)
        if note is not None:
            self._keep(note)
        return note

    async def leaves(self, start: int, end: int) -> list[Entry]:
        entries = await self.source.leaves(start, end)
        fresh = [e for e in entries if e.index not in self._seen]
        self._seen.update(e.index for e in fresh)
        self.bundle.leaves.extend(fresh)
        return entries

    async def inclusion_proof(self, index: int, size: int) -> list[bytes] | None:
        proof = await self.source.inclusion_proof(index, size)
        if proof is not None:
            self.bundle.inclusion[index, size] = proof
        return proof

    async def consistency_proof(self, old: int, new: int) -> list[bytes] | None:
        proof = await self.source.consistency_proof(old, new)
        if proof is not None:
            self.bundle.consistency[old, new] = proof
        return proof

    def _keep(self, note: bytes, *, first: bool = False) -> None:
        if note in self.bundle.checkpoints:
            return
        if first:
            self.bundle.checkpoints.insert(0, note)
        else:
            self.bundle.checkpoints.append(note)


def pages(start: int, end: int, size: int = PAGE) -> Iterator[tuple[int, int]]:
    """``[start, end)`` cut into pages of at most ``size`` leaves."""
    for low in range(start, end, size):
        yield low, min(end, low + size)
