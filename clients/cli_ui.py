"""``siko ui``: the liaison officer's local web page, served by this process.

The process unlocks the agency's identity file, connects to the hub, and serves the
page on 127.0.0.1 only. It prints one link holding a secret made for this start;
only a browser that opened that link gets a session (see :mod:`clients.webui_guard`).
It runs until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

import keys
from clients import keytool, terminal
from clients.errors import ClientError
from clients.sdk import HubClient
from clients.terminal import EXISTING, PASSPHRASE_ENV
from clients.webui import WebUi

__all__ = ["ui"]


@click.command("ui")
@click.option("--key", required=True, type=EXISTING, help="Your agency's identity file.")
@click.option(
    "--hub", "hub_url", required=True, metavar="URL", help="The hub, e.g. https://hub.example"
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default="a free port",
    help="The port on 127.0.0.1 to serve the page on.",
)
@PASSPHRASE_ENV
def ui(key: Path, hub_url: str, port: int, passphrase_env: str | None) -> None:
    """Serve the liaison desk: channels, notes as they arrive, replies, read receipts.

    Notes are opened and replies sealed in this process, with your key; the browser
    never gets a key. The page is served on 127.0.0.1 only; open the link printed at
    start (it holds a secret made for this start; do not share it).

    \b
    Example:
      siko ui --key pp-duisburg.identity --hub https://hub.example
    """
    identity = keys.load_identity(key, terminal.passphrase(key, passphrase_env))
    try:
        asyncio.run(_serve(hub_url, identity, port))
    except ClientError as exc:
        raise keytool.ToolError(f"the hub at {hub_url}: {exc}") from None


async def _serve(hub_url: str, identity: keys.Identity, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with HubClient(hub_url, identity) as hub:
        web_ui = WebUi(hub, port=port)
        link = await web_ui.start()
        try:
            click.echo(f"siko ui: {identity.agency} at {hub_url}")
            click.echo("Open this link in your browser (it holds this start's secret):")
            click.echo(f"  {link}")
            click.echo("Stop with Ctrl-C.")
            await stop.wait()
        finally:
            await web_ui.stop()
    click.echo("siko ui: stopped")
