"""The benchmarks' one way to time a call: a warm-up, then the median wall time of repeats (seconds)."""

from __future__ import annotations

import statistics
import time


def median_seconds(function, repeats: int) -> float:
    """Median wall time (s) of ``repeats`` calls of ``function`` after one untimed warm-up call."""
    function()
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)
