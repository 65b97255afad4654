"""Clinical "for presentation" processing of a detector log signal, and quantisation to 12-16 bits.

Steps, as in digital radiography consoles (simplified): dynamic-range compression (a fraction of the
very low frequencies of the log signal is removed, so thick and thin body parts both stay readable),
exposure recognition (percentile window of the log signal inside the anatomy, so every image fills the
grey range whatever the dose or patient), unsharp-mask edge enhancement, a sigmoid tone curve (film-like
characteristic curve) centred a little above the median anatomy (soft tissue mid-grey, bone bright), then
integer pixels. Because the window adapts to each image, a denser bone is brighter but not in proportion:
the grey level of bone does not measure BMD (paper Fig. 1), which is what the simulator must reproduce.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

ANATOMY_LOG_THRESHOLD = 0.05
"""Log attenuation above which a pixel counts as anatomy (below: direct exposure / collimated air)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def process_for_presentation(
    log_signal: np.ndarray,
    *,
    window_low_percentile: float,
    window_high_percentile: float,
    unsharp_gain: float,
    unsharp_sigma_px: float,
    tone_contrast: float,
    tone_offset: float,
    range_compression: float = 0.0,
    range_sigma_px: float = 0.0,
) -> np.ndarray:
    """Processed image in [0, 1] (float32; bone bright) from the log signal -ln(I/I0) (dimensionless)."""
    log_signal = np.asarray(log_signal, dtype=np.float64)
    anatomy = log_signal > ANATOMY_LOG_THRESHOLD
    if range_compression > 0 and range_sigma_px > 0:
        log_signal = log_signal - range_compression * gaussian_filter(log_signal, range_sigma_px, mode="nearest")
    values = log_signal[anatomy] if anatomy.sum() >= 100 else log_signal.ravel()
    low, high = np.percentile(values, [window_low_percentile, window_high_percentile])
    if high - low < 1e-6:
        high = low + 1e-6
    x = (log_signal - low) / (high - low)
    if unsharp_gain > 0 and unsharp_sigma_px > 0:
        x = x + unsharp_gain * (x - gaussian_filter(x, unsharp_sigma_px, mode="nearest"))
    tone_centre = float(np.median(x[anatomy])) + tone_offset if anatomy.sum() >= 100 else 0.5 + tone_offset
    bottom, top = _sigmoid(-tone_contrast * tone_centre), _sigmoid(tone_contrast * (1.0 - tone_centre))
    y = (_sigmoid(tone_contrast * (x - tone_centre)) - bottom) / (top - bottom)
    return np.clip(y, 0.0, 1.0).astype(np.float32)


def quantise(processed: np.ndarray, bits_stored: int) -> tuple[np.ndarray, float, float]:
    """uint16 pixels in [0, 2**bits - 1] and the (WindowCenter, WindowWidth) showing the full range."""
    if not 8 <= bits_stored <= 16:
        raise ValueError(f"bits stored must be 8-16, got {bits_stored}")
    top = 2**bits_stored - 1
    pixels = np.rint(np.clip(processed, 0.0, 1.0) * top).astype(np.uint16)
    return pixels, (top + 1) / 2.0, float(top + 1)
