"""A picture for judging the simulator by eye: a real radiograph, a radiograph simulated from a CT, and that
simulation's bone-only DRR (the projected hydroxyapatite, g/cm2), side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .geometry import default_ap_geometry
from .materials import MATERIAL_CHANNELS


def write_comparison(ct, real_radiograph, out: str | Path, seed: int = 0) -> Path:
    """Simulate an AP radiograph of ``ct`` (HU volume) at a 0.5 mm detector and write the three-panel PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .simulator import simulate_radiograph

    simulated = simulate_radiograph(ct, default_ap_geometry(ct, pixel_spacing_mm=0.5, max_side_px=768), rng=seed)
    bone = simulated.areal_density_g_per_cm2[MATERIAL_CHANNELS.index("hydroxyapatite")]
    figure, axes = plt.subplots(1, 3, figsize=(13, 5.5))
    for axis, image, title in (
        (axes[0], real_radiograph.pixels, f"real: {Path(real_radiograph.source).name}"),
        (
            axes[1],
            simulated.pixels.astype(np.float32),
            f"simulated from {Path(ct.source).name}\n{simulated.parameters.effective_energy_kev:.0f} keV, "
            f"scatter/primary {simulated.parameters.scatter_to_primary:.2f}",
        ),
    ):
        low, high = np.percentile(image, [0.5, 99.5])
        axis.imshow(image, cmap="gray", vmin=low, vmax=high)
        axis.set_title(title, fontsize=9)
    shown = axes[2].imshow(bone, cmap="inferno", vmin=0)
    axes[2].set_title("bone-only DRR of the simulation", fontsize=9)
    figure.colorbar(shown, ax=axes[2], fraction=0.05, label="hydroxyapatite (g/cm2)")
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out
