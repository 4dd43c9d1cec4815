"""Row planning: seconds to plan a million sequence lengths, and the utilization each layout reaches.

    python benchmarks/bench_packing.py              # 1M lengths, max_len 1024
    python benchmarks/bench_packing.py --quick      # 100k lengths

Two length distributions: "documents" (log-normal, median ~20 concepts, a tail longer than max_len
that gets chunked) and "uniform" (1..max_len, the hard case for the bucketed planner: every length
occurs). For each: best-fit decreasing, first-fit decreasing, and the baselines "padded" (a row
per sequence; stepped 8 rows at a time, each step padded to its longest) and "single" (one
sequence per step). ``utilization`` is real positions over positions computed when stepping
8 rows at a time. Also times
pack_sequences on real tensors (d=384) for a training-sized batch.
Results: benchmarks/results/packing[_quick].{json,md}.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, time_call, write_results
from model.packing import pack_sequences, plan_rows


def lengths_for(dist: str, n: int, max_len: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dist == "documents":
        return np.clip(rng.lognormal(np.log(20), 1.0, n), 1, 4 * max_len).astype(np.int64)
    return rng.integers(1, max_len + 1, n, dtype=np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--max-len", type=int, default=1024)
    ap.add_argument("--quick", action="store_true", help="100k lengths")
    ap.add_argument("--repeats", type=int, default=3)
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 100_000
    hw = hardware()
    print(f"planning {args.n:,} lengths into rows of {args.max_len} on {hardware_line(hw)}", flush=True)

    rows = []
    for dist in ("documents", "uniform"):
        lengths = lengths_for(dist, args.n, args.max_len)
        padded_util = None
        rows_per_step = 8
        for label, kw in (("bfd", {"strategy": "bfd"}), ("ffd", {"strategy": "ffd"}),
                          ("padded", {"mode": "padded"}), ("single", {"mode": "single"})):
            plan = plan_rows(lengths, args.max_len, **kw)
            t = time_call(lambda: plan_rows(lengths, args.max_len, **kw), repeats=args.repeats, warmup=0)
            util = plan.step_utilization(rows_per_step)
            if label == "padded":
                padded_util = util
            rows.append({"lengths": dist, "layout": label, "plan_s": t["ms"] / 1000, "rows": plan.n_rows,
                         "split_sequences": plan.summary()["split_sequences"], "utilization": util,
                         "steps": -(-plan.n_rows // rows_per_step) if label != "single" else plan.n_rows})
            print(f"  {dist:9s} {label:6s} {t['ms'] / 1000:7.3f} s  rows={plan.n_rows:,}  "
                  f"utilization={util:.4f}", flush=True)
        for r in rows[-4:]:
            r["utilization_vs_padded"] = r["utilization"] / padded_util

    # laying out real vectors: a training-sized batch of 256 documents, d = 384
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randn(int(n), 384, generator=g) for n in lengths_for("documents", 256, 256, seed=1)]
    for mode in ("packed", "padded"):
        t = time_call(lambda: pack_sequences(seqs, 256, mode=mode), repeats=args.repeats)
        batch = pack_sequences(seqs, 256, mode=mode)
        rows.append({"lengths": "documents (256 seqs, d=384, tensors)", "layout": f"pack_sequences {mode}",
                     "plan_s": t["ms"] / 1000, "rows": batch.plan.n_rows, "split_sequences":
                     batch.plan.summary()["split_sequences"], "utilization": batch.plan.step_utilization(8)})
    md = markdown_table(rows, ["lengths", "layout", "plan_s", "rows", "split_sequences", "utilization",
                               "utilization_vs_padded", "steps"], floatfmt=".4g")
    md = (f"Planning {args.n:,} sequence lengths into rows of max_len={args.max_len} "
          f"(median of {args.repeats}); utilization when stepping 8 rows at a time; the last rows time "
          f"pack_sequences on real tensors (seconds include laying out the vectors).\n\n{md}\n")
    print(md)
    write_results("packing" + ("_quick" if args.quick else ""), rows, md, hw, output_dir(args),
                  extra={"n": args.n, "max_len": args.max_len})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
