"""The lacunary field: its measured Hölder exponent is the s it was made with."""

import numpy as np
import pytest

from idscaling.errors import ConfigError
from idscaling.synthetic import holder_exponent, make_field, uniform_sphere


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("d", [2, 4])
def test_measured_holder_exponent_is_s(d, s):
    field = make_field(d, s, seed=3)
    # the scales between the finest and the coarsest level, a few octaves inside both
    steps = np.geomspace(field.finest_scale * 8, field.coarsest_scale / 8, 8)
    slope, _ = holder_exponent(field, d, steps, n_points=1500, seed=1)
    assert abs(slope - s) < 0.15, (d, s, slope)


def test_below_the_finest_level_the_field_is_smooth():
    # the measurement can tell: past the finest dyadic level the differences fall as h^3
    field = make_field(2, 0.5, seed=0, levels=4)
    steps = np.geomspace(field.finest_scale / 400, field.finest_scale / 40, 5)
    slope, _ = holder_exponent(field, 2, steps, n_points=500)
    assert slope > 2.5


def test_field_is_deterministic_and_unit_variance():
    z = uniform_sphere(np.random.default_rng(0), 4000, 3)
    a, b = make_field(3, 1.0, seed=5)(z), make_field(3, 1.0, seed=5)(z)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, make_field(3, 1.0, seed=6)(z))
    assert a.shape == (4000, 16)
    assert 0.8 < a.std() < 1.2


@pytest.mark.parametrize("kwargs, word", [({"d": 0, "s": 1.0}, "d must"), ({"d": 2, "s": 3.5}, "smoothness"),
                                          ({"d": 2, "s": 1.0, "vocab": 0}, "vocab"),
                                          ({"d": 2, "s": 1.0, "max_modes": 0}, "max_modes"),
                                          ({"d": 2, "s": 1.0, "level_ratio": 1.0}, "level_ratio")])
def test_bad_field_options_are_named(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        make_field(seed=0, **kwargs)


def test_field_rejects_points_of_the_wrong_dimension():
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        make_field(2, 1.0, seed=0)(np.zeros((5, 4)))


@pytest.mark.parametrize("s", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("design", [{"max_modes": 256}, {"level_ratio": 2 ** 0.5, "levels": 20}])
def test_denser_fields_have_the_same_holder_exponent(design, s):
    # levels of 2^(jd) waves, or levels sqrt(2) apart: s must not move
    field = make_field(2, s, seed=3, **design)
    steps = np.geomspace(field.finest_scale * 8, field.coarsest_scale / 8, 8)
    slope, _ = holder_exponent(field, 2, steps, n_points=1500, seed=1)
    assert abs(slope - s) < 0.15, (design, s, slope)


def test_max_modes_grows_the_waves_per_level_as_cells_up_to_the_cap():
    field = make_field(2, 1.0, seed=0, levels=6, modes=3, max_modes=100)
    counts = np.bincount(field.level)
    np.testing.assert_array_equal(counts, [3, 12, 48, 100, 100, 100])  # 3 * 4^j, capped
    assert np.bincount(make_field(2, 1.0, seed=0, levels=6, modes=3).level).tolist() == [3] * 6


def test_coarse_field_keeps_exactly_the_coarsest_levels():
    field = make_field(3, 1.0, seed=2, levels=5)
    z = uniform_sphere(np.random.default_rng(1), 300, 3)
    np.testing.assert_allclose(field.coarse(5)(z), field(z))
    np.testing.assert_array_equal(field.coarse(0)(z), 0.0)
    # what coarse(4) lacks is the finest level alone: 2^(-2js) of the variance at j = 4
    finest = field(z) - field.coarse(4)(z)
    share = 2.0 ** -8 / np.sum(2.0 ** (-2 * np.arange(5)))
    assert 0.5 < finest.var() / field(z).var() / share < 2.0
