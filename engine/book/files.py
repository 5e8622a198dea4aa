"""The fsspec filesystem of a URI: the one place the book's modules open one."""

from __future__ import annotations

from typing import Any, Mapping

from fsspec.core import url_to_fs

from engine.contract.errors import BookError

__all__ = ["filesystem"]


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None):
    """The fsspec filesystem and the path inside it for ``uri``."""
    try:
        return url_to_fs(str(uri), **(storage_options or {}))
    except (ValueError, ImportError) as exc:
        raise BookError(f"cannot open {uri!r}: {exc}") from None
