"""The command reference, docs/commands.md, written from the parsers the `sweep` command itself uses, so the
page cannot drift from the flags.

    python -m sweep.command_reference > docs/commands.md    # write the page
    python -m sweep.command_reference --check               # exit 1 if docs/commands.md is not what it writes

The page is Markdown rendered here from each parser's arguments, not argparse's help text, whose wrapping
follows the terminal's width and the Python version: the same parsers give the same page everywhere.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from sweep import cli

PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands.md"
WRITE = "python -m sweep.command_reference > docs/commands.md"
SYNOPSIS_WIDTH = 110


def _options(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest.upper()
    flag = max(action.option_strings, key=len)
    if action.nargs == 0:
        return flag
    value = action.metavar or ("|".join(map(str, action.choices)) if action.choices else action.dest.upper())
    return f"{flag} {value}"


def _synopsis_part(action: argparse.Action, grouped: bool) -> str:
    """How one argument shows in the synopsis; `grouped`: inside a group of alternatives, which brackets."""
    text = _options(action)
    if action.nargs in ("+", "*"):
        text += "..."
    elif isinstance(action, argparse._AppendAction):
        text += " ..."
    optional = not action.required if action.option_strings else action.nargs in ("?", "*")
    return f"[{text}]" if optional and not grouped else text


def _arguments(p: argparse.ArgumentParser) -> list[argparse.Action]:
    # argparse lists a parser's arguments only in `_actions` (what its own help reads); -h is on every command.
    return [a for a in p._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def synopsis(p: argparse.ArgumentParser) -> str:
    """`sweep NAME [--flag VALUE] ...`, with alternatives as `(a | b)` (one required) or `[a | b]`, wrapped
    under the command's name."""
    groups = {id(a): g for g in p._mutually_exclusive_groups for a in g._group_actions}
    parts, seen = [], set()
    for action in _arguments(p):
        group = groups.get(id(action))
        if group is None:
            parts.append(_synopsis_part(action, grouped=False))
        elif id(group) not in seen:
            seen.add(id(group))
            alternatives = " | ".join(_synopsis_part(a, grouped=True) for a in _arguments(p) if a in group._group_actions)
            parts.append(f"({alternatives})" if group.required else f"[{alternatives}]")
    lines, indent = [p.prog], " " * (len(p.prog) + 1)
    for part in parts:
        if len(lines[-1]) + 1 + len(part) > SYNOPSIS_WIDTH and lines[-1] != p.prog:
            lines.append(indent + part)
        else:
            lines[-1] += " " + part
    return "\n".join(lines)


def _markdown(text: str) -> str:
    """Text as Markdown shows it: `<name>` is no HTML tag and `*` no emphasis, except in code spans."""
    parts = text.split("`")
    parts[::2] = [part.replace("<", "&lt;").replace("*", "\\*") for part in parts[::2]]
    return "`".join(parts)


def _cell(text: str) -> str:
    return _markdown(text).replace("|", "\\|").replace("\n", " ")


def _help(action: argparse.Action, prog: str) -> str:
    # argparse expands %(default)s and the like in help texts; the page says what `--help` says
    return action.help % {**vars(action), "prog": prog} if "%" in (action.help or "") else action.help or ""


def command_section(p: argparse.ArgumentParser) -> str:
    rows = [f"| {_cell(f'`{_options(a)}`')} | {_cell(_help(a, p.prog))} |" for a in _arguments(p)]
    description = _markdown((p.description or "").strip())
    return "\n".join([f"## {p.prog}", "", "```", synopsis(p), "```", "", description, "",
                      "| argument | meaning |", "| --- | --- |", *rows, ""])


def page() -> str:
    sub = argparse.ArgumentParser(prog="sweep").add_subparsers()
    parsers = {name: cli.add_command(sub, name) for name in cli.COMMANDS}
    index = [f"| [`sweep {name}`](#sweep-{name}) | {_cell(importlib.import_module(cli.COMMANDS[name]).HELP)} |"
             for name in parsers]
    head = ["# Commands", "", f"<!-- Generated from the parsers of sweep/cli.py by `{WRITE}`: edit the parsers, "
            "not this page. -->", "", f"{cli.DESCRIPTION} Exit codes, and what is checked before anything runs: "
            "[running.md](running.md#exit-codes).", "", "| command | what it does |", "| --- | --- |", *index, ""]
    return "\n".join([*head, *(command_section(p) for p in parsers.values())])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sweep.command_reference", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help=f"exit 1 if {PAGE} is not the page the parsers give")
    args = ap.parse_args(argv)
    text = page()
    if not args.check:
        sys.stdout.write(text)
        return 0
    if PAGE.is_file() and PAGE.read_text() == text:
        return 0
    print(f"{PAGE} is stale: it does not match the parsers in sweep/cli.py; regenerate it with `{WRITE}`",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
