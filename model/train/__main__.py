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
    if not (args.config or args.run_dir):
        p.error("give a CONFIG file or --run-dir")
    try:
        if args.config:
            cfg = TrainConfig.from_file(args.config)
        else:
            cfg = TrainConfig.from_dict(RunDir(args.run_dir).read_config())
        state, path = run_training(cfg, run_dir=args.run_dir, runs_dir=args.runs_dir, resume=args.resume,
                                   progress=not args.no_progress)
    except KeyboardInterrupt:
        print("interrupted: the run is stopped (resume it with --resume)", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:  # refused (a live run, a bad config, missing data): a message, no traceback
        print(f"python -m model.train: error: {e}", file=sys.stderr)
        return 1
    print(f"run {path}: {state}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
