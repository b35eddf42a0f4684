"""The decision rule: agrees, disagrees or inconclusive; overlap alone decides nothing."""

import math

import pytest

from idscaling.verdicts import decide


@pytest.mark.parametrize("observed, predicted, verdict", [
    ((0.50, 0.47, 0.53), (0.50, 0.50, 0.50), "agrees"),          # inside ± 0.05
    ((0.50, 0.46, 0.56), (0.50, 0.48, 0.52), "agrees"),          # inside the predicted interval ± m
    ((0.70, 0.65, 0.75), (0.50, 0.50, 0.50), "disagrees"),       # excludes the prediction
    ((0.30, 0.20, 0.40), (0.50, 0.45, 0.55), "disagrees"),       # both intervals apart
    ((0.50, 0.10, 0.90), (0.50, 0.50, 0.50), "inconclusive"),    # overlaps, far too wide
    ((0.53, 0.49, 0.58), (0.50, 0.50, 0.50), "inconclusive"),    # narrow enough, reaches outside
    ((0.50, 0.47, 0.53), (0.50, math.nan, math.nan), "agrees"),  # a point prediction
])
def test_verdicts(observed, predicted, verdict):
    assert decide(observed, predicted, 0.05)[0] == verdict


def test_a_lower_bound_alone_disagrees_only_above_the_prediction():
    # an unidentified offset leaves only a lower bound on the excess loss's exponent
    verdict, reason = decide((0.07, 0.06, math.inf), (0.30, 0.29, 0.31), 0.05)
    assert verdict == "inconclusive" and "lower bound" in reason
    assert decide((0.50, 0.40, math.inf), (0.30, 0.29, 0.31), 0.05)[0] == "disagrees"


def test_the_old_overlap_rule_is_gone():
    # intervals [0.10, 1.29] and [0.315, 0.333] overlap; that decides nothing
    verdict, reason = decide((0.67, 0.10, 1.29), (0.325, 0.315, 0.333), 0.05)
    assert verdict == "inconclusive"
    assert "wider than the band" in reason and "more sizes, seeds" in reason


def test_margin_zero_needs_the_observed_interval_inside_the_predicted_one():
    assert decide((0.5, 0.49, 0.51), (0.5, 0.48, 0.52), 0.0)[0] == "agrees"
    assert decide((0.5, 0.49, 0.51), (0.5, 0.5, 0.5), 0.0)[0] == "inconclusive"


def test_no_interval_is_inconclusive_and_bad_margin_refused():
    assert decide((0.5, math.nan, math.nan), (0.5, 0.5, 0.5), 0.05)[0] == "inconclusive"
    with pytest.raises(ValueError, match="margin"):
        decide((0.5, 0.4, 0.6), (0.5, 0.5, 0.5), -0.1)
