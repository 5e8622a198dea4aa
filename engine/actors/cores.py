"""Pin a solver actor to a core of its own on its node.

The nightly job runs one solver actor per CPU.  Left to the kernel, each
actor's XLA threads (XLA's CPU backend keeps two, whatever ``XLA_FLAGS``
say) wander over every core and share them with the other actors' threads;
pinned one actor to one core, a 2-core machine ran a night 4.5–7% faster.

Ray does not say which core an actor's CPU is, so the actors of a node
agree among themselves: each takes an exclusive ``flock`` on one file per
core in a node-local directory and holds it while it lives.  A lock dies
with its process, so a restarted actor finds the core of the one it
replaces free.  Where every core is taken (more actors than cores) or the
platform has no affinity (not Linux), the actor is left unpinned.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

#: Held for the process's lifetime: the file whose lock is its core.
_HELD: list = []


def lock_directory() -> Path:
    """Where this node's actors keep their core locks (per user)."""
    return Path(tempfile.gettempdir()) / f"canopy-cores-{os.getuid()}"


def pin_to_free_core(directory: Path | None = None) -> int | None:
    """Pin this process to the first core no other live actor holds; returns it, or None.

    A process that already holds a core keeps it.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    if _HELD:
        return _HELD[0][0]
    directory = directory or lock_directory()
    directory.mkdir(parents=True, exist_ok=True)
    for core in sorted(os.sched_getaffinity(0)):
        handle = open(directory / f"core-{core}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        os.sched_setaffinity(0, {core})
        _HELD.append((core, handle))
        return core
    return None


__all__ = ["lock_directory", "pin_to_free_core"]
