"""One percentile helper for the package: the pipeline, the publisher and the bench agree."""

import numpy as np
import pytest

from inspector.stats import percentile, summary


@pytest.mark.parametrize("values, q, want", [
    ([], 99, None),
    ([5.0], 99, 5.0),
    (list(range(1, 101)), 50, 50.5),  # linear interpolation between closest ranks
    (list(range(1, 101)), 99, 99.01),
    ([3.0, 1.0, 2.0], 0, 1.0),
    ([3.0, 1.0, 2.0], 100, 3.0),
])
def test_percentile(values, q, want):
    got = percentile(values, q)
    assert got == (None if want is None else pytest.approx(want))


@pytest.mark.parametrize("stats, want", [
    (("p50", "p95", "p99", "max"), {"p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0}),
    (("n", "mean", "min"), {"n": 100, "mean": 50.5, "min": 1.0}),
    (("p99.9",), {"p99.9": 99.901}),
])
def test_summary_names_what_it_reports(stats, want):
    assert summary(range(1, 101), stats) == pytest.approx(want)


def test_summary_of_nothing_is_none_but_the_count():
    assert summary([], ("n", "p50", "max")) == {"n": 0, "p50": None, "max": None}


@pytest.mark.parametrize("bad", [("p101",), ("median",), ("p",)])
def test_summary_refuses_unknown_names(bad):
    with pytest.raises(ValueError, match="expected pNN"):
        summary([1.0], bad)


def test_same_numbers_as_numpy_for_every_input_type():
    rng = np.random.default_rng(3)
    a = rng.exponential(5.0, 1001)
    from collections import deque

    for values in (a, list(a), tuple(a), deque(a), iter(a)):
        assert summary(values, ("p99",), ndigits=None)["p99"] == pytest.approx(float(np.percentile(a, 99)))
