"""Which differences are real: exact tests on counts of right and wrong images.

Accuracy on a test set of ``n`` images is ``k`` successes out of ``n``; two
models (or two runs of one model) tested on the *same* images differ only on
the images one got right and the other wrong. Three exact tests answer every
question the report, the diff and ``publish`` ask, all at ``ALPHA`` = 0.05:

- ``clopper_pearson(k, n)``: the 95% confidence interval of one accuracy. It is
  exact (never below the nominal 95%), and it is the inversion of
  ``binomial_test``: a reference value lies outside the interval exactly when
  the test rejects it, so the report's interval and its label never disagree.
- ``binomial_test(k, n, p)``: our ``k``/``n`` against a published accuracy
  ``p`` (the tutorial's), two-sided, central (twice the smaller tail). The
  published number is taken as fixed: we have no per-image predictions of the
  tutorial's run, so no paired test is possible, and its own run-to-run noise is
  not counted (the test asks "is our run consistent with that accuracy?").
- ``mcnemar_exact(b, c)``: two sets of predictions on the same images; ``b``
  images fixed (old wrong, new right), ``c`` broken (old right, new wrong).
  Under "no real difference" each of the ``b + c`` discordant images is a fair
  coin, so the p-value is a two-sided binomial test of ``b`` out of ``b + c``
  at 1/2. Pairing matters: an unpaired two-proportion test would ignore that
  both runs saw the same 10,000 images and call far fewer differences real.

Pure Python (``math.comb``/``lgamma``): no SciPy needed; tests compare with
hand-computed cases (and with SciPy where it is installed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

ALPHA = 0.05  # significance level of every test here; 95% intervals


def _log_pmf(i: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 0.0 if i == 0 else -math.inf
    if p >= 1.0:
        return 0.0 if i == n else -math.inf
    return (math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p))


def _sum_pmf(lo: int, hi: int, n: int, p: float) -> float:
    return math.fsum(math.exp(_log_pmf(i, n, p)) for i in range(lo, hi + 1))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summing the shorter side."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if k <= n * p:
        return min(1.0, _sum_pmf(0, k, n, p))
    return max(0.0, 1.0 - _sum_pmf(k + 1, n, n, p))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k), summing the shorter side."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if k >= n * p:
        return min(1.0, _sum_pmf(k, n, n, p))
    return max(0.0, 1.0 - _sum_pmf(0, k - 1, n, p))


def binomial_test(k: int, n: int, p: float) -> float:
    """Two-sided exact p-value of ``k`` successes in ``n`` against success rate ``p``.

    Central: twice the smaller tail, capped at 1 (the test Clopper-Pearson inverts).
    """
    _check(k, n)
    return min(1.0, 2.0 * min(binom_cdf(k, n, p), binom_sf(k, n, p)))


def clopper_pearson(k: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Exact ``1 - alpha`` confidence interval of a proportion ``k``/``n``."""
    _check(k, n)
    lower = 0.0 if k == 0 else _solve(lambda p: binom_sf(k, n, p) - alpha / 2, k / n, True)
    upper = 1.0 if k == n else _solve(lambda p: binom_cdf(k, n, p) - alpha / 2, k / n, False)
    return lower, upper


def _solve(f, p_hat: float, below: bool) -> float:
    """Bisection for the root of ``f`` on the side of ``p_hat`` where it lies.

    Below p_hat the upper tail P(X >= k) grows with p; above it P(X <= k) falls.
    """
    lo, hi = (0.0, p_hat) if below else (p_hat, 1.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        # below: f rises with p (root where the tail reaches alpha/2)
        if (f(mid) < 0) == below:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (lo + hi) / 2


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` fixed vs ``c`` broken images.

    ``2 * P(X <= min(b, c))`` for X ~ Binomial(b + c, 1/2), capped at 1;
    1.0 when no image changed.
    """
    if b < 0 or c < 0:
        raise ValueError("counts must be non-negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)


def _check(k: int, n: int) -> None:
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")


# ---------------------------------------------------------------- verdicts

@dataclass(frozen=True)
class Paired:
    """Two prediction sets on the same images, compared with McNemar's exact test."""
    fixed: int      # old wrong, new right
    broken: int     # old right, new wrong
    p_value: float

    @property
    def net(self) -> int:
        return self.fixed - self.broken

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA

    def words(self) -> str:
        """``+3 images (5 fixed, 2 broken), p = 0.45: within noise``."""
        verdict = ("significant" if self.significant else "within noise")
        net = f"{self.net:+d}" if self.net else "±0"
        return (f"{net} image{'s' * (abs(self.net) != 1)} ({self.fixed} fixed, "
                f"{self.broken} broken), {p_text(self.p_value)}: {verdict}")


def paired(y_true: Sequence[int], old_pred: Sequence[int], new_pred: Sequence[int]) -> Paired:
    """McNemar's exact test of two models' predictions on the same labelled images."""
    if not len(y_true) == len(old_pred) == len(new_pred):
        raise ValueError(f"predictions cover different images: {len(y_true)} labels, "
                         f"{len(old_pred)} old and {len(new_pred)} new predictions")
    fixed = broken = 0
    for y, o, n in zip(y_true, old_pred, new_pred):
        fixed += (o != y) and (n == y)
        broken += (o == y) and (n != y)
    return Paired(int(fixed), int(broken), mcnemar_exact(int(fixed), int(broken)))


def significantly_better(y_true: Sequence[int], old_pred: Sequence[int],
                         new_pred: Sequence[int], alpha: float = ALPHA) -> bool:
    """True when ``new_pred`` is right on more of the images and McNemar's p < ``alpha``.

    For ``publish`` (``publish.require_significance``): call it with the labels
    of the validation set and both champions' predictions on it.
    """
    result = paired(y_true, old_pred, new_pred)
    return result.net > 0 and result.p_value < alpha


def versus_reference(k: int, n: int, reference: float) -> tuple[str, float]:
    """``("above" | "within noise" | "below", p)``: our k/n against a published accuracy."""
    p = binomial_test(k, n, reference)
    if p >= ALPHA:
        return "within noise", p
    return ("above" if k / n > reference else "below"), p


def fmt_p(p: float) -> str:
    """p-values as people read them: 0.45, 0.031, 0.0042, < 0.001."""
    if p < 0.001:
        return "< 0.001"
    return f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def p_text(p: float) -> str:
    """``p = 0.45`` or ``p < 0.001``."""
    return f"p {fmt_p(p)}" if p < 0.001 else f"p = {fmt_p(p)}"
