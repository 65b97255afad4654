"""Entry point of the ``bmdgan`` console command.

Exit codes: 0 done; 2 an error the user can fix (bad option or input, unwritable output, damaged file: one line
``bmdgan CMD: error: <file>: <what> (<what to do>)``, made by ``bmdgan.errors.describe_expected_error``); 1 an
internal error (a bug: one line, and ``bmdgan --debug CMD ...`` shows its traceback); 130 interrupted (Ctrl+C).
A command may define its own further codes (``register``: 3 when the registration ran but failed its quality check).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys

from .. import __version__
from . import commands

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def _command_modules() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name.replace("_", "-")] = importlib.import_module(f"{commands.__name__}.{info.name}")
    return found


class Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (the usage itself is in ``--help``)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bmdgan",
        description="BMD-GAN: bone mineral density of the proximal femur from a plain hip radiograph.",
    )
    parser.add_argument("--version", action="version", version=f"bmdgan {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of any error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import describe_expected_error
    from .options import resolve_device

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, --version or a usage error: argparse has printed it
        return int(done.code or 0)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    # Ctrl+C (SIGINT) stops every command cleanly, even when the parent started us with SIGINT ignored (a shell's
    # background job, some GUI launchers): the Slicer modules stop their engine processes this way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGBREAK"):  # Windows: the modules stop their processes with CTRL_BREAK
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        if getattr(args, "device", None) is not None:
            args.device = resolve_device(args.device)
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"bmdgan {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:
        if args.debug:
            raise
        message = describe_expected_error(error)
        if message is not None:
            print(f"bmdgan {args.command}: error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        detail = " ".join(f"{type(error).__name__}: {error}".split())
        print(
            f"bmdgan {args.command}: internal error: {detail} (a bug in bmdgan: run 'bmdgan --debug "
            f"{args.command} ...' to see the traceback, and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
