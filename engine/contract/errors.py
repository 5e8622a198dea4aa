"""The errors Canopy raises at its edges.

Inside jitted and Numba code nothing raises: every account carries a status
code instead.  At the edges (reading a book, loading a config, writing a run)
a problem that stops the work raises one of these, with a message that says
what was expected, what came, and where (table, column, key).
"""

from __future__ import annotations


class CanopyError(Exception):
    """Base of every error Canopy raises on purpose."""


class BookError(CanopyError):
    """A problem with the whole book: the run stops and writes nothing.

    Parameters
    ----------
    message
        What was expected and what came, in words a person can act on.
    table, column, key
        Where the problem is, when known.
    """

    def __init__(self, message: str, *, table: str | None = None,
                 column: str | None = None, key: str | None = None):
        self.table, self.column, self.key = table, column, key
        where = ", ".join(
            f"{name} {value!r}"
            for name, value in (("table", table), ("column", column), ("key", key))
            if value is not None
        )
        super().__init__(f"{where}: {message}" if where else message)


class SchemaError(BookError):
    """A table whose columns or types do not match the contract."""


class ConfigError(CanopyError):
    """A configuration file or value that cannot be used."""


class RunError(CanopyError):
    """A run that cannot be committed (already committed, too many failures)."""


class RulesError(ConfigError):
    """An approval rules file that cannot be used: names the rule, its expression and what is wrong."""
