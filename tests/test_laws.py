"""Scaling-law fits: known laws come back, thin data give reasons, Chinchilla's peer check."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import check_grad, minimize

from idscaling import laws
from idscaling.errors import DataError
from idscaling.laws import fit_joint_law, fit_power_law

CHINCHILLA = Path(__file__).parent / "data" / "chinchilla_svg_extracted_data.csv"
# Epoch AI's published estimates and 95% intervals (Besiroglu et al. 2024, arXiv 2404.10102)
EPOCH = {"E": (1.817, 1.769, 1.871), "alpha": (0.348, 0.317, 0.373),
         "beta": (0.366, 0.331, 0.415)}


def chinchilla():
    table = pd.read_csv(CHINCHILLA)
    table = table.sort_values("loss").iloc[:-5]          # drop the five highest losses
    N = table["Model Size"].to_numpy()
    return N, table["Training FLOP"].to_numpy() / (6 * N), table["loss"].to_numpy()


def test_offset_law_recovers_a_known_law():
    x = np.geomspace(1e4, 1e7, 8)
    fit = fit_power_law(x, 1.8 + 50.0 * x**-0.35)
    assert fit.ok and fit.reason == "" and fit.form == "offset"
    assert fit.exponent == pytest.approx(0.35, rel=1e-3)
    assert fit.offset == pytest.approx(1.8, rel=1e-3)
    assert fit.coef == pytest.approx(50.0, rel=1e-2)
    assert fit.rmse_log < 1e-5
    assert fit.n_points == 8 and fit.n_sizes == 8
    assert fit.predict(x) == pytest.approx(1.8 + 50.0 * x**-0.35, rel=1e-4)


def test_pure_law_is_a_line_in_log_log_space():
    x = np.geomspace(1e4, 1e8, 6)
    fit = fit_power_law(x, 20.0 * x**-0.12, offset=False)
    assert fit.ok and fit.form == "pure" and fit.offset == 0.0
    assert fit.exponent == pytest.approx(0.12, rel=1e-9)
    assert fit.coef == pytest.approx(20.0, rel=1e-9)
    # on data with an irreducible loss, the pure form's exponent is the flatter one
    y = 1.8 + 50.0 * x**-0.35
    assert fit_power_law(x, y, offset=False).exponent < 0.5 * fit_power_law(x, y).exponent


def test_joint_law_recovers_a_known_law():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e7, 1e10, 5), np.geomspace(1e8, 1e11, 5)))
    truth = dict(E=1.69, A=406.4, alpha=0.34, B=410.7, beta=0.28)
    L = truth["E"] + truth["A"] * N ** -truth["alpha"] + truth["B"] * D ** -truth["beta"]
    fit = fit_joint_law(N, D, L)
    assert fit.ok and fit.n_points == 25
    for name, value in truth.items():
        assert getattr(fit, name) == pytest.approx(value, rel=0.02), name
    assert fit.predict(N, D) == pytest.approx(L, rel=1e-4)


def test_joint_law_flags_an_offset_it_cannot_identify():
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e4, 1e6, 4), np.geomspace(1e4, 1e5, 4)))
    # no floor at all: the fit can only put E at its bound 0
    L = 30.0 * N ** -0.05 * 1.0 + 20.0 * D ** -0.08
    fit = fit_joint_law(N, D, L)
    assert fit.ok and fit.offset_at_bound and "bound 0" in fit.reason
    # with a real floor well inside the data, E is identified and nothing is flagged
    L = 1.7 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28
    fit = fit_joint_law(N, D, L)
    assert fit.ok and not fit.offset_at_bound and fit.E == pytest.approx(1.7, rel=0.05)


def test_gradient_of_the_objective_is_right():
    rng = np.random.default_rng(0)
    N, D = rng.uniform(15, 20, 30), rng.uniform(18, 24, 30)
    problem = laws._Problem(np.stack([N - N.mean(), D - D.mean()]),
                            np.log(rng.uniform(2, 4, 30)), delta=0.05)
    W = rng.integers(0, 3, (1, 30)).astype(float)
    for theta in rng.normal(0, 0.5, (3, 5)):
        err = check_grad(lambda t: problem(t[None], W)[0][0],
                         lambda t: problem(t[None], W)[1][0], theta, epsilon=1e-7)
        assert err < 1e-5 * max(1.0, np.abs(problem(theta[None], W)[1]).max())


def test_batched_lbfgs_reaches_scipy_optimum():
    N, D, L = chinchilla()
    zN, zD = np.log(N) - np.log(N).mean(), np.log(D) - np.log(D).mean()
    problem = laws._Problem(np.stack([zN, zD]), np.log(L), delta=1e-3)
    grid = laws._grid_joint(zN, zD, L)
    ours, _ = laws._fit_data(problem, grid, max_iter=1000)
    f_ours = problem(ours[None], np.ones((1, len(L))))[0][0]
    W = np.ones((1, len(L)))
    best = min((minimize(lambda t: tuple(v[0] for v in problem(t[None], W)), start, jac=True,
                         method="L-BFGS-B", options=dict(ftol=1e-15, gtol=1e-12, maxiter=5000))
                for start in grid[::100]), key=lambda r: r.fun)
    assert f_ours <= best.fun * (1 + 1e-6)
    assert ours == pytest.approx(best.x, abs=1e-3)


def test_fewer_than_three_sizes_give_a_reason_not_a_number():
    fit = fit_power_law([1e3, 1e3, 2e3, 2e3], [3.0, 3.1, 2.8, 2.9], bootstrap=50)
    assert not fit.ok and "at least 3 distinct sizes" in fit.reason
    assert math.isnan(fit.exponent) and math.isnan(fit.offset) and math.isnan(fit.exponent_ci_low)
    joint = fit_joint_law([1e6, 1e6, 2e6, 2e6, 1e6, 2e6], [1e8, 2e8, 1e8, 2e8, 4e8, 4e8],
                          [3.0, 2.9, 2.8, 2.7, 2.85, 2.6])
    assert not joint.ok and "2 model sizes N" in joint.reason and math.isnan(joint.alpha)


def test_losses_that_do_not_fall_give_a_reason():
    x = np.geomspace(1e3, 1e5, 5)
    rising = fit_power_law(x, [2.5, 2.6, 2.7, 2.8, 2.9])
    assert not rising.ok and "does not fall" in rising.reason and math.isnan(rising.exponent)
    # first above last, but the log-log slope is upward: the pure law's exponent is < 0
    bumpy = fit_power_law([1e3, 2e3, 4e3, 8e3], [3.0, 2.0, 2.9, 2.95], offset=False)
    assert not bumpy.ok and "not positive" in bumpy.reason


def test_bootstrap_intervals_are_seeded_and_cover_the_truth():
    rng = np.random.default_rng(3)
    x = np.repeat(np.geomspace(1e4, 1e7, 6), 3)           # six sizes, three seeds each
    y = (1.8 + 50.0 * x**-0.35) * np.exp(rng.normal(0, 0.005, x.size))
    a = fit_power_law(x, y, bootstrap=200, seed=7)
    b = fit_power_law(x, y, bootstrap=200, seed=7)
    c = fit_power_law(x, y, bootstrap=200, seed=8)
    assert a == b
    # the bootstrap (coefficient, offset) follows the seed; the profile interval of the
    # exponent does not depend on one
    assert (a.offset_ci_low, a.offset_ci_high) != (c.offset_ci_low, c.offset_ci_high)
    assert (a.exponent_ci_low, a.exponent_ci_high) == (c.exponent_ci_low, c.exponent_ci_high)
    assert a.exponent_ci_low < 0.35 < a.exponent_ci_high
    assert a.exponent_ci_low <= a.exponent <= a.exponent_ci_high
    assert a.offset_ci_low < a.offset_ci_high and a.n_boot == 200
    pure = fit_power_law(x, y, offset=False, bootstrap=200, seed=7)
    assert pure.exponent_ci_low < pure.exponent < pure.exponent_ci_high


def test_three_points_have_no_bootstrap_interval_and_say_so():
    x = np.array([1e4, 1e5, 1e6])
    fit = fit_power_law(x, 1.8 + 50.0 * x**-0.35, bootstrap=100)
    assert fit.ok and fit.exponent == pytest.approx(0.35, rel=1e-3)
    assert math.isnan(fit.exponent_ci_low) and fit.n_boot == 0
    assert "no interval" in fit.reason


def test_bad_values_raise_errors_that_name_them():
    with pytest.raises(DataError, match="loss"):
        fit_power_law([1e3, 2e3, 3e3], [3.0, -1.0, 2.0])
    with pytest.raises(DataError, match="D"):
        fit_joint_law([1e6] * 3, [1e8, np.nan, 1e9], [3.0, 2.9, 2.8])
    with pytest.raises(DataError, match="values"):
        fit_power_law([1e3, 2e3], [3.0, 2.9, 2.8])


def test_chinchilla_peer_check():
    """Epoch AI's replication: our fit lands in their intervals and ours overlap theirs."""
    N, D, L = chinchilla()
    fit = fit_joint_law(N, D, L, bootstrap=200, seed=0)
    assert fit.ok and fit.n_points == 240
    for name, (point, lo, hi) in EPOCH.items():
        value = getattr(fit, name)
        assert lo <= value <= hi, (name, value)
        assert value == pytest.approx(point, abs=0.005), name
        ours = (getattr(fit, f"{name}_ci_low"), getattr(fit, f"{name}_ci_high"))
        assert ours[0] <= hi and lo <= ours[1], (name, ours)
        assert ours[0] < value < ours[1]


@pytest.mark.parametrize("sizes", [4, 8])
def test_exponent_interval_covers_the_truth_at_its_level(sizes):
    """200 data sets from a known offset law on the default grid's shape (4 data sizes,
    25k to 200k, one run each) and on a wider one, with 0.5% noise: the 95% interval of
    the exponent must cover the truth 90% to 99% of the time."""
    rng = np.random.default_rng(11)
    x = np.geomspace(25e3, 25e3 * 2 ** (sizes - 1), sizes)
    truth = 0.35
    hits = 0
    for _ in range(200):
        y = (1.8 + 60.0 * x ** -truth) * np.exp(0.005 * rng.standard_normal(sizes))
        fit = fit_power_law(x, y)
        hits += fit.exponent_ci_low <= truth <= fit.exponent_ci_high
    print(f"{sizes} sizes: coverage {hits / 200:.3f}")
    assert 0.90 <= hits / 200 <= 0.99


def test_pure_law_interval_is_the_t_interval_of_the_slope():
    from scipy.stats import linregress, t as t_dist

    rng = np.random.default_rng(2)
    x = np.geomspace(1e3, 1e6, 7)
    y = 40.0 * x ** -0.3 * np.exp(0.02 * rng.standard_normal(7))
    fit = fit_power_law(x, y, offset=False)
    reg = linregress(np.log(x), np.log(y))
    half = t_dist.ppf(0.975, 5) * reg.stderr
    assert (fit.exponent_ci_low, fit.exponent_ci_high) == pytest.approx((-reg.slope - half, -reg.slope + half))


def test_the_grid_of_starts_finds_a_minimum_a_single_start_misses():
    # four noisy sizes over one decade: the Huber objective has more than one minimum,
    # and the grid's first start alone ends in a worse one
    rng = np.random.default_rng(5)
    x = np.geomspace(1e4, 1e5, 4)
    y = (4.0 + 30 * x ** -0.3) * np.exp(rng.normal(0, 0.01, 4))
    z, center = laws._center(np.log(x))
    problem = laws._Problem(Z=z[None, :], logy=np.log(y), delta=laws.HUBER_DELTA)
    grid = laws._grid_1d(z, y)
    objective = lambda theta: problem(theta[None], np.ones((1, len(x))))[0][0]  # noqa: E731
    first, _ = laws._fit_data(problem, grid[:1], 1000)
    best, _ = laws._fit_data(problem, grid, 1000)
    assert objective(best) < objective(first) / 1.5
    # and fit_power_law reports the grid's minimum, not the first start's
    fit = fit_power_law(x, y)
    exponent, coef, E = laws._params_1d(best[None], center, True)[0]
    assert (fit.exponent, fit.offset) == pytest.approx((exponent, E), rel=1e-6)
