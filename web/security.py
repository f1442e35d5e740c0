"""What stands between a photo server on a home network and its visitors.

- Loopback binds need no token (only this machine can reach them); any other bind needs the
  token kept in the state folder, made and printed once, or the server refuses to start.
- Every action is a POST carrying the CSRF token of a double-submit cookie (SameSite=Strict).
- Every path in a URL is confined to the output folders: `..`, encoded slashes and symlinks
  that lead out are answered 404 with a log line, never followed.
- CSP and nosniff on every response; no stack trace ever reaches a response.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Iterable

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nordlys.daemon.config import ConfigError

log = structlog.get_logger(__name__)

TOKEN_FILE = "web-token"  # in the state folder, beside the journal
TOKEN_COOKIE, CSRF_COOKIE, CSRF_FIELD, CSRF_HEADER = "nordlys_token", "nordlys_csrf", "csrf", "x-csrf-token"
HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class StartError(ConfigError):
    """The server must not start this way; the message says why and what to do instead (exit 2)."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_or_make_token(state: Path) -> tuple[str, bool]:
    """The access token for non-loopback binds, and whether it was just made (then it is printed
    once: it is never logged). Made with mode 0600, so only the service's user can read it."""
    path = state / TOKEN_FILE
    try:
        token = path.read_text().strip()
        if token:
            return token, False
    except FileNotFoundError:
        pass
    state.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, True


def confine(relative: str, raw_path: bytes, root: Path, folders: Iterable[Path]) -> Path | None:
    """The real path a URL names (relative to the output root), when it lies inside one of the
    output `folders`; else
    None and a log line. Refused: encoded slashes or backslashes (a path part may not hide one),
    `..` and `.` parts, NUL, and anything whose real path (symlinks followed) leaves the roots."""
    lowered = raw_path.lower()
    parts = relative.split("/")
    why = ""
    if b"%2f" in lowered or b"%5c" in lowered or "\\" in relative:
        why = "encoded slash"
    elif any(p in ("..", ".", "") for p in parts) or "\x00" in relative:
        why = "dot or empty part"
    if not why:
        candidate = Path(os.path.realpath(Path(root) / relative))
        if any(Path(os.path.realpath(folder)) in candidate.parents for folder in folders):
            return candidate
        why = "outside the output folders"
    log.warning("path refused", path=relative, raw=raw_path.decode("latin-1"), reason=why)
    return None


def csrf_ok(request: Request, submitted: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and bool(submitted) and hmac.compare_digest(cookie, submitted or "")


class Guard:
    """ASGI middleware: the token check for non-loopback binds, the Host check that keeps DNS
    rebinding off a loopback bind, and the security headers on every response."""

    def __init__(self, app: ASGIApp, *, token: str | None, allowed_hosts: frozenset[str] | None) -> None:
        self.app, self.token, self.allowed_hosts = app, token, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self._refusal(request)

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.decode().lower() not in HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items()]
                if self.token and request.query_params.get("token") and refusal is None:
                    headers.append((b"set-cookie", f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; "
                                                   f"Path=/".encode()))
                message["headers"] = headers
            await send(message)

        if refusal is not None:
            status, text = refusal
            await send_with_headers({"type": "http.response.start", "status": status,
                                     "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send_with_headers({"type": "http.response.body", "body": text.encode()})
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:  # logged by the app's handler, which also answered; never a trace to the client
            if not started:
                log.exception("request failed", path=request.url.path)
                await send_with_headers({"type": "http.response.start", "status": 500,
                                         "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send_with_headers({"type": "http.response.body", "body": b"500: something went wrong\n"})

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if self.allowed_hosts is not None and host not in self.allowed_hosts:
            log.warning("request refused", reason="unexpected Host header", host=host)
            return 421, "unexpected Host header: use http://127.0.0.1 or http://localhost\n"
        if self.token is None or request.url.path == "/static/style.css":
            return None
        given = (request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
                 or request.headers.get("authorization", "").removeprefix("Bearer ").strip())
        if given and hmac.compare_digest(given, self.token):
            return None
        log.warning("request refused", reason="missing or wrong token", path=request.url.path,
                    client=request.client.host if request.client else "")
        return 401, "a token is needed: open the address printed by `nordlys web` (…/?token=…)\n"
