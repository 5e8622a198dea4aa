"""engine.actors.memory: a process that keeps what it frees, checked in fresh processes (the setting is process-wide)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from engine.actors.memory import ENV

ROOT = Path(__file__).resolve().parents[1]

# How much resident memory a process gives back when it frees 256 MB it has filled, and which
# allocator Arrow then uses.
PROBE = """
import json, os
import numpy as np
from engine.actors.memory import keep_freed_memory

def resident():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

kept = keep_freed_memory()
import pyarrow as pa
block = np.ones(32 * 2**20, np.int64)
before = resident()
del block
print(json.dumps({"kept": kept, "given_back": before - resident(),
                  "arrow": pa.default_memory_pool().backend_name}))
"""


def _probe(**env) -> dict:
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                                 reason="mallopt is glibc's")


@linux_glibc
def test_a_process_that_keeps_freed_memory_gives_none_back():
    found = _probe(**{ENV: "1"})
    assert found["kept"] is True
    assert found["given_back"] < 16 * 2**20
    assert found["arrow"] == "system"


@linux_glibc
def test_by_default_malloc_gives_a_large_block_back_and_the_setting_can_be_turned_off():
    found = _probe(**{ENV: "0"})
    assert found["kept"] is False
    assert found["given_back"] > 200 * 2**20
    assert found["arrow"] != "system"
