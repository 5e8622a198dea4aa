"""HTML pages from Jinja2 templates: one look for the run report, its taxes-saved pages and the advisor portal.

Every page extends ``base.html`` (``engine/review/templates/``), which carries
the one stylesheet inline (``canopy.css``), so a page written to a file opens
from ``file://`` with no server and looks the same when a server sends it.
``base.html`` has the blocks ``title``, ``head`` (more in ``<head>``), ``nav``
(above the content; empty here) and ``content``.

The templates here:

* ``report_index.html``: a run at a glance (:func:`engine.review.report.build_report`);
* ``account.html``: one account's page: ``taxes_saved.html`` (saved, deferred and
  year to date) and ``trades.html`` (every trade in words), both includable alone;
* ``macros.html``: ``table(headers, text_columns=1)`` (a ``{% call %}`` macro whose
  body gives the rows) and ``figure(src, caption)``.

Filters, for every environment made here: ``money`` (USD, whole dollars),
``pct`` (a fraction as a percent, ``digits`` 2), ``bps`` (a fraction in basis
points), ``number`` (Python's ``format`` with a spec, ``","`` by default),
``explain`` (a trade in words, :func:`engine.review.explain.explain`) and
``data_uri`` (PNG bytes as a ``data:`` URI, for a page that carries its charts).

Another package's templates extend these by putting its loader first:
``environment("engine.portal")`` searches ``engine/portal/templates/`` and then
``engine/review/templates/``; :func:`make_environment` builds an environment
with these filters around any other loader.
"""

from __future__ import annotations

import base64
import functools
from typing import Any

import jinja2

from engine.review.explain import explain

__all__ = ["environment", "make_environment", "render", "money", "percent", "basis_points", "number", "data_uri",
           "FILTERS"]


def money(value: float) -> str:
    """USD, whole dollars, thousands separated: ``$1,235``, ``-$40``."""
    return f"-${-value:,.0f}" if value < 0 else f"${value:,.0f}"


def percent(value: float, digits: int = 2) -> str:
    """A fraction as a percent with ``digits`` decimals: 0.0123 -> ``1.23%``."""
    return f"{100 * value:.{digits}f}%"


def basis_points(value: float, digits: int = 2) -> str:
    """A fraction in basis points (1e-4), without the unit: 0.0123 -> ``123.00``."""
    return f"{value * 1e4:.{digits}f}"


def number(value: float, spec: str = ",") -> str:
    """``format(value, spec)``: ``12345|number`` -> ``12,345``; ``2.5|number(",.4g")`` -> ``2.5``."""
    return format(value, spec)


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI, for an ``<img src>`` that needs no file beside the page."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


#: The filters every environment made here has, by name.
FILTERS = {"money": money, "pct": percent, "bps": basis_points, "number": number, "explain": explain,
           "data_uri": data_uri}


def make_environment(loader: jinja2.BaseLoader) -> jinja2.Environment:
    """A Jinja2 environment over ``loader`` with Canopy's settings and :data:`FILTERS`.

    HTML templates (``.html``) are autoescaped; an undefined name is an error
    (``StrictUndefined``), not an empty string; block tags leave no blank lines.
    """
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html", "htm", "xml"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(FILTERS)
    return env


@functools.lru_cache(maxsize=None)
def environment(*packages: str) -> jinja2.Environment:
    """The shared environment: the ``templates`` folder of each of ``packages`` in turn, then this package's.

    Cached per ``packages``: ``environment()`` is the report's,
    ``environment("engine.portal")`` the portal's, whose templates may
    ``{% extends "base.html" %}`` and include any template here.
    """
    loaders = [jinja2.PackageLoader(package, "templates") for package in (*packages, "engine.review")]
    return make_environment(jinja2.ChoiceLoader(loaders))


def render(name: str, /, **context: Any) -> str:
    """The template ``name`` of :func:`environment` rendered with ``context``."""
    return environment().get_template(name).render(**context)
