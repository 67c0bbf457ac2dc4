"""Who may do what: the API token, read-only mode, same-origin writes and trusted Host headers.

One ASGI middleware checks each request, in this order: the Host header (400), the bearer token on
/api (401), for state-changing methods the Origin / Sec-Fetch-Site headers (403), read-only mode
(403 unless the route is a listed pure analysis) and the body's Content-Type (415); then the body's
size (413), by its Content-Length and by counting the bytes as they arrive. (FastAPI's own
`max_body_size` answers a too-large Content-Length with a fixed text/plain body that replaces any
other, so the JSON error, and the limit it names, would be lost.)

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

from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loupe.settings import Settings

TOKEN_FILE = "api-token"
MIN_TOKEN_CHARS = 16
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Route = tuple[str, str]  # (HTTP method, route path template)
Refusal = tuple[int, str, dict[str, str]]  # status, message, headers

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
                raise ValueError(f"its mode is {stat.filemode(st.st_mode)}, open to others; chmod 600 it") from None
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
        max_body_bytes: int | None = None,
        body_limits: Mapping[Route, int] | None = None,
        body_types: Mapping[Route, str] | None = None,
        open_paths: Collection[str] = ("/api/health",),
        api_prefix: str = "/api",
    ):
        """`router`: the app's, to find a request's route template; `body_limits`: routes with a limit
        of their own instead of `max_body_bytes`; `body_types`: routes whose body is not JSON (e.g. a
        multipart upload) and the media type they take instead."""
        self.app = app
        self.router = router
        self.token = token.encode() if token else None
        self.hosts = [_bare_host(h) for h in allowed_hosts]
        self.any_host = "*" in self.hosts
        self.read_only = read_only
        self.read_only_allowed = frozenset(read_only_allowed)
        self.max_body_bytes = max_body_bytes
        self.body_limits = dict(body_limits or {})
        self.body_types = dict(body_types or {})
        # finding a route's template scans the routes (~0.15 ms a request); only do it where an answer depends on it
        self.needs_template = read_only or any("{" in p for _, p in (*self.body_types, *self.body_limits))
        self.open_paths = frozenset(open_paths)
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal, limit = self.check(scope)
        if refusal is None:
            await self.app(scope, receive if limit is None else _counted(receive, limit), send)
            return
        status, detail, headers = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": detail}).encode()
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    def check(self, scope: Scope) -> tuple[Refusal | None, int | None]:
        """The refusal (None: the request may go on) and the limit on its body (None: no body)."""
        headers = _headers(scope)
        host = headers.get("host", "")
        if not self.any_host and not self._host_allowed(host):
            msg = f"this server does not answer to the Host {host!r}; add the name clients use to LOUPE_ALLOWED_HOSTS"
            return (400, msg + " (it guards against DNS rebinding)", {}), None
        path: str = scope["path"]
        is_api = path == self.api_prefix or path.startswith(self.api_prefix + "/")
        if self.token is not None and is_api and path not in self.open_paths:
            refusal = self._token_refusal(headers.get("authorization"))
            if refusal is not None:
                return refusal, None
        method: str = scope.get("method", "GET")
        route = (method, path)
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        if method in STATE_CHANGING:
            refusal, route = self._write_refusal(scope, headers, has_body)
            if refusal is not None:
                return refusal, None
        limit = self.body_limits.get(route, self.max_body_bytes)
        if not has_body or limit is None:
            return None, None
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return (413, too_large(limit), {}), None
        return None, limit

    def _write_refusal(self, scope: Scope, headers: dict[str, str], has_body: bool) -> tuple[Refusal | None, Route]:
        """Same-origin, read-only and Content-Type checks of a state-changing request; its route."""
        route = (scope["method"], scope["path"])
        if headers.get("sec-fetch-site") == "cross-site":
            return (403, "cross-site requests may not change this server (Sec-Fetch-Site: cross-site)", {}), route
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, headers.get("host", "")):
            msg = f"requests from {origin} may not change this server (its Origin is not this host)"
            return (403, msg, {}), route
        if self.needs_template:
            route = (scope["method"], self._template(scope) or scope["path"])
        if self.read_only and route not in self.read_only_allowed:
            msg = "this server is read-only (LOUPE_READ_ONLY): reads and analyses work, writes and jobs do not"
            return (403, msg, {}), route
        expected = self.body_types.get(route, "application/json")
        ctype = headers.get("content-type")
        if (ctype is not None or has_body) and _media_type(ctype or "") != expected:
            return (415, f"send the body as {expected} (Content-Type: {ctype or 'none'})", {}), route
        return None, route

    def _token_refusal(self, authorization: str | None) -> Refusal | None:
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
        """The path template of the route FastAPI will pick (included routers flattened, as its OpenAPI does)."""
        for route in iter_route_contexts(self.router.routes):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.path_format
        return None


def too_large(limit: int) -> str:
    return f"the request body is larger than this server's limit of {limit:,} bytes"


def _counted(receive: Receive, limit: int) -> Receive:
    """`receive`, refusing a body once more than `limit` bytes of it have come (a chunked body has no
    Content-Length to check first). FastAPI passes an HTTPException raised here on to the handlers."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, too_large(limit))
        return message

    return counted


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
