"""Train the hip detector on landmark views, and measure it on CTs it never saw (whole-CT folds).

Each training sample is a window of :data:`PATCH_PX` pixels at 2 mm (256 mm) cut from a view at a random place, turn
(+/-:data:`ROTATION_DEG`), scale (+/-:data:`SCALE_FRACTION`) and mirror (mirroring swaps the sides): windows show
both hips, one hip, part of a hip or none, as users' radiographs do. Intensities get a random gamma and noise. A
landmark's target is a Gaussian (:data:`~.detector.HEATMAP_SIGMA_PX`) normalised over the window, or "absent" when
the window does not hold it; the loss is the cross-entropy of the network's softmax over the pixels and the absent
logit (:func:`landmark_loss`). With head disks (:data:`~.layout.HEAD_DISKS`) each side's femoral head is also drawn
as a filled disc of its radius and learnt pixel by pixel (:func:`head_disk_loss`). The second stage
(:mod:`.refinement`) learns the same loss on 96 mm windows around each head, cut up to 20 mm off it
(:func:`refiner_sample`). Checkpoints after every epoch (safetensors): a killed run resumes at the last one."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..datasets.normalise import resample
from ..errors import InputError
from ..progress import progress_bar
from .detector import DETECTOR_MM_PER_PX, FOUND_CONFIDENCE, HEATMAP_SIGMA_PX, SIDES, add_refiner, write_detector
from .landmark_folder import LandmarkView, read_image
from .layout import CHANNELS, HEAD_DISKS, mirrored
from .refinement import REFINER_PATCH_PX, REFINER_SEARCH_MM, REFINER_SIGMA_PX, window_matrix

PATCH_PX = 128
ROTATION_DEG = 30.0
"""Covers AP views with the shaft vertical and the single-hip views turned so that the neck is horizontal."""
SCALE_FRACTION = 0.1
"""Pixel spacings that are off by up to 10 % (magnification at the patient vs. the detector)."""
NEAR_HIP_PROBABILITY = 0.6
"""Share of windows centred near a hip (within :data:`NEAR_HIP_MM`); the rest anywhere on the view."""
NEAR_HIP_MM = 100.0
REFINER_EPOCHS = 15
PART_PROBABILITY = 0.3
"""Share of windows cut from a random part of the view (its edges then repeated, as the detector pads a small
radiograph): the upper third of an AP pelvis, a hip cut in half, a strip of thigh."""


def _random_part(image: np.ndarray, landmarks: dict, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random rectangle of at least a third of each side of ``image``, with the landmarks moved into it (those
    outside it become None: the part does not show them)."""
    rows, columns = image.shape
    height, width = int(rng.uniform(1 / 3, 1) * rows), int(rng.uniform(1 / 3, 1) * columns)
    top, left = int(rng.integers(0, rows - height + 1)), int(rng.integers(0, columns - width + 1))
    moved = {}
    for name, point in landmarks.items():
        inside = point is not None and left <= point[0] < left + width and top <= point[1] < top + height
        moved[name] = [point[0] - left, point[1] - top] if inside else None
    return image[top : top + height, left : left + width], moved


def augmented_input(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A window's intensities as the network reads them ([-1, 1] between its 0.5/99.5 percentiles), with a random
    gamma (0.7-1.4) and noise: other consoles' look-up curves and detectors."""
    low, high = np.percentile(patch, [0.5, 99.5])
    unit = np.clip((patch - low) / max(float(high - low), 1e-6), 0.0, 1.0) ** rng.uniform(0.7, 1.4)
    unit = unit + rng.normal(0.0, rng.uniform(0.0, 0.03), unit.shape)
    return np.clip(unit * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def gaussian_target(shape: tuple[int, int], column: float, row: float, sigma_px: float) -> np.ndarray:
    """A landmark's target map: a Gaussian of ``sigma_px`` at (column, row), peak 1."""
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((columns - column) ** 2 + (rows - row) ** 2) / (2 * sigma_px**2)).astype(np.float32)


def disk_target(shape: tuple[int, int], column: float, row: float, radius_px: float) -> np.ndarray:
    """A head's disc target map: 1 inside ``radius_px`` of (column, row), 0 outside, its edge pixel antialiased."""
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]]
    distance = np.hypot(columns - column, rows - row)
    return np.clip(radius_px - distance + 0.5, 0.0, 1.0).astype(np.float32)


def training_sample(
    image: np.ndarray, view: LandmarkView, rng: np.random.Generator, head_disks: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(input [PATCH_PX, PATCH_PX] in [-1, 1], target maps [channels, PATCH_PX, PATCH_PX]) of one random window;
    ``head_disks``: the :data:`~.layout.HEAD_DISKS` maps after the landmarks' (NaN where the view names no head
    radius: not learnt)."""
    landmarks = view.landmarks
    if rng.random() < PART_PROBABILITY:
        image, landmarks = _random_part(image, landmarks, rng)
    row_mm, column_mm = view.pixel_spacing_mm
    scale = 1.0 + rng.uniform(-SCALE_FRACTION, SCALE_FRACTION)
    angle = math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    mirror = bool(rng.random() < 0.5)
    heads = [np.array(p, float) for name, p in landmarks.items() if p is not None and name.startswith("head")]
    if heads and rng.random() < NEAR_HIP_PROBABILITY:
        centre = heads[rng.integers(len(heads))] + rng.uniform(-NEAR_HIP_MM, NEAR_HIP_MM, 2) / (column_mm, row_mm)
    else:
        centre = rng.uniform((0, 0), (image.shape[1], image.shape[0]))
    matrix = window_matrix(tuple(centre), view.pixel_spacing_mm, mirror, angle, scale, DETECTOR_MM_PER_PX, PATCH_PX)
    inputs = augmented_input(resample(image, matrix, (PATCH_PX, PATCH_PX), outside="edge"), rng)
    names = CHANNELS + (HEAD_DISKS if head_disks else ())
    targets = np.zeros((len(names), PATCH_PX, PATCH_PX), np.float32)
    inverse = np.linalg.inv(matrix)
    mm_per_window_px = math.sqrt(row_mm * column_mm / abs(np.linalg.det(inverse[:2, :2])))
    for name, point in landmarks.items():
        if point is None:
            continue
        column, row = (inverse @ np.array([point[0], point[1], 1.0]))[:2]
        channel_name = mirrored(name) if mirror else name
        targets[names.index(channel_name)] = gaussian_target((PATCH_PX, PATCH_PX), column, row, HEATMAP_SIGMA_PX)
        if head_disks and name.startswith("head_"):
            radius_mm = view.head_radius_mm.get(name.removeprefix("head_"))
            disk = names.index(channel_name.replace("head_", "head_disk_"))
            targets[disk] = (
                np.nan
                if radius_mm is None
                else disk_target((PATCH_PX, PATCH_PX), column, row, radius_mm / mm_per_window_px)
            )
    return inputs, targets


def refiner_sample(
    image: np.ndarray, view: LandmarkView, side: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(input [REFINER_PATCH_PX]^2 in [-1, 1], target [1, REFINER_PATCH_PX, REFINER_PATCH_PX]) of one refinement
    window: centred up to :data:`~.refinement.REFINER_SEARCH_MM` from the ``side`` head (smaller offsets more
    often, as the second pass sees), turned, scaled, and mirrored for a left hip as :func:`.refinement.refine_head`
    cuts it."""
    head = np.asarray(view.landmarks[f"head_{side}"], float)
    row_mm, column_mm = view.pixel_spacing_mm
    direction = rng.uniform(0.0, 2.0 * math.pi)
    offset_mm = REFINER_SEARCH_MM * rng.uniform() * np.array([math.cos(direction), math.sin(direction)])
    matrix = window_matrix(
        tuple(head + offset_mm / (column_mm, row_mm)),
        view.pixel_spacing_mm,
        mirror=side == "left",
        angle_rad=math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG)),
        scale=1.0 + rng.uniform(-SCALE_FRACTION, SCALE_FRACTION),
    )
    inputs = augmented_input(resample(image, matrix, (REFINER_PATCH_PX, REFINER_PATCH_PX), outside="edge"), rng)
    column, row = (np.linalg.inv(matrix) @ np.array([head[0], head[1], 1.0]))[:2]
    return inputs, gaussian_target((REFINER_PATCH_PX, REFINER_PATCH_PX), column, row, REFINER_SIGMA_PX)[None]


def detector_loss(logits, absent, targets, disk_weight: float = 1.0):
    """The loss of a batch: :func:`landmark_loss` on the maps that have an absent logit, plus ``disk_weight`` times
    :func:`head_disk_loss` on the head disks after them (a detector trained with them)."""
    maps = absent.shape[1]
    loss = landmark_loss(logits[:, :maps], absent, targets[:, :maps])
    if logits.shape[1] == maps:
        return loss
    return loss + disk_weight * head_disk_loss(logits[:, maps:], targets[:, maps:])


def head_disk_loss(logits, targets):
    """Binary cross-entropy of every pixel of every head-disk map, plus the soft Dice loss of each map whose window
    shows some of its head (the disc is a few percent of the window: the Dice term keeps its edge from being traded
    for the background). A map whose target is NaN (no head radius known) is left out."""
    import torch
    from torch.nn import functional as F

    known = ~torch.isnan(targets.flatten(2)).any(dim=2)
    if not known.any():
        return logits.sum() * 0.0
    logits, targets = logits.flatten(2)[known], targets.flatten(2)[known]
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets)
    shown = targets.sum(dim=1) > 1.0
    if not shown.any():
        return cross_entropy
    probability = torch.sigmoid(logits[shown])
    overlap = (probability * targets[shown]).sum(dim=1)
    dice = 2.0 * overlap / (probability.sum(dim=1) + targets[shown].sum(dim=1)).clamp_min(1e-6)
    return cross_entropy + (1.0 - dice).mean()


def landmark_loss(logits, absent, targets):
    """Cross-entropy between each landmark's softmax over (every pixel, absent) and its target: the Gaussian
    normalised to 1 when the window holds the landmark (a target peak near 1), else all on "absent"."""
    import torch

    flat_targets = targets.flatten(2)
    present = (flat_targets.amax(dim=2) > 0.5).float()
    distribution = flat_targets / flat_targets.sum(dim=2, keepdim=True).clamp_min(1e-6) * present[..., None]
    target = torch.cat([distribution, (1.0 - present)[..., None]], dim=2)
    log_probability = torch.cat([logits.flatten(2), absent[..., None]], dim=2).log_softmax(dim=2)
    return -(target * log_probability).sum(dim=2).mean()


def _fit(
    network,
    draw,
    items: int,
    samples_per_item: int,
    epochs: int,
    checkpoints: Path,
    batch_size: int,
    seed: int,
    description: str,
    progress: bool,
    disk_weight: float = 1.0,
) -> list[float]:
    """Train ``network`` (initialised after ``torch.manual_seed(seed)``) with AdamW and a cosine schedule on
    ``draw(item index, rng) -> (input, target)``, each of ``items`` drawn ``samples_per_item`` times an epoch;
    checkpoints after every epoch and resumes from the last. Returns the mean loss of every epoch."""
    import torch

    from ..training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint

    optimizer = torch.optim.AdamW(network.parameters(), lr=2e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    first_epoch, history = 0, []
    latest = latest_checkpoint(checkpoints)
    if latest is not None:  # a resumed run keeps the mean losses of the epochs before it
        state = load_checkpoint(latest, {"network": network}, {"network": optimizer}, {"network": scheduler})
        first_epoch, history = state["epoch"], list(state["extra"].get("losses", []))
    for epoch in progress_bar(range(first_epoch, epochs), desc=description, disable=not progress):
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(np.repeat(np.arange(items), samples_per_item))
        network.train()
        losses = []
        for start in range(0, len(order), batch_size):
            pairs = [draw(i, rng) for i in order[start : start + batch_size]]
            inputs = torch.from_numpy(np.stack([p[0] for p in pairs]))[:, None]
            targets = torch.from_numpy(np.stack([p[1] for p in pairs]))
            loss = detector_loss(*network(inputs), targets, disk_weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        history.append(float(np.mean(losses)))
        save_checkpoint(
            checkpoints,
            epoch + 1,
            {"network": network},
            {"network": optimizer},
            {"network": scheduler},
            {"losses": history},
        )
    network.eval()
    return history


def train_detector(
    folder: str | Path,
    views: list[LandmarkView],
    out: str | Path,
    epochs: int = 30,
    batch_size: int = 16,
    samples_per_view: int = 2,
    seed: int = 0,
    progress: bool = True,
    head_disks: float = 0.0,
):
    """Train a detector's first stage on ``views`` (images read from ``folder``) and write it to ``out``
    (:func:`.detector.write_detector`); resumes from ``out/checkpoints``. ``head_disks`` > 0: also learn each head's
    disc (:data:`~.layout.HEAD_DISKS`) with this weight on its loss; the detector then reads the head centre from
    it. Returns the network."""
    import torch

    from .network import HipHeatmapNet

    if head_disks and not any(radius is not None for view in views for radius in view.head_radius_mm.values()):
        raise InputError(
            folder,
            "names no femoral head radius in its views (made before views recorded them): head disks cannot be learnt",
            "render the views again with 'bmdgan simulate-landmarks', or train without --head-disks",
        )
    torch.manual_seed(seed)
    images = [read_image(folder, view) for view in views]
    network = HipHeatmapNet(disks=len(HEAD_DISKS) if head_disks else 0)
    history = _fit(
        network,
        lambda i, rng: training_sample(images[i], views[i], rng, head_disks > 0),
        len(views),
        samples_per_view,
        epochs,
        Path(out) / "checkpoints",
        batch_size,
        seed,
        "detector epochs",
        progress,
        head_disks,
    )
    write_detector(
        Path(out),
        network,
        {
            "trained_on_cts": sorted({view.ct for view in views}),
            "training_views": len(views),
            "training_views_of_anatomies": sum(view.anatomy is not None for view in views),
            "epochs": epochs,
            "seed": seed,
            "last_epoch_losses": history,
            **({"head_disks": True, "head_disk_weight": head_disks} if head_disks else {}),
        },
    )
    return network


def train_refiner(
    folder: str | Path,
    views: list[LandmarkView],
    out: str | Path,
    epochs: int = REFINER_EPOCHS,
    batch_size: int = 16,
    samples_per_hip: int = 3,
    seed: int = 0,
    progress: bool = True,
):
    """Train the second stage (:mod:`.refinement`) on every labelled hip of ``views`` and add it to the detector
    folder ``out`` (which must hold a first stage); resumes from ``out/refiner_checkpoints``."""
    import torch

    from .network import HipHeatmapNet

    torch.manual_seed(seed + 1)
    hips = [(i, side) for i, view in enumerate(views) for side in SIDES if view.landmarks.get(f"head_{side}")]
    images = {i: read_image(folder, views[i]) for i in {i for i, _ in hips}}
    network = HipHeatmapNet(maps=1)
    history = _fit(
        network,
        lambda k, rng: refiner_sample(images[hips[k][0]], views[hips[k][0]], hips[k][1], rng),
        len(hips),
        samples_per_hip,
        epochs,
        Path(out) / "refiner_checkpoints",
        batch_size,
        seed + 1,
        "refiner epochs",
        progress,
    )
    add_refiner(Path(out), network, {"training_hips": len(hips), "epochs": epochs, "last_epoch_losses": history})
    return network


def ct_folds(views: list[LandmarkView], fold_count: int) -> dict[str, int]:
    """{CT id: fold}: CTs in sorted order dealt round-robin, so a CT and all its views sit in one fold."""
    return {ct: index % fold_count for index, ct in enumerate(sorted({view.ct for view in views}))}


def views_without(views: list[LandmarkView], held_out_cts: set[str]) -> list[LandmarkView]:
    """The views that show no bone of ``held_out_cts``: neither their CT nor a donor CT's femur (a transplant)."""
    return [view for view in views if not set(view.source_cts) & held_out_cts]


def upper_third(image: np.ndarray) -> np.ndarray:
    """The top third of an AP pelvis radiograph: abdomen, spine and iliac crests, no hip (the no-hip test image)."""
    return image[: image.shape[0] // 3]


def _offset_mm(found_px, truth_px, pixel_spacing_mm: tuple[float, float]) -> tuple[float, float]:
    """A found point's offset from the true one, (column, row) pixels turned into mm at the patient."""
    row_mm, column_mm = pixel_spacing_mm
    return (found_px[0] - truth_px[0]) * column_mm, (found_px[1] - truth_px[1]) * row_mm


def evaluate_detector(detector, folder: str | Path, views: list[LandmarkView]) -> list[dict]:
    """One row per labelled hip of every view (``confidence`` of the detector's reading of that side, None where it
    read none; head and neck errors in mm at the patient), one per unlabelled side read anyway (``false_hip``, with
    its confidence), and one per no-hip image (the upper third of each AP pelvis view: the confidences of what was
    read there). A found hip's ``head_offset_mm`` is its head error as (column, row) in mm at the patient (+ to the
    image's right and down). Every reading is kept, however unsure (``min_confidence=0``), so :func:`summarise`
    measures any confidence threshold from this one pass."""
    rows = []
    for view in views:
        image = read_image(folder, view)
        found = {hip.side: hip for hip in detector.detect(image, view.pixel_spacing_mm, min_confidence=0.0)}
        for side in SIDES:
            truth = view.landmarks.get(f"head_{side}")
            hip = found.get(side)
            if truth is None:
                if hip is not None:
                    rows.append(
                        {
                            "id": view.id,
                            "ct": view.ct,
                            "view": view.view,
                            "side": side,
                            "kind": "false_hip",
                            "confidence": hip.confidence,
                        }
                    )
                continue
            row = {"id": view.id, "ct": view.ct, "view": view.view, "side": side, "kind": "hip", "confidence": None}
            if hip is not None:
                head = _offset_mm(hip.head_centre_px, truth, view.pixel_spacing_mm)
                neck = _offset_mm(hip.neck_point_px, view.landmarks[f"neck_{side}"], view.pixel_spacing_mm)
                first = _offset_mm(hip.first_stage_head_px or hip.head_centre_px, truth, view.pixel_spacing_mm)
                row.update(
                    head_error_mm=float(np.hypot(*head)),
                    head_offset_mm=[float(head[0]), float(head[1])],
                    neck_error_mm=float(np.hypot(*neck)),
                    confidence=hip.confidence,
                    first_stage_head_error_mm=float(np.hypot(*first)),
                )
            rows.append(row)
        if view.view == "ap-pelvis":
            hips = detector.detect(upper_third(image), view.pixel_spacing_mm, min_confidence=0.0)
            rows.append(
                {
                    "id": view.id,
                    "ct": view.ct,
                    "view": "no-hip (upper third of AP pelvis)",
                    "kind": "no_hip",
                    "confidences": [hip.confidence for hip in hips],
                }
            )
    return rows


def is_found(row: dict, min_confidence: float) -> bool:
    """Whether the reading in an :func:`evaluate_detector` row counts at the threshold ``min_confidence``."""
    return row["confidence"] is not None and row["confidence"] >= min_confidence


def summarise(rows: list[dict], tolerance_mm: float = 5.0, min_confidence: float = FOUND_CONFIDENCE) -> dict:
    """At the confidence threshold ``min_confidence``, per view and overall: hips, found on the right side, share
    within ``tolerance_mm``, median and 95th percentile head error (mm); false hips; no-hip images with a
    detection."""
    summary = {}
    for view in sorted({r["view"] for r in rows if r["kind"] == "hip"}) + ["all"]:
        hips = [r for r in rows if r["kind"] == "hip" and view in ("all", r["view"])]
        found = [r for r in hips if is_found(r, min_confidence)]
        errors = np.array([r["head_error_mm"] for r in found])
        summary[view] = {
            "hips": len(hips),
            "found": len(found),
            "within_tolerance": int((errors <= tolerance_mm).sum()),
            "share_within_tolerance": float((errors <= tolerance_mm).sum() / max(len(hips), 1)),
            "first_stage_share_within_tolerance": float(
                sum(r["first_stage_head_error_mm"] <= tolerance_mm for r in found) / max(len(hips), 1)
            ),
            "median_head_error_mm": float(np.median(errors)) if errors.size else None,
            "p95_head_error_mm": float(np.percentile(errors, 95)) if errors.size else None,
            "median_neck_error_mm": float(np.median([r["neck_error_mm"] for r in found])) if errors.size else None,
        }
    no_hip = [r for r in rows if r["kind"] == "no_hip"]
    summary["false_hips"] = sum(r["kind"] == "false_hip" and is_found(r, min_confidence) for r in rows)
    summary["no_hip_images"] = len(no_hip)
    summary["no_hip_images_with_a_detection"] = sum(
        any(confidence >= min_confidence for confidence in r["confidences"]) for r in no_hip
    )
    summary["tolerance_mm"] = tolerance_mm
    summary["min_confidence"] = min_confidence
    return summary


def offsets_by_ct(rows: list[dict], tolerance_mm: float = 5.0, min_confidence: float = FOUND_CONFIDENCE) -> dict:
    """Each held-out CT's mean head offset per view kind and side (mm, image axes, as ``head_offset_mm``) and the
    spread about it, with how many found hips would lie within ``tolerance_mm`` were each group's mean offset taken
    away. A detector that errs on an unseen body by an offset shared by its views (the landmark placed where the
    training bodies' context puts it) needs more bodies; scatter about a small offset needs a steadier reading
    (members, test-time readings): the split says which limits it. A group of one hip has no spread, and counts as
    within once its offset is taken away."""
    groups: dict[tuple[str, str, str], list] = {}
    for row in rows:
        if row["kind"] == "hip" and is_found(row, min_confidence):
            groups.setdefault((row["ct"], row["view"], row["side"]), []).append(row["head_offset_mm"])
    table, within, within_without_offsets = [], 0, 0
    for (ct, view, side), offsets in sorted(groups.items()):
        offsets = np.asarray(offsets, float)
        mean = offsets.mean(axis=0)
        residual = np.hypot(*(offsets - mean).T)
        within += int((np.hypot(*offsets.T) <= tolerance_mm).sum())
        within_without_offsets += int((residual <= tolerance_mm).sum())
        table.append(
            {
                "ct": ct,
                "view": view,
                "side": side,
                "found": len(offsets),
                "mean_offset_mm": [float(mean[0]), float(mean[1])],
                "mean_offset_length_mm": float(np.hypot(*mean)),
                "spread_mm": float(np.sqrt(np.mean(residual**2))),
            }
        )
    return {
        "groups": table,
        "found": int(sum(len(offsets) for offsets in groups.values())),
        "within_tolerance": within,
        "within_tolerance_without_group_offsets": within_without_offsets,
        "median_offset_length_mm": float(np.median([g["mean_offset_length_mm"] for g in table])) if table else None,
        "median_spread_mm": float(np.median([g["spread_mm"] for g in table])) if table else None,
    }


def threshold_sweep(rows: list[dict], thresholds: tuple[float, ...], tolerance_mm: float = 5.0) -> list[dict]:
    """Per confidence threshold: hips found, within ``tolerance_mm``, false hips and no-hip images with a detection,
    over all views: what lowering or raising the detector's threshold trades."""
    sweep = []
    for threshold in thresholds:
        summary = summarise(rows, tolerance_mm, threshold)
        sweep.append(
            {
                "min_confidence": threshold,
                "hips": summary["all"]["hips"],
                "found": summary["all"]["found"],
                "within_tolerance": summary["all"]["within_tolerance"],
                "false_hips": summary["false_hips"],
                "no_hip_images_with_a_detection": summary["no_hip_images_with_a_detection"],
            }
        )
    return sweep


def sorted_head_errors(hips: list[dict], min_confidence: float) -> np.ndarray:
    """The hips' head-centre errors (mm) in ascending order, a hip not found (:func:`is_found`) as infinitely far:
    the steps of a cumulative-error curve over every hip, found or not."""
    return np.sort([r["head_error_mm"] if is_found(r, min_confidence) else np.inf for r in hips])


def plot_head_errors(
    rows: list[dict], path: Path, tolerance_mm: float = 5.0, min_confidence: float = FOUND_CONFIDENCE
) -> Path:
    """The cumulative share of hips found (at ``min_confidence``) within each head-centre error (mm), one curve per
    view, with the tolerance marked: the picture of a whole-CT cross-validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.0, 4.0))
    for view in sorted({r["view"] for r in rows if r["kind"] == "hip"}):
        hips = [r for r in rows if r["kind"] == "hip" and r["view"] == view]
        errors = sorted_head_errors(hips, min_confidence)
        within = 100.0 * np.mean(errors <= tolerance_mm)
        axis.step(
            errors,
            100.0 * np.arange(1, len(errors) + 1) / len(errors),
            where="post",
            label=f"{view}: {within:.1f} % of {len(hips)} within {tolerance_mm:g} mm",
        )
    axis.axvline(tolerance_mm, color="grey", linestyle="--", linewidth=0.8)
    axis.set_xlim(0, 3 * tolerance_mm)
    axis.set_ylim(0, 100)
    axis.set_xlabel("femoral head centre error (mm at the patient)")
    axis.set_ylabel("hips found within it (%)")
    axis.set_title("Hip detector on CTs it never saw (whole-CT folds)", fontsize=9)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
    return Path(path)
