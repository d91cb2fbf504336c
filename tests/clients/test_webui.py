"""clients/webui*.py and ``siko ui``: the liaison desk, in a real headless Chromium.

Against a real hub on a real Redis (the ``world`` of tests/hub/conftest.py): the
police desk (``pp-duisburg``) runs as ``siko ui`` in its own process, Debian's
Chromium opens its link, a note the city office posts through the SDK appears live,
a reply typed into the page arrives, opened, at the prosecutor, and the prosecutor's
read receipt shows on the page. Every way in that is not the desk's own page is
refused with 403 before anything reaches the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
import redis
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from clients.sdk import HubClient
from clients.webui import WebUi
from hub.embedded import free_loopback_port
from keys import Classification, HandlingCode, KdfParams, Markings, Note, save_identity
from tests.clients.conftest import Siko
from tests.clients.helpers import assert_refused
from tests.hub.conftest import (
    CHANNEL,
    CITY,
    POLICE,
    PROSECUTOR,
    RunningHub,
    identity,
)
from tests.hub.test_refusals import nothing_written

CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSPHRASE: Final = "korrekt pferd batterie heftklammer"
FAST_KDF: Final = KdfParams(memory_kib=1024, iterations=1, lanes=1)
WAIT_MS: Final = 15_000
SECURITY: Final = {
    "Content-Security-Policy": "default-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
async def desk(world: RunningHub) -> AsyncIterator[WebUi]:
    """The police desk served in this process (for the checks that need no browser)."""
    client = await world.client(POLICE)
    web_ui = WebUi(client)
    await web_ui.start()
    yield web_ui
    await web_ui.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client; it keeps no cookies, each test sends its own."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (never a downloaded browser)."""
    assert os.access(CHROMIUM, os.X_OK), "install Debian's chromium (make test does)"
    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def login(http: aiohttp.ClientSession, web_ui: WebUi) -> str:
    """Open the printed link as a browser would; the ``Cookie`` header of the session."""
    headers = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}
    async with http.get(web_ui.guard.login_url, headers=headers, allow_redirects=False) as answer:
        assert answer.status == 303, await answer.text()
        morsel = answer.cookies["siko_ui"]
    return f"siko_ui={morsel.value}"


def page_headers(web_ui: WebUi, cookie: str, **extra: str) -> dict[str, str]:
    """What the desk's own page sends with a call (Chromium's Fetch Metadata)."""
    headers = {"Cookie": cookie, "Sec-Fetch-Site": "same-origin", "Origin": web_ui.guard.origin}
    headers.update(extra)
    return headers


async def channel_notes(client: HubClient) -> list[str]:
    """The stream ids of every note the hub keeps in the channel."""
    return [d.stream_id for d in (await client.page_notes(CHANNEL)).notes]


# -- who may call: the guard -----------------------------------------------------------


async def test_login_link_sets_a_strict_httponly_cookie_that_is_not_the_secret(
    desk: WebUi, http: aiohttp.ClientSession
) -> None:
    headers = {"Sec-Fetch-Site": "none"}
    async with http.get(desk.guard.login_url, headers=headers, allow_redirects=False) as answer:
        assert answer.status == 303
        assert answer.headers["Location"] == "/"
        cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert desk.guard.secret not in cookie
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/login/[A-Za-z0-9_-]{43}", desk.guard.login_url)

    session = await login(http, desk)
    async with http.get(f"{desk.guard.origin}/api/state", headers=page_headers(desk, session)) as a:
        assert a.status == 200
        state = await a.json()
    assert state["agency"] == POLICE
    [channel] = state["channels"]
    assert channel["channel"] == CHANNEL and channel["unread"] == 0
    assert channel["roles"] == ["post", "read"] and channel["ceiling"] == "VS-NfD"


async def test_served_on_127_0_0_1_only(desk: WebUi) -> None:
    port = desk.guard.port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    with pytest.raises(ConnectionRefusedError):  # the rest of 127/8, and so any other address
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


@pytest.mark.parametrize(
    ("token", "site"),
    [("wrong-secret", "none"), (None, "cross-site"), (None, "same-site")],
    ids=["wrong secret", "right secret from another site", "right secret from another port"],
)
async def test_login_refused(
    desk: WebUi, http: aiohttp.ClientSession, token: str | None, site: str
) -> None:
    url = desk.guard.login_url if token is None else f"{desk.guard.origin}/login/{token}"
    headers = {"Sec-Fetch-Site": site}
    async with http.get(url, headers=headers, allow_redirects=False) as answer:
        assert answer.status == 403
        assert "Set-Cookie" not in answer.headers
        assert desk.guard.secret not in await answer.text()
    assert desk.guard.sessions == []


REFUSED_CALLS: Final = [
    ("no session", "GET", "/api/state", {"Cookie": ""}, "no session"),
    ("forged session", "GET", "/api/state", {"Cookie": "siko_ui=forged"}, "no session"),
    ("no session, page", "GET", "/", {"Cookie": ""}, "no session"),
    ("cross-site", "GET", "/api/state", {"Sec-Fetch-Site": "cross-site"}, "Sec-Fetch-Site"),
    ("other port", "GET", "/api/state", {"Sec-Fetch-Site": "same-site"}, "Sec-Fetch-Site"),
    ("no fetch metadata", "GET", "/api/events", {"Sec-Fetch-Site": ""}, "Sec-Fetch-Site"),
    ("typed api url", "GET", "/api/state", {"Sec-Fetch-Site": "none"}, "Sec-Fetch-Site"),
    ("other origin", "GET", "/api/state", {"Origin": "http://127.0.0.1:1"}, "Origin"),
    ("rebinding", "GET", "/api/state", {"Host": "evil.example"}, "address this UI"),
    ("localhost", "GET", "/static/app.js", {"Host": "localhost"}, "address this UI"),
    ("preflight", "OPTIONS", "/api/state", {"Access-Control-Request-Method": "POST"}, "CORS"),
]


@pytest.mark.parametrize(
    ("method", "path", "changed", "reason"),
    [call[1:] for call in REFUSED_CALLS],
    ids=[call[0] for call in REFUSED_CALLS],
)
async def test_calls_not_from_the_own_page_are_refused(
    desk: WebUi,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    changed: dict[str, str],
    reason: str,
) -> None:
    headers = page_headers(desk, await login(http, desk), **changed)
    if "Host" in changed:
        headers["Host"] = f"{changed['Host']}:{desk.guard.port}"
    headers = {k: v for k, v in headers.items() if v}
    async with http.request(method, f"{desk.guard.origin}{path}", headers=headers) as answer:
        assert answer.status == 403
        assert reason in await answer.text()
        assert not [h for h in answer.headers if h.lower().startswith("access-control-")]
        for name, value in SECURITY.items():
            assert value in answer.headers[name]


REFUSED_POSTS: Final = [
    ("no origin", {"Origin": ""}, "application/json", "no Origin"),
    ("other origin", {"Origin": "http://127.0.0.1:1"}, "application/json", "another Origin"),
    ("form from another port", {"Sec-Fetch-Site": "same-site"}, "text/plain", "Sec-Fetch-Site"),
    ("html form", {}, "application/x-www-form-urlencoded", "application/json"),
    ("no session", {"Cookie": ""}, "application/json", "no session"),
]


@pytest.mark.parametrize(
    ("changed", "content_type", "reason"),
    [post[1:] for post in REFUSED_POSTS],
    ids=[post[0] for post in REFUSED_POSTS],
)
async def test_refused_posts_reach_neither_hub_nor_redis(
    desk: WebUi,
    http: aiohttp.ClientSession,
    redis_db: redis.Redis,
    changed: dict[str, str],
    content_type: str,
    reason: str,
) -> None:
    headers = page_headers(desk, await login(http, desk), **changed)
    headers = {k: v for k, v in headers.items() if v} | {"Content-Type": content_type}
    body = b'{"text": "forged", "classification": "OFFEN", "handling": "H0"}'
    url = f"{desk.guard.origin}/api/channels/{CHANNEL}/notes"
    with nothing_written(redis_db, nonces=0, refusals=0):
        async with http.post(url, headers=headers, data=body) as answer:
            assert answer.status == 403
            assert reason in await answer.text()
    assert desk.live.channels[CHANNEL].notes == []


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"text": "   "}, 400, "needs a text"),
        ({"classification": "STRENG GEHEIM"}, 400, "Classification: expected one of"),
        ({"handling": "H9"}, 400, "HandlingCode: expected one of"),
        ({"classification": "GEHEIM"}, 422, "ceiling"),
    ],
    ids=["empty text", "unknown classification", "unknown handling code", "above ceiling"],
)
async def test_compose_refusals_say_why_and_post_nothing(
    desk: WebUi,
    world: RunningHub,
    http: aiohttp.ClientSession,
    fields: dict[str, str],
    status: int,
    needle: str,
) -> None:
    body = {"text": "Lagebild", "classification": "VS-NfD", "handling": "H1"} | fields
    headers = page_headers(desk, await login(http, desk))
    url = f"{desk.guard.origin}/api/channels/{CHANNEL}/notes"
    async with http.post(url, headers=headers, json=body) as answer:
        assert answer.status == status
        assert needle in (await answer.json())["error"]
    assert await channel_notes(await world.client(PROSECUTOR)) == []


async def test_a_read_only_member_has_no_compose_and_cannot_post(
    world: RunningHub, http: aiohttp.ClientSession
) -> None:
    web_ui = WebUi(await world.client(PROSECUTOR))
    await web_ui.start()
    try:
        headers = page_headers(web_ui, await login(http, web_ui))
        url = f"{web_ui.guard.origin}/api/channels/{CHANNEL}/notes"
        body = {"text": "x", "classification": "OFFEN", "handling": "H0"}
        async with http.post(url, headers=headers, json=body) as answer:
            assert answer.status == 404
            assert "no channel lage-ruhr you may post in" in await answer.text()
    finally:
        await web_ui.stop()
    assert await channel_notes(await world.client(CITY)) == []


def test_siko_ui_refuses_a_wrong_passphrase_and_an_unreachable_hub(
    siko: Siko, tmp_path: Path
) -> None:
    key = tmp_path / "police.identity"
    save_identity(key, identity(POLICE), PASSPHRASE, kdf=FAST_KDF)
    args = ("ui", "--key", str(key), "--passphrase-env", "SIKO_UI_PASSPHRASE")
    closed = f"http://127.0.0.1:{free_loopback_port()}"
    wrong = siko(*args, "--hub", closed, env={"SIKO_UI_PASSPHRASE": "not the passphrase"})
    assert_refused(wrong, 3, "passphrase")
    down = siko(*args, "--hub", closed, env={"SIKO_UI_PASSPHRASE": PASSPHRASE})
    assert_refused(down, 1, closed)
    assert "/login/" not in down.output


# -- the page, in Chromium -------------------------------------------------------------


@contextlib.asynccontextmanager
async def siko_ui(hub: RunningHub, tmp_path: Path, agency: str) -> AsyncIterator[str]:
    """Run ``siko ui`` for ``agency`` as its own process; yield the link it prints."""
    key = tmp_path / f"{agency}.identity"
    save_identity(key, identity(agency), PASSPHRASE, kdf=FAST_KDF)
    env = os.environ | {"SIKO_UI_PASSPHRASE": PASSPHRASE}
    args = ["--key", str(key), "--hub", hub.base_url, "--passphrase-env", "SIKO_UI_PASSPHRASE"]
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "clients.cli", "ui", *args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        printed = await asyncio.wait_for(_link(process.stdout), 20)
        yield printed
    finally:
        if process.returncode is None:
            process.terminate()
        out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode()
    assert b"siko ui: stopped" in out
    assert PASSPHRASE.encode() not in out + err


async def _link(stdout: asyncio.StreamReader) -> str:
    while line := (await stdout.readline()).decode():
        if match := re.search(r"http://127\.0\.0\.1:\d+/login/\S+", line):
            return match.group(0)
    raise AssertionError("siko ui ended without printing its link")


async def note_with(page: Page, text: str) -> Any:
    """The page's note whose text is ``text``, once it is shown."""
    note = page.locator("#notes .note", has=page.locator(".text", has_text=text))
    await expect(note).to_have_count(1, timeout=WAIT_MS)
    return note


async def test_desk_shows_notes_live_posts_replies_and_shows_read_receipts(
    world: RunningHub, tmp_path: Path, browser: Browser
) -> None:
    city = await world.client(CITY)
    prosecutor = await world.client(PROSECUTOR)
    async with siko_ui(world, tmp_path, POLICE) as link:
        page = await browser.new_page()
        failures: list[str] = []
        page.on("console", lambda m: failures.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: failures.append(f"{r.url} {r.failure}"))
        page.on("response", lambda r: failures.append(r.url) if r.status >= 400 else None)
        await page.goto(link)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page.url)  # the secret left the URL
        await expect(page.locator("#agency")).to_have_text(POLICE, timeout=WAIT_MS)
        await expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
        badge = page.locator(f'#channels [data-channel="{CHANNEL}"] .unread')
        await expect(badge).to_have_text("0")
        await page.evaluate("window.loadedOnce = true")

        # The city office posts through the SDK; the note appears without a reload.
        text = 'Gewerbekontrolle Shisha-Bar <img src=x id="injected"> Altenessen'
        marks = Markings(Classification.VS_NFD, HandlingCode.H2)
        posted = await city.post_note(CHANNEL, Note(text, subject="Kontrolle 12.3."), marks)
        note = await note_with(page, text)
        assert await page.evaluate("window.loadedOnce") is True
        await expect(note.locator(".marking").first).to_have_text(
            "VS-NfD · handling H2 · TLP:AMBER"
        )
        await expect(note.locator(".marking")).to_have_count(2)  # top and bottom
        await expect(note.locator(".subject")).to_have_text("Kontrolle 12.3.")
        await expect(note.locator(".meta")).to_contain_text(CITY)
        await expect(page.locator("#injected")).to_have_count(0)  # text, never HTML
        await expect(badge).to_have_text("1")

        # Confirming reading signs an acknowledgement: the city sees it in its receipts.
        await page.click("#mark-read")
        await expect(badge).to_have_text("0", timeout=WAIT_MS)
        receipts = await city.receipts(CHANNEL, posted.message_id)
        assert POLICE in receipts["read_by"]

        # A reply typed into the page is sealed by siko ui and reaches the prosecutor.
        async with prosecutor.subscribe({CHANNEL: posted.stream_id}) as subscription:
            await page.select_option("#compose select[name=handling]", "H0")
            await page.fill("#compose input[name=subject]", "Antwort")
            await page.fill("#compose textarea[name=text]", "Übernehmen wir, Streife 14 Uhr.")
            await page.click("#compose button[type=submit]")
            delivery = await asyncio.wait_for(anext(subscription), WAIT_MS / 1000)
        opened = await prosecutor.open(delivery)
        assert opened.note.text == "Übernehmen wir, Streife 14 Uhr."
        assert opened.note.subject == "Antwort"
        assert str(opened.header.sender) == POLICE
        assert opened.header.markings.classification is Classification.VS_NFD
        assert opened.header.markings.handling is HandlingCode.H0
        assert opened.header.recipient_agencies() == {POLICE, PROSECUTOR, CITY}

        # The reply shows as the desk's own, and the prosecutor's receipt appears on it.
        reply = await note_with(page, "Übernehmen wir, Streife 14 Uhr.")
        await expect(reply).to_have_class(re.compile(r"\bmine\b"))
        await expect(page.locator("#compose-status")).to_have_text("sent")
        await prosecutor.ack(CHANNEL, delivery.stream_id)
        await expect(reply.locator(".receipts")).to_contain_text(
            f"read by: {PROSECUTOR}", timeout=WAIT_MS
        )
        await expect(reply.locator(".receipts")).to_contain_text(f"not yet: {CITY}")
        await page.screenshot(path=tmp_path / "desk.png", full_page=True)
        assert failures == []


async def test_a_page_on_another_local_port_cannot_use_the_desk(
    desk: WebUi,
    world: RunningHub,
    browser: Browser,
    redis_db: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SameSite=Strict still sends the cookie from another port of 127.0.0.1; the
    same-origin checks are what refuse it."""
    script = EVIL_JS.replace("TARGET", desk.guard.origin)

    async def evil_page(request: web.Request) -> web.Response:
        if request.path == "/evil.js":
            return web.Response(text=script, content_type="text/javascript")
        return web.Response(text=EVIL_HTML, content_type="text/html")

    other = web.Application()
    other.router.add_get("/{name:.*}", evil_page)
    runner = web.AppRunner(other)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    evil_port = runner.addresses[0][1]
    try:
        page = await browser.new_page()
        await page.goto(desk.guard.login_url)  # the officer is logged in to the desk
        await expect(page.locator("#status")).to_have_text("live", timeout=WAIT_MS)
        caplog.clear()
        with nothing_written(redis_db, nonces=0, refusals=0):
            await page.goto(f"http://127.0.0.1:{evil_port}/")
            await expect(page.locator("body")).to_have_attribute("data-done", "yes")
        assert await page.locator("body").get_attribute("data-read") == "blocked"
        refused = [r.getMessage() for r in caplog.records if r.name == "clients.webui"]
        reason = "only this UI's own page may call it (Sec-Fetch-Site: same-site)"
        assert f"refused POST /api/channels/{CHANNEL}/notes: {reason}" in refused
        assert f"refused GET /api/state: {reason}" in refused
    finally:
        await runner.cleanup()
    assert await channel_notes(await world.client(PROSECUTOR)) == []


EVIL_HTML: Final = '<!doctype html><title>x</title><script src="/evil.js"></script><body></body>'
EVIL_JS: Final = """
addEventListener("DOMContentLoaded", async () => {
  const body = document.body;
  try {
    await fetch("TARGET/api/channels/lage-ruhr/notes", {
      method: "POST", mode: "no-cors", credentials: "include",
      headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({text: "forged", classification: "OFFEN", handling: "H0"}),
    });
  } catch (e) {}
  try {
    const answer = await fetch("TARGET/api/state", {credentials: "include"});
    body.dataset.read = await answer.text();
  } catch (e) {
    body.dataset.read = "blocked";
  }
  body.dataset.done = "yes";
});
"""
