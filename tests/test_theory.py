"""Predicted exponents from the intrinsic dimension (Havrilla & Liao; Sharma & Kaplan)."""

from __future__ import annotations

import math

import pytest

from idscaling.errors import ConfigError, DataError
from idscaling.theory import implied_smoothness, predict_exponents


def test_exponents_for_a_known_dimension():
    p = predict_exponents(8.0)
    assert p.alpha_D == pytest.approx(2 / 10)
    assert p.alpha_N == pytest.approx(2 / 8)
    assert p.alpha_N_s2 == pytest.approx(4 / 8)
    assert math.isnan(p.alpha_D_ci_low) and math.isnan(p.alpha_N_s2_ci_high)
    q = predict_exponents(8.0, smoothness=2.0)
    assert q.alpha_D == pytest.approx(4 / 12) and q.alpha_N == pytest.approx(4 / 8)
    assert q.alpha_N_s2 == pytest.approx(p.alpha_N_s2)   # α_N at s = 2 whatever the configured s


def test_intervals_are_carried_from_the_id_interval():
    p = predict_exponents(8.0, id_ci=(6.0, 10.0))
    # a larger dimension predicts a smaller exponent: the ID's top is the exponent's bottom
    assert (p.alpha_D_ci_low, p.alpha_D_ci_high) == pytest.approx((2 / 12, 2 / 8))
    assert (p.alpha_N_ci_low, p.alpha_N_ci_high) == pytest.approx((2 / 10, 2 / 6))
    assert (p.alpha_N_s2_ci_low, p.alpha_N_s2_ci_high) == pytest.approx((0.4, 4 / 6))
    assert p.alpha_D_ci_low < p.alpha_D < p.alpha_D_ci_high


@pytest.mark.parametrize("d", [2.0, 7.5, 40.0])
@pytest.mark.parametrize("s", [0.5, 1.0, 3.0])
def test_implied_smoothness_inverts_the_data_exponent(d, s):
    assert implied_smoothness(predict_exponents(d, smoothness=s).alpha_D, d) == pytest.approx(s)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.0, 1.5, float("nan")])
def test_implied_smoothness_is_nan_where_no_smoothness_fits(alpha):
    assert math.isnan(implied_smoothness(alpha, 10.0))


def test_bad_inputs_raise_errors_that_name_them():
    with pytest.raises(DataError, match="intrinsic dimension"):
        predict_exponents(0.0)
    with pytest.raises(DataError, match="intrinsic dimension"):
        predict_exponents(float("nan"))
    with pytest.raises(ConfigError, match="theory.smoothness"):
        predict_exponents(8.0, smoothness=-1.0)
    with pytest.raises(DataError, match="reversed"):
        predict_exponents(8.0, id_ci=(10.0, 6.0))
    with pytest.raises(DataError, match="interval"):
        predict_exponents(8.0, id_ci=(-1.0, 6.0))
