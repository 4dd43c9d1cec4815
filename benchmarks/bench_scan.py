"""Selective scan, forward + backward: triton, vectorized, chunked (leak-free, packed) vs reference vs mamba.py's pscan.

    python benchmarks/bench_scan.py                 # b=8, d=512, n=16, l=1024 on CPU
    python benchmarks/bench_scan.py --quick         # smaller, for a smoke run
    python benchmarks/bench_scan.py --device cuda

The chunked and reference backends run on packed rows (seq_idx with segments of random lengths:
state reset at every boundary); pscan cannot isolate segments and runs the same math unpacked,
so the comparison is "leak-free packed" against "fast but leaky". Alternatives of the chunked
backend are measured side by side: chunk sizes, and the two scans inside a chunk (the in-place
loop, the CPU default, and Hillis-Steele doubling), the vectorised all-chunks-at-once scan at
several chunk sizes, and on CUDA the fused Triton kernel (fp32 and bf16 inputs, packed and not).
``--conv`` also times the causal conv (packed with seq_idx vs unpacked), fwd+bwd, at the same shape. Cases are timed round-robin (one repeat of each in turn), so load
from other processes spreads over all of them. Results: benchmarks/results/scan_<device>[_quick].{json,md}.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import importlib.util

import model.ops.scan_chunked as scan_chunked_mod
import model.ops.scan_vectorized as scan_vectorized_mod
from bench_common import (add_output_args, hardware, hardware_line, markdown_table, output_dir, synchronize,
                          write_results)
from model.ops import register_backend, selective_scan


def make_inputs(b, d, n, l, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = {"u": torch.randn(b, d, l, generator=g), "delta": torch.randn(b, d, l, generator=g) * 0.5,
         "A": -torch.rand(d, n, generator=g) * 4 - 0.5, "B": torch.randn(b, n, l, generator=g),
         "C": torch.randn(b, n, l, generator=g), "D": torch.randn(d, generator=g),
         "z": torch.randn(b, d, l, generator=g), "delta_bias": torch.randn(d, generator=g) * 0.1}
    # packed rows: segments of random lengths 1..l/4 filling each row
    seq_idx = torch.empty(b, l, dtype=torch.long)
    for r in range(b):
        p, s = 0, 0
        while p < l:
            m = int(torch.randint(1, max(2, l // 4), (1,), generator=g))
            seq_idx[r, p:p + m] = s
            p, s = p + m, s + 1
    return {k: v.to(device).requires_grad_() for k, v in t.items()}, seq_idx.to(device)


def fwd_bwd(inputs, seq_idx, backend):
    out = selective_scan(inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"], inputs["D"],
                         inputs["z"], inputs["delta_bias"], delta_softplus=True, seq_idx=seq_idx,
                         backend=backend, validate=False)
    out.sum().backward()
    return out


INTRA = {"loop": scan_chunked_mod._scan_inplace, "doubling": scan_chunked_mod._scan_doubling}


# (BLOCK_L, bwd BLOCK_D, bwd warps) tried by --tune; then the forward's (BLOCK_D, warps) at the best BLOCK_L
TUNE_BWD = [(64, 16, 4), (64, 8, 2), (64, 8, 4), (64, 4, 1), (64, 16, 8), (32, 8, 2), (128, 16, 8)]
TUNE_FWD = [(16, 2), (64, 8)]


def tune(args, device) -> int:
    """Sweep the fused scan's tile sizes (env VMMOE_TRITON_*, read per call) by fwd+bwd time, summed over shapes."""
    import os

    import triton.testing

    shapes = [tuple(int(v) for v in sh.split(",")) for sh in args.tune.split(";")]
    sets = []
    for b, d, n, l in shapes:
        inputs, seq_idx = make_inputs(b, d, n, l, device)
        sets.append(({k: (v.detach().to(torch.bfloat16) if v.dim() == 3 else v.detach()).requires_grad_()
                      for k, v in inputs.items()}, seq_idx))

    def timed(env):
        os.environ.update({k: str(v) for k, v in env.items()})
        total = 0.0
        for ins, si in sets:
            total += triton.testing.do_bench(lambda: fwd_bwd(ins, si, "triton"), warmup=20, rep=60,
                                             return_mode="median")
        return total

    results = []
    for bl, bd, bw in TUNE_BWD:
        env = {"VMMOE_TRITON_BLOCK_L": bl, "VMMOE_TRITON_BWD_D": bd, "VMMOE_TRITON_BWD_WARPS": bw,
               "VMMOE_TRITON_FWD_D": 32, "VMMOE_TRITON_FWD_WARPS": 4}
        try:
            results.append((timed(env), env))
        except Exception as e:  # a tile that does not compile (registers, shared memory) is just skipped
            print(f"  {env}: failed ({type(e).__name__}: {str(e)[:80]})", flush=True)
            continue
        print(f"  {env}: {results[-1][0]:.3f} ms", flush=True)
    best = min(results, key=lambda r: r[0])[1]
    for fd, fw in TUNE_FWD:
        env = {**best, "VMMOE_TRITON_FWD_D": fd, "VMMOE_TRITON_FWD_WARPS": fw}
        try:
            results.append((timed(env), env))
        except Exception as e:
            print(f"  {env}: failed ({type(e).__name__}: {str(e)[:80]})", flush=True)
            continue
        print(f"  {env}: {results[-1][0]:.3f} ms", flush=True)
    ms, best = min(results, key=lambda r: r[0])
    if ms > 0.95 * results[0][0]:  # within noise of the default: keep the default
        ms, best = results[0]
    print(f"tune over {shapes} (bf16 inputs, fwd+bwd, sum of do_bench medians): best {ms:.3f} ms with {best}; "
          f"default (64, 16x4 bwd, 32x4 fwd) {results[0][0]:.3f} ms")
    exports = "".join(f"export {k}={v}\n" for k, v in best.items())
    print(exports)
    if args.tune_env:
        with open(args.tune_env, "w") as f:
            f.write(exports)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="b=4, d=128, n=16, l=256")
    ap.add_argument("--b", type=int, default=8)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--l", type=int, default=1024)
    ap.add_argument("--chunks", default="16,32,64,128", help="chunk sizes of the chunked backend to compare")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--skip-reference", action="store_true", help="the reference loop is very slow at full size")
    ap.add_argument("--conv", action="store_true", help="also time causal_conv1d fwd+bwd (packed and not)")
    ap.add_argument("--tune", default="", help="instead of the table: sweep the Triton scan's tiles at shapes "
                    "'b,d,n,l;...' (bf16 inputs, do_bench median) and print the best as VMMOE_TRITON_* exports")
    ap.add_argument("--tune-env", default="", help="with --tune: also write the best exports to this file")
    ap.add_argument("--skip-chunked-sweep", action="store_true", help="only the default chunk size of `chunked`")
    add_output_args(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.b, args.d, args.n, args.l = 4, 128, 16, 256
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.tune:
        return tune(args, device)
    hw = hardware(device)
    print(f"selective scan fwd+bwd, b={args.b} d={args.d} n={args.n} l={args.l} on {hardware_line(hw)}", flush=True)

    chunks = [int(c) for c in args.chunks.split(",")] if not args.skip_chunked_sweep else [64]
    for T in sorted({*chunks, 64}):
        register_backend(f"bench_chunked_{T}", functools.partial(scan_chunked_mod.scan_chunked, chunk=T), True)

    inputs, seq_idx = make_inputs(args.b, args.d, args.n, args.l, device)
    # half inputs as the mixer gives them under autocast; A, D, delta_bias stay float32 parameters
    inputs_bf16 = {k: (v.detach().to(torch.bfloat16) if v.dim() == 3 else v.detach()).requires_grad_()
                   for k, v in inputs.items()}
    default = scan_chunked_mod.DEFAULT_CHUNK
    pick = scan_chunked_mod._pick_scan  # the device's default intra-chunk scan; patched per case below
    native = {fn: name for name, fn in INTRA.items()}[pick(device)]
    other = "doubling" if native == "loop" else "loop"
    cases = {f"chunked (T={default}, {native}, packed, default)": ("chunked", seq_idx, None)}
    cases.update({f"chunked T={T} (packed)": (f"bench_chunked_{T}", seq_idx, None) for T in chunks if T != default})
    cases[f"chunked T=64 {other} (packed)"] = ("bench_chunked_64", seq_idx, other)
    for T in (8, 16, 32):
        register_backend(f"bench_vectorized_{T}", functools.partial(scan_vectorized_mod.scan_vectorized, chunk=T), True)
        cases[f"vectorized T={T} (packed)" + (", default" if T == scan_vectorized_mod.DEFAULT_CHUNK else "")] = \
            (f"bench_vectorized_{T}", seq_idx, None)
    if device.type == "cuda" and importlib.util.find_spec("triton") is not None:
        cases["triton (packed, fp32)"] = ("triton", seq_idx, None)
        cases["triton (packed, bf16 inputs)"] = ("triton", seq_idx, "bf16")
        cases["triton (unpacked: no seq_idx)"] = ("triton", None, None)
    try:
        import mambapy  # noqa: F401

        cases["pscan (mamba.py, unpacked: leaks)"] = ("pscan", None, None)
    except ImportError:
        print("mambapy not installed: pscan skipped")
    if not args.skip_reference:
        cases["reference loop (packed)"] = ("reference", seq_idx, None)

    times = {name: [] for name in cases}
    peak = {}
    for rep in range(args.repeats + 1):  # round 0 is warm-up
        for name, (backend, si, intra) in cases.items():
            if name.startswith("reference") and rep != 1:
                continue  # one run, no warm-up, is enough for the oracle (minutes at full size)
            for v in [*inputs.values(), *inputs_bf16.values()]:
                v.grad = None
            scan_chunked_mod._pick_scan = (lambda _, fn=INTRA.get(intra): fn) if intra in INTRA else pick
            ins = inputs_bf16 if intra == "bf16" else inputs
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            t0 = time.perf_counter()
            try:
                fwd_bwd(ins, si, backend)
                synchronize(device)
            finally:
                scan_chunked_mod._pick_scan = pick
            if rep:
                times[name].append((time.perf_counter() - t0) * 1000)
                print(f"  {name}: {times[name][-1]:.1f} ms", flush=True)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device) / 2**20

    if args.conv:  # the causal conv at the same shape: the fused Triton kernel against the PyTorch oracle
        from model.ops import causal_conv1d
        from model.ops.causal_conv1d import conv_auto_backend

        g = torch.Generator().manual_seed(1)
        x = torch.randn(args.b, args.l, args.d, generator=g).to(device).transpose(1, 2)  # the mixer's layout
        wt, bs = torch.randn(args.d, 4, generator=g).to(device), torch.randn(args.d, generator=g).to(device)
        conv_cases = [("conv torch (packed, seq_idx)", seq_idx, "torch", x),
                      ("conv torch (unpacked)", None, "torch", x)]
        if conv_auto_backend(device) == "triton":
            conv_cases += [("conv triton (packed, seq_idx)", seq_idx, "triton", x),
                           ("conv triton (packed, bf16 inputs)", seq_idx, "triton", x.to(torch.bfloat16)),
                           ("conv triton (unpacked)", None, "triton", x)]
        for label, si, be, xin in conv_cases:
            xx = xin.detach().requires_grad_()
            for rep in range(args.repeats + 1):
                synchronize(device)
                t0 = time.perf_counter()
                causal_conv1d(xx, wt, bs, si, "silu", validate=False, backend=be).sum().backward()
                synchronize(device)
                if rep:
                    times.setdefault(label, []).append((time.perf_counter() - t0) * 1000)

    rows = []
    pscan_ms = statistics.median(times["pscan (mamba.py, unpacked: leaks)"]) if "pscan (mamba.py, unpacked: leaks)" in times else None
    ref_ms = statistics.median(times["reference loop (packed)"]) if "reference loop (packed)" in times else None
    for name, ts in times.items():
        ms = statistics.median(ts)
        rows.append({"case": name, "ms_fwd_bwd": ms, "ms_min": min(ts), "runs": len(ts),
                     "speedup_vs_pscan": pscan_ms / ms if pscan_ms and not name.startswith("conv") else None,
                     "speedup_vs_reference": ref_ms / ms if ref_ms and not name.startswith("conv") else None,
                     "leak_free": "pscan" not in name and "unpacked" not in name,
                     "peak_mem_mb": peak.get(name)})
    md = markdown_table(rows, ["case", "ms_fwd_bwd", "speedup_vs_pscan", "speedup_vs_reference", "leak_free",
                               "peak_mem_mb", "runs"])
    shape = f"b={args.b}, d={args.d}, n={args.n}, l={args.l}"
    import os

    tiles = {k: v for k, v in sorted(os.environ.items()) if k.startswith("VMMOE_")}
    md = (f"Selective scan forward+backward, {shape}, median of {args.repeats} round-robin runs; Triton tile "
          f"settings: {tiles or 'defaults'}.\n\n{md}\n")
    print(md)
    name = f"scan_{device.type}" + ("_quick" if args.quick else "")
    write_results(name, rows, md, hw, output_dir(args),
                  extra={"shape": {"b": args.b, "d": args.d, "n": args.n, "l": args.l}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
