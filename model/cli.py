"""The ``vmmoe`` command (also ``python -m model``). Each area registers its sub-commands from ``model/commands/``.

Every command module is imported here, at the top: a module that fails to import is an error of the
command, never a sub-command that silently disappears.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from model.version import __version__
from model.commands import audit, concepts, train

# One module per area; each defines ``register(subparsers)`` and sets ``func`` on its parsers.
COMMAND_MODULES = (audit, concepts, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmmoe", description="Packed VMMoE engine and workbench tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def command_paths(parser: argparse.ArgumentParser | None = None, path: tuple[str, ...] = ()):
    """Yield ``(path, parser, help)`` of every sub-command, depth first (``("store", "info")``, ...)."""
    parser = parser or build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, helps.get(name)
                yield from command_paths(sub, (*path, name))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a closed pipe is seen below and not at interpreter exit
        return code
    except BrokenPipeError:
        # the reader went away (`vmmoe runs --json | head`): stop quietly, like any Unix filter. Python's
        # recipe: point stdout at devnull so the final flush at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print(f"vmmoe {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except (ValueError, FileNotFoundError, RuntimeError) as e:  # a clear message, not a traceback
        print(f"vmmoe {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
