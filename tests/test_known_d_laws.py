"""Exponents of the exact excess: recovered, at their stated level, and verdicts that flip."""

import re

import numpy as np
import pandas as pd
import pytest

from idscaling.errors import DataError
from idscaling.known_d_laws import WIDE, bootstrap_exponent, fit_arms, levels_spanned, regime_flags

SIZES = np.array([512, 1024, 2048, 4096, 8192])


def simulate(alpha, *, seeds=2, points=512, seed_sd=0.04, point_sd=1.0, rng=None):
    """Per-point excesses of shape (sizes, seeds, points) whose mean falls as n^-alpha.

    Each run's mean carries a multiplicative training noise (seed_sd, log scale); each
    held-out point a spread (gamma-distributed, shared by every run, as the same points
    score every run)."""
    rng = rng or np.random.default_rng(0)
    base = 0.05 * (SIZES / SIZES[0]) ** -alpha
    point_scale = rng.gamma(1 / point_sd ** 2, point_sd ** 2, size=points)
    run_noise = np.exp(seed_sd * rng.standard_normal((len(SIZES), seeds)))
    jitter = np.exp(0.3 * rng.standard_normal((len(SIZES), seeds, points)))
    return base[:, None, None] * run_noise[:, :, None] * point_scale[None, None, :] * jitter / np.exp(0.045)


def test_bootstrap_recovers_the_exponent():
    a, lo, hi = bootstrap_exponent(SIZES, simulate(0.4), reps=400)
    assert lo < 0.4 < hi
    assert abs(a - 0.4) < 0.03


@pytest.mark.parametrize("seeds", [2, 3])
def test_interval_covers_the_truth_at_its_stated_level(seeds):
    # 400 data sets from a known law, noise as measured in a sweep; the band is tighter
    # than 90-99% so that an interval at 90% (no small-sample correction) fails
    rng = np.random.default_rng(7)
    hits = 0
    trials = 400
    for _ in range(trials):
        _, lo, hi = bootstrap_exponent(SIZES, simulate(0.5, seeds=seeds, rng=rng), reps=300,
                                       seed=int(rng.integers(1e9)))
        hits += lo <= 0.5 <= hi
    coverage = hits / trials
    print(f"coverage of the 95% interval: {coverage:.3f} ({trials} data sets)")
    assert 0.92 <= coverage <= 0.99, coverage


def test_too_few_sizes_is_refused():
    with pytest.raises(DataError, match="at least 3 sizes"):
        bootstrap_exponent(SIZES[:2], simulate(0.5)[:2])


def _runs(alpha_net, alpha_ref, pred_d=2, s=1.0, factor=1.0, alpha_mlp=None, seeds=2, wide=1.0):
    """Runs of each learner on a known law; each learner's wide twin at the largest size
    has `wide` times its excess (None: no twin ran)."""
    rows, excess = [], {}
    learners = [("base", alpha_net, factor), ("reference", alpha_ref, 1.0)]
    learners += [("mlp", alpha_mlp, 1.0)] if alpha_mlp is not None else []
    for stream, (est, alpha, scale) in enumerate(learners):
        data = scale * simulate(alpha, seeds=seeds, rng=np.random.default_rng(stream))
        for i, n in enumerate(SIZES):
            for seed in range(data.shape[1]):
                excess[len(rows)] = data[i, seed]
                rows.append({"arm": "d2-s1", "d": pred_d, "s": s, "docs": n, "seed": seed, "estimator": est,
                             "excess": data[i, seed].mean(), "converged": True})
                if est in WIDE and wide is not None and n == SIZES[-1]:
                    rows.append({**rows[-1], "estimator": WIDE[est], "excess": wide * rows[-1]["excess"]})
    return pd.DataFrame(rows), excess


def _verdicts(alpha_net, factor=1.0, alpha_mlp=None, wide=1.0):
    runs, excess = _runs(alpha_net, 0.5, factor=factor, alpha_mlp=alpha_mlp, wide=wide)
    flags = regime_flags(runs, reference_factor=1.5, width_tolerance=0.1)
    table = fit_arms(runs, excess, flags, margin=0.05, reps=400, level=0.95, level_ratio=2.0)
    return table.set_index("estimator")


def test_verdict_flips_when_the_data_follow_another_exponent():
    assert _verdicts(0.5).loc["network", "verdict"] == "agrees"      # 2s/(2s+d) = 0.5
    assert _verdicts(0.7).loc["network", "verdict"] == "disagrees"
    assert _verdicts(0.3).loc["network", "verdict"] == "disagrees"


@pytest.mark.parametrize("wide, why", [(1.5, "50.0% worse at n = 8192"), (None, "no wide twin ran")])
def test_an_unmeasured_approximation_error_decides_only_a_steeper_slope(wide, why):
    # a wide twin that trains worse (or none) bounds no approximation error A; a constant
    # A only flattens the curve, so the fit is a lower bound: the true 0.5 cannot agree
    # and a shallower 0.3 cannot disagree, but a steeper 0.7 still disagrees
    table = _verdicts(0.5, wide=wide)
    net = table.loc["network"]
    assert net.verdict == "inconclusive" and net.lower_bound
    assert why in net.reason
    assert abs(net.exponent - 0.5) < 0.05  # the sizes are still fitted, and drawn filled
    assert _verdicts(0.3, wide=wide).loc["network", "verdict"] == "inconclusive"
    assert _verdicts(0.7, wide=wide).loc["network", "verdict"] == "disagrees"


@pytest.mark.parametrize("stuck", ["base", "wide"])
def test_one_stuck_run_does_not_decide_the_width_check(stuck):
    # three seeds; the width changes nothing, but at the largest size one run (the
    # learner's or its twin's) sticks at three times its excess. A mean over seeds reads a
    # stuck learner as a 40% approximation error, and a stuck twin as one that trains worse
    runs, _ = _runs(0.5, 0.5, seeds=3)
    runs.loc[(runs.docs == SIZES[-1]) & (runs.seed == 2) & (runs.estimator == stuck), "excess"] *= 3
    flags = regime_flags(runs, reference_factor=5.0, width_tolerance=0.1)
    net = flags[flags.learner == "network"]
    assert (net.approximation == "measured").all(), net.approximation.iloc[0]
    assert net.in_regime.all(), net.why_not.tolist()
    assert net.width_change.abs().max() < 0.1


def test_a_wide_twin_worse_within_the_tolerance_still_measures_it():
    net = _verdicts(0.5, wide=1.05).loc["network"]
    assert net.verdict == "agrees" and not net.lower_bound
    assert _verdicts(0.3, wide=1.05).loc["network", "verdict"] == "disagrees"


@pytest.mark.parametrize("floor", [0.002, 0.005, 0.01])
def test_a_constant_approximation_error_only_flattens_the_fitted_slope(floor):
    # the premise of the lower bound, on the fit itself: excess = B n^-α + A with A > 0
    # fits a smaller exponent than α, and a larger A a smaller one still
    fitted = [bootstrap_exponent(SIZES, simulate(0.5, rng=np.random.default_rng(3)) + a, reps=100)[0]
              for a in (0.0, floor, 2 * floor)]
    assert fitted[0] > fitted[1] > fitted[2]
    assert fitted[1] < 0.5


def test_sizes_far_above_the_reference_are_flagged_not_fitted():
    table = _verdicts(0.5, factor=3.0)
    assert table.loc["network", "verdict"] == "underdetermined"
    ratio = re.search(r"n=512: (\d+\.\d+)x the reference", table.loc["network", "reason"])
    assert ratio and 2.0 < float(ratio.group(1)) < 4.5
    assert np.isnan(table.loc["network", "exponent"])


def test_the_mlp_control_gets_its_own_exponent_and_verdict():
    table = _verdicts(0.7, alpha_mlp=0.5)
    assert table.loc["network", "verdict"] == "disagrees"
    assert table.loc["mlp", "verdict"] == "agrees"
    assert abs(table.loc["mlp", "exponent"] - 0.5) < 0.03
    # the control's sizes are its own: a network far above the reference leaves it alone
    table = _verdicts(0.5, factor=3.0, alpha_mlp=0.5)
    assert table.loc["network", "verdict"] == "underdetermined"
    assert table.loc["mlp", "verdict"] == "agrees"
    assert "mlp" not in _verdicts(0.5).index  # no control run, no row


@pytest.mark.parametrize("estimator, wide_estimator, learner",
                         [("base", "wide", "network"), ("mlp", "mlp_wide", "mlp")])
def test_approximation_error_from_the_largest_size_bounds_the_others(estimator, wide_estimator, learner):
    # the learner's excess is its wide twin's plus a fixed approximation error A; the
    # wide control runs at the largest size only. A is 17% of the excess at n = 8192, 12%
    # at 4096 and under 10% below: only the three smallest sizes are in the regime.
    wide = 0.05 * (SIZES / SIZES[0]) ** -0.5
    base = wide + 0.0025
    rows = [{"arm": "a", "d": 2, "s": 1.0, "docs": n, "seed": 0, "estimator": est, "excess": x,
             "converged": True}
            for n, b, w in zip(SIZES, base, wide)
            for est, x in (((estimator, b), ("reference", b))
                           + (((wide_estimator, w),) if n == SIZES[-1] else ()))]
    flags = regime_flags(pd.DataFrame(rows), reference_factor=1.5, width_tolerance=0.1)
    flags = flags[flags.learner == learner].set_index("docs")
    assert flags.in_regime.tolist() == [True, True, True, False, False]
    assert flags.width_change.to_numpy() == pytest.approx(0.0025 / base)
    assert "measured at n = 8192" in flags.loc[4096, "why_not"]
    assert "measured at" not in flags.loc[8192, "why_not"]


def test_the_reason_names_where_one_seed_strays():
    # three seeds on a known law; at n = 4096 one seed's excess is three times the others'
    runs, excess = _runs(0.5, 0.5, seeds=3)
    stray = runs.index[(runs.docs == 4096) & (runs.seed == 2) & (runs.estimator == "base")][0]
    runs.loc[stray, "excess"] *= 3
    excess[stray] = excess[stray] * 3
    flags = regime_flags(runs, reference_factor=5.0, width_tolerance=0.1)
    table = fit_arms(runs, excess, flags, margin=0.05, reps=200, level=0.95, level_ratio=2.0).set_index("estimator")
    reason = table.loc["network", "reason"]
    spread = re.search(r"seeds differ most at n = (\d+): .* \((\d+\.\d)x\)", reason)
    assert spread, reason
    assert int(spread.group(1)) == 4096
    assert 2.5 < float(spread.group(2)) < 3.5


@pytest.mark.parametrize("d, s, ratio, spanned", [(2, 1.0, 2.0, 1.0), (4, 2.0, 2.0, 0.5), (8, 2.0, 2.0, 1 / 3),
                                                   (4, 2.0, 2 ** 0.25, 2.0), (1, 1.0, 2.0, 4 / 3)])
def test_levels_spanned_counts_the_rungs_the_envelope_descends(d, s, ratio, spanned):
    # over 512..8192 the envelope n^-(2s/(2s+d)) falls 16^(2s/(2s+d)) times; one level is
    # ratio^(2s) lower than the last, so it descends log2(16) / ((2s+d) log2(ratio)) levels
    assert levels_spanned(SIZES, d, s, ratio) == pytest.approx(spanned)
    # the same from the ladder itself: a field whose rungs stand ratio^(2s) apart
    rungs = ratio ** (-2 * s * np.arange(12))
    envelope = (SIZES / SIZES[0]) ** -(2 * s / (2 * s + d))
    climbed = np.interp(-np.log(envelope[-1]), -np.log(rungs), np.arange(12))
    assert climbed == pytest.approx(spanned)


def test_a_learner_fitted_over_less_than_one_level_is_told_so():
    # d = 4, s = 2: 512..8192 spans half a level of an octave field, two of a quarter-octave one
    runs, excess = _runs(0.5, 0.5, pred_d=4, s=2.0)
    flags = regime_flags(runs, reference_factor=1.5, width_tolerance=0.1)
    octave = fit_arms(runs, excess, flags, margin=0.05, reps=100, level=0.95, level_ratio=2.0).set_index("estimator")
    assert octave.loc["network", "levels_spanned"] == pytest.approx(0.5)
    assert "span 0.50 of the field's levels" in octave.loc["network", "reason"]
    assert "levels" not in octave.loc["reference", "reason"]  # a local average has none to learn
    quarter = fit_arms(runs, excess, flags, margin=0.05, reps=100, level=0.95,
                       level_ratio=2 ** 0.25).set_index("estimator")
    assert quarter.loc["network", "levels_spanned"] == pytest.approx(2.0)
    assert "field's levels" not in quarter.loc["network", "reason"]


def test_the_id_table_shows_each_arm_at_its_largest_n_with_its_seeds_spread():
    from idscaling.known_d_laws import id_markdown

    rows = []
    for docs, values in ((512, [9.0, 9.0, 9.0]), (8192, [1.46, 1.62, 1.84])):
        rows += [{"arm": "d2-s2", "d": 2, "s": 2.0, "docs": docs, "seed": seed, "estimator": "base",
                  "state": "block2", "k": 20, "id": v, "calibrated_id": v} for seed, v in enumerate(values)]
    # the truth is read once per reference run: the same at every seed, at its smallest n
    rows += [{"arm": "d2-s2", "d": 2, "s": 2.0, "docs": docs, "seed": seed, "estimator": "reference",
              "state": "true_logprobs", "k": 20, "id": 2.03, "calibrated_id": 2.02}
             for docs in (512, 1024) for seed in range(3)]
    rows.append({**rows[0], "k": 40, "calibrated_id": 5.0})  # another k is not this table's
    table = id_markdown(pd.DataFrame(rows), k=20)
    line = next(x for x in table.splitlines() if x.startswith("| d2-s2"))
    assert "| 1.64 [1.46, 1.84] (raw 1.64) |" in line
    assert line.endswith("| 2.02 (raw 2.03) |")


def test_the_id_table_says_how_many_seeds_read_outside_the_calibration():
    from idscaling.known_d_laws import id_markdown

    rows = [{"arm": "d1-s1", "d": 1, "s": 1.0, "docs": 8192, "seed": seed, "estimator": "base",
             "state": "block1", "k": 20, "id": v, "calibrated_id": c}
            for seed, (v, c) in enumerate([(0.5, np.nan), (0.6, np.nan), (1.2, 1.3)])]
    line = id_markdown(pd.DataFrame(rows), k=20).splitlines()[-1]
    assert line == "| d1-s1 | 1 | 1.30 (raw 0.77; 2 of 3 seeds outside the calibration) |"
