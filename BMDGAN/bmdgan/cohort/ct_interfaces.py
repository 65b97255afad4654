"""What the cohort asks of the CT analysis for a whole-pelvis CT: which hips it holds, and where the body is.

Both come from :mod:`bmdgan.ct` (``pipeline.hip_sides`` and ``body.body_mask``); the cohort calls them only
through these two functions.
"""

from __future__ import annotations

import numpy as np


def hip_sides_of(ct) -> list[str]:
    """The hips ('left', 'right') a CT holds, from :func:`bmdgan.ct.pipeline.hip_sides`."""
    try:
        from ..ct.pipeline import hip_sides
    except ImportError:  # TEMPORARY (lead: delete this fallback once hip_sides is merged): one hip, as before
        return ["auto"]
    return list(hip_sides(ct))


def default_body_mask(ct) -> np.ndarray:
    """The patient's body (bool [k, j, i]) from :func:`bmdgan.ct.body.body_mask`."""
    try:
        from ..ct.body import body_mask
    except ImportError:  # TEMPORARY (lead: delete this fallback once bmdgan.ct.body is merged): the whole CT
        return np.ones(ct.array.shape, dtype=bool)
    return np.asarray(body_mask(ct), dtype=bool)
