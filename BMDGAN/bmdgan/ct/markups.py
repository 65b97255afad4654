"""Landmarks as Slicer markups: ``.mrk.json`` (schema v1.0.3, LPS) and legacy ``.fcsv`` (RAS).

``.mrk.json`` is written with ``coordinateSystem: "LPS"`` and one named control point per landmark;
reading accepts LPS or RAS files (RAS is converted). ``.fcsv`` stores x, y, z in RAS (Slicer's
default); ``# CoordinateSystem = LPS`` (or 1) in its header is honoured. Points whose position is
undefined (``positionStatus`` other than "defined") are skipped on reading.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from ..errors import InputError
from .calibration import write_json_atomic

SCHEMA = "https://raw.githubusercontent.com/slicer/slicer/main/Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json#"
RAS_FROM_LPS = np.array([-1.0, -1.0, 1.0])


def write_mrk_json(
    points_lps: dict[str, np.ndarray],
    path: str | Path,
    name: str = "BMDGAN landmarks",
    descriptions: dict[str, str] | None = None,
) -> Path:
    """Write named LPS points (mm) as a Slicer fiducial markups file."""
    control_points = []
    for index, (label, point) in enumerate(points_lps.items()):
        control_points.append(
            {
                "id": str(index + 1),
                "label": label,
                "description": (descriptions or {}).get(label, ""),
                "associatedNodeID": "",
                "position": [float(v) for v in point],
                "orientation": [-1.0, -0.0, -0.0, -0.0, -1.0, -0.0, 0.0, 0.0, 1.0],
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
        )
    record = {
        "@schema": SCHEMA,
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "LPS",
                "coordinateUnits": "mm",
                "locked": False,
                "fixedNumberOfControlPoints": False,
                "labelFormat": "%N-%d",
                "lastUsedControlPointNumber": len(control_points),
                "controlPoints": control_points,
                "measurements": [],
                "display": {"visibility": True, "glyphScale": 3.0, "textScale": 3.0},
            }
        ],
    }
    path = Path(path)
    if not path.name.endswith(".mrk.json"):
        raise InputError(path, "markups files must end with .mrk.json", "rename the output")
    return write_json_atomic(record, path)


def read_mrk_json(path: str | Path) -> dict[str, np.ndarray]:
    """Named control points (LPS mm) of a Slicer markups JSON file (first markup in it)."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        markup = record["markups"][0]
    except FileNotFoundError:
        raise InputError(path, "does not exist", "check the path") from None
    except (ValueError, KeyError, IndexError, TypeError):
        raise InputError(
            path, "is not a Slicer markups JSON file", "save the landmarks from Slicer as .mrk.json"
        ) from None
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(path, f"unknown coordinate system '{system}'", "save the markups in LPS or RAS")
    points = {}
    for point in markup.get("controlPoints", []):
        if point.get("positionStatus", "defined") != "defined" or "position" not in point:
            continue
        position = np.asarray(point["position"], float)
        points[str(point.get("label", point.get("id")))] = position * RAS_FROM_LPS if system == "RAS" else position
    return points


def write_fcsv(points_lps: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write named LPS points (mm) as a legacy Slicer .fcsv (RAS columns)."""
    text = io.StringIO()
    text.write("# Markups fiducial file version = 4.11\n# CoordinateSystem = RAS\n")
    text.write("# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n")
    writer = csv.writer(text, lineterminator="\n")
    for index, (label, point) in enumerate(points_lps.items()):
        ras = np.asarray(point, float) * RAS_FROM_LPS
        writer.writerow(
            [f"vtkMRMLMarkupsFiducialNode_{index}", *(f"{v:.4f}" for v in ras), 0, 0, 0, 1, 1, 1, 0, label, "", ""]
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(".partial-" + path.name)
    temporary.write_text(text.getvalue())
    temporary.replace(path)
    return path


def read_fcsv(path: str | Path) -> dict[str, np.ndarray]:
    """Named points (LPS mm) of a legacy .fcsv file (RAS unless its header says LPS)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist", "check the path")
    system = "RAS"
    columns = ["id", "x", "y", "z", "ow", "ox", "oy", "oz", "vis", "sel", "lock", "label", "desc", "associatedNodeID"]
    points = {}
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            header = line[1:].strip()
            if header.lower().startswith("coordinatesystem"):
                value = header.split("=", 1)[1].strip().upper()
                system = "LPS" if value in ("LPS", "1") else "RAS"
            elif header.lower().startswith("columns"):
                columns = [c.strip() for c in header.split("=", 1)[1].split(",")]
            continue
        if not line.strip():
            continue
        row = dict(zip(columns, next(csv.reader([line]))))
        try:
            position = np.array([float(row["x"]), float(row["y"]), float(row["z"])])
        except (KeyError, ValueError):
            raise InputError(
                path, f"cannot read a point from the line '{line[:60]}'", "save the points from Slicer"
            ) from None
        points[row.get("label") or row.get("id", str(len(points)))] = (
            position if system == "LPS" else position * RAS_FROM_LPS
        )
    return points


def read_landmark_file(path: str | Path) -> dict[str, np.ndarray]:
    """Named LPS points from a .mrk.json or .fcsv file."""
    path = Path(path)
    if path.name.lower().endswith(".json"):
        return read_mrk_json(path)
    if path.suffix.lower() == ".fcsv":
        return read_fcsv(path)
    raise InputError(path, "unknown landmark file type", "give a .mrk.json or .fcsv file")
