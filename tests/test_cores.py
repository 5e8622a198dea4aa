"""Solver actors pin themselves to distinct cores (engine.actors.cores)."""

from __future__ import annotations

import multiprocessing as mp
import os

import pytest

from engine.actors.cores import pin_to_free_core

pytestmark = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")


def _pin(directory, started, release, out):
    core = pin_to_free_core(directory)
    out.put((core, sorted(os.sched_getaffinity(0))))
    started.release()
    release.acquire()


def _spawn(directory, count):
    ctx = mp.get_context("spawn")
    started, release, out = ctx.Semaphore(0), ctx.Semaphore(0), ctx.Queue()
    procs = []
    for _ in range(count):
        proc = ctx.Process(target=_pin, args=(directory, started, release, out))
        proc.start()
        started.acquire()            # one after another: each sees the locks of those before
        procs.append(proc)
    got = [out.get(timeout=30) for _ in procs]
    return procs, release, got


def _stop(procs, release):
    for _ in procs:
        release.release()
    for proc in procs:
        proc.join(timeout=30)


def test_each_actor_gets_a_core_of_its_own_and_the_rest_run_unpinned(tmp_path):
    cores = sorted(os.sched_getaffinity(0))
    procs, release, got = _spawn(tmp_path, len(cores) + 1)
    try:
        pinned = [core for core, _ in got[:-1]]
        assert sorted(pinned) == cores
        for core, affinity in got[:-1]:
            assert affinity == [core]
        assert got[-1] == (None, cores)          # every core taken: left where it was
    finally:
        _stop(procs, release)


def test_a_core_is_free_again_when_its_actor_dies(tmp_path):
    procs, release, got = _spawn(tmp_path, 1)
    first = got[0][0]
    _stop(procs, release)
    procs, release, got = _spawn(tmp_path, 1)
    try:
        assert got[0][0] == first
    finally:
        _stop(procs, release)
