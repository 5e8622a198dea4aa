"""Throughput of Canopy's batched solver against cvxpy + Clarabel (:mod:`engine.testing.solver_bench`).

    python benchmarks/solver.py --sizes 50 200 500 --households 1 2 4 --batch 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.testing.solver_bench import main

DEFAULT_OUT = Path(__file__).parent / "results" / "solver.json"

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 200, 500, 600])
    parser.add_argument("--households", type=int, nargs="+", default=[1, 2, 4],
                        help="accounts per household")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=4000)
    parser.add_argument("--tolerance", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--oracle-households", type=int, default=4)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--method", choices=["ipm", "admm"], default="ipm")
    args = parser.parse_args()
    main(sizes=args.sizes, batch=args.batch, iterations=args.iterations, tolerance=args.tolerance,
         dtype=args.dtype, device=args.device, households=args.households,
         oracle_households=args.oracle_households, out=args.out, method=args.method)
