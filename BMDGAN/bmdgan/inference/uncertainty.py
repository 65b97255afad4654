"""How sure is a BMD? The distribution of the truth around an estimate, calibrated on bones the model never saw.

On an unseen bone the error is mostly one offset per source CT (docs/results.md), so the images of one CT are not
independent repeats. The residual ``truth - estimate`` of an image of a new CT is modelled as ``mu + b + e``: one
offset ``b ~ N(0, tau^2)`` per CT and ``e ~ N(0, sigma^2)`` per image (one-way random effects), fitted on held-out
CTs with every CT weighing the same. A new image's truth is then ``estimate + mu + s * t`` with ``t`` Student-t:
``s^2 = tau^2 (1 + 1/K) + sigma^2`` and the degrees of freedom by Satterthwaite, dominated by the K - 1 of the
between-CT part. So the interval widens honestly when few CTs stand behind it.

Why not split-conformal: a bound that holds for a new *CT* must rank whole CTs, and a finite 90 % conformal bound
needs at least 9 held-out CTs (ceil((K + 1) * 0.9) <= K); a model trained on most of our bones leaves 3 to 5.
:func:`leave_one_ct_out` checks the coverage the honest way: each calibration CT is predicted from the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InputError

DEFAULT_COVERAGE = 0.9
MIN_CTS = 2
"""Held-out source CTs needed to estimate the between-CT spread at all (3 or more for :func:`leave_one_ct_out`)."""


@dataclass(frozen=True)
class PredictiveDistribution:
    """Truth = estimate + ``shift`` + ``scale`` * Student-t(``dof``), in the target's ``unit``; fitted on ``images``
    held-out images of ``cts`` source CTs (:func:`fit_predictive`)."""

    target: str
    method: str
    unit: str
    shift: float
    scale: float
    dof: float
    between_ct_sd: float
    within_ct_sd: float
    cts: list[str]
    images: int

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict) -> PredictiveDistribution:
        return PredictiveDistribution(**data)

    def interval(self, estimate: float, coverage: float = DEFAULT_COVERAGE) -> tuple[float, float]:
        """Central ``coverage`` interval of the truth (the target's unit) for one estimate (or an array of them); a
        density is never negative, so the lower bound stops at 0 (the interval then holds at least ``coverage``)."""
        from scipy import stats

        half = self.scale * float(stats.t.ppf(0.5 + coverage / 2.0, self.dof))
        centre = estimate + self.shift
        return np.maximum(centre - half, 0.0), centre + half

    def probability_below(self, estimate: float, value: float) -> float:
        """P(truth <= ``value``) for one estimate."""
        from scipy import stats

        return float(stats.t.cdf((value - estimate - self.shift) / self.scale, self.dof))


def fit_predictive(estimates, truths, cts, target: str, method: str, unit: str) -> PredictiveDistribution:
    """The random-effects predictive distribution (module docstring) from held-out images: their ``estimates``,
    ``truths`` (one unit) and source ``cts``. InputError with fewer than :data:`MIN_CTS` CTs or non-finite values."""
    estimates, truths, cts = np.asarray(estimates, float), np.asarray(truths, float), np.asarray(cts)
    keep = np.isfinite(estimates) & np.isfinite(truths)
    residuals, cts = (truths - estimates)[keep], cts[keep]
    names = sorted(set(cts.tolist()))
    if len(names) < MIN_CTS:
        raise InputError(
            None,
            f"{method} {target}: {len(names)} held-out source CT(s) with finite values; an interval for a new bone "
            f"needs at least {MIN_CTS}",
            "calibrate on a cohort of more CTs that the model never saw",
        )
    groups = [residuals[cts == name] for name in names]
    k, n = len(groups), len(residuals)
    means = np.array([g.mean() for g in groups])
    within_var = sum(((g - g.mean()) ** 2).sum() for g in groups) / max(n - k, 1)
    mean_inverse_size = float(np.mean([1.0 / len(g) for g in groups]))
    between_var = float(means.var(ddof=1))  # estimates tau^2 + sigma^2 * mean(1/n_c)
    between_part = between_var * (1.0 + 1.0 / k)
    within_part = within_var * (1.0 - mean_inverse_size)
    variance = between_part + within_part
    if not variance > 0:
        raise InputError(None, f"{method} {target}: the held-out residuals do not vary", "check the cohort")
    dof = variance**2 / (between_part**2 / (k - 1) + (within_part**2 / (n - k) if n > k else 0.0))
    return PredictiveDistribution(
        target=target,
        method=method,
        unit=unit,
        shift=float(means.mean()),
        scale=float(math.sqrt(variance)),
        dof=float(dof),
        between_ct_sd=float(math.sqrt(max(between_var - within_var * mean_inverse_size, 0.0))),
        within_ct_sd=float(math.sqrt(within_var)),
        cts=names,
        images=int(n),
    )


def coverage_and_width(distribution: PredictiveDistribution, estimates, truths, coverage=DEFAULT_COVERAGE) -> dict:
    """Share of ``truths`` inside their estimate's interval, and the interval's width (the target's unit)."""
    estimates, truths = np.asarray(estimates, float), np.asarray(truths, float)
    keep = np.isfinite(estimates) & np.isfinite(truths)
    low, high = distribution.interval(estimates[keep], coverage)
    inside = (truths[keep] >= low) & (truths[keep] <= high)
    return {
        "images": int(keep.sum()),
        "coverage": float(inside.mean()) if keep.any() else math.nan,
        "width": float(np.median(high - low)) if keep.any() else math.nan,
    }


def leave_one_ct_out(
    estimates, truths, cts, target: str, method: str, unit: str, coverage=DEFAULT_COVERAGE, other=None
) -> dict:
    """Each source CT's images against the interval fitted on the other CTs: the coverage a new bone gets. ``other``:
    (estimates, truths, cts) of other images of the same CTs (e.g. another site's) to check instead of the fitted
    ones, each CT's again against the interval fitted without that CT. Returns the pooled coverage, the median width
    and each CT's coverage and mean residual (bias of the estimate)."""
    estimates, truths, cts = np.asarray(estimates, float), np.asarray(truths, float), np.asarray(cts)
    checked = (estimates, truths, cts) if other is None else tuple(np.asarray(v) for v in other)
    names = sorted(set(cts.tolist()))
    if len(names) < MIN_CTS + 1:
        raise InputError(None, f"{len(names)} source CTs", f"leaving one out needs at least {MIN_CTS + 1}")
    per_ct, inside, widths = {}, [], []
    for name in names:
        held = cts == name
        fitted = fit_predictive(estimates[~held], truths[~held], cts[~held], target, method, unit)
        chosen = checked[2] == name
        if not chosen.any():
            continue
        estimate, truth = checked[0][chosen].astype(float), checked[1][chosen].astype(float)
        low, high = fitted.interval(estimate, coverage)
        hits = (truth >= low) & (truth <= high)
        inside += hits.tolist()
        widths += (high - low).tolist()
        per_ct[name] = {
            "images": int(chosen.sum()),
            "coverage": float(hits.mean()),
            "bias": float(np.mean(estimate - truth)),
        }
    return {
        "nominal": coverage,
        "coverage": float(np.mean(inside)),
        "width": float(np.median(widths)),
        "per_ct": per_ct,
    }
