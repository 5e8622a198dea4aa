"""The nightly job, as a Ray job: read the book, shard its households over solver actors,
write the proposal run atomically (:func:`engine.actors.nightly.run_nightly`).

Run it on a cluster with::

    ray job submit --working-dir . -- python -m jobs.nightly --book s3://firm/book --out s3://firm/runs

or locally with ``python -m jobs.nightly ...`` / ``canopy run ...`` (a local
Ray instance is started when no address is given and none is set in
``RAY_ADDRESS``).  ``--executor local`` runs the night in this one process,
without Ray (a GPU node, where Ray is not installed); ``auto``, the default,
does so where ``import ray`` fails.
"""

from __future__ import annotations

import argparse
import logging
import sys

from engine.actors.nightly import EXECUTORS, choose_executor, executor_connection, print_summary, run_nightly
from engine.book.storage import storage_options_from
from engine.contract.config import load_config
from engine.contract.errors import CanopyError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.nightly", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--book", required=True, help="folder or fsspec URI of the book")
    parser.add_argument("--out", required=True, help="folder or fsspec URI of the runs")
    parser.add_argument("--config", default=None, help="canopy.toml with [policy], [solver], [run]")
    parser.add_argument("--replace", action="store_true", help="replace a run already committed for the date")
    parser.add_argument("--address", default=None,
                        help="Ray address (default: RAY_ADDRESS, else a new local instance)")
    parser.add_argument("--storage-options", default=None,
                        help='fsspec options as JSON, e.g. \'{"client_kwargs": {"endpoint_url": "http://..."}}\'')
    parser.add_argument("--actors", type=int, default=None, help="solver actors (default: one per CPU or GPU)")
    parser.add_argument("--executor", choices=EXECUTORS, default="auto",
                        help="ray (solver actors), local (this process, no Ray), auto (Ray where installed)")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
        options = storage_options_from(args.storage_options)
        executor = choose_executor(args.executor)
        with executor_connection(executor, args.address):
            manifest = run_nightly(args.book, args.out, config, replace=args.replace,
                                   storage_options=options, actors=args.actors, executor=executor)
    except CanopyError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print_summary(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
