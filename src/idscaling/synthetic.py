"""Synthetic data of known dimension and smoothness: random fields on the sphere S^d whose
Hölder smoothness is set, and a way to measure it.

The known-dimension experiment needs a target f: S^d -> R^V whose smoothness s is known
at every scale a sweep resolves. A Matérn field has smoothness s only asymptotically and
a finite Fourier sum is smooth below its highest frequency; a lacunary sum is Hölder-s
scale by scale:

    f(z) = c Σ_{j<J} 2^(-js) Σ_{m<M} a_jm cos(2^j ω ⟨u_jm, z⟩ + φ_jm)

with u_jm uniform unit vectors of R^(d+1), φ_jm uniform phases, a_jm ∈ R^V Gaussian, ω
the base frequency and c the constant that gives every output unit variance. Level j
varies on the scale 2^-j/ω with amplitude 2^(-js), so an increment over a step h is about
Σ_j 2^(-js) min(1, (2^j ω h)^r) for an r-th order difference: h^s whenever r > s, from
the scale of the coarsest level down to that of the finest (below it the sum is smooth).
`holder_exponent` measures that slope with third-order differences along great circles,
which read any s < 3. `make_field` also builds levels a ratio r other than 2 apart
(amplitudes r^(-js)) and levels of min(M r^(jd), cap) waves instead of M (see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from idscaling.errors import ConfigError

DIFFERENCE_ORDER = 3  # reads smoothness up to 3; the binomial weights of (1 - shift)^3
_WEIGHTS = np.array([-1.0, 3.0, -3.0, 1.0])


@dataclass(frozen=True)
class LacunaryField:
    """f: points of S^d, shape (n, d+1), to values, shape (n, vocab). See the module doc."""

    d: int
    s: float
    directions: np.ndarray  # (waves, d+1) unit vectors
    frequencies: np.ndarray  # (waves,) r^j ω
    phases: np.ndarray  # (waves,)
    weights: np.ndarray  # (waves, vocab): c r^(-js) a_jm
    level: np.ndarray  # (waves,) the level j of each wave
    weight_std: np.ndarray  # (waves,) the prior's std of each wave's weights: a draw is this times N(0, 1)

    @property
    def vocab(self) -> int:
        return self.weights.shape[1]

    @property
    def finest_scale(self) -> float:
        return float(1.0 / self.frequencies.max())

    @property
    def coarsest_scale(self) -> float:
        return float(1.0 / self.frequencies.min())

    def coarse(self, levels: int) -> "LacunaryField":
        """The same field without its levels j >= `levels`: what a learner that has
        learned exactly the coarsest `levels` levels knows."""
        keep = self.level < levels
        return LacunaryField(d=self.d, s=self.s, directions=self.directions[keep],
                             frequencies=self.frequencies[keep], phases=self.phases[keep],
                             weights=self.weights[keep], level=self.level[keep],
                             weight_std=self.weight_std[keep])

    def _points(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.d + 1:
            raise ValueError(f"field on S^{self.d} takes points of shape (n, {self.d + 1}), got {z.shape}")
        return z

    def waves(self, z: np.ndarray) -> np.ndarray:
        """Each wave's value cos(ω⟨u, z⟩ + φ) at each point, shape (n, waves): f(z) is this
        times `weights`."""
        z = self._points(z)
        return np.cos(z @ self.directions.T * self.frequencies + self.phases)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = self._points(z)
        out = np.empty((len(z), self.vocab))
        rows = max(1, min(8192, 2 ** 23 // max(1, len(self.phases))))  # bounded memory for any n and waves
        for lo in range(0, len(z), rows):
            out[lo:lo + rows] = self.waves(z[lo:lo + rows]) @ self.weights
        return out


def make_field(d: int, s: float, seed: int, *, vocab: int = 16, levels: int = 10,
               modes: int | None = None, max_modes: int | None = None,
               base_frequency: float = 2.0, level_ratio: float = 2.0) -> LacunaryField:
    """A lacunary random field on S^d of Hölder smoothness `s` with `vocab` outputs.

    `levels` levels a ratio r = `level_ratio` apart, from the scale 1/`base_frequency`
    down to r^-(levels-1) of it, level j with amplitude r^(-js). Level j has `modes` plane
    waves (default 4(d+1), enough directions for the field to bend the same way in every
    direction of S^d) when `max_modes` is None, and min(`modes` r^(jd), `max_modes`) when
    it is set: as many as a function on S^d has independent cells at that scale, up to the
    cap, instead of the same few at every scale. A level's variance does not depend on its
    number of waves, so s is the same either way. The same arguments give the same field.
    """
    if not (isinstance(d, (int, np.integer)) and d >= 1):
        raise ConfigError(f"field: d must be a positive integer, got {d!r}")
    if not (isinstance(s, (int, float)) and 0 < s < DIFFERENCE_ORDER):
        raise ConfigError(f"field: smoothness s must be in (0, {DIFFERENCE_ORDER}), got {s!r}")
    modes = 4 * (d + 1) if modes is None else modes
    for key, value in (("vocab", vocab), ("levels", levels), ("modes", modes),
                       ("max_modes", 1 if max_modes is None else max_modes)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ConfigError(f"field: {key} must be a positive integer, got {value!r}")
    if not base_frequency > 0:
        raise ConfigError(f"field: base_frequency must be positive, got {base_frequency!r}")
    if not level_ratio > 1:
        raise ConfigError(f"field: level_ratio must be above 1, got {level_ratio!r}")
    rng = np.random.default_rng([seed, d, 7])
    per_level = np.full(levels, modes) if max_modes is None else \
        np.minimum(modes * level_ratio ** (np.arange(levels) * d), max_modes).astype(int)
    n = int(per_level.sum())
    level = np.repeat(np.arange(levels), per_level)
    directions = unit_rows(rng.standard_normal((n, d + 1)))
    phases = rng.uniform(0, 2 * np.pi, n)
    amplitude = level_ratio ** (-level * s)
    # Var f_v(z) = Σ amp^2 |a|^2 E cos^2 = Σ_j r^(-2js) / 2 with a ~ N(0, 1/M_j): make it 1
    c = 1.0 / np.sqrt(0.5 * np.sum(level_ratio ** (-2 * np.arange(levels) * s)))
    weight_std = c * amplitude / np.sqrt(per_level[level])
    weights = weight_std[:, None] * rng.standard_normal((n, vocab))
    return LacunaryField(d=int(d), s=float(s), directions=directions,
                         frequencies=base_frequency * level_ratio ** level, phases=phases, weights=weights,
                         level=level, weight_std=weight_std)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def uniform_sphere(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n points uniform on S^d, shape (n, d+1)."""
    return unit_rows(rng.standard_normal((n, d + 1)))


def holder_exponent(field, d: int, steps: np.ndarray, *, n_points: int = 2000,
                    seed: int = 0) -> tuple[float, np.ndarray]:
    """The slope of log RMS third-order difference against log step along great circles.

    Returns (slope, rms per step). For a field of Hölder smoothness s < 3 at the scales of
    `steps` (geodesic lengths), the slope is s.
    """
    rng = np.random.default_rng(seed)
    z = uniform_sphere(rng, n_points, d)
    t = rng.standard_normal(z.shape)
    t = unit_rows(t - (t * z).sum(1, keepdims=True) * z)  # a tangent direction at z
    rms = []
    for h in steps:
        diff = sum(w * field(np.cos(i * h) * z + np.sin(i * h) * t) for i, w in enumerate(_WEIGHTS))
        rms.append(np.sqrt(np.mean(diff ** 2)))
    rms = np.asarray(rms)
    slope = np.polyfit(np.log(steps), np.log(rms), 1)[0]
    return float(slope), rms
