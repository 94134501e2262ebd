"""Intervals and paired tests against hand computations and a naive permutation loop."""

import itertools

import numpy as np
import pytest

from benchmarks.stats import adjust, interval, paired_test


def test_the_interval_of_a_binary_score_is_the_binomial_quantiles():
    # Resampling 20 values of which 10 are 1: the resampled mean is Binomial(20, 1/2)
    # / 20, whose 2.5 % and 97.5 % quantiles are 6/20 and 14/20 (P(X <= 5) = 0.021,
    # P(X <= 6) = 0.058, P(X <= 13) = 0.942, P(X <= 14) = 0.979).
    values = [1.0] * 10 + [0.0] * 10
    assert interval(values, seed=0) == {"value": 0.5, "low": 0.3, "high": 0.7}


def test_the_interval_of_a_mean_of_many_normal_values_is_the_textbook_one():
    x = np.random.default_rng(1).normal(3.0, 2.0, size=400)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    result = interval(x, seed=0)
    assert result["value"] == pytest.approx(x.mean())
    assert result["low"] == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert result["high"] == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_no_spread_no_interval_and_bad_values_are_refused():
    assert interval([1.0, 1.0, 1.0], seed=0) == {"value": 1.0, "low": 1.0, "high": 1.0}
    with pytest.raises(ValueError, match="at least two"):
        interval([1.0], seed=0)
    with pytest.raises(ValueError, match="finite"):
        interval([1.0, float("nan")], seed=0)


def test_the_same_seed_gives_the_same_interval():
    x = np.random.default_rng(2).random(30)
    assert interval(x, seed=5) == interval(x, seed=5)


def naive_sign_flip_p(a, b) -> float:
    """Every one of the 2**n sign patterns of the differences; the share whose mean
    is at least as far from 0 as the observed one."""
    d = np.asarray(a) - np.asarray(b)
    observed = abs(d.mean())
    flips = [
        abs((d * np.array(signs)).mean())
        for signs in itertools.product((1, -1), repeat=len(d))
    ]
    return float(np.mean([f >= observed - 1e-12 for f in flips]))


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_the_paired_test_equals_a_naive_permutation_loop(shift):
    rng = np.random.default_rng(3)
    a = rng.normal(size=10) + shift
    b = rng.normal(size=10)
    result = paired_test(a, b, seed=0)
    assert result["p"] == pytest.approx(naive_sign_flip_p(a, b), abs=1e-12)
    assert result["difference"]["value"] == pytest.approx((a - b).mean())
    low, high = result["difference"]["low"], result["difference"]["high"]
    assert low <= (a - b).mean() <= high


def test_identical_methods_do_not_differ_and_unpaired_values_are_refused():
    a = [0.1, 0.5, 0.7]
    assert paired_test(a, a, seed=0)["p"] == 1.0
    with pytest.raises(ValueError, match="differ in number"):
        paired_test(a, [0.1, 0.2], seed=0)


def test_benjamini_hochberg_by_hand():
    # Sorted 0.01, 0.03, 0.04 of 3: 0.01 * 3, 0.03 * 3 / 2, 0.04; then the running
    # minimum from the top.
    assert adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.04, 0.04])
    assert adjust([]) == []
