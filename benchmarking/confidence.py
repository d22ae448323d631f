"""Statistics of a sweep over seeds: percentile-bootstrap confidence intervals and the interquartile mean."""
from __future__ import annotations

import numpy as np


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (scipy); (nan, nan) for fewer than two values."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    res = stats.bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=resamples,
                          method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def iqm(values: np.ndarray) -> float:
    """Interquartile mean (Agarwal et al. 2021): the mean of the middle 50 %."""
    from scipy import stats

    return float(stats.trim_mean(values, 0.25)) if len(values) else float("nan")


def format_ci(mean: float, ci: tuple[float, float], spec: str = ".3f") -> str:
    """``0.512 [0.498, 0.530]``, or the mean alone when there is no interval; ``spec``: the numbers' format
    (``+.2f``: ``+0.51 [+0.50, +0.53]``)."""
    if np.isnan(ci[0]):
        return f"{mean:{spec}}"
    return f"{mean:{spec}} [{ci[0]:{spec}}, {ci[1]:{spec}}]"
