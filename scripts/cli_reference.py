"""Write docs/cli.md, the command-line reference, from the commands' own --help.

    python scripts/cli_reference.py           # rewrite docs/cli.md
    python scripts/cli_reference.py --check   # exit 1 if docs/cli.md is out of date (a test runs this)
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from clipsearch.cli import main

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100


def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], prog_name="clipsearch", terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    return result.output.rstrip()


def reference() -> str:
    parts = ["# Command-line reference", "",
             "Generated from `--help` by `python scripts/cli_reference.py`; a test checks it is current.", "",
             "```", help_text(), "```"]
    for name in sorted(main.commands):
        parts += ["", f"## clipsearch {name}", "", "```", help_text(name), "```"]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    text = reference()
    if "--check" in sys.argv[1:]:
        if not REFERENCE.exists() or REFERENCE.read_text(encoding="utf-8") != text:
            click.echo(f"{REFERENCE} is out of date; run python scripts/cli_reference.py", err=True)
            sys.exit(1)
    else:
        REFERENCE.write_text(text, encoding="utf-8")
