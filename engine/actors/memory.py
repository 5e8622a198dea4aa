"""Keep the memory a process frees for its own next use instead of handing it back.

On a virtual machine whose host takes back the guest's free memory (virtio
free page reporting, balloon drivers; the development machine is such a VM),
memory a process hands back and later touches again faults on the host
first. There, 1 GB filled 5 s after the process had freed it took 3.0–3.5 s,
against 0.04 s when the process kept it. The nightly job
frees and allocates gigabytes in every stage (the 100,000-account book's 33
million lots: their codes, sorts and cuts in the driver, each shard's arrays
in the actors), and the driver of a 100,000-account night spent 72.8 s in
the kernel against 37.8 s computing.

glibc's ``malloc`` hands every block above its mmap threshold (32 MB at
most) back to the system on ``free`` and trims the top of its heap; Arrow's
default allocator, mimalloc, purges freed pages too. :func:`keep_freed_memory`
turns both off for the calling process: ``mallopt`` sends every allocation
to the heap and never trims it, and Arrow allocates through ``malloc``. The
process's resident memory then stays at its peak until it exits, which suits
the nightly job's driver and its long-lived solver actors; its peak is the
same. Elsewhere than glibc (macOS, musl) nothing changes.

``CANOPY_KEEP_FREED_MEMORY=0`` leaves the allocators as they are.
"""

from __future__ import annotations

import ctypes
import logging
import os

__all__ = ["ENV", "keep_freed_memory"]

log = logging.getLogger(__name__)

#: Set to 0 to leave the allocators alone.
ENV = "CANOPY_KEEP_FREED_MEMORY"

# glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_kept: list[bool] = []


def keep_freed_memory() -> bool:
    """Make this process keep what it frees (see the module); returns whether it now does.

    Idempotent. Does nothing where ``CANOPY_KEEP_FREED_MEMORY`` is 0 or the
    C library has no glibc ``mallopt``.
    """
    if os.environ.get(ENV, "1").strip() == "0":
        return False
    if _kept:
        return _kept[0]
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        _kept.append(False)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # -1 is read as the largest size_t: the heap is never trimmed
    kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    if kept:
        import pyarrow as pa

        pa.set_memory_pool(pa.system_memory_pool())
    else:
        log.debug("mallopt refused; the allocators are left as they are")
    _kept.append(kept)
    return kept
