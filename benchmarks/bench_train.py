"""Training throughput by packing mode: concepts per second for single, padded, packed and packed-leaky.

Same model (same seed, same initial weights), same sequences in every step, one run, the modes taking
turns step by step: only the layout differs (one forward per sequence; one padded row per sequence; packed rows with resets; packed rows
without resets). Each timed step is a full optimizer step (forward, backward, AdamW) measured by the
trainer itself (``step_time`` in metrics.jsonl), so the figures are what a run logs.

    python benchmarks/bench_train.py                  # CPU, default model, default store's lengths
    python benchmarks/bench_train.py --synthetic      # lengths drawn like the store's (mean ~55)
    python benchmarks/bench_train.py --device cuda --d-model 384 --n-layers 6 --rows 32 --synthetic   # ~50M params

Vectors are random unit vectors (the timing does not depend on their values); lengths come from the
default store's documents unless --synthetic, or from ``results/train_lengths.json`` when the store
is not installed (the GPU machine), which the CPU run writes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from bench_common import RESULTS_DIR, add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results

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
    add_output_args(p)
    args = p.parse_args(argv)
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
    settings = {k: v for k, v in vars(args).items() if k not in ("name", "out", "update")}
    note = (f"\n\nLengths: {source}, {len(lengths)} sequences, mean {np.mean(lengths):.1f}. Vectors: random unit "
            f"vectors. Settings: {settings}.\nRe-run: `python benchmarks/bench_train.py "
            + " ".join(argv if argv is not None else sys.argv[1:]) + "`")
    write_results(args.name or f"train_{torch.device(args.device).type}", rows, table + note, hw, output_dir(args),
                  extra={"settings": settings, "lengths_source": source})
    return 0


if __name__ == "__main__":
    sys.exit(main())
