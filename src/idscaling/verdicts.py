"""Decisions between an observed exponent and a predicted one that can come out either way.

With a margin m fixed before the run:

* ``agrees``: the observed interval lies inside [predicted low − m, predicted high + m]
  (an equivalence test: the data rule out any difference larger than m);
* ``disagrees``: the observed and the predicted intervals exclude each other;
* ``inconclusive``: neither, with the reason;
* ``underdetermined``: the law has no more points than parameters, so it has no interval.

Overlap of two intervals is not a test: wide intervals overlap everything.
"""

from __future__ import annotations

import math

VERDICTS = ("agrees", "disagrees", "inconclusive", "underdetermined")


def decide(observed: tuple[float, float, float], predicted: tuple[float, float, float],
           margin: float) -> tuple[str, str]:
    """(verdict, reason) for observed and predicted (value, low, high) triples.

    A predicted value without an interval (NaN ends, or a known exponent) counts as the
    point interval [value, value].
    """
    if not margin >= 0:
        raise ValueError(f"margin must be non-negative, got {margin!r}")
    _, lo, hi = (float(v) for v in observed)
    p, plo, phi = (float(v) for v in predicted)
    if math.isnan(plo) or math.isnan(phi):
        plo = phi = p
    if any(math.isnan(v) for v in (lo, hi, p)):
        return "inconclusive", "no interval for the observed exponent"
    if math.isinf(hi):  # a lower bound only (an unidentified offset)
        if lo > phi:
            return "disagrees", (f"observed at least {lo:.3f}, above the predicted "
                                 f"[{plo:.3f}, {phi:.3f}]")
        return "inconclusive", (f"the observed exponent has only a lower bound ({lo:.3f}): "
                                "the fit cannot separate the irreducible loss from the "
                                "excess; a wider size range would")
    band = (plo - margin, phi + margin)
    if band[0] <= lo and hi <= band[1]:
        return "agrees", (f"observed [{lo:.3f}, {hi:.3f}] lies inside the predicted "
                          f"[{plo:.3f}, {phi:.3f}] ± {margin:g}")
    if hi < plo or lo > phi:
        return "disagrees", (f"observed [{lo:.3f}, {hi:.3f}] excludes the predicted "
                             f"[{plo:.3f}, {phi:.3f}]")
    width, room = hi - lo, band[1] - band[0]
    if width > room:
        return "inconclusive", (f"the observed interval ({width:.3f} wide) is wider than the "
                                f"band the margin allows ({room:.3f}): more sizes, seeds or "
                                "a wider range would narrow it")
    return "inconclusive", (f"observed [{lo:.3f}, {hi:.3f}] overlaps the prediction but reaches "
                            f"outside [{band[0]:.3f}, {band[1]:.3f}]")
