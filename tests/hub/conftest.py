"""What hub and client tests share: a real hub on loopback, real agencies.

The fixtures themselves live in ``tests/conftest.py`` (so that hub and client tests share
one session Redis); this module holds what they are built from:

* ``redis_url`` — one redis-server for the whole session (the embedded binary, on a
  free 127.0.0.1 port, append-only with ``appendfsync always``), flushed before every
  test that uses it.
* ``hub`` — a hub application serving on a free 127.0.0.1 port against that Redis,
  with ``admin-lka`` registered as its first administrator.
* ``world`` — three agencies (police, prosecutor, city office) registered, and the
  channel ``lage-ruhr`` in which the police and the city office post and all three read.

Fault tests that must kill Redis start their own :class:`~hub.embedded.EmbeddedRedis`
instead of using the session one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from clients.sdk import HubClient
from hub.app import build_app
from hub.config import Settings
from hub.embedded import free_loopback_port
from keys import Classification, HandlingCode, Identity, Markings, Suite, save_card

CHANNEL = "lage-ruhr"
#: The markings of the notes the tests post: VS-NfD, handling code H1.
MARKS = Markings(Classification.VS_NFD, HandlingCode.H1)
POLICE, PROSECUTOR, CITY, ADMIN = "pp-duisburg", "sta-essen", "stadt-essen", "admin-lka"


@functools.cache
def identity(agency: str) -> Identity:
    """One identity per agency id for the whole session (the hybrid suite, as in use)."""
    return Identity.generate(agency, suite=Suite.MLKEM768_X25519)


@dataclass
class RunningHub:
    """A hub serving on loopback, and how to reach it."""

    base_url: str
    app: web.Application
    runner: web.AppRunner
    settings: Settings
    clients: list[HubClient] = field(default_factory=list)

    async def client(self, agency: str) -> HubClient:
        """A connected SDK client acting as ``agency`` (closed after the test)."""
        client = HubClient(self.base_url, identity(agency))
        await client.__aenter__()
        self.clients.append(client)
        return client

    async def stop(self) -> None:
        """Shut the hub down gracefully (as SIGTERM would)."""
        for client in self.clients:
            await client.__aexit__(None, None, None)
        self.clients.clear()
        await self.runner.cleanup()


async def start_hub(settings: Settings) -> RunningHub:
    """Build and start a hub for ``settings`` on its port."""
    app = build_app(settings)
    runner = web.AppRunner(app, shutdown_timeout=settings.shutdown_grace_s)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    return RunningHub(f"http://127.0.0.1:{settings.port}", app, runner, settings)


def hub_settings(tmp_path: Path, redis_url: str | None, **overrides: object) -> Settings:
    """Settings of a test hub: loopback, free port, ``admin-lka`` as first administrator."""
    card = tmp_path / "admin.card"
    if not card.exists():
        save_card(card, identity(ADMIN).card)
    values: dict[str, object] = {
        "port": free_loopback_port(),
        "redis_url": redis_url,
        "data_dir": tmp_path / "data",
        "admin_cards": (card,),
        "shutdown_grace_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def make_world(hub: RunningHub) -> None:
    """Register the three agencies and create the shared channel."""
    admin = await hub.client(ADMIN)
    for agency in (POLICE, PROSECUTOR, CITY):
        await admin.register_agency(identity(agency).card)
    await admin.create_channel(
        CHANNEL,
        ceiling="VS-NfD",
        retention_days=30,
        members={POLICE: {"post", "read"}, PROSECUTOR: {"read"}, CITY: {"post", "read"}},
    )
