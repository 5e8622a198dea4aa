"""The nightly job on a multi-node Ray cluster on this machine, losing a node mid-run.

Run on purpose, in a session of its own (it starts its own cluster)::

    .venv/bin/python -m pytest -m cluster tests/test_nightly_cluster.py
"""

from __future__ import annotations

import os

import pytest

from engine.book import synth
from engine.book.runs import read_run
from engine.contract.config import Config, RunConfig

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this session; run -m cluster on its own")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"       # every node binds 127.0.0.1
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        yield cluster, workers
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_losing_a_node_mid_run_changes_nothing(cluster, tmp_path):
    from engine.actors.nightly import run_nightly

    head_and_workers, workers = cluster
    book = str(tmp_path / "book")
    synth.generate(book, 40, seed=9, bad_fraction=0.0)
    config = Config(run=RunConfig(shard_accounts=8, max_in_flight=1))

    first = run_nightly(book, str(tmp_path / "undisturbed"), config, progress=False)
    assert first["shards"]["actors"] == 3

    removed = []

    def remove_a_node(output):
        if not removed:
            removed.append(workers[0])
            head_and_workers.remove_node(workers[0])

    second = run_nightly(book, str(tmp_path / "disturbed"), config, progress=False, on_result=remove_a_node)
    assert removed
    assert second["shards"]["count"] == first["shards"]["count"]
    before, _ = read_run(str(tmp_path / "undisturbed"), synth.AS_OF)
    after, _ = read_run(str(tmp_path / "disturbed"), synth.AS_OF)
    assert after["trades"].equals(before["trades"])
    assert after["accounts"].equals(before["accounts"])
