"""The `sweep` command. Each subcommand lives in its own module, listed in COMMANDS, which provides
`HELP`, `add_arguments(parser)` and `main(args) -> exit code`; modules import their heavy dependencies
(Ray, MLflow) only inside `main`, after the input has been checked.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from sweep.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, InputError

COMMANDS = {
    "run": "sweep.commands.run",
    "resume": "sweep.commands.resume",
    "compare": "sweep.commands.compare",
    "list": "sweep.commands.list_sweeps",
    "verify": "sweep.commands.verify",
    "import-logs": "sweep.commands.import_logs",
}
DESCRIPTION = "Hyperparameter sweeps of record-style GPT training on Ray Tune, Optuna and MLflow."


def parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `sweep` parser with every command, or with command `only`: building one imports its module, and
    a command's first line should not wait for the others' imports."""
    p = argparse.ArgumentParser(prog="sweep", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else COMMANDS:
        add_command(sub, name)
    return p


def add_command(sub, name: str) -> argparse.ArgumentParser:
    """The parser of `sweep NAME`, added to `sub`, the subparsers action of a parser (`parser()`'s, or the
    command reference's: sweep.command_reference)."""
    module = importlib.import_module(COMMANDS[name])
    sp = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(sp)
    sp.set_defaults(handler=module.main)
    return sp


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    # SIGINT and SIGTERM end a command the same way (docs/running.md, "Signals"): SIGTERM not with Python's abrupt
    # default, SIGINT even when the shell started us with it ignored (a background job).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    command = "sweep"
    try:
        argv = sys.argv[1:] if argv is None else argv
        p = parser(argv[0] if argv and argv[0] in COMMANDS else None)
        args = p.parse_args(argv)
        if args.command is None:
            p.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        command = f"sweep {args.command}"
        return args.handler(args)
    except InputError as e:
        print(f"{command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
