"""Who is asking and whether they may: the signed-in user, CSRF tokens, households an advisor may see.

Used by the JSON API (:mod:`engine.portal.app`) and the pages (:mod:`engine.portal.pages`) alike.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from fastapi import Request

from engine.contract.errors import CanopyError
from engine.portal.service import Forbidden
from engine.portal.users import LOCAL_USER, Role, User, verify_password

__all__ = ["Unauthenticated", "CSRF_HEADER", "CSRF_FIELD", "csrf_token", "check_csrf", "current_user", "visible",
           "rebalancing", "sign_in"]

CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class Unauthenticated(CanopyError):
    """No signed-in user (401; the pages send the browser to /login)."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(CSRF_FIELD)
    if not token:
        token = request.session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


async def check_csrf(request: Request) -> None:
    """Raise :class:`Forbidden` unless the request carries the session's CSRF token."""
    expected = request.session.get(CSRF_FIELD)
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await request.form()).get(CSRF_FIELD)
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given, expected):
        raise Forbidden("csrf_token", "the form's security token is missing or out of date; reload the page")


def current_user(request: Request) -> User:
    """The signed-in user (the local user without a users file); :class:`Unauthenticated` if none."""
    users = request.app.state.users
    if users is None:
        return LOCAL_USER
    name = request.session.get("user")
    if name not in users:
        raise Unauthenticated("sign in first")
    return users[name][0]


def visible(request: Request, account_id: str) -> User:
    """The user, if they may see ``account_id``; :class:`Forbidden` or :class:`NotFound` otherwise."""
    user = current_user(request)
    household = request.app.state.portal.household_of(account_id)
    if not user.may_see(household):
        raise Forbidden("account", f"account {account_id} is not in a household assigned to {user.name}")
    return user


def rebalancing(request: Request) -> User:
    user = current_user(request)
    if user.role != Role.rebalancing:
        raise Forbidden("role", "only the rebalancing group may do this")
    return user


def sign_in(request: Request, name: Any, password: Any) -> User:
    """Check ``name`` and ``password`` against the users file and start the session."""
    users = request.app.state.users or {}
    entry = users.get(name) if isinstance(name, str) else None
    if entry is None or not isinstance(password, str) or not verify_password(password, entry[1]):
        raise Unauthenticated("unknown user or wrong password")
    request.session.clear()
    request.session["user"] = name
    csrf_token(request)
    return entry[0]
