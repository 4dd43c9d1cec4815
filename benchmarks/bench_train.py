"""Training throughput by packing mode: concepts per second for single, padded, packed and packed-leaky.

Same model (same seed, same initial weights), same sequences in every step, one run, the modes taking
turns step by step: only the layout differs (one forward per sequence; one padded row per sequence; packed rows with resets; packed rows
without resets). Each timed step is a full optimizer step (forward, backward, AdamW) measured by the
trainer itself (``step_time`` in metrics.jsonl), so the figures are what a run logs.

    python benchmarks/bench_train.py                  # CPU, default model, default store's lengths
    python benchmarks/bench_train.py --synthetic      # lengths drawn like the store's (mean ~55)
    python benchmarks/bench_train.py --device cuda --d-model 384 --n-layers 6 --rows 32 --synthetic   # ~50M params

    python benchmarks/bench_train.py --equal-work --device cuda   # the issue-9 table: this engine vs mamba.py

``--equal-work`` is a separate, side-by-side measurement (``equal_work``): 12 Mamba blocks of width 768
(~48M params, feed-forward ~0), lengths lognormal (mean 174, max 953) packed into rows of 2048, 4 rows a
step, AdamW; this engine packed with resets (fp32, bf16 autocast), packed without segment ids (leaky),
and mamba.py's stack (``mambapy``, pure PyTorch pscan) on the same rows without resets (it cannot isolate),
every case on the same steps in turn. ``--ew-d-model 2048 --ew-layers 48`` is the 1.29B size.

Vectors are random unit vectors (the timing does not depend on their values); lengths come from the
default store's documents unless --synthetic, or from ``results/train_lengths.json`` when the store
is not installed (the GPU machine), which the CPU run writes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import (RESULTS_DIR, add_output_args, hardware, hardware_line, markdown_table, output_dir,
                          synchronize, write_results)

from model.packing import Packing

MODES = tuple(m.value for m in Packing)  # every packing mode (model.packing.Packing)
LENGTHS_FILE = RESULTS_DIR / "train_lengths.json"


def store_lengths(min_len: int = 2, out_dir: Path = RESULTS_DIR) -> list[int]:
    """Document lengths of the default concept store (also written to ``out_dir``/train_lengths.json)."""
    from model.concepts import open_default_store

    lengths = [len(s.ids) for s in open_default_store().document_sequences(min_len=min_len)]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / LENGTHS_FILE.name).write_text(json.dumps({"source": "default store documents", "lengths": lengths}) + "\n")
    return lengths


def synthetic_lengths(n: int, mean: int = 55, seed: int = 0, min_len: int = 2) -> list[int]:
    """Lengths resampled from results/train_lengths.json if present, else geometric with the given mean."""
    rng = np.random.default_rng(seed)
    if LENGTHS_FILE.is_file():
        base = np.array(json.loads(LENGTHS_FILE.read_text())["lengths"])
        return rng.choice(base, n).tolist()
    return (rng.geometric(1.0 / (mean - min_len + 1), n) + min_len - 1).tolist()


def random_sequences(lengths: list[int], dim: int, seed: int = 0):
    from model.train.data import TrainSequence

    g = torch.Generator().manual_seed(seed)
    out = []
    for i, n in enumerate(lengths):
        v = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
        out.append(TrainSequence(doc_id=f"doc-{i}", vectors=v))
    return out


def make_trainer(mode: str, seqs, args):
    """A trainer for one packing mode and the steps it will time (the same steps for every mode)."""
    from model.train.config import TrainConfig
    from model.train.trainer import Trainer

    model = {"d_model": args.d_model, "n_layers": args.n_layers, "n_experts": args.n_experts}
    cfg = TrainConfig.from_dict({"packing": mode, "max_len": args.max_len, "rows_per_step": args.rows,
                                 "steps": args.warmup + args.steps, "device": args.device, "precision": args.precision,
                                 "model": model, "eval_fraction": 0.02, "seed": 0, "tensorboard": False})
    trainer = Trainer(cfg, sequences=seqs)
    # the sampler depends only on lengths and seed, so every mode gets the same steps (across epochs if needed)
    need, steps, epoch = args.warmup + args.steps, [], 0
    while len(steps) < need:
        steps += trainer.sampler.epoch_steps(epoch)
        epoch += 1
    return trainer, steps[:need]


def measure(modes, seqs, args) -> list[dict]:
    """Median step time and concepts/s per mode; modes take turns step by step (round robin), so a
    change of load on a shared machine hits every mode alike."""
    runs = {mode: make_trainer(mode, seqs, args) for mode in modes}
    records: dict[str, list[dict]] = {mode: [] for mode in modes}
    for i in range(args.warmup + args.steps):
        for mode, (trainer, steps) in runs.items():
            records[mode].append(trainer.train_step(steps[i]))
    rows = []
    for mode, (trainer, _) in runs.items():
        timed = records[mode][args.warmup:]
        step_time = statistics.median(r["step_time"] for r in timed)
        concepts = statistics.median(r["concepts"] for r in timed)
        rows.append({"mode": mode, "concepts_per_s": concepts / step_time, "step_ms": step_time * 1000,
                     "concepts_per_step": concepts, "utilization": statistics.median(r["utilization"] for r in timed),
                     "n_params": trainer.meta["n_params"], "device": trainer.meta["device"],
                     "dtype": trainer.meta["dtype"]})
    return rows


# "-dense" cases: the same engine with a dense feed-forward of hidden size 1 in every block instead of the
# --ew-ffn choice (no routing at all): the Mamba stack alone, side by side with the MoE cases
EW_CASES = ("ours-packed-fp32", "ours-packed-bf16", "ours-leaky-fp32", "ours-packed-fp32-dense", "ours-packed-bf16-dense",
            "mambapy-leaky-fp32", "mambapy-leaky-bf16")
BF16_PEAK_FLOPS = {"H200": 989e12, "H100": 989e12}  # dense bf16, the datasheet's (SXM)


def equal_work_lengths(n: int, mean: float = 174.0, max_len: int = 953, sigma: float = 0.8, seed: int = 0):
    """Lognormal lengths with the given mean (before clipping to [2, max_len])."""
    rng = np.random.default_rng(seed)
    mu = np.log(mean) - sigma ** 2 / 2
    return np.clip(rng.lognormal(mu, sigma, n), 2, max_len).astype(int).tolist()


class _MambaPyStack(torch.nn.Module):
    """mamba.py's Mamba stack between the same in/out projections as VMMoE (concept -> d_model -> concept)."""

    def __init__(self, d_concept, d_model, n_layers):
        super().__init__()
        from mambapy.mamba import Mamba, MambaConfig

        self.inp = torch.nn.Linear(d_concept, d_model)
        self.mamba = Mamba(MambaConfig(d_model=d_model, n_layers=n_layers, pscan=True))
        self.out = torch.nn.Linear(d_model, d_concept)

    def forward(self, values):
        return self.out(self.mamba(self.inp(values)))


def _next_vector_loss(pred, values, mask):
    """Mean squared error of pred[t] against values[t+1] where both are in one segment (mask (rows, L-1))."""
    err = (pred[:, :-1].float() - values[:, 1:].float()).pow(2).sum(-1)
    return (err * mask).sum() / mask.sum().clamp_min(1)


def equal_work(args) -> int:
    """The issue's equal-work table; see the module docstring."""
    from model.config import VMMoEConfig
    from model.packing import pack_sequences
    from model.vmmoe import VMMoE

    device = torch.device(args.device)
    hw = hardware(args.device)
    cases = args.ew_cases.split(",")
    if unknown := [c for c in cases if c not in EW_CASES]:
        raise ValueError(f"unknown case(s) {unknown}; choose from {EW_CASES}")
    d_concept, row_len, rows = 384, 2048, 4
    g = torch.Generator().manual_seed(0)
    lengths = equal_work_lengths(4000)
    seqs = [torch.nn.functional.normalize(torch.randn(n, d_concept, generator=g), dim=-1) for n in lengths]
    packed = pack_sequences(seqs, row_len, mode="packed")
    values_all, ids_all = packed.values, packed.segment_ids
    need = args.warmup + args.steps
    steps = []
    for i in range(need):
        sl = slice((i * rows) % (values_all.shape[0] - rows), (i * rows) % (values_all.shape[0] - rows) + rows)
        v, ids = values_all[sl].to(device), ids_all[sl].to(device)
        mask = ((ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] >= 0)).float()
        steps.append((v, ids, mask, int((ids >= 0).sum())))
    print(f"equal work on {hardware_line(hw)}: d_model {args.ew_d_model}, {args.ew_layers} layers, rows of {row_len}, "
          f"{rows} rows/step; lengths lognormal mean {np.mean(lengths):.1f} max {max(lengths)}; "
          f"{np.mean([s[3] for s in steps]):.0f} concepts/step", flush=True)

    def ours(ffn: str):
        # feed-forward ~0: a one-expert MoE of hidden size 1 (the table), or (ffn "dense") a dense
        # MLP of hidden size 1 in every block (moe_every past the last block: no routing at all)
        cfg = VMMoEConfig(d_concept=d_concept, d_model=args.ew_d_model, n_layers=args.ew_layers, n_experts=1,
                          top_k=1, d_expert=1, balance_coef=0.0, z_loss_coef=0.0,
                          moe_every=args.ew_layers + 1 if ffn == "dense" else 1,
                          conv_backend=args.ew_conv_backend, checkpoint_blocks=args.ew_checkpoint)
        torch.manual_seed(0)
        return VMMoE(cfg).to(device)

    runs = {}
    for case in cases:
        m = _MambaPyStack(d_concept, args.ew_d_model, args.ew_layers).to(device) if case.startswith("mambapy") \
            else ours("dense" if case.endswith("-dense") else args.ew_ffn)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
        runs[case] = (m, opt, [], 0)
    n_params = {c: sum(p.numel() for p in r[0].parameters()) for c, r in runs.items()}

    def step(case, v, ids, mask):
        m, opt = runs[case][0], runs[case][1]
        bf16 = "bf16" in case
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if case.startswith("mambapy"):
                pred = m(v)
            else:
                pred = m(v, None if "leaky" in case else ids).prediction
            loss = _next_vector_loss(pred, v, mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    peak = {}
    for i, (v, ids, mask, concepts) in enumerate(steps):
        for case in cases:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            t0 = time.perf_counter()
            step(case, v, ids, mask)
            synchronize(device)
            if i >= args.warmup:
                runs[case][2].append((time.perf_counter() - t0, concepts))
            if device.type == "cuda":
                peak[case] = max(peak.get(case, 0), torch.cuda.max_memory_allocated(device) / 2**30)
    out = []
    gpu = next((k for k in BF16_PEAK_FLOPS if k in hw.get("gpu", "")), None)
    for case in cases:
        ts = runs[case][2]
        step_s = statistics.median(t for t, _ in ts)
        cps = statistics.median(c / t for t, c in ts)
        mfu = 6 * n_params[case] * cps / BF16_PEAK_FLOPS[gpu] if gpu else None
        out.append({"case": case, "concepts_per_s": cps, "step_ms": step_s * 1000, "n_params": n_params[case],
                    "peak_mem_gb": peak.get(case), "mfu_bf16_peak": mfu, "leak_free": "leaky" not in case,
                    "ffn": "mamba.py: none" if case.startswith("mambapy") else
                    ("dense, hidden 1" if case.endswith("-dense") else
                     "one-expert MoE, hidden 1" if args.ew_ffn == "moe" else "dense, hidden 1")})
    by = {r["case"]: r["concepts_per_s"] for r in out}
    base = by.get("mambapy-leaky-fp32")
    for r in out:
        r["vs_mambapy_leaky_fp32"] = r["concepts_per_s"] / base if base else None
    table = markdown_table(out, ["case", "ffn", "concepts_per_s", "vs_mambapy_leaky_fp32", "step_ms", "peak_mem_gb",
                                 "mfu_bf16_peak", "leak_free", "n_params"])
    print(table)
    ratios = []
    if "ours-packed-fp32" in by and "ours-leaky-fp32" in by:
        ratios.append(f"isolation overhead (leaky / packed - 1): {by['ours-leaky-fp32'] / by['ours-packed-fp32'] - 1:+.1%}")
    if "ours-packed-bf16" in by and "ours-packed-fp32" in by:
        ratios.append(f"bf16 / fp32 (packed): {by['ours-packed-bf16'] / by['ours-packed-fp32']:.2f}x")
    if "ours-packed-bf16-dense" in by and "ours-packed-fp32-dense" in by:
        ratios.append(f"bf16 / fp32 (packed, dense feed-forward): "
                      f"{by['ours-packed-bf16-dense'] / by['ours-packed-fp32-dense']:.2f}x")
    print("\n".join(ratios))
    settings = {k: v for k, v in vars(args).items() if k not in ("name", "out", "argv")}
    from model.ops import auto_backend

    from model.ops.causal_conv1d import conv_auto_backend

    tiles = {k: v for k, v in sorted(os.environ.items()) if k.startswith("VMMOE_")}
    note = (f"\n\n{chr(10).join(ratios)}\n\nScan backend (auto on {device.type}): {auto_backend(device)}; conv "
            f"backend {args.ew_conv_backend} ({conv_auto_backend(device)} on {device.type}); feed-forward "
            f"{args.ew_ffn}; checkpoint_blocks {args.ew_checkpoint}; tile settings {tiles or 'defaults'}. "
            f"Lengths lognormal, mean {np.mean(lengths):.1f}, max {max(lengths)}; rows of {row_len}, {rows} rows a step, "
            f"AdamW; median of {args.steps} steps after {args.warmup} warm-up, cases in turn. MFU = 6 * params * "
            f"concepts/s over the dense bf16 peak ({BF16_PEAK_FLOPS.get(gpu)}). Settings: {settings}.\nRe-run: "
            "`python benchmarks/bench_train.py " + " ".join(args.argv) + "`")
    name = args.name or (f"train_{device.type}_equal_work" + ("" if args.ew_d_model == 768 else f"_{args.ew_d_model}")
                         + ("_ckpt" if args.ew_checkpoint else "") + ("_dense" if args.ew_ffn == "dense" else ""))
    write_results(name, out, table + note, hw, output_dir(args), extra={"settings": settings})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="auto (per-device policy), fp32, bf16 or fp16")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--n-layers", type=int, default=4)
    p.add_argument("--n-experts", type=int, default=8)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--rows", type=int, default=8, help="packed rows per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--synthetic", action="store_true", help="synthetic lengths instead of the default store's")
    p.add_argument("--docs", type=int, default=600, help="number of synthetic sequences")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--name", default=None, help="result file stem (default train_<device>)")
    p.add_argument("--equal-work", action="store_true", help="the issue-9 side-by-side table (see the docstring)")
    p.add_argument("--ew-d-model", type=int, default=768)
    p.add_argument("--ew-layers", type=int, default=12)
    p.add_argument("--ew-ffn", default="moe", choices=("moe", "dense"),
                   help="feed-forward ~0 as a one-expert MoE (the issue's table) or a dense MLP of hidden size 1")
    p.add_argument("--ew-conv-backend", default="auto", help="causal-conv backend of this engine (auto, torch, triton)")
    p.add_argument("--ew-checkpoint", action="store_true", help="per-block activation checkpointing (this engine)")
    p.add_argument("--ew-cases", default=",".join(EW_CASES), help="comma-separated subset of " + ",".join(EW_CASES))
    add_output_args(p)
    args = p.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.equal_work:
        return equal_work(args)
    modes = args.modes.split(",")
    if unknown := [m for m in modes if m not in MODES]:
        raise ValueError(f"unknown mode(s) {unknown}; choose from {MODES}")
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = synthetic_lengths(args.docs) if args.synthetic else store_lengths(out_dir=output_dir(args))
    lengths = [piece for n in lengths for piece in [args.max_len] * (n // args.max_len) + [n % args.max_len] if piece]
    source = ("synthetic (resampled store lengths)" if LENGTHS_FILE.is_file() else "synthetic (geometric)") \
        if args.synthetic else "default store documents"
    seqs = random_sequences(lengths, 384)
    hw = hardware(args.device)
    print(f"bench_train on {hardware_line(hw)}; {len(lengths)} sequences, mean length {np.mean(lengths):.1f} "
          f"({source}); max_len {args.max_len}, {args.rows} rows/step", flush=True)
    rows = measure(modes, seqs, args)
    for r in rows:
        print(f"  {r['mode']:13} {r['concepts_per_s']:10.0f} concepts/s  {r['step_ms']:9.1f} ms/step  "
              f"utilization {r['utilization']:.3f}", flush=True)
    by = {r["mode"]: r["concepts_per_s"] for r in rows}
    for r in rows:
        r["vs_single"] = r["concepts_per_s"] / by["single"] if "single" in by else None
        r["vs_packed_leaky"] = r["concepts_per_s"] / by["packed-leaky"] if "packed-leaky" in by else None
    table = markdown_table(rows, ["mode", "concepts_per_s", "step_ms", "utilization", "vs_single",
                                  "vs_packed_leaky", "concepts_per_step", "n_params", "device", "dtype"])
    print(table)
    if "packed" in by and "single" in by:
        print(f"packed / single = {by['packed'] / by['single']:.2f}x")
    if "packed" in by and "packed-leaky" in by:
        print(f"packed / packed-leaky = {by['packed'] / by['packed-leaky']:.3f}")
    settings = {k: v for k, v in vars(args).items() if k not in ("name", "out", "update", "argv")}
    note = (f"\n\nLengths: {source}, {len(lengths)} sequences, mean {np.mean(lengths):.1f}. Vectors: random unit "
            f"vectors. Settings: {settings}.\nRe-run: `python benchmarks/bench_train.py "
            + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    write_results(args.name or f"train_{torch.device(args.device).type}", rows, table + note, hw, output_dir(args),
                  extra={"settings": settings, "lengths_source": source})
    return 0


if __name__ == "__main__":
    sys.exit(main())
