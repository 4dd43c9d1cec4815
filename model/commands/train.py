"""``vmmoe train CONFIG`` (train in this terminal, with a progress bar; works under torchrun),
``vmmoe train --resume RUN_DIR``, ``vmmoe train CONFIG --detach`` (background process), ``vmmoe runs``."""
from __future__ import annotations

import argparse
import json
import sys

from model.train import TrainConfig, list_runs, resume_run, run_training, start_run
from model.train.runs import RunDir
from model.train.summary import summarize_run
from model.train.config import config_help
from model.train.runs import RunDir


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a VMMoE from a JSON/TOML config",
                              description="Train a VMMoE. Under `torchrun --nproc-per-node N` it runs with DDP.",
                              epilog=config_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="train config (.json or .toml; its keys are listed below)")
    p.add_argument("--runs-dir", help="folder for run folders (default $VMMOE_HOME/runs)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its last checkpoint")
    p.add_argument("--detach", action="store_true", help="start the run as a background process and return")
    p.set_defaults(func=train)

    r = subparsers.add_parser("runs", help="list training runs")
    r.add_argument("--runs-dir", help="folder of run folders (default $VMMOE_HOME/runs)")
    r.add_argument("--json", action="store_true", help="print JSON instead of a table")
    r.set_defaults(func=runs)


def train(args: argparse.Namespace) -> int:
    if args.resume:
        if args.config:
            raise ValueError("give either CONFIG or --resume RUN_DIR, not both")
        if args.detach:
            handle = resume_run(args.resume)
            print(f"resumed {handle.path} (pid {handle.pid})")
            return 0
        cfg = TrainConfig.from_dict(RunDir(args.resume).read_config())
        run_dir = args.resume
    else:
        if not args.config:
            raise ValueError("a CONFIG file (.json or .toml) is needed, or --resume RUN_DIR")
        cfg = TrainConfig.from_file(args.config)  # rejected here, before anything starts
        if args.detach:
            handle = start_run(cfg, args.runs_dir)
            print(f"started {handle.path} (pid {handle.pid})")
            return 0
        run_dir = None
    try:
        state, path = run_training(cfg, run_dir=run_dir, runs_dir=args.runs_dir, resume=bool(args.resume))
    except KeyboardInterrupt:
        return interrupted()
    st = RunDir(path).status()
    early = f" (stopped early at step {st.get('step')})" if st.get("stopped_early") else ""
    best = f"; best checkpoint: {st['best_checkpoint']}" if st.get("best_checkpoint") else ""
    print(f"run {path}: {state}{early}; {st.get('verdict') or summarize_run(path).verdict()}{best}")
    return 0


def interrupted() -> int:
    """Ctrl-C: say where the run stands and exit 130 (128 + SIGINT, the shell's convention)."""
    print("interrupted: the run is stopped; continue it with `vmmoe train --resume RUN_DIR`", file=sys.stderr)
    return 130


def runs(args: argparse.Namespace) -> int:
    rows = list_runs(args.runs_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no runs")
        return 0
    print(f"{'name':40} {'state':9} {'step':>11} {'packing':13} {'eval loss':>9} {'best cos':>8} {'copy':>5}  verdict")
    for r in rows:
        loss = f"{r['eval_loss']:.4f}" if r["eval_loss"] is not None else "-"
        best = f"{r['best_eval_cosine']:.3f}" if r.get("best_eval_cosine") is not None else "-"
        copy = f"{r['copy_cosine']:.3f}" if r.get("copy_cosine") is not None else "-"
        print(f"{r['name']:40} {r['state'] or '?':9} {r['step']:>5}/{r['steps'] or '?':<5} {r['packing'] or '?':13} "
              f"{loss:>9} {best:>8} {copy:>5}  {r.get('verdict', '')}")
    return 0
