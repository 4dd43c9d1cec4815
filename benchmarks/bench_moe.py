"""MoE feed-forward, forward + backward: loop dispatch (the reference) vs the sync-free grouped and dense dispatches.

    python benchmarks/bench_moe.py                      # CPU, a small shape
    python benchmarks/bench_moe.py --device cuda        # rows of 2048 at width 768, bf16 autocast and fp32

Packed rows (segments of random lengths, a little padding at each row's end), the same weights and
inputs for every path. The sync-free paths get ``segment_index`` precomputed, as a model passing it
once per step would. ``dense`` runs every expert on every token (E/k times the experts' FLOPs; what
``auto`` picks when top_k == n_experts): try ``--experts 1 --top-k 1``. Cases are timed round-robin (one repeat of each in turn), so load from other
processes spreads over all of them. ``vs loop`` = loop's ms / this case's ms (> 1: faster).
Results: <out>/moe_<device>[_quick].{json,md}; benchmarks/results/ only with --update.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from contextlib import nullcontext

import torch

from bench_common import (add_output_args, hardware, hardware_line, markdown_table, output_dir, synchronize,
                          write_results)
from model.config import VMMoEConfig
from model.moe import MoE
from model.segments import global_segment_index


def packed_ids(rows: int, L: int, max_len: int, pad: int, seed: int = 0) -> torch.Tensor:
    """(rows, L) segment ids: random lengths 1..max_len, the last ``pad`` positions of each row padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((rows, L), -1, dtype=torch.long)
    for r in range(rows):
        pos, s = 0, 0
        while pos < L - pad:
            n = min(int(torch.randint(1, max_len + 1, (1,), generator=g)), L - pad - pos)
            ids[r, pos:pos + n] = s
            pos, s = pos + n, s + 1
    return ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="a smaller shape, for a smoke run")
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--length", type=int, default=None)
    ap.add_argument("--d-model", type=int, default=None)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--dtypes", default=None, help="comma list of bf16 (autocast), fp32; default both on cuda, fp32 on cpu")
    add_output_args(ap)
    args = ap.parse_args()
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"
    rows = args.rows or (4 if cuda else 2)
    L = args.length or (2048 if cuda else 512) // (4 if args.quick else 1)
    d = args.d_model or (768 if cuda else 256) // (2 if args.quick else 1)
    repeats = args.repeats or (20 if cuda else 5)
    dtypes = (args.dtypes or ("bf16,fp32" if cuda else "fp32")).split(",")

    ids = packed_ids(rows, L, max_len=max(1, L // 8), pad=L // 32).to(dev)
    seg_index = global_segment_index(ids)
    cfg = VMMoEConfig(d_concept=16, d_model=d, n_layers=1, n_experts=args.experts, top_k=args.top_k,
                      moe_dispatch="loop")
    torch.manual_seed(0)
    loop = MoE(cfg).to(dev)
    grouped = MoE(dataclasses.replace(cfg, moe_dispatch="grouped")).to(dev)
    grouped.load_state_dict(loop.state_dict())
    dense = MoE(dataclasses.replace(cfg, moe_dispatch="dense")).to(dev)
    dense.load_state_dict(loop.state_dict())
    x = torch.randn(rows, L, d, device=dev, requires_grad=True)

    def step(moe: MoE, amp: bool, pass_index: bool):
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext()
        with ctx:
            out, aux = moe(x, ids, True, segment_index=seg_index if pass_index else None)
            loss = out.float().pow(2).mean() + aux.loss
        loss.backward()

    cases = []
    for dt in dtypes:
        amp = dt == "bf16"
        with torch.autocast(dev.type, dtype=torch.bfloat16) if amp else nullcontext():
            ok = grouped.use_grouped(x)
        cases.append((f"loop {dt}", dt, lambda amp=amp: step(loop, amp, False)))
        if ok:
            cases.append((f"grouped {dt}", dt, lambda amp=amp: step(grouped, amp, True)))
        else:
            print(f"grouped {dt}: torch._grouped_mm does not serve {dev.type}/{dt} here; it would fall back to loop")
        cases.append((f"dense {dt}", dt, lambda amp=amp: step(dense, amp, True)))

    times = {name: [] for name, _, _ in cases}
    for _, _, fn in cases:  # warm-up
        fn()
        synchronize(dev)
    for _ in range(repeats):
        for name, _, fn in cases:
            t0 = time.perf_counter()
            fn()
            synchronize(dev)
            times[name].append((time.perf_counter() - t0) * 1000.0)

    n_real = int((ids >= 0).sum())
    table = []
    for name, dt, _ in cases:
        ms = statistics.median(times[name])
        base = statistics.median(times[f"loop {dt}"])
        table.append({"case": name, "ms": ms, "ms_min": min(times[name]), "vs loop": base / ms,
                      "tokens/s": n_real / ms * 1000.0})
    hw = hardware(dev)
    shape = (f"rows={rows} L={L} d_model={d} d_expert={cfg.d_expert_value} E={args.experts} k={args.top_k} "
             f"real tokens={n_real} segments={seg_index[1]}, fwd+bwd, median of {repeats}")
    md = shape + "\n\n" + markdown_table(table)
    print(hardware_line(hw))
    print(md)
    name = f"moe_{dev.type}" + ("_quick" if args.quick else "")
    write_results(name, table, md, hw=hw, out_dir=output_dir(args), extra={"shape": shape})


if __name__ == "__main__":
    main()
