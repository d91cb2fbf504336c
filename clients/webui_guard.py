"""Who may talk to the local web UI: the rules, with no I/O.

The UI server holds the agency's unlocked identity, so anything that can make it act
can post notes and sign read receipts as the agency. It listens on 127.0.0.1 only,
yet every local user and every web page the officer's browser opens can reach
127.0.0.1. So every request must pass all of these:

* **Host** is exactly ``127.0.0.1:<port>`` — a page served under another name that
  resolves to 127.0.0.1 (DNS rebinding) is refused.
* **Session**: a cookie minted by ``/login/<secret>``. The secret is random per start
  and printed once, on the officer's terminal; other local users never see it. The
  cookie (HttpOnly, SameSite=Strict, a fresh random value per login, never the secret
  itself) keeps the secret out of every later request, the page's script and the
  Referer.
* **Same origin**: ``Sec-Fetch-Site`` must be ``same-origin`` (``none`` too, for the
  page itself, typed or pasted into the address bar), and ``Origin``, when sent, must
  be this UI's own. SameSite=Strict alone is not enough: a page on another port of
  127.0.0.1 is "same-site" and would get the cookie; it is not same-origin.
* **No CORS**: no ``Access-Control-*`` header is ever sent and preflights (OPTIONS)
  are refused, so no other origin can read an answer.
* **JSON bodies only** for writes: a cross-site HTML form cannot send
  ``application/json`` without a preflight.

Browsers without Fetch Metadata (before Chromium 76, Firefox 90, Safari 16.4) cannot
use the UI: refusing them is the price of checking.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

__all__ = ["COOKIE", "SECURITY_HEADERS", "Guard", "Refusal"]

COOKIE: Final = "siko_ui"
SECRET_BYTES: Final = 32
MAX_SESSIONS: Final = 16
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
WRITE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PAGE_PATHS: Final = frozenset({"/"})


class Refusal(Exception):
    """A request the UI will not serve (HTTP 403); the reason names no secret."""


@dataclass
class Guard:
    """The per-start secret, the sessions it minted, and the checks on every request."""

    port: int
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(SECRET_BYTES))
    sessions: list[str] = field(default_factory=list)

    @property
    def origin(self) -> str:
        """The UI's one origin."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def login_url(self) -> str:
        """The link to print once on start; opening it starts a browser session."""
        return f"{self.origin}/login/{self.secret}"

    def login(self, token: str, headers: Mapping[str, str]) -> str:
        """Check a login link's token and context; return a new session cookie value."""
        self._check_host(headers)
        if headers.get("Sec-Fetch-Site", "none") not in ("none", "same-origin"):
            raise Refusal("open the link printed by 'siko ui' yourself, not from another site")
        if not hmac.compare_digest(token.encode(), self.secret.encode()):
            raise Refusal("this link is not this UI's; use the one 'siko ui' printed")
        session = secrets.token_urlsafe(SECRET_BYTES)
        self.sessions = [*self.sessions[-(MAX_SESSIONS - 1) :], session]
        return session

    def check(self, method: str, path: str, headers: Mapping[str, str], cookie: str) -> None:
        """Refuse a request that is not from this UI's own page in a logged-in browser."""
        self._check_host(headers)
        if method == "OPTIONS":
            raise Refusal("no cross-origin requests (CORS) are served")
        if not any(hmac.compare_digest(cookie.encode(), s.encode()) for s in self.sessions):
            raise Refusal("no session: open the link 'siko ui' printed")
        site = headers.get("Sec-Fetch-Site")
        allowed = ("same-origin", "none") if method == "GET" and path in PAGE_PATHS else ()
        if site != "same-origin" and site not in allowed:
            raise Refusal(f"only this UI's own page may call it (Sec-Fetch-Site: {site})")
        origin = headers.get("Origin")
        if origin is not None and origin != self.origin:
            raise Refusal("only this UI's own page may call it (another Origin)")
        if method in WRITE_METHODS:
            if origin is None:
                raise Refusal("a change must come from this UI's own page (no Origin)")
            if headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
                raise Refusal("send changes as application/json")

    def _check_host(self, headers: Mapping[str, str]) -> None:
        if headers.get("Host") != f"127.0.0.1:{self.port}":
            raise Refusal(f"address this UI as {self.origin}")
