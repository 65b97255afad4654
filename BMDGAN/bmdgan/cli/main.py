"""Entry point of the ``bmdgan`` console command.

User errors (:class:`bmdgan.errors.BMDGANError`) print one clear line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import signal
import sys

from .. import __version__
from . import commands

EXIT_USER_ERROR = 2


def _command_modules() -> dict[str, object]:
    found = {}
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found[info.name.replace("_", "-")] = importlib.import_module(f"{commands.__name__}.{info.name}")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bmdgan",
        description="BMD-GAN: bone mineral density of the proximal femur from a plain hip radiograph.",
    )
    parser.add_argument("--version", action="version", version=f"bmdgan {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _command_modules().items():
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..errors import BMDGANError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USER_ERROR
    # Ctrl+C (SIGINT) stops every command cleanly, even when the parent started us with SIGINT ignored (a shell's
    # background job, some GUI launchers): the Slicer modules stop their engine processes this way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "SIGBREAK"):  # Windows: the modules stop their processes with CTRL_BREAK
        signal.signal(signal.SIGBREAK, signal.default_int_handler)
    try:
        return int(args.run(args) or 0)
    except BMDGANError as error:
        print(f"bmdgan {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"bmdgan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
