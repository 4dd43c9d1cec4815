"""The training process: ``python -m model.train --run-dir DIR [--resume]`` (what start_run launches),
or ``python -m model.train CONFIG [--runs-dir DIR]`` (same as ``vmmoe train``; works under torchrun)."""
from __future__ import annotations

import argparse
import sys

from model.train.config import TrainConfig
from model.train.runs import RunDir
from model.train.trainer import run_training


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model.train", description=__doc__)
    p.add_argument("config", nargs="?", help="train config (.json or .toml); omitted: the run folder's config.json")
    p.add_argument("--run-dir", help="the run folder (made by start_run, or one to resume)")
    p.add_argument("--runs-dir", help="where a new run folder is made (default $VMMOE_HOME/runs)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's newest valid checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (runs started in the background)")
    args = p.parse_args(argv)
    if args.config:
        cfg = TrainConfig.from_file(args.config)
    elif args.run_dir:
        cfg = TrainConfig.from_dict(RunDir(args.run_dir).read_config())
    else:
        p.error("give a CONFIG file or --run-dir")

    state, path = run_training(cfg, run_dir=args.run_dir, runs_dir=args.runs_dir, resume=args.resume,
                               progress=not args.no_progress)
    print(f"run {path}: {state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
