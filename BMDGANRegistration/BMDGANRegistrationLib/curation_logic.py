"""Logic of the dataset-curation workbench: CTs in HU with their LPS geometry, the CT analysis (calibration,
bone labels, the eight landmarks, PF region, vBMD and CT-aBMD) as MRML nodes, and DRRs as volume nodes.

No Qt: every method takes the scene or nodes, so the same calls run in Slicer and on slicer-core.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer

from bmdgan.atomic import atomic_path, atomic_write_text
from bmdgan.ct.calibration import Calibration
from bmdgan.ct.markups import write_mrk_json
from bmdgan.datasets.builder import build_dataset
from bmdgan.io import Radiograph, Volume, read_ct, write_volume
from bmdgan.projection.geometry import default_ap_geometry
from BMDGANLib.mrml_conversion import (
    GEOMETRY_ATTRIBUTE,
    UNIT_ATTRIBUTE,
    labels_to_segmentation_node,
    markups_node_to_points,
    node_to_radiograph,
    node_to_volume,
    points_to_markups_node,
    radiograph_to_node,
    segmentation_node_to_labels,
    volume_to_node,
)

SEGMENT_NAMES = {1: "pelvis", 2: "femur", 3: "proximal femur region"}
"""Segment names of the project's label convention (bmdgan.ct.labels)."""


@dataclass
class CTAnalysisNodes:
    """What :meth:`CurationLogic.analyse_ct` put into the scene, with the engine's records."""

    segmentation_node: object
    landmarks_node: object
    calibration_plot_node: object
    calibration: dict
    measurement: dict


class CurationLogic:
    """Moves CT volumes and their analysis between files, MRML nodes and the engine."""

    def load_ct(self, path: str | Path, scene, name: str | None = None):
        """Read a CT (DICOM folder, NIfTI, NRRD, MHA) into a new scalar volume node; returns (node, volume)."""
        volume = read_ct(path)
        node = volume_to_node(volume, scene, name or Path(path).name.split(".")[0])
        node.SetAttribute(UNIT_ATTRIBUTE, volume.unit)
        return node, volume

    def ct_from_node(self, node) -> Volume:
        """The engine's view of a CT volume node, in the unit recorded on the node (HU by default)."""
        return node_to_volume(node, unit=node.GetAttribute(UNIT_ATTRIBUTE) or "HU")

    def analyse_ct(
        self,
        ct_node,
        scene,
        segmentation_node=None,
        landmarks_node=None,
        calibration: dict | None = None,
        side: str = "auto",
        progress=None,
    ) -> CTAnalysisNodes:
        """Run the CT analysis of one hip; a given segmentation (segments named pelvis/femur/proximal femur region)
        or landmarks node (points named as bmdgan.ct.landmarks.LANDMARK_NAMES) override the automatic ones.

        ``side`` means what ``--side`` means on the command line: 'left' or 'right' (that hip; a side the CT
        does not hold is an InputError naming the sides it holds) or 'auto' (the best hip without an implant);
        'both' is not offered here: a case is one hip (see :meth:`hip_sides` for the sides a CT holds)."""
        from bmdgan.ct.pipeline import analyse_ct, measurement_record

        ct = self.ct_from_node(ct_node)
        labels = (
            None
            if segmentation_node is None
            else segmentation_node_to_labels(segmentation_node, ct, scene, SEGMENT_NAMES)
        )
        points = None if landmarks_node is None else markups_node_to_points(landmarks_node)
        analysis = analyse_ct(
            ct,
            label_volume=labels,
            landmark_points=points,
            side=side,
            progress=progress,
            calibration=None if calibration is None else Calibration.from_dict(calibration),
        )
        name = ct_node.GetName()
        segmentation = segmentation_node or scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{name} bones")
        segmentation.GetSegmentation().RemoveAllSegments()
        labels_to_segmentation_node(analysis.label_volume(), scene, SEGMENT_NAMES, node=segmentation)
        landmarks = points_to_markups_node(analysis.landmarks.points, scene, f"{name} landmarks", node=landmarks_node)
        record = measurement_record(analysis)
        calibration = analysis.calibration.to_dict()
        return CTAnalysisNodes(
            segmentation, landmarks, self.calibration_plot(scene, calibration, name), calibration, record
        )

    def hip_sides(self, ct_node) -> list[str]:
        """The hips the CT holds ('left', 'right'), found from its anatomy (for a side choice offering only those)."""
        from bmdgan.ct.pipeline import hip_sides

        return hip_sides(self.ct_from_node(ct_node))

    @staticmethod
    def calibration_plot(scene, calibration: dict, name: str):
        """The calibration's reference points (HU, mg/cm3) and its fitted line as a plot chart node."""
        hu = np.asarray(calibration["reference_hu"], float)
        density = np.asarray(calibration["reference_density_mg_cm3"], float)
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} calibration")
        fitted = calibration["slope"] * hu + calibration["intercept"]
        slicer.util.updateTableFromArray(
            table, np.stack([hu, density, fitted], axis=1), ["HU", "reference mg/cm3", "fit mg/cm3"]
        )
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", f"{name} calibration")
        chart.SetTitle(f"{calibration['method']}: R2 = {calibration['r2']:.4f}")
        chart.SetXAxisTitle("CT number (HU)")
        chart.SetYAxisTitle("density (mg/cm3)")
        for column, style in (("reference mg/cm3", "points"), ("fit mg/cm3", "line")):
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name} {column}")
            series.SetAndObserveTableNodeID(table.GetID())
            series.SetXColumnName("HU")
            series.SetYColumnName(column)
            series.SetPlotType(series.PlotTypeScatter)
            if style == "line":
                series.SetMarkerStyle(series.MarkerStyleNone)
            else:
                series.SetLineStyle(series.LineStyleNone)
            chart.AddAndObservePlotSeriesNodeID(series.GetID())
        return chart

    def project_drrs(self, ct_node, segmentation_node, scene, calibration: dict, geometry=None):
        """Bone DRRs (g/cm2) of the calibrated CT: pelvis+femur and PF region, one volume node each, laid out
        like a radiograph node (see BMDGANLib.mrml_conversion.radiograph_to_node), the geometry in an attribute.
        Default geometry: an AP view centred on the CT."""
        from bmdgan.projection.projector import Projector

        ct = self.ct_from_node(ct_node)
        labels = segmentation_node_to_labels(segmentation_node, ct, scene, SEGMENT_NAMES).array
        density = Calibration.from_dict(calibration).density(ct.array).astype(np.float32)
        geometry = geometry or default_ap_geometry(ct, pixel_spacing_mm=1.0)
        projector = Projector(
            density,
            ct.geometry.ijk_to_lps(),
            unit="mg/cm3",
            masks=np.stack([labels > 0, labels == 3]),
            channel_names=["pelvis+femur", "PF region"],
        )
        nodes = []
        for channel, image in zip(projector.channel_names, projector.project(geometry)):
            drr = Radiograph(
                image.astype(np.float32),
                source=f"{ct_node.GetName()} DRR {channel}",
                pixel_spacing_mm=(geometry.row_spacing_mm, geometry.column_spacing_mm),
            )
            node = radiograph_to_node(drr, scene, drr.source)
            node.SetAttribute(UNIT_ATTRIBUTE, "g/cm2")
            node.SetAttribute(GEOMETRY_ATTRIBUTE, json.dumps(geometry.to_dict()))
            nodes.append(node)
        return nodes, geometry

    # --- accepted cases into a dataset -------------------------------------------------------------------------

    CASE_COLUMNS = (
        "radiograph",
        "ct",
        "side",
        "geometry",
        "labels",
        "landmarks",
        "calibration",
        "patient",
        "pose",
        "dxa_bmd_g_cm2",
        "status",
    )

    def add_case(
        self,
        dataset_folder: str | Path,
        radiograph_node,
        ct_node,
        segmentation_node,
        landmarks_node,
        calibration: dict,
        geometry,
        scene,
        side: str,
        patient: str,
        key: str,
        pose: str = "",
        dxa_bmd_g_cm2: float | None = None,
        accepted: bool = True,
    ) -> dict:
        """Write an accepted (or rejected) case's files under ``dataset_folder/cases/NNNN``, list it in
        ``cases.csv`` and rebuild the paired dataset in ``dataset_folder/pairs`` through the engine's builder;
        returns the build report. ``patient`` is only ever stored hashed in the pairs."""
        import tifffile

        dataset_folder = Path(dataset_folder)
        table = dataset_folder / "cases.csv"
        rows = []
        if table.exists():
            with open(table, newline="") as stream:
                rows = list(csv.DictReader(stream))
        case = dataset_folder / "cases" / f"{len(rows) + 1:04d}"
        case.mkdir(parents=True, exist_ok=True)
        with atomic_path(case / "radiograph.tif") as temporary:
            tifffile.imwrite(temporary, node_to_radiograph(radiograph_node).pixels.astype(np.float32))
        ct = self.ct_from_node(ct_node)
        write_volume(ct, case / "ct.nii.gz")
        write_volume(segmentation_node_to_labels(segmentation_node, ct, scene, SEGMENT_NAMES), case / "labels.nii.gz")
        write_mrk_json(markups_node_to_points(landmarks_node), case / "landmarks.mrk.json")
        atomic_write_text(case / "calibration.json", json.dumps(calibration, indent=2))
        geometry.save(case / "geometry.json")
        rows.append(
            {
                "radiograph": f"cases/{case.name}/radiograph.tif",
                "ct": f"cases/{case.name}/ct.nii.gz",
                "side": side,
                "geometry": f"cases/{case.name}/geometry.json",
                "labels": f"cases/{case.name}/labels.nii.gz",
                "landmarks": f"cases/{case.name}/landmarks.mrk.json",
                "calibration": f"cases/{case.name}/calibration.json",
                "patient": patient,
                "pose": pose,
                "dxa_bmd_g_cm2": "" if dxa_bmd_g_cm2 is None else str(dxa_bmd_g_cm2),
                "status": "accepted" if accepted else "rejected",
            }
        )
        with atomic_path(table) as temporary, open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.CASE_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        accepted_table = dataset_folder / ".accepted_cases.csv"
        with atomic_path(accepted_table) as temporary, open(temporary, "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=self.CASE_COLUMNS)
            writer.writeheader()
            writer.writerows(row for row in rows if row["status"] == "accepted")
        return build_dataset(accepted_table, dataset_folder / "pairs", key, progress=False)

    @staticmethod
    def case_list(dataset_folder: str | Path) -> list[dict]:
        """Each listed case with its status: accepted and built, accepted but skipped (with the reason), rejected."""
        dataset_folder = Path(dataset_folder)
        table = dataset_folder / "cases.csv"
        if not table.exists():
            return []
        with open(table, newline="") as stream:
            rows = list(csv.DictReader(stream))
        report_path = dataset_folder / "pairs" / "build_report.json"
        skipped = json.loads(report_path.read_text())["skipped"] if report_path.exists() else {}
        cases, accepted_number = [], 0
        for row in rows:
            status = row["status"]
            if status == "accepted":
                accepted_number += 1
                reason = skipped.get(f"row {accepted_number}")
                status = f"skipped: {reason}" if reason else "built"
            cases.append(
                {
                    "case": Path(row["radiograph"]).parent.name,
                    "side": row["side"],
                    "pose": row["pose"],
                    "status": status,
                }
            )
        return cases
