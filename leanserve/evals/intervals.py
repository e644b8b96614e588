"""Confidence intervals for accuracies, so a report says how far apart two scores must be to mean anything.

Wilson's score interval, not the normal approximation: it stays inside [0, 1] and keeps its coverage for
the small counts and the near-chance accuracies a 135M model scores (57 MMLU questions give about ±12
points at 95%; the normal interval would claim less and could go below 0).
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for `successes` of `n` trials; (0, 1) when n is 0.

    `successes` may be fractional (accuracy x n of a macro-averaged score)."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} outside [0, {n}]")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
