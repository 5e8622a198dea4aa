"""Throughput of Canopy's batched solver against its peers, every system on every core (solver_bench).

    python benchmarks/solver.py --sizes 50 200 500 --households 1 --batch 64 --peer-households 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.actors.solver import ACTOR_ENV
from engine.testing.solver_bench import main

DEFAULT_OUT = Path(__file__).parent / "results" / "solver.json"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 500])
    parser.add_argument("--households", type=int, nargs="+", default=[1], help="accounts per household")
    parser.add_argument("--batch", type=int, default=64, help="households Canopy solves")
    parser.add_argument("--peer-households", type=int, default=8,
                        help="households each peer solves (bounds the run)")
    parser.add_argument("--calibration", type=int, default=16, help="households OSQP's eps is calibrated on")
    parser.add_argument("--workers", type=int, default=None, help="processes, one per core (0: this one)")
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--method", choices=["ipm", "admm"], default="ipm")
    args = parser.parse_args()
    main(sizes=args.sizes, batch=args.batch, iterations=args.iterations, tolerance=args.tolerance,
         dtype=args.dtype, device=args.device, households=args.households, peer_households=args.peer_households,
         calibration=args.calibration, workers=args.workers, worker_env=ACTOR_ENV, out=args.out,
         method=args.method)
