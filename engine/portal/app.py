"""The portal's ASGI app: its JSON API, sign-in, sessions, CSRF and who may see what.

:func:`create_app` builds a FastAPI app over a :class:`~engine.portal.service.Portal`; the pages
(:mod:`engine.portal.pages`) and the API below call the same service.  Security:

* without a users file the app serves loopback only: requests must come from a loopback address
  and name a loopback host (``127.0.0.1``, ``localhost``, ``[::1]``), and the one local user is of
  the rebalancing group; with one, people sign in (``/login`` or ``POST /api/login``);
* sessions are signed cookies (Starlette's ``SessionMiddleware``, itsdangerous), SameSite=strict;
* every POST and PUT carries the session's CSRF token, as the ``csrf_token`` form field or the
  ``X-CSRF-Token`` header (HTMX and the API send the header); a missing, stale or forged token is 403;
* an advisor sees and changes only the households assigned to them (403 otherwise); the
  rebalancing group sees all and alone sees the rebalancing page.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from engine.book.customizations import StaleVersion
from engine.contract.schema import Col
from engine.portal.pages import add_pages, render
from engine.portal.security import (CSRF_HEADER, Unauthenticated, check_csrf, csrf_token, current_user, rebalancing,
                                    sign_in, visible)
from engine.portal.service import Forbidden, Invalid, NotFound, Portal
from engine.portal.users import LOCAL_USER, User

__all__ = ["create_app", "LOOPBACK_HOSTS", "CSRF_HEADER", "plain_json"]

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
STATIC = Path(__file__).with_name("static")


class LoopbackOnly:
    """ASGI middleware: 403 for a request from an address that is not loopback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = (scope.get("client") or ("",))[0]
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                response = JSONResponse({Col.detail: "this portal serves only this machine (no users file)"}, 403)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def _errors(app: FastAPI) -> None:
    def handler(status: int):
        async def respond(request: Request, exc: Invalid):
            if not request.url.path.startswith("/api/"):
                return render(request, "error.html", status, error=exc)
            return JSONResponse({Col.detail: str(exc), "field": exc.field}, status)
        return respond

    app.add_exception_handler(NotFound, handler(404))
    app.add_exception_handler(Forbidden, handler(403))
    app.add_exception_handler(Invalid, handler(422))

    @app.exception_handler(StaleVersion)
    async def stale(request: Request, exc: StaleVersion) -> JSONResponse:
        return JSONResponse({Col.detail: str(exc), Col.version: exc.current}, 409)

    @app.exception_handler(Unauthenticated)
    async def unauthenticated(request: Request, exc: Unauthenticated) -> JSONResponse:
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({Col.detail: str(exc)}, 401)
        return RedirectResponse("/login", 303)


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def plain_json(content: Any) -> JSONResponse:
    """``content`` (plain dicts, lists, numbers, text) as JSON, without FastAPI's slower generic
    encoder: a preview's hundreds of trades are sent as they are."""
    try:
        return JSONResponse(content)
    except ValueError:                        # a NaN or infinity somewhere
        return JSONResponse(_finite(content))


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise Invalid("body", "is not valid JSON") from None


def _api(app: FastAPI) -> None:
    portal: Portal = app.state.portal

    @app.get("/api/session")
    async def session(request: Request):
        users = request.app.state.users
        name = request.session.get("user") if users is not None else LOCAL_USER.name
        user = users[name][0] if users is not None and name in users else (LOCAL_USER if users is None else None)
        return {"user": user and user.name, "role": user and user.role, "csrf_token": csrf_token(request)}

    @app.post("/api/login")
    async def login(request: Request):
        await check_csrf(request)
        body = await _json(request)
        user = sign_in(request, body.get("user"), body.get("password"))
        return {"user": user.name, "role": user.role, "csrf_token": csrf_token(request)}

    @app.get("/api/accounts")
    async def accounts(request: Request, q: str = ""):
        from engine.portal.views import account_rows
        return {"accounts": account_rows(portal, current_user(request), q)}

    @app.get("/api/accounts/{account_id}")
    async def get_account(request: Request, account_id: str):
        visible(request, account_id)
        return portal.customization(account_id)

    @app.post("/api/accounts/{account_id}/preview")
    async def preview(request: Request, account_id: str):
        await check_csrf(request)
        visible(request, account_id)
        fresh = "no-cache" in request.headers.get("cache-control", "")
        body = await _json(request)
        return plain_json(await run_in_threadpool(lambda: portal.preview(account_id, body, fresh=fresh)))

    @app.put("/api/accounts/{account_id}")
    async def save(request: Request, account_id: str):
        await check_csrf(request)
        user = visible(request, account_id)
        version = await run_in_threadpool(portal.save, account_id, await _json(request), user.name)
        return {**portal.customization(account_id), Col.version: version}

    @app.get("/api/accounts/{account_id}/history")
    async def history(request: Request, account_id: str):
        visible(request, account_id)
        return {"history": portal.history(account_id)}

    @app.get("/api/accounts/{account_id}/taxes")
    async def taxes(request: Request, account_id: str):
        visible(request, account_id)
        return await run_in_threadpool(portal.taxes, account_id)

    @app.post("/api/accounts")
    async def create(request: Request):
        await check_csrf(request)
        user = current_user(request)
        body = await _json(request)
        household = (body.get("account") or {}).get(Col.household_id) if isinstance(body, dict) else None
        if not user.may_see(household):
            raise Forbidden("account.household_id", f"{user.name} may create accounts only in their households")
        return plain_json(await run_in_threadpool(portal.create, body, user.name, int(body.get("years", 5))))

    @app.post("/api/accounts/{account_id}/withdrawals")
    async def withdraw(request: Request, account_id: str):
        await check_csrf(request)
        user = visible(request, account_id)
        body = await _json(request)
        if not isinstance(body, dict):
            raise Invalid("body", "must be an object with amount (USD) and an optional note")
        version = await run_in_threadpool(portal.request_withdrawal, account_id, body.get("amount"), user.name,
                                          body.get(Col.note))
        return {Col.account_id: account_id, Col.version: version}

    @app.get("/api/rebalancing")
    async def group(request: Request):
        rebalancing(request)
        from engine.portal.views import decision_rows
        return {"pending_withdrawals": portal.pending_withdrawals(), "decisions": decision_rows(portal)}


def create_app(portal: Portal, users: dict[str, tuple[User, str]] | None = None, *, secret: str | None = None
               ) -> FastAPI:
    """The portal's app over ``portal``; ``users`` from :func:`engine.portal.users.load_users`
    (None: loopback only, one local user)."""
    app = FastAPI(title="Canopy advisor portal", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.portal, app.state.users = portal, users
    _errors(app)
    _api(app)
    add_pages(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(SessionMiddleware, secret_key=secret or secrets.token_urlsafe(32),
                       session_cookie="canopy_portal", same_site="strict", max_age=12 * 3600)
    if users is None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)
        app.add_middleware(LoopbackOnly)
    return app
