"""deploy/: the systemd unit, its settings and the TLS terminator work as shipped.

The examples are what an operator copies, so they are checked as files (the settings load,
the unit verifies, the values that must agree across files do) and the nginx one is run
for real: a hub behind it on loopback, with TLS, takes signed posts and a live
subscription through it, refuses a flood with 429, and keeps /metrics inside.
"""

from __future__ import annotations

import asyncio
import configparser
import datetime
import ipaddress
import os
import re
import shutil
import ssl
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.sdk import HubClient
from clients.transport import Transport
from hub.cli import EXIT_CONFIG
from hub.config import SETTINGS, Settings, available_cores
from hub.embedded import free_loopback_port
from keys import Note, save_card
from tests.hub.conftest import (
    ADMIN,
    CHANNEL,
    MARKS,
    POLICE,
    PROSECUTOR,
    RunningHub,
    hub_settings,
    identity,
    start_hub,
)

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNIT = DEPLOY / "systemd" / "siko-hub.service"
TOML = DEPLOY / "systemd" / "hub.toml"
ENV = DEPLOY / "systemd" / "hub.env"
NGINX_SITE = DEPLOY / "nginx" / "siko-hub.conf"
#: Debian's nginx, unpacked into the virtualenv by ``make nginx`` (part of ``make test``).
NGINX = Path(sys.prefix) / "nginx" / "usr" / "sbin" / "nginx"
STEP_S = 10.0


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def shipped_settings(tmp_path: Path) -> Settings:
    """hub.toml as the unit reads it, with the machine's paths swapped for test ones."""
    card = tmp_path / "admin-lka.card"
    save_card(card, identity(ADMIN).card)
    text = TOML.read_text(encoding="utf-8")
    for path in ("/etc/siko-hub/admins/admin-lka.card", "/var/lib/siko-hub"):
        assert f'"{path}"' in text, f"{path} moved: update this test"
    text = text.replace("/etc/siko-hub/admins/admin-lka.card", str(card))
    text = text.replace("/var/lib/siko-hub", str(tmp_path / "state"))
    copy = tmp_path / "hub.toml"
    copy.write_text(text, encoding="utf-8")
    return Settings.load(flags={}, env={}, config_file=copy)


# -- the files, and what must agree between them ---------------------------------------


def test_the_shipped_settings_load_and_say_what_the_comments_say(tmp_path: Path) -> None:
    settings = shipped_settings(tmp_path)
    assert (settings.host, settings.port) == ("127.0.0.1", 8470)
    assert settings.workers == available_cores()
    assert settings.base_url == "https://hub.example"
    assert settings.appendfsync == "always"


def test_the_unit_runs_the_cli_on_those_settings_and_stops_in_time() -> None:
    service = unit()["Service"]
    assert (
        service["ExecStart"] == "/opt/siko-hub/bin/siko hub serve --config /etc/siko-hub/hub.toml"
    )
    assert service["RestartPreventExitStatus"] == str(EXIT_CONFIG)  # a bad setting
    grace = tomllib.loads(TOML.read_text(encoding="utf-8"))["shutdown_grace_s"]
    assert int(service["TimeoutStopSec"]) > grace + 5
    assert service["StateDirectory"] == "siko-hub" and service["UMask"] == "0077"


def test_the_environment_file_names_only_real_settings() -> None:
    known = {spec.env for spec in SETTINGS if spec.env}
    names = re.findall(r"^#?\s*(SIKO_[A-Z_]+)=", ENV.read_text(encoding="utf-8"), re.MULTILINE)
    assert names and set(names) <= known
    assert "PASSWORD" not in UNIT.read_text(encoding="utf-8")  # secrets stay in the env file


def test_the_unit_verifies_with_systemd(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    text = UNIT.read_text(encoding="utf-8")
    siko = Path(sys.executable).with_name("siko")
    text = text.replace("/opt/siko-hub/bin/siko", str(siko))
    text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.MULTILINE)
    text = text.replace("EnvironmentFile=/etc/siko-hub/hub.env", f"EnvironmentFile={ENV}")
    copy = tmp_path / "siko-hub.service"
    copy.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_nginx_passes_the_signed_url_unchanged_and_fits_the_hub() -> None:
    site = NGINX_SITE.read_text(encoding="utf-8")
    settings = tomllib.loads(TOML.read_text(encoding="utf-8"))
    assert re.search(r"^\s*proxy_pass http://siko_hub;$", site, re.MULTILINE), "no URI part"
    assert f"server 127.0.0.1:{settings['port']};" in site
    body = re.search(r"client_max_body_size (\d+)m;", site)
    assert body and int(body[1]) * 2**20 >= settings["max_envelope_bytes"] + 64 * 1024
    read = re.search(r"proxy_read_timeout (\d+)h;", site)
    assert read and int(read[1]) * 3600 > 20  # longer than the hub's WebSocket ping


# -- nginx in front of a real hub -------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (the test's own CA of one)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "siko test hub")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "fullchain.pem", folder / "privkey.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def nginx_conf(folder: Path, tls_port: int, hub_port: int) -> Path:
    """The shipped site, on test ports and certificates, in a minimal nginx.conf."""
    cert, key = self_signed(folder)
    site = NGINX_SITE.read_text(encoding="utf-8")
    for shipped in ("listen 443 ssl;", "server 127.0.0.1:8470;", "/etc/siko-hub/tls/"):
        assert shipped in site, f"{shipped} moved: update this test"
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
    site = site.replace("server 127.0.0.1:8470;", f"server 127.0.0.1:{hub_port};")
    site = site.replace("/etc/siko-hub/tls/fullchain.pem", str(cert))
    site = site.replace("/etc/siko-hub/tls/privkey.pem", str(key))
    (folder / "logs").mkdir()
    conf = folder / "nginx.conf"
    conf.write_text(
        f"""
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log warn;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
{site}
}}
""",
        encoding="utf-8",
    )
    return conf


@pytest.fixture
async def behind_nginx(
    tmp_path: Path, redis_url: str, redis_db: object
) -> AsyncIterator[tuple[RunningHub, str, ssl.SSLContext]]:
    """A hub on loopback behind the shipped nginx site; the hub, its public URL, TLS."""
    assert os.access(NGINX, os.X_OK), f"no nginx at {NGINX}: run make nginx (make test does)"
    tls_port = free_loopback_port()
    public = f"https://127.0.0.1:{tls_port}"
    hub = await start_hub(hub_settings(tmp_path, redis_url, public_url=public))
    folder = tmp_path / "nginx"
    folder.mkdir()
    conf = nginx_conf(folder, tls_port, hub.settings.port)
    checked = subprocess.run(
        [NGINX, "-t", "-e", "stderr", "-p", str(folder), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    server = subprocess.Popen(
        [
            NGINX,
            "-e",
            "stderr",
            "-p",
            str(folder),
            "-c",
            str(conf),
            "-g",
            "daemon off; master_process off;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    trust = ssl.create_default_context(cafile=str(folder / "fullchain.pem"))
    try:
        async with asyncio.timeout(STEP_S):
            while True:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", tls_port)
                except OSError:
                    assert server.poll() is None, (folder / "logs" / "error.log").read_text()
                    await asyncio.sleep(0.05)
                    continue
                writer.close()
                break
        yield hub, public, trust
    finally:
        server.terminate()
        server.wait(timeout=STEP_S)
        await hub.stop()


async def client_via(
    stack: AsyncExitStack, public: str, trust: ssl.SSLContext, agency: str
) -> HubClient:
    """An SDK client of ``agency`` that reaches the hub through nginx, trusting its cert."""
    connector = aiohttp.TCPConnector(ssl=trust)
    session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
    transport = Transport(public, identity(agency), session=session)
    return await stack.enter_async_context(HubClient(public, identity(agency), transport=transport))


async def test_signed_posts_and_a_live_subscription_pass_through_nginx(
    behind_nginx: tuple[RunningHub, str, ssl.SSLContext],
) -> None:
    _, public, trust = behind_nginx
    async with AsyncExitStack() as stack:
        admin, police, prosecutor = [
            await client_via(stack, public, trust, a) for a in (ADMIN, POLICE, PROSECUTOR)
        ]
        for agency in (POLICE, PROSECUTOR):
            await admin.register_agency(identity(agency).card)
        members = {POLICE: {"post", "read"}, PROSECUTOR: {"read"}}
        await admin.create_channel(CHANNEL, ceiling="VS-NfD", retention_days=30, members=members)
        # the upgrade's query (?cursor=lage-ruhr:0-0) is signed as sent: nginx must not
        # re-encode it, nor the paths of the posts
        subscription = prosecutor.subscribe({CHANNEL: "0-0"})
        # 40 KB: larger than nginx keeps in memory, so the body passes through its temp file
        text = "über TLS: Lage Altendorf. " * 1600
        posted = await police.post_note(CHANNEL, Note(text), MARKS)
        delivery = await asyncio.wait_for(anext(subscription), STEP_S)
        assert delivery.stream_id == posted.stream_id
        assert (await prosecutor.open(delivery)).note.text == text
        await subscription.close()


async def test_a_flood_is_refused_by_nginx_and_metrics_stay_inside(
    behind_nginx: tuple[RunningHub, str, ssl.SSLContext],
) -> None:
    hub, public, trust = behind_nginx
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trust)) as http:

        async def status(path: str) -> int:
            async with http.get(public + path) as answer:
                await answer.read()
                return answer.status

        statuses = await asyncio.gather(*(status("/v1/agencies") for _ in range(400)))
        assert set(statuses) <= {401, 429}
        assert statuses.count(429) >= 100, "the burst of 200 is all nginx lets through"
        assert statuses.count(401) >= 200  # what got through was refused by the hub
        # the limit refills (50/s): the same client is served again within a second
        async with asyncio.timeout(STEP_S):
            while await status("/healthz") != 200:
                await asyncio.sleep(0.05)
        assert await status("/metrics") == 404
    # the hub itself still serves its metrics on loopback
    async with aiohttp.ClientSession() as direct:
        async with direct.get(f"http://127.0.0.1:{hub.settings.port}/metrics") as answer:
            assert answer.status == 200
