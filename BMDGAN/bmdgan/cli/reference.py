"""The command-line reference (docs/cli.md), generated from the parser so that it lists every subcommand.

Usage: ``python -m bmdgan.cli.reference > docs/cli.md``; ``Testing/engine/test_cli_options.py`` checks that the
file is up to date.
"""

from __future__ import annotations

import argparse
import inspect

from . import main as cli_main
from . import options

WIDE = 10_000
"""Formatter width (characters) that keeps each usage on one line, whatever the terminal."""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _value(action: argparse.Action) -> str:
    if action.nargs == 0 or not action.option_strings:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _default(action: argparse.Action) -> str:
    if action.required or action.nargs == 0 or any(action.default is v for v in (None, False, argparse.SUPPRESS)):
        return ""
    return "''" if action.default == "" else f"`{action.default}`"


def _command_section(name: str, parser: argparse.ArgumentParser) -> list[str]:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDE)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    usage = " ".join(formatter.format_help().split())
    lines = [
        f"## {name}",
        "",
        _cell(parser.description),
        "",
        f"`{usage}`",
        "",
        "| argument | value | default | meaning |",
        "|---|---|---|---|",
    ]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        names = ", ".join(f"`{o}`" for o in action.option_strings) or f"`{action.dest}`"
        meaning = formatter._expand_help(action) if action.help else ""
        if action.required and action.option_strings:
            meaning = f"required; {meaning}"
        lines.append(f"| {names} | {_cell(_value(action))} | {_cell(_default(action))} | {_cell(meaning)} |")
    return lines + [""]


def reference() -> str:
    """The Markdown text of docs/cli.md."""
    parser = cli_main.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(sorted(subparsers.choices.items()))
    lines = [
        "# Command-line reference",
        "",
        "Generated from the parser by `python -m bmdgan.cli.reference > docs/cli.md` (a test checks that it is "
        "up to date): do not edit by hand. `bmdgan COMMAND --help` prints the same.",
        "",
        "## Conventions",
        "",
    ]
    conventions = inspect.getdoc(options).split("\n\n")[1]
    exit_codes = " ".join(inspect.getdoc(cli_main).split("\n\n")[1].split())
    lines += [
        conventions,
        "",
        exit_codes,
        "",
        "`bmdgan --debug COMMAND ...` shows the full traceback of any error; `bmdgan --version` prints the version.",
        "",
        "## Subcommands",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    summaries = {choice.dest: choice.help for choice in subparsers._choices_actions}
    lines += [f"| [`{name}`](#{name}) | {_cell(summaries[name])} |" for name in commands]
    lines.append("")
    for name, sub in commands.items():
        lines += _command_section(name, sub)
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference(), end="")
