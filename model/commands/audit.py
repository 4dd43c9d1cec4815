"""``vmmoe audit [--leaky] [--checkpoint PATH] [--config FILE] [--json] [--per-op]``: the leakage audit.

Exit code 0 when every check passes, 1 when a leak is found (``--leaky`` audits the deliberately
leaky configuration, so it exits 1 and says that the leak was caught).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.config import VMMoEConfig
from model.leakage import audit, leaky_config
from model.train import load_checkpoint
from model.vmmoe import VMMoE


def register(subparsers) -> None:
    p = subparsers.add_parser("audit", help="prove that packed segments do not leak into each other",
                              description="Boundary flip, packing-unpacking invariance and gradient isolation, "
                                          "per layer and per op. Exit 0 on pass, 1 on a leak.")
    p.add_argument("--leaky", action="store_true",
                   help="audit the deliberately leaky configuration (resets off); the audit must catch it")
    p.add_argument("--checkpoint", metavar="PATH", help="audit a trained model (a run folder or checkpoint folder)")
    p.add_argument("--config", metavar="FILE", help="a VMMoEConfig as JSON (default: VMMoEConfig())")
    p.add_argument("--seed", type=int, default=0, help="seed of the fresh model and the audit batch")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--per-op", action="store_true", help="print one row per (check, layer, op)")
    p.set_defaults(func=run_audit)


def run_audit(args: argparse.Namespace) -> int:
    if args.checkpoint and args.config:
        raise ValueError("give either --checkpoint or --config, not both")
    if args.checkpoint:
        model, cfg, _ = load_checkpoint(args.checkpoint)
        if args.leaky:  # same weights, isolation switched off
            state = model.state_dict()
            model = VMMoE(leaky_config(cfg))
            model.load_state_dict(state)
        subject = model
    else:
        cfg = VMMoEConfig()
        if args.config:
            path = Path(args.config)
            if not path.is_file():
                raise FileNotFoundError(f"config file not found: {path}")
            try:
                cfg = VMMoEConfig.from_dict(json.loads(path.read_text()))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON: {e}") from e
        subject = leaky_config(cfg) if args.leaky else cfg
    report = audit(subject, seed=args.seed)

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table(per_op=args.per_op))
        if report.passed:
            print("PASSED: no leakage between packed segments")
        elif report.leaky:
            print("FAILED as expected: the audit caught the leak of the leaky configuration (isolate_segments=False)")
        else:
            print("FAILED: leakage between packed segments")
    return 0 if report.passed else 1
