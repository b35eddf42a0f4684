"""What the intrinsic dimension predicts for the scaling exponents.

Havrilla & Liao (NeurIPS 2024, arXiv 2411.06646): for a β-Hölder target on a
d-dimensional manifold, a transformer's squared error falls as n^(-2β/(2β+d)) in the
number of samples and N^(-2β/d) in the number of parameters. With the configured
smoothness s in place of β and the measured ID d̂:

    α_D = 2s / (2s + d̂)        α_N = 2s / d̂

Sharma & Kaplan (2020, arXiv 2004.10802) argued α_N ≈ 4/d̂ for the model law: the same
formula at s = 2, so it is reported as α_N at s = 2 (`alpha_N_s2`) beside α_N at the
configured s, not as a separate theory. Intervals are carried from the ID interval: all three exponents
fall as d̂ grows, so the ID's upper end gives the exponents' lower ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from idscaling.errors import ConfigError, DataError


@dataclass(frozen=True)
class Prediction:
    """Predicted exponents for one ID value; intervals are NaN without an ID interval."""

    id: float
    smoothness: float
    alpha_D: float
    alpha_D_ci_low: float
    alpha_D_ci_high: float
    alpha_N: float
    alpha_N_ci_low: float
    alpha_N_ci_high: float
    alpha_N_s2: float  # 2s/d at s = 2, i.e. Sharma & Kaplan's 4/d
    alpha_N_s2_ci_low: float
    alpha_N_s2_ci_high: float


def _data_exponent(d: float, s: float) -> float:
    return 2 * s / (2 * s + d)


def _model_exponent(d: float, s: float) -> float:
    return 2 * s / d


def _positive(value: float, what: str, error: type) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise error(f"{what}: not a number: {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise error(f"{what} must be finite and positive, got {value}")
    return value


def _check_id(value: float, what: str) -> float:
    return _positive(value, what, DataError)


def _check_smoothness(s: float) -> float:
    return _positive(s, "theory.smoothness", ConfigError)


def predict_exponents(id: float, smoothness: float = 1.0,
                      id_ci: tuple[float, float] | None = None) -> Prediction:
    """Exponents that an intrinsic dimension `id` predicts (Havrilla & Liao; Sharma & Kaplan).

    Returns a Prediction with α_D = 2s/(2s+d), α_N = 2s/d, and α_N at s = 2 (4/d); with
    `id_ci` = (low, high), each exponent's interval is its value at the two ends.
    """
    d = _check_id(id, "intrinsic dimension")
    s = _check_smoothness(smoothness)
    nan = math.nan
    lo = hi = nan
    if id_ci is not None:
        lo, hi = (_check_id(v, "intrinsic dimension interval end") for v in id_ci)
        if lo > hi:
            raise DataError(f"intrinsic dimension interval is reversed: ({lo}, {hi})")

    def span(f):
        return (f(hi), f(lo)) if id_ci is not None else (nan, nan)

    data = lambda v: _data_exponent(v, s)   # noqa: E731
    model = lambda v: _model_exponent(v, s)  # noqa: E731
    sk = lambda v: _model_exponent(v, 2.0)   # noqa: E731
    return Prediction(
        id=d, smoothness=s,
        alpha_D=data(d), alpha_D_ci_low=span(data)[0], alpha_D_ci_high=span(data)[1],
        alpha_N=model(d), alpha_N_ci_low=span(model)[0], alpha_N_ci_high=span(model)[1],
        alpha_N_s2=sk(d), alpha_N_s2_ci_low=span(sk)[0], alpha_N_s2_ci_high=span(sk)[1],
    )


def implied_smoothness(alpha_D: float, id: float) -> float:
    """The smoothness s for which 2s/(2s + id) equals the observed data exponent.

    s = α_D·d / (2(1 − α_D)). Returns NaN when α_D is NaN or outside (0, 1), where no
    positive s reproduces it (the caller states why); the ID must be positive.
    """
    d = _check_id(id, "intrinsic dimension")
    a = float(alpha_D)
    if not (0.0 < a < 1.0):
        return math.nan
    return a * d / (2.0 * (1.0 - a))
