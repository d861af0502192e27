"""``scipy.stats.wilcoxon`` with the same results, fast on the small samples a meta-evaluation produces.

MetaQuantus' IAC is a Wilcoxon signed-rank p-value on the samples a perturbation test keeps; adversary
tests keep few. With ties or zeros among at most 13 differences, scipy (>= 1.15, ``method="auto"``) runs an
exact permutation test over all 2^n sign flips, calling its statistic once per flip: 0.2 s per test, 8 s of
a 60 s SimilarityRate meta-evaluation. :func:`wilcoxon` runs the same permutation test
(``scipy.stats.permutation_test``, the same sign flips and p-value rule) with a statistic vectorised over the
flips; every other case goes to scipy unchanged.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

#: scipy's limit for the exact permutation test (2^13 sign flips <= its 9999 resamples)
_EXACT_N = 13


def _r_plus_zsplit(d: np.ndarray, axis: int = -1) -> np.ndarray:
    """Wilcoxon's R+ with zsplit zeros (half of each zero's rank to R+): sums of multiples of 1/4, exact."""
    d = np.moveaxis(d, axis, -1)
    r = scipy.stats.rankdata(np.abs(d), method="average", axis=-1)
    return ((d > 0) * r).sum(-1) + ((d == 0) * r).sum(-1) / 2


def wilcoxon(x, y=None, zero_method: str = "wilcox", correction: bool = False, alternative: str = "two-sided",
             method="auto", **kwargs):
    """``scipy.stats.wilcoxon(x, y, ...)``: the same statistic and p-value (see the module docstring)."""
    d = np.asarray(x, dtype=float) - (0.0 if y is None else np.asarray(y, dtype=float))
    n = d.shape[0] if d.ndim == 1 else 0
    small_permutation = (method == "auto" and zero_method == "zsplit" and not kwargs and d.ndim == 1
                         and 2 <= n <= _EXACT_N and bool(np.isfinite(d).all())
                         and (len(np.unique(np.abs(d))) < n or bool((d == 0).any())))
    if not small_permutation:
        return scipy.stats.wilcoxon(x, y, zero_method=zero_method, correction=correction, alternative=alternative,
                                    method=method, **kwargs)
    p = scipy.stats.permutation_test((d,), _r_plus_zsplit, permutation_type="samples", vectorized=True,
                                     n_resamples=9999, alternative=alternative, axis=-1).pvalue
    r_plus = float(_r_plus_zsplit(d))
    r_minus = n * (n + 1) / 2 - r_plus
    statistic = min(r_plus, r_minus) if alternative == "two-sided" else r_plus
    return scipy.stats._morestats.WilcoxonResult(statistic=np.float64(statistic), pvalue=np.float64(p))


__all__ = ["wilcoxon"]
