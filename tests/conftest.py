"""Shared fixtures: small synthetic books, and a real S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import socket

import pytest

from engine import synth


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
