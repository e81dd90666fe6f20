"""docs/commands.md is the page the command parsers give, and the page holds every argument they take."""
from __future__ import annotations

import argparse

from sweep import cli, command_reference


def test_docs_commands_md_matches_the_parsers():
    written = command_reference.PAGE.read_text() if command_reference.PAGE.is_file() else ""
    assert written == command_reference.page(), (
        f"docs/commands.md is stale: it does not match the parsers of sweep/cli.py; regenerate it with "
        f"`{command_reference.WRITE}`")


def test_every_argument_of_every_command_is_on_the_page():
    page = command_reference.page()
    sub = argparse.ArgumentParser(prog="sweep").add_subparsers()
    for name in cli.COMMANDS:
        parser = cli.add_command(sub, name)
        section = page.split(f"\n## sweep {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = (max(action.option_strings, key=len) if action.option_strings
                     else action.metavar or action.dest.upper())
            assert f"| `{label}" in section, f"sweep {name}: {label} is not in its table"
            assert action.help.split(" (")[0] in section.replace("\\", "").replace("&lt;", "<"), f"sweep {name}: {label}'s help is missing"


def test_synopsis_shows_required_alternatives_and_repeatable_flags():
    page = command_reference.page()
    assert "sweep verify (NAME | --config CONFIG) [--seeds SEEDS]" in page
    assert "[--set KEY=VALUE ...]" in page
    assert "sweep import-logs PATH... [--sweep NAME]" in page
    assert "[--no-check-keys]" in page and "[--scheduler fifo|asha]" in page


def test_check_fails_on_a_stale_page_and_names_the_command(tmp_path, monkeypatch, capsys):
    stale = tmp_path / "commands.md"
    stale.write_text(command_reference.page().replace("--max-failures", "--max-retries"))
    monkeypatch.setattr(command_reference, "PAGE", stale)
    assert command_reference.main(["--check"]) == 1
    assert command_reference.WRITE in capsys.readouterr().err
    stale.write_text(command_reference.page())
    assert command_reference.main(["--check"]) == 0
