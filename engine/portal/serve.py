"""Starting the portal: the service over the book, its solver warmed, served by uvicorn."""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Callable, Mapping

from engine.contract.errors import ConfigError
from engine.contract.schema import Col
from engine.portal.service import Portal
from engine.simulate.transition import plan_transition

__all__ = ["warm", "is_loopback", "build", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warm(portal: Portal, say: Callable[[str], Any] = lambda text: None) -> dict[str, float]:
    """Compile (or load from the compilation cache) the solver shapes the portal meets first:
    tonight's proposal of the single-account household with the most lots and of the largest
    household, and one year of a transition plan.  Seconds of each step."""
    session = portal.session
    lots = session.tables["lots"].column(Col.account_id).value_counts().to_pylist()
    count = {row["values"]: row["counts"] for row in lots}
    usable = [a for a in session.household_of if a not in session.rejected and a in session.row_of
              and session.targets.usable[session.row_of[a]]]
    if not usable:
        return {}
    alone = [a for a in usable if len(session.members[session.household_of[a]]) == 1] or usable
    largest = max(usable, key=lambda a: (len(session.members[session.household_of[a]]), count.get(a, 0)))
    seconds = {}
    for account_id in dict.fromkeys([max(alone, key=lambda a: count.get(a, 0)), largest]):
        start = time.perf_counter()
        portal.baseline(account_id)
        seconds[f"proposal of {account_id}"] = time.perf_counter() - start
        say(f"warmed the solver on {account_id} ({seconds[f'proposal of {account_id}']:.1f} s)")
    start = time.perf_counter()
    plan_transition(session.tables, portal.as_of, alone[0], 1, portal.config)
    seconds["transition year"] = time.perf_counter() - start
    say(f"warmed the transition plan ({seconds['transition year']:.1f} s)")
    return seconds


def build(book: str, runs: str | None = None, host: str = "127.0.0.1", users_file: str | None = None,
          storage_options: Mapping[str, Any] | None = None, secret: str | None = None,
          say: Callable[[str], Any] = print):
    """The app, its service read and warmed; :class:`ConfigError` for a non-loopback host without users."""
    from engine.portal.app import create_app
    from engine.portal.users import load_users

    if users_file is None and not is_loopback(host):
        raise ConfigError(f"without --users the portal serves only this machine (127.0.0.1, ::1, localhost); "
                          f"--host {host} needs a users file (canopy portal-user)")
    users = load_users(users_file) if users_file else None
    start = time.perf_counter()
    portal = Portal(book, runs, storage_options=storage_options)
    say(f"read the book of {portal.as_of}: {portal.book.accounts.num_rows} accounts "
        f"({time.perf_counter() - start:.1f} s)")
    warm(portal, say)
    return create_app(portal, users, secret=secret)


def serve(book: str, runs: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          users_file: str | None = None, storage_options: Mapping[str, Any] | None = None,
          say: Callable[[str], Any] = print) -> None:
    """Build the app and serve it with uvicorn until interrupted; says when it is ready."""
    import uvicorn

    app = build(book, runs, host, users_file, storage_options, say=say)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    original = server.startup

    async def startup(*args, **kwargs):
        await original(*args, **kwargs)
        say(f"ready: http://{host if ':' not in host else f'[{host}]'}:{port}/")

    server.startup = startup
    server.run()
