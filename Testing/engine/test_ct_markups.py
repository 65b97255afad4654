"""Slicer markups: .mrk.json (LPS, schema v1.0.3) and legacy .fcsv (RAS) written and read back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmdgan.ct.markups import SCHEMA, read_fcsv, read_landmark_file, read_mrk_json, write_fcsv, write_mrk_json
from bmdgan.errors import InputError

POINTS = {"femoral_head_centre": np.array([12.5, -30.25, 101.0]), "neck_centre": np.array([40.0, -25.0, 80.5])}


def test_mrk_json_is_lps_with_named_points(tmp_path):
    path = write_mrk_json(POINTS, tmp_path / "landmarks.mrk.json")
    record = json.loads(path.read_text())
    assert record["@schema"] == SCHEMA and "v1.0.3" in SCHEMA
    markup = record["markups"][0]
    assert markup["type"] == "Fiducial" and markup["coordinateSystem"] == "LPS"
    assert [p["label"] for p in markup["controlPoints"]] == list(POINTS)
    assert markup["controlPoints"][0]["position"] == [12.5, -30.25, 101.0]
    back = read_mrk_json(path)
    assert set(back) == set(POINTS)
    assert np.allclose(back["neck_centre"], POINTS["neck_centre"])


def test_ras_markups_are_converted_and_undefined_points_skipped(tmp_path):
    record = {
        "@schema": SCHEMA,
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": "RAS",
                "controlPoints": [
                    {"label": "a", "position": [1.0, 2.0, 3.0], "positionStatus": "defined"},
                    {"label": "b", "position": [0.0, 0.0, 0.0], "positionStatus": "undefined"},
                ],
            }
        ],
    }
    path = tmp_path / "ras.mrk.json"
    path.write_text(json.dumps(record))
    points = read_landmark_file(path)
    assert list(points) == ["a"]
    assert np.allclose(points["a"], [-1.0, -2.0, 3.0])


def test_fcsv_columns_are_ras(tmp_path):
    path = write_fcsv(POINTS, tmp_path / "landmarks.fcsv")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    x, y, z = (float(v) for v in lines[0].split(",")[1:4])
    assert (x, y, z) == pytest.approx((-12.5, 30.25, 101.0))
    back = read_fcsv(path)
    assert np.allclose(back["femoral_head_centre"], POINTS["femoral_head_centre"])
    lps = tmp_path / "lps.fcsv"
    lps.write_text(
        "# CoordinateSystem = LPS\n# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "p0,1,2,3,0,0,0,1,1,1,0,pt,,\n"
    )
    assert np.allclose(read_fcsv(lps)["pt"], [1, 2, 3])


def test_bad_files_are_refused(tmp_path):
    (tmp_path / "x.mrk.json").write_text("[]")
    with pytest.raises(InputError, match="not a Slicer markups"):
        read_mrk_json(tmp_path / "x.mrk.json")
    with pytest.raises(InputError, match="unknown landmark file type"):
        read_landmark_file(tmp_path / "x.txt")
