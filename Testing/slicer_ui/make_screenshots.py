"""The extension catalog's screenshots, made headless: each module's panel (its .ui rendered by Qt offscreen; Slicer's
own widgets, such as node selectors, are unknown to plain Qt and left blank) beside what the module shows, computed
by the module's Logic and the engine on the bundled sample data:

- BMDGAN: the report picture of the sample radiograph (default model, right hip);
- BMDGANRegistration: the registration overlay of a radiograph simulated from the sample CT, from a start 8 mm
  off;
- BMDGANTraining: the loss curves and latest sample picture (radiograph | target | generator) of a short smoke run
  on the synthetic pairs.

    PYTHONPATH=BMDGAN:BMDGAN:BMDGANRegistration:BMDGANTraining python Testing/slicer_ui/make_screenshots.py \\
        Resources/Screenshots

About two minutes on a 2-core CPU. CMakeLists.txt's EXTENSION_SCREENSHOTURLS point at the files it writes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPOSITORY = Path(__file__).resolve().parents[2]
HEIGHT_PX = 560
"""Height of every screenshot (the panel and the output are scaled to it)."""


def panel(module: str) -> Image.Image:
    """The module's .ui rendered offscreen at 380 pixels wide."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtUiTools, QtWidgets

    application = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    form = QtUiTools.QUiLoader().load(str(REPOSITORY / module / "Resources" / "UI" / f"{module}.ui"))
    form.resize(380, form.sizeHint().height())
    buffer = QtCore.QBuffer()
    buffer.open(QtCore.QIODevice.OpenModeFlag.ReadWrite)
    form.grab().save(buffer, "PNG")
    application.processEvents()
    with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as handle:
        handle.write(bytes(buffer.data()))
    return Image.open(handle.name).convert("RGB")


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    def scaled(image: Image.Image) -> Image.Image:
        return image.resize((round(image.width * HEIGHT_PX / image.height), HEIGHT_PX), Image.LANCZOS)

    left, right = scaled(left), scaled(right)
    picture = Image.new("RGB", (left.width + right.width + 8, HEIGHT_PX), (255, 255, 255))
    picture.paste(left, (0, 0))
    picture.paste(right, (left.width + 8, 0))
    return picture


def estimation_report(folder: Path) -> Image.Image:
    import slicer

    from bmdgan.sample_data import SAMPLE_SIMULATED_RADIOGRAPH, sample_data_dir
    from BMDGANLib.estimation_logic import EstimationLogic

    scene, logic = slicer.vtkMRMLScene(), EstimationLogic()
    node, _radiograph = logic.load_radiograph(sample_data_dir() / SAMPLE_SIMULATED_RADIOGRAPH, scene)
    result = logic.estimate(node, scene, side="right")
    return Image.open(logic.export_report(result, folder / "report.png")).convert("RGB")


def registration_overlay_picture(folder: Path) -> Image.Image:
    """A radiograph simulated from the sample CT at the nominal AP pose, registered from a start 8 mm off."""
    from bmdgan.io import read_ct
    from bmdgan.projection.geometry import default_ap_geometry
    from bmdgan.projection.simulator import simulate_radiograph
    from bmdgan.registration import register, registration_overlay, write_png_rgb
    from bmdgan.sample_data import SAMPLE_CT, sample_data_dir

    ct = read_ct(sample_data_dir() / SAMPLE_CT)
    truth = default_ap_geometry(ct, pixel_spacing_mm=1.0)
    pixels = simulate_radiograph(ct, truth, rng=1).pixels
    offset = np.eye(4)
    offset[:3, 3] = [8.0, -5.0, 0.0]  # mm, in the image plane
    result = register(pixels, truth.with_pose(offset @ truth.camera_from_lps), ct)
    path = write_png_rgb(folder / "overlay.png", registration_overlay(result, pixels, ct))
    return Image.open(path).convert("RGB")


def training_progress(folder: Path) -> Image.Image:
    """A smoke run on the synthetic pairs: stage 2's per-epoch losses (the module's plot view) above its latest sample
    (radiograph | target DRR | generator's DRR, the module's slice views)."""
    from dataclasses import replace

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bmdgan.datasets.synthetic import make_pairs_dataset
    from bmdgan.training.config import load_config
    from bmdgan.training.run import train_run
    from BMDGANTrainingLib.training_logic import TrainingLogic

    epochs = {"stage1": 6, "stage2": 6}
    dataset = make_pairs_dataset(folder / "pairs")
    train_run(replace(load_config("smoke"), epochs=epochs), dataset, folder / "run", fold=0, progress=False)
    logic = TrainingLogic()
    curves, sample = logic.epoch_losses(folder / "run", "stage2"), logic.latest_sample(folder / "run")
    figure, (losses, strip) = plt.subplots(2, 1, figsize=(6.4, 7.0), height_ratios=[1.0, 1.1])
    for name, values in curves.items():
        if name != "epoch":
            losses.semilogy(curves["epoch"] + 1, values, marker="o", label=name)
    losses.set(
        xlabel="epoch",
        ylabel="loss (per-epoch mean)",
        title=f"BMD-GAN training losses, stage 2 (smoke run, {epochs['stage1']} + {epochs['stage2']} epochs)",
    )
    losses.legend(fontsize=7, ncol=3)
    strip.imshow(np.load(sample.path), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    strip.set_title(f"latest sample, {sample.stage} epoch {sample.epoch + 1}: radiograph | target | G(x)")
    strip.axis("off")
    figure.tight_layout()
    figure.savefig(folder / "training.png", dpi=100)
    plt.close(figure)
    return Image.open(folder / "training.png").convert("RGB")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    outputs = {
        "BMDGAN": estimation_report,
        "BMDGANRegistration": registration_overlay_picture,
        "BMDGANTraining": training_progress,
    }
    for module, make_output in outputs.items():
        with tempfile.TemporaryDirectory() as work:
            picture = side_by_side(panel(module), make_output(Path(work)))
        picture.save(out / f"{module}.png", optimize=True)
        print(f"{out / f'{module}.png'}: {picture.width} x {picture.height} px")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
