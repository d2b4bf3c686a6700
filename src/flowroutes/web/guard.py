"""The explorer's request guards (ASGI middleware), applied before any endpoint runs:

- `HostCheck`: Starlette's TrustedHostMiddleware (only the Host names the server was started for: loopback by
  default, so a page whose name was rebound to 127.0.0.1 gets nothing), answering a refused Host in one JSON line.
- `TokenCheck`: when the server has a token (any non-loopback --host), every request carries it as a cookie
  (set by opening the printed ?token= address), a ?token= parameter or an `Authorization: Bearer` header.
- `SameOrigin`: /api/ refuses requests another site's page makes (Sec-Fetch-Site, else Origin), so an <img> or
  a form on any web page cannot spend this server's time; every answer gets nosniff / no-framing headers.

Request bodies are capped by FastAPI's own `max_body_size` (see app.py), before they are read whole.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PASSED = "flowroutes.host_ok"


async def answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Send {"detail": detail} with `status` (a refusal made before any endpoint ran)."""
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class _MarkPassed:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[PASSED] = True
        await self.app(scope, receive, send)


class HostCheck(TrustedHostMiddleware):
    """TrustedHostMiddleware (exact names; "*" allows any), whose refusal is one JSON line saying what to do."""

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]):
        # Starlette keeps the brackets of an IPv6 Host ("[::1]:8050" -> "[::1]")
        names = [f"[{h.strip('[]')}]" if ":" in h else h for h in allowed_hosts]
        super().__init__(_MarkPassed(app), allowed_hosts=names, www_redirect=False)
        self.names = ", ".join(h for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        refused = False

        async def send_or_refuse(message: Message) -> None:
            nonlocal refused
            if scope.get(PASSED):
                await send(message)
            elif not refused:  # TrustedHostMiddleware's own plain-text 400: say what to do instead
                refused = True
                host = Headers(scope=scope).get("host", "")
                await answer(send, 400, f"this server does not answer for the host name {host!r}: open it as "
                                        f"{self.names} (or restart flowroutes serve with --host set to that name)")

        await super().__call__(scope, receive, send_or_refuse)


class TokenCheck:
    """Refuse (401) any request without the server's token; a valid ?token= sets an HttpOnly cookie."""

    def __init__(self, app: ASGIApp, token: str):
        self.app = app
        self.token = token.encode()
        self.cookie = "flowroutes-token-" + hashlib.sha256(self.token).hexdigest()[:8]  # one per server

    def _valid(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        by_cookie = self._valid(request.cookies.get(self.cookie))
        by_query = self._valid(request.query_params.get("token"))
        if not (by_cookie or by_query or self._valid(bearer)):
            await answer(send, 401, "this server needs its access token: open the address that `flowroutes serve` "
                                    "printed (it ends in ?token=...), or send 'Authorization: Bearer TOKEN'")
            return
        if not by_query or by_cookie:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(
                    "set-cookie", f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_cookie)


class SameOrigin:
    """Refuse (403) /api/ requests made by another site's page; add protective headers to every answer."""

    SAFE_SITES = ("same-origin", "none")  # "none": typed into the address bar or opened from a bookmark

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if scope["path"].startswith("/api/"):
            site, origin = headers.get("sec-fetch-site"), headers.get("origin")
            foreign = site not in self.SAFE_SITES if site is not None else (
                origin is not None and urlsplit(origin).netloc != headers.get("host", ""))
            if foreign:
                await answer(send, 403, "cross-site request refused: the flowroutes API answers only its own page; "
                                        "open the explorer's address instead")
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = MutableHeaders(scope=message)
                extra.setdefault("x-content-type-options", "nosniff")
                extra.setdefault("x-frame-options", "DENY")
                extra.setdefault("referrer-policy", "no-referrer")
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TimeLimit:
    """Every request works under `flowroutes.deadline.time_limit(seconds)`: the forward pass, the routes walk and
    the token display stop at their next check once it has passed, and waits for a model's lock end there too
    (the endpoint answers 503). None: no limit."""

    def __init__(self, app: ASGIApp, seconds: float | None):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from ..deadline import time_limit

        with time_limit(self.seconds):  # a context variable: the endpoint's worker thread runs in a copy of it
            await self.app(scope, receive, send)
