"""Packed training throughput with and without one competing busy process: torch's default thread count
(the old policy) against ``model.device.cpu_threads`` (the new one), side by side in one run.

torch starts with one intra-op thread per core. Its OpenMP workers meet at a barrier after each parallel
op, so when another process keeps one of two cores busy, every op waits for the worker the scheduler
parked (issue 11: 0.6 s/step became 10-31 s/step). The new policy counts the cores this process may use
(``os.sched_getaffinity``) minus the cores others keep busy now (``/proc/stat``), at least one.

Each case is full optimizer steps (forward, backward, AdamW) on packed rows, timed by the trainer itself
(``step_time``); the cases take turns in rounds, so slow drifts of the machine hit them alike.

    python benchmarks/bench_contention.py              # results to $VMMOE_HOME/bench
    python benchmarks/bench_contention.py --update     # refresh benchmarks/results/contention_cpu.*
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from bench_common import add_output_args, hardware, hardware_line, markdown_table, output_dir, write_results

from model.device import busy_cores, cpu_threads, usable_cores
from model.train.config import TrainConfig
from model.train.trainer import Trainer

TORCH_DEFAULT_THREADS = torch.get_num_threads()  # before anything sets it: what an untouched run gets

BUSY = "import sys\nprint('ready', flush=True)\nwhile True:\n    pass\n"


def start_competitor() -> subprocess.Popen:
    """One process spinning on one core; returns once it runs (it says so on its pipe)."""
    p = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE, text=True)
    if p.stdout.readline().strip() != "ready":
        p.kill()
        raise RuntimeError("the competing process did not start")
    return p


def measure(trainer: Trainer, steps: list[list[int]], threads: int, max_steps: int, budget_s: float) -> dict:
    torch.set_num_threads(threads)
    trainer.train_step(steps[0])  # warm-up (thread pool resized, caches)
    times, concepts, t0 = [], 0, time.monotonic()
    for i in range(1, max_steps + 1):
        rec = trainer.train_step(steps[i % len(steps)])
        times.append(rec["step_time"])
        concepts += rec["concepts"]
        if len(times) >= 3 and time.monotonic() - t0 > budget_s:
            break
    return {"threads": threads, "steps": len(times), "s_per_step": statistics.median(times),
            "concepts_per_s": concepts / sum(times)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=12, help="timed steps per case and round (at most)")
    p.add_argument("--budget", type=float, default=20.0, help="seconds per case and round (at least 3 steps)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--rows", type=int, default=4, help="packed rows per step")
    add_output_args(p)
    args = p.parse_args(argv)

    cfg = TrainConfig.from_dict({"data": "synthetic", "synthetic_docs": 400, "synthetic_mean_len": 40, "max_len": 256,
                                 "rows_per_step": args.rows, "packing": "packed", "threads": 1, "steps": 1,
                                 "model": {"d_model": args.d_model, "n_layers": 2, "d_state": 8, "n_experts": 4,
                                           "top_k": 2, "d_concept": 384}, "tensorboard": False})
    trainer = Trainer(cfg)
    steps = trainer.sampler.epoch_steps(0)
    cores = usable_cores()
    print(f"{hardware_line(hardware())}; usable cores {cores}, torch default threads {TORCH_DEFAULT_THREADS}", flush=True)

    results: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for competing in (False, True) if r % 2 == 0 else (True, False):
            comp = start_competitor() if competing else None
            try:
                busy = busy_cores()
                policies = {"old (torch default)": TORCH_DEFAULT_THREADS, "new (cpu_threads)": cpu_threads(busy=busy)}
                for policy, threads in policies.items():
                    m = measure(trainer, steps, threads, args.steps, args.budget)
                    m["busy_cores_seen"] = round(busy, 2)
                    results.setdefault(("with" if competing else "without", policy), []).append(m)
                    print(f"round {r + 1} {'with' if competing else 'without'} competitor, {policy}: {threads} threads, "
                          f"{m['s_per_step']:.3f} s/step, {m['concepts_per_s']:.0f} concepts/s "
                          f"(others busy: {busy:.2f} cores)", flush=True)
            finally:
                if comp is not None:
                    comp.kill()
                    comp.wait()

    rows = []
    for (competing, policy), ms in results.items():
        rows.append({"competitor": competing, "policy": policy, "threads": ms[-1]["threads"],
                     "s_per_step": statistics.median(m["s_per_step"] for m in ms),
                     "concepts_per_s": statistics.median(m["concepts_per_s"] for m in ms),
                     "busy_cores_seen": statistics.median(m["busy_cores_seen"] for m in ms),
                     "steps": sum(m["steps"] for m in ms)})
    rows.sort(key=lambda r: (r["competitor"] != "without", r["policy"]))
    base = next(r["concepts_per_s"] for r in rows if r["competitor"] == "without" and r["policy"].startswith("old"))
    for row in rows:
        row["vs_old_alone"] = row["concepts_per_s"] / base
        same = next(r for r in rows if r["competitor"] == row["competitor"] and r["policy"].startswith("old"))
        row["new_over_old"] = row["concepts_per_s"] / same["concepts_per_s"]
    md = markdown_table(rows, ["competitor", "policy", "threads", "s_per_step", "concepts_per_s", "vs_old_alone",
                               "new_over_old", "busy_cores_seen", "steps"])
    note = (f"\n\nPacked training (d_model {args.d_model}, 2 layers, 4 experts, {args.rows} rows of 256 a step), "
            f"{cores} usable cores, torch's default {TORCH_DEFAULT_THREADS} threads. `competitor`: one other "
            "process spinning on one core. `vs_old_alone`: throughput over the old policy without a competitor; "
            "`new_over_old`: the new policy's throughput over the old one's in the same condition. "
            "`busy_cores_seen`: what `model.device.busy_cores` measured from /proc/stat (other users of a shared "
            "machine count too). Median over rounds.")
    print(md)
    write_results("contention_cpu", rows, md + note, out_dir=output_dir(args),
                  extra={"torch_default_threads": TORCH_DEFAULT_THREADS, "usable_cores": cores})
    return 0


if __name__ == "__main__":
    sys.exit(main())
