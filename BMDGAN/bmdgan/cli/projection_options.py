"""Options of the projection commands (drr, simulate-xray): the geometry choice and NAME=VALUES channels.

The --default-ap distances default to None here and to the engine's defaults in :func:`geometry_from_arguments`
(:mod:`bmdgan.projection.geometry` imports numpy, which ``--help`` must not); their help quotes the numbers,
and a test keeps the help and the engine in step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import positive_int

SID_HELP_MM = 1000
"""The engine's DEFAULT_SOURCE_TO_DETECTOR_MM, as the help quotes it (mm)."""
OBJECT_TO_DETECTOR_HELP_MM = 200
"""The engine's DEFAULT_OBJECT_TO_DETECTOR_MM, as the help quotes it (mm)."""


def add_geometry_arguments(parser: argparse.ArgumentParser, default_pixel_mm: float = 0.5) -> None:
    """--geometry JSON or --default-ap with its SID, distance, pixel and detector-size options."""
    group = parser.add_argument_group("geometry")
    choice = group.add_mutually_exclusive_group()
    choice.add_argument(
        "--geometry", type=Path, metavar="JSON", help="projection geometry JSON (format: bmdgan.projection.geometry)"
    )
    choice.add_argument(
        "--default-ap", action="store_true", help="AP view centred on the CT (the default when --geometry is not given)"
    )
    group.add_argument("--parallel", action="store_true", help="parallel projection (DXA-like) with --default-ap")
    group.add_argument(
        "--sid-mm", type=float, help=f"source-to-detector distance for --default-ap (mm, default {SID_HELP_MM})"
    )
    group.add_argument(
        "--object-to-detector-mm",
        type=float,
        help=f"CT centre to detector distance for --default-ap (mm, default {OBJECT_TO_DETECTOR_HELP_MM})",
    )
    group.add_argument(
        "--pixel-mm",
        type=float,
        default=default_pixel_mm,
        help="detector pixel pitch for --default-ap (mm, default %(default)s)",
    )
    group.add_argument("--columns", type=positive_int, help="detector columns for --default-ap (default: cover the CT)")
    group.add_argument("--rows", type=positive_int, help="detector rows for --default-ap (default: cover the CT)")


def geometry_from_arguments(args: argparse.Namespace, volume):
    """The :class:`ProjectionGeometry` chosen by :func:`add_geometry_arguments` options."""
    from ..projection.geometry import (
        DEFAULT_OBJECT_TO_DETECTOR_MM,
        DEFAULT_SOURCE_TO_DETECTOR_MM,
        ProjectionGeometry,
        default_ap_geometry,
    )

    if args.geometry is not None:
        return ProjectionGeometry.load(args.geometry)
    if (args.columns is None) != (args.rows is None):
        raise InputError(None, "--columns and --rows go together", "give both or neither")
    sid_mm = DEFAULT_SOURCE_TO_DETECTOR_MM if args.sid_mm is None else args.sid_mm
    object_mm = DEFAULT_OBJECT_TO_DETECTOR_MM if args.object_to_detector_mm is None else args.object_to_detector_mm
    return default_ap_geometry(
        volume,
        source_to_detector_mm=sid_mm,
        object_to_detector_mm=object_mm,
        pixel_spacing_mm=args.pixel_mm,
        columns=args.columns,
        rows=args.rows,
        parallel=args.parallel,
    )


def parse_named_values(items: list[str] | None, option: str) -> dict[str, str]:
    """``["femur=88,89", ...]`` -> ``{"femur": "88,89"}``; InputError naming the option when malformed."""
    named = {}
    for item in items or []:
        name, separator, value = item.partition("=")
        if not separator or not name.strip() or not value.strip():
            raise InputError(None, f"{option} {item!r} is not NAME=VALUE", f"write e.g. {option} femur=88,89")
        if name.strip() in named:
            raise InputError(None, f"{option} names {name.strip()!r} twice", "give each channel a unique name")
        named[name.strip()] = value.strip()
    return named


def parse_label_list(text: str, option: str) -> list[int]:
    """``"88,89"`` -> ``[88, 89]``."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InputError(
            None, f"{option}: {text!r} is not a comma-separated list of integer labels", "write e.g. femur=88,89"
        ) from None
