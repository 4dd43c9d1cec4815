"""The ``vmmoe`` command. Each area registers its own sub-commands from ``model/commands/``."""
from __future__ import annotations

import argparse
import importlib
import sys

# One module per area; each defines ``register(subparsers)`` and sets ``func`` on its parsers.
COMMAND_MODULES = (
    "model.commands.audit",
    "model.commands.concepts",
    "model.commands.train",
    "model.commands.bench",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmmoe", description="Packed VMMoE engine and workbench tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that area is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # a clear message, not a traceback
        print(f"vmmoe {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
