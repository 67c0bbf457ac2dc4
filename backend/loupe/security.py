"""Who may do what: the API token, read-only mode, same-origin writes and trusted Host headers.

One ASGI middleware checks each request, in this order: the Host header (400), the bearer token on
/api (401), for state-changing methods the Origin / Sec-Fetch-Site headers (403), read-only mode
(403 unless the route is a listed pure analysis) and the body's Content-Type (415). Body size limits
are FastAPI's own (`max_body_size`, set in app.py), which count the bytes as they arrive.

`resolve_auth` decides at start which token, if any, the server asks for: a non-loopback bind never
runs without one unless `insecure_no_auth` says so."""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import stat
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from starlette.routing import Match, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from loupe.settings import Settings

TOKEN_FILE = "api-token"
MIN_TOKEN_CHARS = 16
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Route = tuple[str, str]  # (HTTP method, route path template)

# Non-GET routes a read-only server still answers: they compute and return, and write nothing.
# Any other non-GET route is a write and gets 403 in read-only mode, new ones included.
PURE_ANALYSES: frozenset[Route] = frozenset(
    {
        ("POST", "/api/generate"),
        ("POST", "/api/generate/stream"),
        ("POST", "/api/steering/next-token"),
        ("POST", "/api/saes/{sae_id}/activations"),
        ("POST", "/api/influence"),
        ("POST", "/api/jacobian/layer"),
    }
)


# -- the token --------------------------------------------------------------------------------
class RefuseToStart(Exception):
    """The server must not start as configured; the message says what to change."""


@dataclass(frozen=True)
class Auth:
    token: str | None
    source: Literal["setting", "file", "generated", "loopback", "insecure"]
    path: Path | None = None  # the token file, for "file" and "generated"


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def resolve_auth(settings: Settings) -> Auth:
    """The token this server asks for: LOUPE_TOKEN; else none on a loopback host or with
    insecure_no_auth; else the workspace's token file, made (mode 0600) on first start."""
    if settings.token is not None:
        token = settings.token.get_secret_value()
        if len(token) < MIN_TOKEN_CHARS:
            raise RefuseToStart(
                f"LOUPE_TOKEN has {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
            )
        return Auth(token, "setting")
    if settings.insecure_no_auth:
        return Auth(None, "insecure")
    if is_loopback(settings.host):
        return Auth(None, "loopback")
    path = settings.workspace / TOKEN_FILE
    try:
        return _token_file(path)
    except (OSError, ValueError) as exc:
        raise RefuseToStart(
            f"LOUPE_HOST={settings.host} is not a loopback address, so Loupe needs a token, and the workspace's "
            f"token file {path} cannot be used: {exc}. Set LOUPE_TOKEN, fix the file (or delete it to make a new "
            "one), or pass --insecure-no-auth (LOUPE_INSECURE_NO_AUTH=1) to let anyone who reaches the port "
            "read and change this server."
        ) from exc


def _token_file(path: Path) -> Auth:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: never through an existing file or symlink
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            st = os.fstat(f.fileno())
            if st.st_mode & 0o077 or not stat.S_ISREG(st.st_mode):
                raise ValueError(f"it is readable by others (mode {stat.filemode(st.st_mode)}); chmod 600 it") from None
            token = f.read().strip()
        if len(token) < MIN_TOKEN_CHARS:
            raise ValueError(f"it holds {len(token)} characters, fewer than {MIN_TOKEN_CHARS}") from None
        return Auth(token, "file", path)
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return Auth(token, "generated", path)


def default_allowed_hosts(settings: Settings) -> list[str]:
    return settings.allowed_hosts or [settings.host, "localhost", "127.0.0.1", "::1"]


# -- the middleware -------------------------------------------------------------------------
class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        token: str | None,
        allowed_hosts: Iterable[str],
        read_only: bool = False,
        read_only_allowed: Collection[Route] = PURE_ANALYSES,
        body_types: Mapping[Route, str] | None = None,
        open_paths: Collection[str] = ("/api/health",),
        api_prefix: str = "/api",
    ):
        """`router`: the app's, to find a request's route template; `body_types`: routes whose body
        is not JSON (e.g. a multipart upload) and the media type they take instead."""
        self.app = app
        self.router = router
        self.token = token.encode() if token else None
        self.hosts = [_bare_host(h) for h in allowed_hosts]
        self.any_host = "*" in self.hosts
        self.read_only = read_only
        self.read_only_allowed = frozenset(read_only_allowed)
        self.body_types = dict(body_types or {})
        self.open_paths = frozenset(open_paths)
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        denied = self.check(scope)
        if denied is None:
            await self.app(scope, receive, send)
            return
        status, detail, headers = denied
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": detail}).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def check(self, scope: Scope) -> tuple[int, str, dict[str, str]] | None:
        """(status, message, headers) of the refusal, or None when the request may go on."""
        headers = _headers(scope)
        host = headers.get("host", "")
        if not self.any_host and not self._host_allowed(host):
            return (
                400,
                (
                    f"this server does not answer to the Host {host!r}; add the name clients use to "
                    "LOUPE_ALLOWED_HOSTS (it guards against DNS rebinding)"
                ),
                {},
            )
        path: str = scope["path"]
        is_api = path == self.api_prefix or path.startswith(self.api_prefix + "/")
        if self.token is not None and is_api and path not in self.open_paths:
            refusal = self._token_refusal(headers.get("authorization"))
            if refusal is not None:
                return refusal
        method: str = scope.get("method", "GET")
        if method not in STATE_CHANGING:
            return None
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "cross-site requests may not change this server (Sec-Fetch-Site: cross-site)", {}
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host):
            return 403, f"requests from {origin} may not change this server (its Origin is not this host)", {}
        route = (method, self._template(scope) or path)
        if self.read_only and route not in self.read_only_allowed:
            return (
                403,
                ("this server is read-only (LOUPE_READ_ONLY): reads and analyses work, writes and jobs do not"),
                {},
            )
        expected = self.body_types.get(route, "application/json")
        ctype = headers.get("content-type")
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if (ctype is not None or has_body) and _media_type(ctype or "") != expected:
            return 415, f"send the body as {expected} (Content-Type: {ctype or 'none'})", {}
        return None

    def _token_refusal(self, authorization: str | None) -> tuple[int, str, dict[str, str]] | None:
        assert self.token is not None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return (
                401,
                "this server needs a token: send `Authorization: Bearer <token>`",
                {"WWW-Authenticate": 'Bearer realm="loupe"'},
            )
        if not hmac.compare_digest(given.strip().encode(), self.token):
            return (
                401,
                "the token is not this server's",
                {"WWW-Authenticate": 'Bearer realm="loupe", error="invalid_token"'},
            )
        return None

    def _host_allowed(self, host_header: str) -> bool:
        host = _bare_host(host_header)
        if not host:
            return False
        return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in self.hosts)

    def _template(self, scope: Scope) -> str | None:
        for route in self.router.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return getattr(route, "path", None)
        return None


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _bare_host(host: str) -> str:
    """`Example.org:8000` -> example.org, `[::1]:8000` -> ::1; '' for a malformed header."""
    host = host.strip().lower()
    if host == "*" or host.startswith("*."):
        return host
    if not host or any(c in host for c in "@/?#\\ "):
        return ""
    if host.count(":") > 1 and not host.startswith("["):  # a bare IPv6 address, as settings give it
        return host
    try:
        return urlsplit("//" + host).hostname or ""
    except ValueError:
        return ""


def _same_origin(origin: str, host_header: str) -> bool:
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return False
    return bool(netloc) and netloc == host_header.strip().lower()


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()
