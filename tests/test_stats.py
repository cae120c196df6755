"""stats: exact intervals and tests against hand-computed small cases."""

import math

import pytest

from pipeline.evaluation import stats


def test_mcnemar_exact_matches_the_binomial_sum_by_hand():
    # 7 discordant images, 2 broken: 2 * (C(7,0) + C(7,1) + C(7,2)) / 2^7 = 2 * 29 / 128
    assert stats.mcnemar_exact(5, 2) == pytest.approx(58 / 128)
    assert stats.mcnemar_exact(2, 5) == stats.mcnemar_exact(5, 2)  # two-sided
    assert stats.mcnemar_exact(6, 0) == pytest.approx(2 / 64)     # 6 fixed, none broken
    assert stats.mcnemar_exact(3, 0) == pytest.approx(0.25)
    assert stats.mcnemar_exact(4, 4) == 1.0                      # capped at 1
    assert stats.mcnemar_exact(0, 0) == 1.0                      # nothing changed
    with pytest.raises(ValueError):
        stats.mcnemar_exact(-1, 2)


def test_clopper_pearson_edges_have_closed_forms():
    # k = 0: upper = 1 - (alpha/2)^(1/n); k = n: lower = (alpha/2)^(1/n)
    lo, hi = stats.clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** 0.1, abs=1e-9)
    lo, hi = stats.clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** 0.1, abs=1e-9) and hi == 1.0
    # 1 of 2: P(X >= 1 | p) = 1 - (1-p)^2 = 0.025 and P(X <= 1 | p) = 1 - p^2 = 0.025
    lo, hi = stats.clopper_pearson(1, 2)
    assert lo == pytest.approx(1 - math.sqrt(0.975), abs=1e-9)
    assert hi == pytest.approx(math.sqrt(0.975), abs=1e-9)


def test_clopper_pearson_agrees_with_scipy_on_the_test_set_size():
    scipy_stats = pytest.importorskip("scipy.stats")
    for k in (9841, 9885, 9905):
        ci = scipy_stats.binomtest(k, 10_000).proportion_ci(method="exact")
        assert stats.clopper_pearson(k, 10_000) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_binomial_test_is_twice_the_smaller_tail():
    # 7 of 20 at p = 1/2: 2 * sum_{i<=7} C(20, i) / 2^20 = 2 * 137980 / 1048576
    assert stats.binomial_test(7, 20, 0.5) == pytest.approx(2 * 137980 / 2 ** 20)
    assert stats.binomial_test(10, 20, 0.5) == 1.0
    with pytest.raises(ValueError):
        stats.binomial_test(11, 10, 0.5)


def test_reference_label_agrees_with_the_interval():
    # 98.85% of 10,000 vs the tutorial's 98.41%: the interval excludes it
    assert stats.versus_reference(9885, 10_000, 0.9841)[0] == "above"
    assert stats.versus_reference(9901, 10_000, 0.9897)[0] == "within noise"
    assert stats.versus_reference(9800, 10_000, 0.9841)[0] == "below"
    for k, ref in ((9885, 0.9841), (9901, 0.9897), (9905, 0.9881), (9800, 0.9841)):
        lo, hi = stats.clopper_pearson(k, 10_000)
        inside = lo <= ref <= hi
        assert inside == (stats.versus_reference(k, 10_000, ref)[0] == "within noise")


def test_paired_counts_fixed_and_broken_images_and_words_the_verdict():
    y = [0] * 10
    old = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]   # wrong on the first five
    new = [0, 0, 0, 0, 0, 1, 1, 0, 0, 0]   # fixes those, breaks two others
    result = stats.paired(y, old, new)
    assert (result.fixed, result.broken, result.net) == (5, 2, 3)
    assert result.words() == "+3 images (5 fixed, 2 broken), p = 0.45: within noise"
    big = stats.paired([0] * 8, [1] * 8, [0] * 8)
    assert big.words() == "+8 images (8 fixed, 0 broken), p = 0.0078: significant"
    assert stats.paired([0], [1], [2]).words() == "±0 images (0 fixed, 0 broken), p = 1.00: within noise"
    with pytest.raises(ValueError, match="different images"):
        stats.paired([0, 1], [0], [0, 1])


def test_significantly_better_needs_a_gain_and_a_small_p():
    y = [0] * 20
    assert stats.significantly_better(y, [1] * 8 + [0] * 12, [0] * 20)       # 8 fixed: p = 0.0078
    assert not stats.significantly_better(y, [0] * 20, [1] * 8 + [0] * 12)   # 8 broken
    assert not stats.significantly_better(y, [1] * 5 + [0] * 15, [0] * 20)  # 5 fixed: p = 0.0625


def test_p_values_read_as_people_write_them():
    assert [stats.fmt_p(p) for p in (0.453125, 0.03125, 0.0042, 0.0001)] == \
        ["0.45", "0.031", "0.0042", "< 0.001"]
    assert stats.p_text(0.0001) == "p < 0.001" and stats.p_text(0.45) == "p = 0.45"
