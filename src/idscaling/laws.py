"""Scaling-law fits with bootstrap intervals.

Three forms, as in the literature:

- offset law per axis, L(x) = E + A·x^-α  (data law: x = D; model law: x = N)
- joint law, L(N, D) = E + A/N^α + B/D^β  (Hoffmann et al. 2022, approach 3)
- Kaplan's pure power law, L(x) = A·x^-α, a straight line in log-log space

The offset and joint laws follow Hoffmann et al. and Epoch AI's replication
(Besiroglu et al. 2024): minimise the Huber loss (δ = 1e-3) of log L − log L̂, where
log L̂ = LSE(a − α·log N, b − β·log D, e) and A = exp(a), B = exp(b), E = exp(e), by
L-BFGS from a grid of starting points, keeping the best. The pure law is ordinary least
squares on (log x, log L), as Kaplan et al. fitted it. The exponent of a one-axis law
gets a profile-likelihood interval (an F test; exact for the pure law): a bootstrap over
four or five points covered the truth far less often than it claimed. Other intervals,
and the joint law's, come from a bootstrap over the points (resampling with
replacement, percentile intervals).

Speed: every start and every bootstrap resample is an independent small problem, so
they are solved together by one L-BFGS written over a batch of problems (numpy, analytic
gradients). A resample is a vector of multiplicities over the original points, so all
problems share the same data arrays.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass

import numpy as np

from idscaling.errors import DataError

log = logging.getLogger(__name__)

HUBER_DELTA = 1e-3
MIN_SIZES = 3            # fewer distinct sizes than this: no fit
MAX_EXPONENT = 10.0      # beyond this the optimum ran off to a step function: no fit
NO_OPTIMUM = "the optimiser found no finite loss from any starting point"
_TINY = 1e-300
# A resample needs its optimum only to well below the spread between resamples: a looser
# stopping rule than the full fit's halves the cost and moves the intervals by ~1e-6.
BOOT_FTOL = 1e-7
BOOT_MAX_ITER = 300      # the few resamples still creeping along a flat valley stop here
FIT_FTOL = 1e-10
SCREEN_ITER = 30         # iterations that rank the starts before the best go on


# ---------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class PowerLaw:
    """L(x) = offset + coef·x^-exponent; `offset` is 0 for the pure (Kaplan) form.

    Numbers are NaN when `ok` is False; `reason` then says why. `reason` may also carry a
    note on an ok fit (why an interval is missing, say). Intervals are NaN without a
    bootstrap. `n_boot` counts the resamples that entered the intervals.
    """

    exponent: float
    coef: float
    offset: float
    exponent_ci_low: float = math.nan
    exponent_ci_high: float = math.nan
    coef_ci_low: float = math.nan
    coef_ci_high: float = math.nan
    offset_ci_low: float = math.nan
    offset_ci_high: float = math.nan
    n_points: int = 0
    n_sizes: int = 0
    rmse_log: float = math.nan
    n_boot: int = 0
    form: str = "offset"
    ok: bool = False
    reason: str = ""

    def predict(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        return self.offset + self.coef * x ** (-self.exponent)


@dataclass(frozen=True)
class JointLaw:
    """L(N, D) = E + A/N^alpha + B/D^beta. NaN numbers and a reason when `ok` is False."""

    E: float
    A: float
    alpha: float
    B: float
    beta: float
    E_ci_low: float = math.nan
    E_ci_high: float = math.nan
    A_ci_low: float = math.nan
    A_ci_high: float = math.nan
    alpha_ci_low: float = math.nan
    alpha_ci_high: float = math.nan
    B_ci_low: float = math.nan
    B_ci_high: float = math.nan
    beta_ci_low: float = math.nan
    beta_ci_high: float = math.nan
    n_points: int = 0
    rmse_log: float = math.nan
    n_boot: int = 0
    ok: bool = False
    reason: str = ""
    offset_at_bound: bool = False  # E fitted at 0: α, β are lower bounds on the excess's

    def predict(self, N, D) -> np.ndarray:
        N = np.asarray(N, dtype=float)
        D = np.asarray(D, dtype=float)
        return self.E + self.A * N ** (-self.alpha) + self.B * D ** (-self.beta)


# ---------------------------------------------------------------------------------------
# public fits


def fit_power_law(x, y, offset: bool = True, bootstrap: int = 0, seed=0, *,
                  delta: float = HUBER_DELTA, level: float = 0.95, boot_starts: int = 3,
                  max_iter: int = 1000, size_name: str = "x") -> PowerLaw:
    """Fit L(x) = E + A·x^-α (offset=True) or Kaplan's L(x) = A·x^-α (offset=False).

    x: sizes (tokens or parameters), y: losses (nats), one entry per run; repeated sizes
    (seeds) are allowed. The offset form minimises the Huber loss (`delta`) of the log
    residuals by L-BFGS from a grid of starts; the pure form is least squares in log-log
    space. The exponent's interval is the profile-likelihood one (`exponent_interval`),
    which keeps its level with few sizes; with `bootstrap` > 0 the coefficient and offset
    get percentile intervals from resampling the points (seeded by `seed`, an int or a
    sequence of ints; up to `boot_starts` starts per resample). Fewer than three distinct sizes, or losses that do not fall,
    give ok=False with the reason, never an exception or a number; `size_name` names x
    in those reasons.
    """
    x, y = _check_xy(x, y, size_name), _check_xy(y, x, "loss")
    form = "offset" if offset else "pure"
    n_sizes = len(np.unique(x))
    failed = _precheck(x, y, n_sizes, size_name)
    if failed:
        return _failed_power(failed, form, len(x), n_sizes)

    z, center = _center(np.log(x))
    logy = np.log(y)
    if offset:
        problem = _Problem(Z=z[None, :], logy=logy, delta=delta)
        best, finalists = _fit_data(problem, _grid_1d(z, y), max_iter)
        if best is None:
            return _failed_power(NO_OPTIMUM, form, len(x), n_sizes)
        refit = lambda W: _fit_resamples(problem, finalists[:boot_starts], W,  # noqa: E731
                                         min(max_iter, BOOT_MAX_ITER))
    else:
        best = _ols(z, logy, np.ones((1, len(x))))[0]
        refit = lambda W: _ols(z, logy, W)  # noqa: E731
    exponent, coef, E = map(float, _params_1d(best[None], center, offset)[0])
    bad = _bad_exponents([exponent], ["α"])
    if bad:
        return _failed_power(bad, form, len(x), n_sizes)
    rmse = _rmse(logy, np.log(E + coef * x ** (-exponent)))

    names = ["exponent", "coef", "offset"]
    ci, n_boot, note = _intervals(bootstrap, seed, [x], refit, level, names,
                                  lambda t: _params_1d(t, center, offset))
    lo, hi, why = exponent_interval(x, y, offset=offset, level=level)
    lo, hi = (min(lo, exponent), max(hi, exponent)) if math.isfinite(lo) else (lo, hi)
    ci.update(exponent_ci_low=lo, exponent_ci_high=hi)
    note = "; ".join(n for n in (note, why) if n)
    return PowerLaw(exponent=exponent, coef=coef, offset=E, **ci, n_points=len(x),
                    n_sizes=n_sizes, rmse_log=rmse, n_boot=n_boot, form=form, ok=True,
                    reason=note)


OFFSET_AT_BOUND = 1e-3  # an offset below this fraction of the smallest loss is at its bound 0
PROFILE_GRID = np.linspace(1e-3, 4.0, 4000)  # exponents searched by the profile interval


def exponent_interval(x, y, *, offset: bool = True, level: float = 0.95) -> tuple[float, float, str]:
    """(low, high, note): the `level` interval of the exponent from the profile likelihood.

    The log residuals are taken as Gaussian with an unknown variance, so the exponents
    whose best residual sum of squares stays within RSS_min·(1 + F(level; 1, n−p)/(n−p))
    form the interval (the F test of nested models; exact for the pure law, a line in
    log-log space, where it is the t interval of the slope). Unlike a bootstrap of a few
    points, it keeps its level with four sizes: few residual degrees of freedom make it
    wide, as they should. With no more points than parameters there is none.
    """
    from scipy.stats import f as f_dist

    x, y = np.asarray(x, float), np.asarray(y, float)
    n, p = len(x), 3 if offset else 2
    if n <= p:
        return math.nan, math.nan, f"no exponent interval: {n} points for {p} parameters"
    factor = 1.0 + f_dist.ppf(level, 1, n - p) / (n - p)
    if not offset:
        z, logy = np.log(x), np.log(y)
        zc = z - z.mean()
        slope = (zc @ (logy - logy.mean())) / (zc @ zc)
        rss = np.sum((logy - logy.mean() - slope * zc) ** 2)
        half = math.sqrt((factor - 1.0) * rss / (zc @ zc))  # = t(n-2) · se(slope)
        return -slope - half, -slope + half, ""
    # For a fixed exponent the law is linear in (E, B): weighted least squares with
    # weights 1/y makes the residuals relative, i.e. log residuals to first order.
    X = x[None, :] ** -PROFILE_GRID[:, None]
    w = 1.0 / y
    s00, s01, s11 = np.sum(w * w), (X * w * w).sum(1), (X * X * w * w).sum(1)
    t0, t1 = np.sum(y * w * w), (X * y * w * w).sum(1)
    det = s00 * s11 - s01 ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        E, B = (s11 * t0 - s01 * t1) / det, (s00 * t1 - s01 * t0) / det
        negative = ~(E >= 0)  # a negative floor is not a law: the best with E = 0 instead
        E, B = np.where(negative, 0.0, E), np.where(negative, t1 / s11, B)
        rss = (((y - E[:, None] - B[:, None] * X) * w) ** 2).sum(1)
    rss = np.where((B > 0) & np.isfinite(rss), rss, np.inf)
    inside = np.flatnonzero(rss <= rss.min() * factor)
    if not len(inside):
        return math.nan, math.nan, "no exponent interval: the profile found no finite fit"
    lo, hi = PROFILE_GRID[inside[0]], PROFILE_GRID[inside[-1]]
    note = ""
    if inside[0] == 0 or inside[-1] == len(PROFILE_GRID) - 1:
        note = (f"the exponent interval reaches the edge of the searched range "
                f"[{PROFILE_GRID[0]:g}, {PROFILE_GRID[-1]:g}]: the data barely constrain it")
    return float(lo), float(hi), note


def fit_joint_law(N, D, L, bootstrap: int = 0, seed=0, *, delta: float = HUBER_DELTA,
                  level: float = 0.95, boot_starts: int = 3, max_iter: int = 1000) -> JointLaw:
    """Fit L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. approach 3).

    N: non-embedding parameters, D: training tokens, L: losses (nats), one entry per run.
    Huber loss (`delta`) on log L, log-sum-exp parameterisation, L-BFGS from a grid of
    starts; `bootstrap` resamples of the points (seeded) give `level` percentile
    intervals. Fewer than three distinct N or D, no more points than the five
    parameters, or an exponent that is not positive give ok=False and the reason.
    """
    N, L = _check_xy(N, L, "N"), _check_xy(L, N, "loss")
    D = _check_xy(D, L, "D")
    n = len(L)
    nN, nD = len(np.unique(N)), len(np.unique(D))
    if nN < MIN_SIZES or nD < MIN_SIZES:
        return _failed_joint(f"need at least {MIN_SIZES} distinct sizes of each: got "
                             f"{nN} model sizes N and {nD} data sizes D", n)
    if n <= 5:
        return _failed_joint(f"need more points than the 5 parameters: got {n}", n)

    zN, cN = _center(np.log(N))
    zD, cD = _center(np.log(D))
    logy = np.log(L)
    problem = _Problem(Z=np.stack([zN, zD]), logy=logy, delta=delta)
    best, finalists = _fit_data(problem, _grid_joint(zN, zD, L), max_iter)
    if best is None:
        return _failed_joint(NO_OPTIMUM, n)
    E, A, alpha, B, beta = map(float, _params_joint(best[None], cN, cD)[0])
    bad = _bad_exponents([alpha, beta], ["α (model)", "β (data)"])
    if bad:
        return _failed_joint(bad, n)
    rmse = _rmse(logy, np.log(E + A * N ** (-alpha) + B * D ** (-beta)))

    ci, n_boot, note = _intervals(
        bootstrap, seed, [N, D],
        lambda W: _fit_resamples(problem, finalists[:boot_starts], W, min(max_iter, BOOT_MAX_ITER)),
        level, ["E", "A", "alpha", "B", "beta"], lambda t: _params_joint(t, cN, cD))
    # The bootstrap refits inherit the bound, so their interval cannot show what an
    # unidentified E hides: a positive E would steepen both exponents.
    at_bound = E < OFFSET_AT_BOUND * float(L.min())
    if at_bound:
        note = "; ".join(n for n in (note, (
            f"the offset E sits at its bound 0 (E = {E:.3g}): the data do not identify the "
            "irreducible loss, so α and β are exponents of the whole loss, lower bounds on "
            "the excess loss's")) if n)
    return JointLaw(E=E, A=A, alpha=alpha, B=B, beta=beta, **ci, n_points=n, rmse_log=rmse,
                    n_boot=n_boot, ok=True, reason=note, offset_at_bound=at_bound)


def _intervals(bootstrap, seed, sizes, refit, level, names, params):
    """Bootstrap percentile intervals: ({name_ci_low/high}, resamples used, note)."""
    ci = {f"{name}_ci_{side}": math.nan for name in names for side in ("low", "high")}
    if bootstrap <= 0:
        return ci, 0, ""
    W, note = _resample(len(sizes[0]), bootstrap, seed, sizes)
    if len(W) == 0:
        return ci, 0, note
    draws = params(refit(W))
    keep = np.isfinite(draws).all(1)
    for j, name in enumerate(names):
        ci[f"{name}_ci_low"], ci[f"{name}_ci_high"] = _percentile(draws[keep, j], level)
    return ci, int(keep.sum()), note


# ---------------------------------------------------------------------------------------
# checks and small helpers


def _check_xy(v, other, name: str) -> np.ndarray:
    """`v` as a flat float array of the same length as `other`, all finite and positive."""
    v = np.asarray(v, dtype=float).ravel()
    if v.shape != np.asarray(other).ravel().shape:
        raise DataError(f"{name}: {v.size} values, but the other inputs have "
                        f"{np.asarray(other).size}")
    if v.size == 0:
        raise DataError(f"{name}: no values to fit")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise DataError(f"{name}: every value must be finite and positive, got {v[:8]}...")
    return v


def _precheck(x, y, n_sizes, name) -> str:
    if n_sizes < MIN_SIZES:
        return f"need at least {MIN_SIZES} distinct sizes of {name}: got {n_sizes}"
    sizes = np.unique(x)
    first, last = y[x == sizes[0]].mean(), y[x == sizes[-1]].mean()
    if not last < first:
        return (f"loss does not fall: mean loss {first:.4g} at the smallest size "
                f"{sizes[0]:.3g}, {last:.4g} at the largest {sizes[-1]:.3g}")
    return ""


def _bad_exponents(values, names) -> str:
    for v, name in zip(values, names):
        if not np.isfinite(v) or v <= 0:
            return f"loss does not fall: fitted exponent {name} = {v:.3g} is not positive"
        if v > MAX_EXPONENT:
            return (f"no finite optimum: fitted exponent {name} ran off to {v:.3g} "
                    f"(> {MAX_EXPONENT:g}; the losses flatten out too abruptly for a power law)")
    return ""


def _failed_power(reason, form, n_points, n_sizes) -> PowerLaw:
    return PowerLaw(exponent=math.nan, coef=math.nan, offset=math.nan, n_points=n_points,
                    n_sizes=n_sizes, form=form, ok=False, reason=reason)


def _failed_joint(reason, n_points) -> JointLaw:
    nan = math.nan
    return JointLaw(E=nan, A=nan, alpha=nan, B=nan, beta=nan, n_points=n_points, ok=False,
                    reason=reason)


def _center(logx):
    # Centred log sizes decouple the coefficient from the exponent, which makes the
    # problem far better conditioned for L-BFGS; the minimiser is the same.
    c = float(logx.mean())
    return logx - c, c


def _rmse(logy, logy_hat) -> float:
    return float(np.sqrt(np.mean((logy - logy_hat) ** 2)))


def _params_1d(theta, center, offset):
    """Rows of (exponent, coef, E) from rows of centred parameters (c, α, e)."""
    alpha = theta[:, 1]
    E = _exp(theta[:, 2]) if offset else np.zeros(len(theta))
    return np.stack([alpha, _exp(theta[:, 0] + alpha * center), E], axis=1)


def _params_joint(theta, cN, cD):
    """Rows of (E, A, alpha, B, beta) from rows of centred parameters (a, α, b, β, e)."""
    a, alpha, b, beta, e = theta.T
    return np.stack([_exp(e), _exp(a + alpha * cN), alpha, _exp(b + beta * cD), beta], axis=1)


def _exp(v):
    # a runaway resample may push a log-coefficient past float range: inf, not a warning
    return np.exp(np.minimum(v, 710.0)) if np.ndim(v) else math.exp(min(v, 709.0))


def _percentile(values, level):
    if len(values) == 0:
        return (math.nan, math.nan)
    tail = 50 * (1 - level)
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _resample(n, bootstrap, seed, sizes):
    """Multiplicity vectors (B, n) of `bootstrap` resamples that keep the fit defined.

    A resample with fewer than three distinct sizes along any axis cannot be fitted: it
    is dropped and counted. If the kept resamples are all the same set of points (three
    points, three parameters), no interval can be had and the note says so.
    """
    rng = np.random.default_rng(seed)
    W = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(float)
    keep = np.ones(bootstrap, bool)
    for s in sizes:
        _, inverse = np.unique(s, return_inverse=True)
        present = np.zeros((bootstrap, inverse.max() + 1))
        np.add.at(present.T, inverse, W.T)
        keep &= (present > 0).sum(1) >= MIN_SIZES
    W = W[keep]
    distinct = len(np.unique(W, axis=0)) if len(W) else 0
    if distinct < 2:
        return W[:0], (f"no interval: with {n} points no bootstrap resample differs from the "
                       f"data while keeping {MIN_SIZES} distinct sizes")
    if keep.sum() < bootstrap:   # n_boot in the result says how many were used
        log.debug("%d of %d resamples dropped (fewer than %d distinct sizes)",
                  bootstrap - keep.sum(), bootstrap, MIN_SIZES)
    note = f"rough interval: only {distinct} distinct resamples" if distinct < 20 else ""
    return W, note


def _ols(z, logy, W):
    """Weighted least squares of logy on z for each weight row: returns (B, 2) = (c, -slope)."""
    sw = W.sum(1)
    mz = W @ z / sw
    my = W @ logy / sw
    dz = z[None, :] - mz[:, None]
    slope = (W * dz * (logy[None, :] - my[:, None])).sum(1) / (W * dz**2).sum(1)
    # In centred coordinates, log A' = my - slope * mz is the value at the centre.
    return np.stack([my - slope * mz, -slope], axis=1)


# ---------------------------------------------------------------------------------------
# starting grids (data-adaptive: E as a fraction of the smallest loss, exponents on a
# grid, coefficients chosen so that the curve passes near the middle of the data)


def _grid_1d(z, y):
    ymin, ymid = y.min(), math.exp(np.log(y).mean())
    rows = []
    for alpha, frac in itertools.product([0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5],
                                         [0.01, 0.25, 0.5, 0.75, 0.9, 0.97]):
        E = frac * ymin
        rows.append([math.log(max(ymid - E, 1e-6 * ymin)), alpha, math.log(E)])
    return np.array(rows)


def _grid_joint(zN, zD, L):
    Lmin, Lmid = L.min(), math.exp(np.log(L).mean())
    rows = []
    grid = [0.1, 0.25, 0.5, 0.8, 1.2]
    for alpha, beta, frac, share in itertools.product(grid, grid, [0.01, 0.5, 0.8, 0.95],
                                                      [0.25, 0.5, 0.75]):
        E = frac * Lmin
        excess = max(Lmid - E, 1e-6 * Lmin)
        rows.append([math.log(share * excess), alpha, math.log((1 - share) * excess), beta,
                     math.log(E)])
    return np.array(rows)


# ---------------------------------------------------------------------------------------
# the objective and a batched L-BFGS


class _Problem:
    """Huber loss of log residuals for log L̂ = LSE(c_k − α_k·z_k for each axis k, e).

    theta rows: [c_1, α_1, ..., c_K, α_K, e] with z_k centred log sizes; W rows: point
    multiplicities (ones for the data, counts for a bootstrap resample).
    """

    def __init__(self, Z, logy, delta):
        self.Z, self.logy, self.delta = Z, logy, delta
        self.K = Z.shape[0]

    def __call__(self, theta, W):
        """(f, g): the weighted Huber loss of each row of theta and its gradient."""
        K, Z = self.K, self.Z
        c, a, e = theta[:, 0:2 * K:2], theta[:, 1:2 * K:2], theta[:, -1:]
        # Each power-law term relative to the offset term: L̂ = E·(1 + Σ_k U_k). This
        # skips the max-subtraction of a textbook log-sum-exp; rows where it overflows
        # take that stable path instead.
        with np.errstate(over="ignore", invalid="ignore"):
            U = np.exp((c - e)[:, :, None] - a[:, :, None] * Z[None])
            s = 1.0 + U.sum(1)
            lse = e + np.log(s)
            U /= s[:, None]                      # softmax weight of each power-law term
            P0 = 1.0 / s                         # ... and of the offset term
        bad = ~np.isfinite(lse).all(1)
        if bad.any():
            lse[bad], U[bad], P0[bad] = self._stable(theta[bad])
        r = self.logy - lse
        psi = np.clip(r, -self.delta, self.delta)           # dHuber/dr
        f = (W * psi * (r - 0.5 * psi)).sum(1)              # Huber(r), written through psi
        wpsi = W * psi
        G = wpsi[:, None] * U
        g = np.empty_like(theta)
        g[:, 0:2 * K:2] = -G.sum(2)                         # d lse/d c_k = P_k
        g[:, 1:2 * K:2] = np.einsum("bkn,kn->bk", G, Z)     # d lse/d α_k = -z_k P_k
        g[:, -1] = -(wpsi * P0).sum(1)                      # d lse/d e = P_offset
        return f, g

    def _stable(self, theta):
        """(lse, P_terms, P_offset) by the max-subtracted log-sum-exp."""
        K, Z = self.K, self.Z
        T = np.empty((theta.shape[0], K + 1, Z.shape[1]))
        T[:, :K] = theta[:, 0:2 * K:2, None] - theta[:, 1:2 * K:2, None] * Z[None]
        T[:, K] = theta[:, -1:]
        m = T.max(1)
        P = np.exp(T - m[:, None])
        s = P.sum(1)
        P /= s[:, None]
        return m + np.log(s), P[:, :K], P[:, K]


def _fit_data(problem, grid, max_iter, keep=8):
    """Fit the data (all weights 1) from every start of `grid`, in two phases.

    Phase one runs every start a few iterations, enough to rank the basins; phase two
    runs the `keep` best to convergence. Returns (best theta, distinct finalists ordered
    by objective), the finalists being the starts for the bootstrap; best is None when
    no start gave a finite loss.
    """
    ones = np.ones((len(grid), problem.logy.size))
    x, f = _lbfgs(problem, grid, ones, max_iter=SCREEN_ITER, ftol=0.0)
    order = np.argsort(np.where(np.isfinite(f), f, np.inf))[:keep]
    x, f = _lbfgs(problem, x[order], ones[: len(order)], max_iter=max_iter, ftol=FIT_FTOL)
    order = np.argsort(np.where(np.isfinite(f), f, np.inf))
    x, f = x[order], f[order]
    if not np.isfinite(f[0]):
        return None, x
    _, first = np.unique(np.round(x, 3), axis=0, return_index=True)
    return x[0], x[np.sort(first)]


def _fit_resamples(problem, starts, W, max_iter, chunk_elems=2_000_000):
    """Best-of-starts fits for each row of multiplicities W; identical rows solved once."""
    U, inverse = np.unique(W, axis=0, return_inverse=True)
    S, p = starts.shape
    per_chunk = max(1, chunk_elems // (S * W.shape[1] * (problem.K + 1)))
    best = np.empty((len(U), p))
    for lo in range(0, len(U), per_chunk):
        Wc = U[lo:lo + per_chunk]
        b = len(Wc)
        x, f = _lbfgs(problem, np.tile(starts, (b, 1)), np.repeat(Wc, S, axis=0),
                      max_iter=max_iter, ftol=BOOT_FTOL)
        f = np.where(np.isfinite(f), f, np.inf).reshape(b, S)
        best[lo:lo + b] = x.reshape(b, S, p)[np.arange(b), f.argmin(1)]
    return best[inverse.ravel()]


def _lbfgs(fg, x0, W, *, max_iter=1000, memory=8, ftol=1e-10, gtol=1e-12, c1=1e-4,
           tries=4, max_rounds=12):
    """Minimise many independent smooth problems at once by L-BFGS.

    fg(theta (b, p), W (b, n)) -> (f (b,), g (b, p)). Each problem keeps its own curvature
    pairs, step (Armijo backtracking) and stopping test; finished problems leave the
    working arrays, so the batch shrinks as it converges. Returns (x, f) for all rows.
    """
    B, p = x0.shape
    out_x = x0.astype(float).copy()
    out_f = np.full(B, np.nan)
    rows = np.arange(B)                      # working row -> output row
    x, Wk = out_x.copy(), W
    f, g = fg(x, Wk)
    S = np.zeros((B, memory, p))
    Y = np.zeros((B, memory, p))
    rho = np.zeros((B, memory))
    gamma = np.zeros(B)                      # 0: no curvature pair yet
    live = np.isfinite(f) & np.isfinite(g).all(1)
    slot = 0
    for _ in range(max_iter):
        if not live.all():                   # retire finished problems
            done = ~live
            out_x[rows[done]], out_f[rows[done]] = x[done], f[done]
            rows, x, f, g, Wk = rows[live], x[live], f[live], g[live], Wk[live]
            S, Y, rho, gamma = S[live], Y[live], rho[live], gamma[live]
            live = live[live]
        if rows.size == 0:
            break
        # two-loop recursion, newest pair first
        order = [(slot - 1 - j) % memory for j in range(memory)]
        q = g.copy()
        a = np.empty((rows.size, memory))
        for j in order:
            a[:, j] = rho[:, j] * np.einsum("bp,bp->b", S[:, j], q)
            q -= a[:, j, None] * Y[:, j]
        has_pairs = gamma > 0
        r = q * np.where(has_pairs, gamma, 1.0)[:, None]
        for j in reversed(order):
            b = rho[:, j] * np.einsum("bp,bp->b", Y[:, j], r)
            r += S[:, j] * (a[:, j] - b)[:, None]
        d = -r
        gd = np.einsum("bp,bp->b", g, d)
        uphill = ~(gd < 0)
        if uphill.any():                     # curvature lost: restart as steepest descent
            d[uphill] = -g[uphill]
            gd[uphill] = -np.einsum("bp,bp->b", g[uphill], g[uphill])
            rho[uphill] = 0.0
            gamma[uphill] = 0.0
            has_pairs &= ~uphill
        t = np.where(has_pairs, 1.0, 1.0 / np.maximum(1.0, np.abs(g).max(1)))

        # Armijo backtracking, each problem with its own step. Most take the full step at
        # the first try; those that do not try `tries` halvings at once, in one call.
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        moved = np.zeros(rows.size, bool)
        pending = np.arange(rows.size)
        m = 1
        for _ in range(max_rounds):
            steps = t[pending, None] * 0.5 ** np.arange(m)                      # (P, m)
            trial = x[pending, None] + steps[:, :, None] * d[pending, None]      # (P, m, p)
            ft, gt = fg(trial.reshape(-1, p), np.repeat(Wk[pending], m, axis=0))
            ft, gt = ft.reshape(-1, m), gt.reshape(-1, m, p)
            good = np.isfinite(ft) & (ft <= f[pending, None] + c1 * steps * gd[pending, None])
            hit = good.any(1)
            first = good.argmax(1)[hit]                  # the longest step that is good
            done = pending[hit]
            x_new[done] = trial[hit, first]
            f_new[done], g_new[done] = ft[hit, first], gt[hit, first]
            moved[done] = True
            t[pending[~hit]] = steps[~hit, -1] * 0.5
            pending = pending[~hit]
            if pending.size == 0:
                break
            m = tries
        s, y = x_new - x, g_new - g
        sy = np.einsum("bp,bp->b", s, y)
        yy = np.einsum("bp,bp->b", y, y)
        ok = moved & (sy > 1e-12 * np.sqrt(np.einsum("bp,bp->b", s, s) * yy) + _TINY)
        S[:, slot] = np.where(ok[:, None], s, 0.0)
        Y[:, slot] = np.where(ok[:, None], y, 0.0)
        rho[:, slot] = np.where(ok, 1.0 / np.where(ok, sy, 1.0), 0.0)
        gamma = np.where(ok, sy / np.maximum(yy, _TINY), gamma)
        slot = (slot + 1) % memory
        decrease = f - f_new
        x, f, g = x_new, f_new, g_new
        # a failed line search means no descent is left along L-BFGS directions
        live = moved & (decrease > ftol * np.maximum(np.abs(f), 1e-16)) & (
            np.abs(g).max(1) > gtol)
    out_x[rows], out_f[rows] = x, f
    return out_x, out_f
