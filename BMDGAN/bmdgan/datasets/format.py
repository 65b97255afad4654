"""The dataset folder: ``dataset.json`` + ``manifest.csv`` + float32 ``images/*.npy``.

::

    my_dataset/
      dataset.json     format name and version, image size, channel units, normalisation, provenance
      manifest.csv     one row per case (columns: MANIFEST_COLUMNS)
      images/          <case_id>_<channel>.npy, float32 [rows, columns], unit in dataset.json

A case's images are written first (each atomically), then its manifest row is appended and flushed:
a case is in the dataset exactly when its row is, so a crashed build resumes by skipping the cases
already listed and overwriting any orphan images. Readers refuse a folder of another format version
with a message saying what to do.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import __version__
from ..atomic import atomic_folder, atomic_path, atomic_write_text, remove_stale_partials
from ..errors import InputError

FORMAT_NAME = "bmdgan-dataset"
FORMAT_VERSION = 1
MANIFEST_COLUMNS = (
    "case_id",
    "patient_id",
    "side",
    "pose",
    "mirrored",
    "fold",
    "radiograph",
    "drr_stage1",
    "drr_pf",
    "dxa_bmd_g_cm2",
    "ct_abmd_g_cm2",
    "qct_vbmd_mg_cm3",
    "provenance",
)
IMAGE_CHANNELS = {
    "radiograph": "radiograph intensity after the detector's processing curve, arbitrary units",
    "drr_stage1": "areal bone mineral density of pelvis + femur along each ray, g/cm2",
    "drr_pf": "areal bone mineral density of the proximal-femur region along each ray, g/cm2",
}
BMD_COLUMNS = ("dxa_bmd_g_cm2", "ct_abmd_g_cm2", "qct_vbmd_mg_cm3")


@dataclass
class CaseRecord:
    """One manifest row. BMD values are NaN when unknown (e.g. no DXA for a virtual patient)."""

    case_id: str
    patient_id: str
    side: str
    pose: str = "standing"
    mirrored: bool = False
    fold: int = -1
    dxa_bmd_g_cm2: float = math.nan
    ct_abmd_g_cm2: float = math.nan
    qct_vbmd_mg_cm3: float = math.nan
    provenance: str = ""
    images: dict[str, str] = field(default_factory=dict)

    def row(self) -> dict[str, str]:
        values = {
            "case_id": self.case_id,
            "patient_id": self.patient_id,
            "side": self.side,
            "pose": self.pose,
            "mirrored": "1" if self.mirrored else "0",
            "fold": str(self.fold),
            "provenance": self.provenance,
        }
        values.update({c: "" if math.isnan(getattr(self, c)) else repr(float(getattr(self, c))) for c in BMD_COLUMNS})
        values.update({channel: self.images.get(channel, "") for channel in IMAGE_CHANNELS})
        return values

    @staticmethod
    def from_row(row: dict[str, str]) -> CaseRecord:
        return CaseRecord(
            case_id=row["case_id"],
            patient_id=row["patient_id"],
            side=row["side"],
            pose=row["pose"],
            mirrored=row["mirrored"] == "1",
            fold=int(row["fold"]),
            provenance=row["provenance"],
            images={c: row[c] for c in IMAGE_CHANNELS if row.get(c)},
            **{c: float(row[c]) if row[c] else math.nan for c in BMD_COLUMNS},
        )


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save float32 ``array`` so that ``path`` is either absent or complete."""
    with atomic_path(path) as temporary:
        np.save(temporary, np.asarray(array, dtype=np.float32))


class DatasetWriter:
    """Adds cases to a dataset folder; re-opening an existing folder resumes it."""

    def __init__(self, folder: str | Path, image_shape: tuple[int, int], description: dict | None = None):
        self.folder = Path(folder)
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        for place in (self.folder, self.folder / "images"):  # temporaries of a killed earlier run
            remove_stale_partials(place)
        header_path = self.folder / "dataset.json"
        if header_path.exists():
            header = read_header(self.folder)
            if tuple(header["image_shape"]) != tuple(image_shape):
                raise InputError(
                    self.folder,
                    f"holds {header['image_shape']} images, not {list(image_shape)}",
                    "write into a new folder",
                )
        else:
            header = {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "created_by": f"bmdgan {__version__}",
                "image_shape": list(image_shape),
                "channels": IMAGE_CHANNELS,
                **(description or {}),
            }
            atomic_write_text(header_path, json.dumps(header, indent=2))
        self.header = header
        self.manifest_path = self.folder / "manifest.csv"
        if not self.manifest_path.exists():
            rewrite_manifest(self.folder, [])
        self._repair_manifest_tail()
        self.done = {record.case_id for record in read_manifest(self.folder)}

    def _repair_manifest_tail(self) -> None:
        """Drop a last line cut short by a crash (a row is complete only with its newline)."""
        data = self.manifest_path.read_bytes()
        if data and not data.endswith(b"\n"):
            atomic_write_text(self.manifest_path, data[: data.rfind(b"\n") + 1].decode())

    def add(self, record: CaseRecord, images: dict[str, np.ndarray]) -> None:
        """Write the images of one case, then its manifest row. A case already present is an error."""
        if record.case_id in self.done:
            raise InputError(self.folder, f"case {record.case_id} is already in the dataset", "use another case id")
        unknown = set(images) - set(IMAGE_CHANNELS)
        if unknown:
            raise InputError(None, f"unknown image channels {sorted(unknown)}", f"use {sorted(IMAGE_CHANNELS)}")
        shape = tuple(self.header["image_shape"])
        for channel, image in images.items():
            if image.shape != shape or not np.all(np.isfinite(image)):
                raise InputError(
                    None,
                    f"{record.case_id} {channel}: image of shape {image.shape} with non-finite values or not {shape}",
                    "normalise the images first",
                )
            relative = f"images/{record.case_id}_{channel}.npy"
            atomic_save_npy(self.folder / relative, image)
            record.images[channel] = relative
        with open(self.manifest_path, "a", newline="") as stream:
            csv.DictWriter(stream, fieldnames=MANIFEST_COLUMNS, lineterminator="\n").writerow(record.row())
            stream.flush()
            os.fsync(stream.fileno())
        self.done.add(record.case_id)


def read_header(folder: str | Path) -> dict:
    """``dataset.json`` of a folder, refusing other formats and versions with what to do."""
    path = Path(folder) / "dataset.json"
    if not path.exists():
        raise InputError(folder, "is not a bmdgan dataset (no dataset.json)", "give a folder made by bmdgan")
    header = json.loads(path.read_text())
    if header.get("format") != FORMAT_NAME:
        raise InputError(path, f"format is {header.get('format')!r}, not {FORMAT_NAME!r}", "give a bmdgan dataset")
    version = header.get("version")
    if version != FORMAT_VERSION:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise InputError(
            path,
            f"dataset format version {version}, this bmdgan reads version {FORMAT_VERSION}",
            "upgrade bmdgan" if newer else "re-build the dataset with this bmdgan version",
        )
    return header


def existing_header(folder: str | Path) -> dict:
    """``dataset.json`` of a dataset being resumed or extended, or {} for a folder that holds none yet."""
    return read_header(folder) if (Path(folder) / "dataset.json").exists() else {}


def update_header(folder: str | Path, fields: dict) -> None:
    """Merge ``fields`` into ``dataset.json`` atomically (e.g. the CTs of an extended cohort)."""
    header = {**read_header(folder), **fields}
    atomic_write_text(Path(folder) / "dataset.json", json.dumps(header, indent=2))


def refuse_changed_settings(
    folder: str | Path, stored: dict | None, wanted: dict, defaults: dict | None = None
) -> None:
    """Stop before any work when ``folder`` holds a dataset made with other ``wanted`` settings (a seed, a fold
    count): finishing it with those would mix two datasets' cases or move cases between folds under a training
    run, which would then train on its held-out fold. Settings ``stored`` lacks (datasets made before they
    existed) read as ``defaults``; nothing stored, nothing to refuse."""
    if not stored:
        return
    for key, new in wanted.items():
        old = stored.get(key, (defaults or {}).get(key))
        if old != new:
            raise InputError(
                folder,
                f"holds a dataset made with {key} {old!r}, not {new!r}",
                "give a new --out folder, or the same settings to finish or extend this one",
            )


def read_manifest(folder: str | Path) -> list[CaseRecord]:
    """All complete cases of a dataset folder, in the order they were added."""
    read_header(folder)
    with open(Path(folder) / "manifest.csv", newline="") as stream:
        reader = csv.DictReader(stream)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise InputError(Path(folder) / "manifest.csv", f"lacks columns {sorted(missing)}", "re-build the dataset")
        return [CaseRecord.from_row(row) for row in reader]


def load_image(folder: str | Path, record: CaseRecord, channel: str) -> np.ndarray:
    """One float32 image of a case (unit: see IMAGE_CHANNELS)."""
    if channel not in record.images:
        raise InputError(folder, f"case {record.case_id} has no {channel} image", "build the dataset with it")
    return np.load(Path(folder) / record.images[channel], allow_pickle=False)


def rewrite_manifest(folder: str | Path, records: list[CaseRecord]) -> None:
    """Replace the manifest atomically (e.g. after assigning folds)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(record.row())
    atomic_write_text(Path(folder) / "manifest.csv", buffer.getvalue())


def write_subset(folder: str | Path, out: str | Path, records: list[CaseRecord], why: str) -> Path:
    """A dataset folder ``out`` holding only ``records`` of the dataset in ``folder``: its own header (which says
    ``why``) and manifest, the images shared through a link to ``folder/images`` (copied where the system allows
    no links, as Windows without Developer Mode). A subset already written there with the same cases is kept as
    it is, so a resumed job may call this each time; one of other cases or of another dataset is refused, since
    the runs beside it were trained on it. The header is written last: a folder without one is unfinished."""
    source, out = Path(folder).resolve(), Path(out)
    known = {record.case_id for record in read_manifest(source)}
    foreign = [record.case_id for record in records if record.case_id not in known]
    if foreign:
        raise InputError(source, f"holds no case {foreign[0]}", "take the subset's cases from this dataset")
    if (out / "dataset.json").exists():
        _refuse_another_subset(out, source, records)
        return out
    out.mkdir(parents=True, exist_ok=True)
    _share_images(source, out, records)
    rewrite_manifest(out, records)
    header = {**read_header(source), "subset_of": str(source), "subset_reason": why}
    atomic_write_text(out / "dataset.json", json.dumps(header, indent=2))
    return out


def _refuse_another_subset(out: Path, source: Path, records: list[CaseRecord]) -> None:
    """Stop when ``out`` holds a dataset that is not this subset of ``source`` (another seed, a changed cohort)."""
    subset_of = read_header(out).get("subset_of")
    if subset_of != str(source):
        raise InputError(out, f"holds a dataset that is not a subset of {source}", "give a new folder for the subset")
    if [record.case_id for record in read_manifest(out)] != [record.case_id for record in records]:
        raise InputError(
            out,
            "holds a subset of other cases (another seed, or a cohort changed since)",
            "give a new --out folder, or the seed and cohort it was made with",
        )


def _share_images(source: Path, out: Path, records: list[CaseRecord]) -> None:
    """``out/images`` shows ``source/images``: a symbolic link, or a copy of ``records``' images only where links
    are not allowed."""
    images, link = source / "images", out / "images"
    if link.is_symlink() and link.resolve() != images.resolve():
        link.unlink()  # left by an unfinished subset of another dataset
    if link.is_symlink() or link.is_dir():
        return  # shared by an unfinished earlier call (a copy is renamed into place whole)
    try:
        link.symlink_to(images, target_is_directory=True)
    except OSError:
        with atomic_folder(link) as partial:
            for record in records:
                for relative in record.images.values():
                    shutil.copy2(source / relative, partial / Path(relative).name)
