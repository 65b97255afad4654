"""Options shared by the subcommands and their parsing: one spelling, one syntax, one error style.

* Every subcommand that writes takes ``-o/--out`` (a file or a folder, as its help says).
* ``--device`` is ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` everywhere; a CUDA
  device on a machine without one is a one-line error (exit code 2) before any work.
* Lists are comma-separated, without spaces or with the whole list quoted: ``--poses standing,supine``.
  A plural name takes a list (``--folds 0,1,2``), a ``-count`` name a number (``--fold-count 5``).
* ``--image-size ROWSxCOLUMNS`` (pixels), ``--threads N``, ``--seed N`` and ``--quiet`` mean the same everywhere.

Values are checked by argparse ``type=`` functions, so a bad value ends in argparse's one-line usage error
(exit code 2) that names the option. Nothing here imports numpy or torch until a command runs: ``bmdgan --help``
builds every subcommand's parser.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def add_out(parser: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``-o/--out``: where the command writes (required unless a default is given)."""
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        required=default is None,
        default=default,
        metavar="PATH",
        help=help if default is None else f"{help} (default: {default})",
    )


def device(text: str) -> str:
    """argparse type of ``--device``: the syntax only; :func:`resolve_device` checks the machine."""
    value = text.strip().lower()
    if not DEVICE_PATTERN.match(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (use {DEVICE_HELP})")
    return value


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        type=device,
        default="auto",
        metavar="DEVICE",
        help=f"where to compute: {DEVICE_HELP} (default: auto)",
    )


def resolve_device(text: str) -> str:
    """``auto`` -> ``cuda`` or ``cpu``; ``cuda[:N]`` checked against this machine (InputError when absent)."""
    if text == "cpu" or (text == "auto" and _linux_without_nvidia_driver()):
        return "cpu"  # without importing torch (1.5 s, ~200 MB): a refused input costs no torch
    import torch

    from ..errors import InputError

    available = torch.cuda.is_available()
    if text == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise InputError(
            None, f"--device {text}: this machine has no usable CUDA device", "use --device cpu or --device auto"
        )
    index = int(text.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InputError(
            None,
            f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)",
            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}",
        )
    return text


def _linux_without_nvidia_driver() -> bool:
    """True on a Linux machine whose kernel has no NVIDIA driver loaded: CUDA cannot be available there."""
    return sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version")


def comma_list(
    item: Callable[[str], object] = str,
    choices: tuple[str, ...] | None = None,
    example: str = "a,b",
    unique: bool = True,
) -> Callable[[str], tuple]:
    """argparse type of a comma-separated list whose items are parsed by ``item`` (``int``, ``float``, ``str``);
    empty items are dropped, so ``""`` is the empty list. A bad item names itself and shows ``example``; an item
    given twice is refused when ``unique`` (names, folds), kept otherwise (measured values)."""
    kind = {int: "an integer", float: "a number"}.get(item, "a name")

    def parse(text: str) -> tuple:
        values = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                value = item(part)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{part!r} in {text!r} is not {kind} (write a comma-separated list, e.g. {example})"
                ) from None
            if choices is not None and value not in choices:
                raise argparse.ArgumentTypeError(f"{part!r} in {text!r} is not one of {', '.join(choices)}")
            if unique and value in values:
                raise argparse.ArgumentTypeError(f"{part!r} is given twice in {text!r}")
            values.append(value)
        return tuple(values)

    return parse


def bounded_int(low: int) -> Callable[[str], int]:
    """argparse type of an integer ``>= low`` (counts, thread numbers, epochs)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is less than {low}")
        return value

    return parse


positive_int = bounded_int(1)
non_negative_int = bounded_int(0)


def _positive_number(text: str, not_a_number: str, not_positive: str) -> float:
    """``text`` as a finite number above 0, else argparse's error with the message that fits."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number.format(text=text)) from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(not_positive.format(value=value))
    return value


def positive_mm(text: str) -> float:
    """argparse type of a length in mm that must be a finite number above 0 (a pixel spacing, a distance)."""
    return _positive_number(text, "{text!r} is not a number of millimetres", "{value} mm is not a positive length")


def magnification(text: str) -> float:
    """argparse type of a geometric magnification (source-to-detector over source-to-object distance): at least 1,
    since a diverging beam only enlarges, and below 2, since no hip lies nearer the source than the detector."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a magnification (write e.g. 1.15)") from None
    if not 1 <= value < 2:
        raise argparse.ArgumentTypeError(f"{text} is not a magnification of a hip radiograph (at least 1, below 2)")
    return value


def share(text: str) -> float:
    """argparse type of a share of a whole (0 to 1; ``"0.1"`` or ``"10%"``)."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share (write e.g. 0.1 or 10%)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1 (0 % and 100 %)")
    return value


def loss_weight(text: str) -> float:
    """argparse type of the weight of a loss term: a finite number above 0."""
    return _positive_number(
        text, "{text!r} is not a loss weight (write e.g. 0.1)", "{value} is not a loss weight above 0"
    )


def probability(text: str) -> float:
    """argparse type of a probability strictly between 0 and 1 (a confidence threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a probability (write e.g. 0.25)") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a probability between 0 and 1 (both excluded)")
    return value


def titled_folder(text: str) -> tuple[str, Path]:
    """``TITLE=FOLDER`` (e.g. ``fold 0=out/eval``): a result folder and the title it is reported under."""
    title, separator, folder = text.partition("=")
    if not separator or not title or not folder:
        raise argparse.ArgumentTypeError(f"{text!r} is not TITLE=FOLDER, e.g. 'fold 0=out/eval'")
    return title, Path(folder)


def image_size(text: str) -> tuple[int, int]:
    """argparse type of ``--image-size``: ``"512x256"`` -> ``(512, 256)`` (rows, columns; pixels)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or 0 in (int(match[1]), int(match[2])):
        raise argparse.ArgumentTypeError(f"{text!r} is not ROWSxCOLUMNS (write e.g. 512x256, both positive)")
    return int(match[1]), int(match[2])


def add_image_size(parser: argparse.ArgumentParser, default: str = "512x256") -> None:
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=default,
        metavar="ROWSxCOLUMNS",
        help=f"rows x columns of every image in pixels (default {default})",
    )


def add_seed(parser: argparse.ArgumentParser, default: int = 0, what: str = "random draws") -> None:
    parser.add_argument("--seed", type=int, default=default, help=f"seed of the {what} (default {default})")


def add_threads(parser: argparse.ArgumentParser, default: int = 1, why: str = "") -> None:
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=default,
        help=f"torch CPU threads (default {default}{': ' + why if why else ''})",
    )


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress display")


def add_fold_training(parser: argparse.ArgumentParser, default_folds: str) -> None:
    """--config, --folds and --targets of the commands that train and evaluate fold after fold."""
    parser.add_argument("--config", default="cpu", help="configuration name (paper, cpu, smoke) or YAML path")
    parser.add_argument(
        "--folds",
        type=comma_list(int, example="0,1,2"),
        default=default_folds,
        help=f"folds to hold out in turn, comma-separated (default {default_folds})",
    )
    parser.add_argument(
        "--targets",
        type=comma_list(),
        default="ct_abmd_g_cm2,qct_vbmd_mg_cm3",
        help="BMD columns to regress, comma-separated (default ct_abmd_g_cm2,qct_vbmd_mg_cm3)",
    )
