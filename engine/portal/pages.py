"""The portal's pages: Jinja2 templates (extending the report's ``base.html``) with HTMX for live
updates, on the same service as the JSON API.

Pages: ``/`` households and accounts (searchable); ``/accounts/{id}`` holdings against target,
the customization form with its live impact panel, the save, the audit log, the withdrawal form
and the taxes saved or deferred; ``/new`` a new account with its first trades and transition
chart; ``/rebalancing`` pending withdrawals and the latest run's decisions; ``/login``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pyarrow.compute as pc
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from engine.book.customizations import StaleVersion
from engine.contract.errors import CanopyError
from engine.contract.schema import Col
from engine.portal import views
from engine.portal.security import (CSRF_FIELD, Unauthenticated, check_csrf, csrf_token, current_user, rebalancing,
                                    sign_in, visible)
from engine.portal.service import Forbidden, Invalid, Portal
from engine.portal.service import impact as impact_of
from engine.portal.service import lots_from_csv
from engine.review.charts import transition_chart

__all__ = ["add_pages", "environment", "render"]


def _money(value: Any) -> str:
    return "-" if value is None else f"{'-' if value < -0.5 else ''}${abs(value):,.0f}"


def _pct(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def environment() -> Environment:
    """The portal's templates, then the report's (``base.html``), with the money and percent filters."""
    env = Environment(loader=ChoiceLoader([PackageLoader("engine.portal"), PackageLoader("engine.review")]),
                      autoescape=select_autoescape(["html"]))
    env.filters.update(money=_money, pct=_pct)
    return env


ENV = environment()


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Template ``name`` with the user, the CSRF token and ``context``."""
    try:
        user = current_user(request)
    except Unauthenticated:
        user = None
    html = ENV.get_template(name).render(request=request, user=user, csrf=csrf_token(request),
                                         csrf_field=CSRF_FIELD, **context)
    return HTMLResponse(html, status)


def _chart(plan: dict[str, list], budget: float | None, title: str) -> str:
    """The transition chart (engine.review.charts) as a PNG data URI."""
    buffer = io.BytesIO()
    transition_chart(np.asarray(plan["year"]), np.asarray(plan[Col.tracking_error_after]), np.asarray(plan["tax"]),
                     budget, buffer, title, start=plan[Col.tracking_error_before][0] if plan["year"] else None)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _account_context(portal: Portal, account_id: str) -> dict[str, Any]:
    run_rows = {r[Col.account_id]: r for r in views.decision_rows(portal)}
    return {Col.account_id: account_id, Col.household_id: portal.household_of(account_id),
            Col.value: portal.values.get(account_id), "classes": views.class_weights(portal, account_id),
            "form": views.form_choices(portal, account_id), "history": portal.history(account_id),
            "run": run_rows.get(account_id), "pending": [w for w in portal.pending_withdrawals()
                                                         if w[Col.account_id] == account_id],
            "rejected": portal.book.rejections.filter(
                pc.equal(portal.book.rejections.column(Col.account_id), account_id)).column(Col.message).to_pylist()}


async def _posted(request: Request, account_id: str):
    """A posted form about an account: its CSRF token checked, the user allowed; (user, form)."""
    await check_csrf(request)
    user = visible(request, account_id)
    return user, await request.form()


async def _account_error(request: Request, portal: Portal, account_id: str, exc: Exception) -> HTMLResponse:
    """The account page again with what was refused: 409 for a stale version, else 422."""
    context = await run_in_threadpool(_account_context, portal, account_id)
    return render(request, "account.html", 409 if isinstance(exc, StaleVersion) else 422, error=str(exc), **context)


def add_pages(app: FastAPI) -> None:
    """The HTML routes of the portal on ``app`` (whose ``state.portal`` is the service)."""
    portal: Portal = app.state.portal

    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request):
        return render(request, "login.html")

    @app.post("/login")
    async def login(request: Request):
        await check_csrf(request)
        form = await request.form()
        try:
            sign_in(request, form.get("user"), form.get("password"))
        except Unauthenticated as exc:
            return render(request, "login.html", 401, error=str(exc))
        return RedirectResponse("/", 303)

    @app.post("/logout")
    async def logout(request: Request):
        await check_csrf(request)
        request.session.clear()
        return RedirectResponse("/login", 303)

    @app.get("/", response_class=HTMLResponse)
    async def index(request: Request, q: str = ""):
        rows = views.account_rows(portal, current_user(request), q)
        return render(request, "index.html", rows=rows, q=q, run=portal.latest_run(), as_of=portal.as_of)

    @app.get("/accounts-table", response_class=HTMLResponse)
    async def accounts_table(request: Request, q: str = ""):
        return render(request, "accounts_table.html", rows=views.account_rows(portal, current_user(request), q))

    @app.get("/accounts/{account_id}", response_class=HTMLResponse)
    async def account(request: Request, account_id: str, saved: int | None = None):
        visible(request, account_id)
        context = await run_in_threadpool(_account_context, portal, account_id)
        return render(request, "account.html", saved=saved, **context)

    @app.post("/accounts/{account_id}/form", response_class=HTMLResponse)
    async def form_for_template(request: Request, account_id: str):
        _, form = await _posted(request, account_id)
        choices = views.form_choices(portal, account_id, form.get(Col.template_id))
        return render(request, "customize.html", account_id=account_id, form=choices)

    @app.post("/accounts/{account_id}/impact", response_class=HTMLResponse)
    async def impact(request: Request, account_id: str):
        _, form = await _posted(request, account_id)
        try:
            change = views.change_from_form(portal, account_id, form, form.getlist("screen"))
            result = await run_in_threadpool(portal.preview, account_id, change)
        except Invalid as exc:
            return render(request, "impact.html", error=exc)
        baseline = await run_in_threadpool(portal.baseline, account_id)
        return render(request, "impact.html", impact=result, baseline=impact_of(baseline, portal.book.securities))

    @app.post("/accounts/{account_id}/save")
    async def save(request: Request, account_id: str):
        user, form = await _posted(request, account_id)
        try:
            change = views.change_from_form(portal, account_id, form, form.getlist("screen"))
            change[Col.version] = int(form.get(Col.version) or -1)
            version = await run_in_threadpool(portal.save, account_id, change, user.name)
        except (Invalid, StaleVersion) as exc:
            return await _account_error(request, portal, account_id, exc)
        return RedirectResponse(f"/accounts/{account_id}?saved={version}", 303)

    @app.post("/accounts/{account_id}/withdrawals")
    async def withdraw(request: Request, account_id: str):
        user, form = await _posted(request, account_id)
        try:
            amount = float(str(form.get("amount") or "").replace(",", "").replace("$", ""))
        except ValueError:
            amount = form.get("amount")
        try:
            await run_in_threadpool(portal.request_withdrawal, account_id, amount, user.name, form.get(Col.note))
        except Invalid as exc:
            return await _account_error(request, portal, account_id, exc)
        return RedirectResponse(f"/accounts/{account_id}#withdrawals", 303)

    @app.get("/accounts/{account_id}/taxes", response_class=HTMLResponse)
    async def taxes(request: Request, account_id: str):
        visible(request, account_id)
        report = await run_in_threadpool(portal.taxes, account_id)
        return render(request, "taxes.html", account_id=account_id, report=report)

    @app.get("/new", response_class=HTMLResponse)
    async def new_page(request: Request):
        user = current_user(request)
        return render(request, "new.html", templates=views.form_choices(portal, None, "")["templates"],
                      households=sorted(user.households))

    @app.post("/new", response_class=HTMLResponse)
    async def new(request: Request):
        await check_csrf(request)
        user = current_user(request)
        form = await request.form()
        try:
            body = _new_account_body(form)
            household = body["account"].get(Col.household_id)
            if not user.may_see(household):
                raise Forbidden("account.household_id", f"{user.name} may create accounts only in their households")
            body["lots"] = await _lots(form)
            result = await run_in_threadpool(portal.create, body, user.name, int(form.get("years") or 5))
        except (Invalid, CanopyError) as exc:
            return render(request, "new.html", 422, error=str(exc), form=form,
                          templates=views.form_choices(portal, None, "")["templates"],
                          households=sorted(user.households))
        budget = result["yearly_tax_budget"]
        chart = _chart(result["plan"], budget, f"transition of {result[Col.account_id]}, prices held")
        return render(request, "created.html", result=result, chart=chart)

    @app.get("/rebalancing", response_class=HTMLResponse)
    async def group(request: Request):
        rebalancing(request)
        return render(request, "rebalancing.html", pending=portal.pending_withdrawals(),
                      decisions=views.decision_rows(portal), run=portal.latest_run())

    @app.post("/rebalancing/settle")
    async def settle(request: Request):
        await check_csrf(request)
        user = rebalancing(request)
        form = await request.form()
        await run_in_threadpool(portal.settle_withdrawal, form.get(Col.account_id), int(form.get(Col.version)),
                                user.name)
        return RedirectResponse("/rebalancing", 303)


def _new_account_body(form) -> dict[str, Any]:
    account: dict[str, Any] = {}
    for name in (Col.account_id, Col.household_id, Col.template_id, Col.tax_status):
        if form.get(name):
            account[name] = str(form.get(name)).strip()
    for name in (Col.cash, Col.tax_budget, Col.min_cash):
        text = str(form.get(name) or "").replace(",", "").replace("$", "").strip()
        if text:
            try:
                account[name] = float(text)
            except ValueError:
                raise Invalid(f"account.{name}", f"must be a number, got {text!r}") from None
    return {"account": account}


async def _lots(form) -> list[dict[str, Any]]:
    upload = form.get("lots")
    if upload is None or isinstance(upload, str) or not upload.filename:
        return []
    text = (await upload.read()).decode("utf-8-sig", errors="replace")
    return lots_from_csv(text)
