"""The nightly job end to end on a real local Ray instance: the run, its
atomic commit, and what happens when workers die.

Fault tests kill real worker processes (``os._exit`` inside the actor, via
the chaos variables of :mod:`engine.actors.solver`) and assert the committed
output is exactly what an undisturbed run wrote.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.actors.solver import CHAOS_CRASH_HOUSEHOLDS, CHAOS_EXIT_ONCE, GPU_DETERMINISM, actor_env
from engine.book import synth
from engine.book.runs import committed, read_run
from engine.book.storage import read_book
from engine.contract.config import Config, RunConfig
from engine.contract.errors import BookError, ConfigError, RunError
from engine.contract.schema import Col, Status
from engine.review.check import check_run
from jobs import nightly

pytestmark = pytest.mark.usefixtures("ray_session")

#: Small shards, so that a fault hits one shard among several; two tries keep fault tests short.
CONFIG = Config(run=RunConfig(shard_accounts=12, max_task_retries=2))


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("book") / "book")
    synth.generate(path, 48, seed=5, bad_fraction=0.02)
    return path


@pytest.fixture(scope="module")
def baseline(book, tmp_path_factory):
    """An undisturbed run: (out, tables, manifest)."""
    out = str(tmp_path_factory.mktemp("runs") / "base")
    nightly.run_nightly(book, out, CONFIG, progress=False)
    tables, manifest = read_run(out, synth.AS_OF)
    return out, tables, manifest


def _without(table: pa.Table, accounts: set[str]) -> pa.Table:
    keep = pc.invert(pc.is_in(table.column(Col.account_id), pa.array(sorted(accounts), pa.string())))
    return table.filter(keep)


def test_every_account_gets_a_row_and_every_rule_holds(book, baseline):
    _, tables, manifest = baseline
    source = read_book(book)
    accounts = tables["accounts"]
    assert sorted(accounts.column(Col.account_id).to_pylist()) == \
        sorted(source.accounts.column(Col.account_id).to_pylist())
    statuses = set(accounts.column(Col.status).to_pylist())
    assert {Status.proposed, Status.rejected} <= statuses
    assert tables["trades"].num_rows > 0
    assert tables["rejections"].num_rows >= len(source.rejected) > 0
    violations = check_run(source.tables, source.as_of, tables, source.rejected)
    assert violations.num_rows == 0, violations.to_pylist()[:10]
    # the manifest says what was run, on what, and what came out
    assert manifest["inputs"] == dict(source.fingerprints)
    assert manifest["config"] == CONFIG.to_dict()
    assert manifest["counts"][Status.rejected] == len(source.rejected)
    assert sum(manifest["counts"].values()) == accounts.num_rows
    assert manifest["rows"]["trades"] == tables["trades"].num_rows
    assert {"read", "targets", "plan", "solve", "write"} <= set(manifest["timings"])
    assert manifest["engine_version"]


def test_a_rerun_is_identical_and_a_committed_date_is_kept(book, baseline, tmp_path):
    out, tables, manifest = baseline
    with pytest.raises(RunError, match="already committed"):
        nightly.run_nightly(book, out, CONFIG, progress=False)
    assert read_run(out, synth.AS_OF)[1]["run_id"] == manifest["run_id"]

    again = str(tmp_path / "again")
    nightly.run_nightly(book, again, CONFIG, progress=False)
    repeat, _ = read_run(again, synth.AS_OF)
    assert repeat["trades"].equals(tables["trades"])
    assert repeat["accounts"].equals(tables["accounts"])

    replaced = nightly.run_nightly(book, again, CONFIG, replace=True, progress=False)
    tables_now, manifest_now = read_run(again, synth.AS_OF)
    assert manifest_now["run_id"] == replaced["run_id"]
    assert tables_now["trades"].equals(tables["trades"])


def test_gpu_actors_ask_xla_for_deterministic_ops(monkeypatch):
    """On a GPU, XLA adds in a fixed order only when asked; unasked, an H200 gave other trades
    on every solve of the same shard.  The flags must also parse: XLA aborts on an unknown one."""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    cpu, gpu = actor_env(0), actor_env(1)
    assert GPU_DETERMINISM not in cpu["XLA_FLAGS"]
    assert gpu["XLA_FLAGS"] == f"{cpu['XLA_FLAGS']} {GPU_DETERMINISM}"
    assert gpu["JAX_PLATFORMS"] == "cpu"                       # the driver's variables still pass on
    run = subprocess.run([sys.executable, "-c", "import jax.numpy as jnp; print(float(jnp.arange(4.0).sum()))"],
                         env={**os.environ, **gpu}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "6.0"


def test_a_killed_worker_changes_nothing(book, baseline, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CHAOS_EXIT_ONCE, str(marker))
    out = str(tmp_path / "run")
    manifest = nightly.run_nightly(book, out, CONFIG, progress=False)
    assert marker.exists()                          # a worker really died mid-run
    assert manifest["shards"]["actors_started"] > manifest["shards"]["actors"]
    tables, _ = read_run(out, synth.AS_OF)
    assert tables["trades"].equals(baseline[1]["trades"])
    assert tables["accounts"].equals(baseline[1]["accounts"])


def _a_household(baseline) -> tuple[str, set[str]]:
    accounts = baseline[1]["accounts"]
    proposed = accounts.filter(pc.equal(accounts.column(Col.status), Status.proposed))
    household = proposed.column(Col.household_id)[0].as_py()
    members = accounts.filter(pc.equal(accounts.column(Col.household_id), household))
    return household, set(members.column(Col.account_id).to_pylist())


def _assert_same(after: pa.Table, before: pa.Table, skip: tuple[str, ...] = ()) -> None:
    """Equal tables: every column exactly, but floats to 1e-9 relative."""
    assert after.num_rows == before.num_rows
    for name in after.column_names:
        if name in skip:
            continue
        if pa.types.is_floating(after.schema.field(name).type):
            np.testing.assert_allclose(after.column(name).to_numpy(zero_copy_only=False),
                                       before.column(name).to_numpy(zero_copy_only=False),
                                       rtol=1e-9, atol=1e-12, err_msg=name)
        else:
            assert after.column(name).equals(before.column(name)), name


def test_a_household_that_always_crashes_fails_alone(book, baseline, tmp_path, monkeypatch):
    household, members = _a_household(baseline)
    monkeypatch.setenv(CHAOS_CRASH_HOUSEHOLDS, household)
    out = str(tmp_path / "run")
    manifest = nightly.run_nightly(book, out, CONFIG, progress=False)
    tables, _ = read_run(out, synth.AS_OF)
    accounts = tables["accounts"]
    failed = accounts.filter(pc.equal(accounts.column(Col.status), Status.failed))
    assert set(failed.column(Col.account_id).to_pylist()) == members
    assert all("failed 2 times" in d for d in failed.column(Col.detail).to_pylist())
    assert manifest["counts"][Status.failed] == len(members)
    assert set(manifest["failures"][0]["accounts"]) == members
    # everyone else trades as in the undisturbed run: the same lines, sides, lots and whole-share
    # quantities. The households that shared the poisoned shard were solved again alone, in
    # another batch and a smaller universe, so a fractional quantity (a mutual fund, a substitute)
    # and sums over the universe may move in the last digits, as the solver's own diagnostics do
    _assert_same(_without(tables["trades"], members), _without(baseline[1]["trades"], members))
    _assert_same(_without(accounts, members), _without(baseline[1]["accounts"], members),
                 skip=(Col.iterations, Col.residual))
    assert tables["trades"].filter(pc.is_in(tables["trades"].column(Col.account_id),
                                            pa.array(sorted(members)))).num_rows == 0


def test_too_many_failures_stop_the_run_uncommitted(book, tmp_path, monkeypatch, baseline):
    household, _ = _a_household(baseline)
    monkeypatch.setenv(CHAOS_CRASH_HOUSEHOLDS, household)
    strict = Config(run=RunConfig(shard_accounts=12, max_task_retries=1, max_failed_accounts=0))
    out = tmp_path / "run"
    with pytest.raises(RunError, match="max_failed_accounts"):
        nightly.run_nightly(book, str(out), strict, progress=False)
    assert not committed(str(out), synth.AS_OF)
    assert not (out / "_staging").exists() or not any((out / "_staging").iterdir())


def test_bad_inputs_stop_before_anything_is_written(tmp_path, book, capsys):
    out = tmp_path / "run"
    with pytest.raises(BookError):
        nightly.run_nightly(str(tmp_path / "no-such-book"), str(out), CONFIG, progress=False)
    assert not out.exists()

    bad = tmp_path / "canopy.toml"
    bad.write_text("[solver]\nmax_iterations = 'many'\n")
    args = nightly.parse_args(["--book", book, "--out", str(out), "--config", str(bad)])
    assert nightly.main(args) == 2
    assert "max_iterations" in capsys.readouterr().err
    assert not out.exists()

    with pytest.raises(ConfigError, match="JSON"):
        nightly.storage_options_from("{not json")
    args = nightly.parse_args(["--book", book, "--out", str(out), "--storage-options", "[1, 2]"])
    assert nightly.main(args) == 2
    assert not out.exists()


def test_main_runs_the_job_and_prints_the_summary(book, tmp_path, capsys, baseline):
    config = tmp_path / "canopy.toml"
    config.write_text("[run]\nshard_accounts = 12\nmax_task_retries = 2\n")
    out = tmp_path / "run"
    args = nightly.parse_args(["--book", book, "--out", str(out), "--config", str(config)])
    assert nightly.main(args) == 0
    printed = capsys.readouterr().out
    assert "accounts proposed" in printed and "harvested losses" in printed
    tables, manifest = read_run(str(out), synth.AS_OF)
    assert tables["trades"].equals(baseline[1]["trades"])
    assert (out / f"as_of={synth.AS_OF}" / "_SUCCESS").read_text() == manifest["run_id"]
