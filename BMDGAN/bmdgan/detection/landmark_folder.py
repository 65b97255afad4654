"""The folder of landmark views the hip detector learns from (the only module that knows its layout).

``views.jsonl``: one JSON line per image: ``id``, ``ct`` (source CT: the unit of whole-CT folds), ``view``
(``ap-pelvis``, ``hip``, ``thigh``), ``pixel_spacing_mm`` [row, column] (mm at the patient: the detector's pitch over
the magnification at the femoral heads, as a DICOM's PixelSpacing) and ``landmarks``: {channel name: [column, row]
source pixels, or null when that hip is not in the CT}, and ``anatomy``: the virtual anatomy
(:mod:`bmdgan.cohort.anatomy`, a transplant entry of :mod:`bmdgan.cohort.transplant`, or a hip given virtual
neck screws) the view was simulated from, or null for the real bone (absent in older folders: null), and
``donor_cts``: the other CTs whose femurs the view shows (a transplant's donors; empty otherwise), and
``head_radius_mm``: {side: the femoral head's radius in mm at the patient, or null} (absent in older folders).
``images/<id>.npy``: the radiograph (float32, no pickle). An image is written before its line, so a killed run
resumes where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..errors import InputError

MANIFEST = "views.jsonl"
IMAGES = "images"


@dataclass(frozen=True)
class LandmarkView:
    id: str
    ct: str
    view: str
    pixel_spacing_mm: tuple[float, float]
    landmarks: dict
    anatomy: str | None = None
    """The virtual anatomy's (transplant's, screwed hip's) id the view was simulated from; None for the real bone."""
    donor_cts: tuple[str, ...] = ()
    """The other CTs whose femurs the view shows (a transplant's donors): whole-CT folds hold them out with it."""
    head_radius_mm: dict = field(default_factory=dict)
    """{side: femoral head radius (mm at the patient) or None}: the head's outline in the view is a circle of this
    radius over the pixel spacing around the head landmark (a sphere's projection, to within its magnification
    across the head's depth)."""

    @property
    def source_cts(self) -> tuple[str, ...]:
        """Every real CT the view was made from: its own CT, then its donors."""
        return (self.ct, *self.donor_cts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "ct": self.ct,
                "view": self.view,
                "pixel_spacing_mm": list(self.pixel_spacing_mm),
                "landmarks": self.landmarks,
                "anatomy": self.anatomy,
                "donor_cts": list(self.donor_cts),
                "head_radius_mm": self.head_radius_mm,
            },
            separators=(",", ":"),
        )


def read_views(folder: str | Path) -> list[LandmarkView]:
    """Every complete view of the folder (a torn last line of a killed run is ignored)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(folder, f"is not a landmark-view folder (no {MANIFEST})", "run 'bmdgan simulate-landmarks'")
    views = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        views.append(
            LandmarkView(
                entry["id"],
                entry["ct"],
                entry["view"],
                tuple(entry["pixel_spacing_mm"]),
                entry["landmarks"],
                entry.get("anatomy"),
                tuple(entry.get("donor_cts", ())),
                entry.get("head_radius_mm", {}),
            )
        )
    return views


def read_image(folder: str | Path, view: LandmarkView) -> np.ndarray:
    return np.load(Path(folder) / IMAGES / f"{view.id}.npy", allow_pickle=False)


def done_ids(folder: str | Path) -> set[str]:
    return {view.id for view in read_views(folder)} if (Path(folder) / MANIFEST).is_file() else set()


def add_view(folder: str | Path, view: LandmarkView, image: np.ndarray) -> None:
    """Write the image (atomically), then append its line."""
    folder = Path(folder)
    (folder / IMAGES).mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / IMAGES / f"{view.id}.npy") as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.asarray(image, np.float32), allow_pickle=False)
    with open(folder / MANIFEST, "a+b") as handle:  # appends whatever the read position
        torn = False
        if handle.tell() > 0:  # a killed run may have left its last line unfinished
            handle.seek(-1, 2)
            torn = handle.read(1) != b"\n"
        handle.write((("\n" if torn else "") + view.to_json() + "\n").encode())
