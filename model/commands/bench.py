"""``vmmoe bench train [...]``: the training-throughput benchmark (benchmarks/bench_train.py) by packing mode.

Needs a source checkout (the ``benchmarks/`` folder sits next to ``model/``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run a benchmark (train: concepts/s by packing mode)")
    p.add_argument("name", choices=["train"], help="which benchmark")
    p.add_argument("args", nargs=argparse.REMAINDER, help="passed on (see `vmmoe bench train --help`)")
    p.set_defaults(func=bench)


def bench(args: argparse.Namespace) -> int:
    if not (REPO_ROOT / "benchmarks" / "bench_train.py").is_file():
        raise FileNotFoundError(f"benchmarks/ not found next to {REPO_ROOT / 'model'}: vmmoe bench needs a source checkout")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from benchmarks import bench_train

    return bench_train.main(args.args)
