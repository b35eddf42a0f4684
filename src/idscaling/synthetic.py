"""A synthetic corpus whose intrinsic dimension we choose.

Real corpora give one intrinsic dimension (ID) each. To test whether the ID predicts
the scaling exponents we need corpora whose dimension is a knob: this module makes them.

The generative process
----------------------
Each document draws a latent point z, uniformly, on a d-dimensional manifold M:

* ``manifold="torus"``: the flat torus T^d, angles theta_1..theta_d. Its smooth
  embedding is phi(z) = (a_h cos(h theta_i), a_h sin(h theta_i)) for i = 1..d and
  harmonics h = 1..H, with a_h = 1/h so that higher harmonics add detail without
  blowing up the Lipschitz constant. F = 2dH features.
* ``manifold="sphere"``: the unit sphere S^d in R^(d+1), phi(z) = z. F = d + 1.

In both cases |phi(z)| is the same for every z.

Optionally (``hidden`` = m > 0) a random one-layer teacher sits between the manifold and
the logits: the features become h(z) = tanh(g (A phi(z) + b)) with A (m x F) and b
Gaussian, unit-variance pre-activations and gain g = ``gain``, as in the random-teacher
experiments of Sharma & Kaplan (2020). Without it the logits are linear in phi(z) and
the ideal predictor is nearly linear in the symbol counts of the document so far (the
posterior over each angle is about von Mises), a parametric problem whose sample
complexity grows with d only through a constant. With it the map from z to the
next-symbol law bends in every direction of M, so learning it is a regression on a
d-dimensional manifold, the setting of the theory, though of an analytic function (see
below). W then multiplies h(z) instead of phi(z).

Or (``modes`` = M > 0, sphere only) each logit is a sample of a Matern random field on
R^(d+1) restricted to S^d, with smoothness nu = ``smoothness``: h_j(z) = sqrt(2/M)
cos(k_j . z + c_j) with frequencies k_j drawn from the field's spectral density (a
Student t with 2 nu degrees of freedom, scaled by ``bandwidth``) and uniform phases c_j
(random Fourier features). The spectrum decays as |k|^-(2 nu + d + 1), so the logits
are Hoelder-nu functions of z: the function class whose minimax rate n^(-2s/(2s+d))
the theory's exponent comes from, with s = nu known. The teacher, by contrast, is analytic (s is
unbounded), for which the theory predicts a data exponent near 1 whatever d is.

The document is then a chain of
``doc_tokens`` symbols from a vocabulary of V symbols, where symbol t is drawn from

    p(. | z, s) = (1 - eps) softmax(tau W phi(z) + mu U[s]) + eps / V,

where s is the previous symbol (for the first symbol, U[s] = 0), W (V x F) and U
(V x V) are Gaussian and fixed by the seed, tau = ``signal``, mu = ``markov`` and
eps = ``noise``. W is scaled so that every entry of W phi(z) has variance 1 over the
draw of W whatever d is (|phi| is constant, so this holds at every z; with the teacher,
|h(z)| varies and the scale uses its mean square over a fixed sample of z). The spread of
the logits, and so the entropy of p and the amount a model gains by knowing z, stays
about the same across d. Only the number of directions in which z can move changes.

Why the dimension is d
----------------------
1. For a fixed previous symbol s, the map z -> p(. | z, s) is smooth, and Lipschitz
   with a constant of at most tau ||W|| Lip(phi). It is also injective, so it is an
   embedding of M into the probability simplex, when the centred W (softmax ignores
   shifts of all logits together) is injective on phi(M). For a Gaussian W that holds
   almost surely when F <= V - 1, and for a generic projection of a d-manifold it holds
   when V - 1 >= 2d + 1 (Whitney). The next-symbol laws of the corpus are then V + 1
   copies (one for each previous symbol and one for the start) of a d-dimensional
   manifold. With the teacher the same holds when h is injective on M, which for a
   generic A needs m >= 2d + 1 and a gain that does not saturate every unit.
   `tests/test_synthetic.py` checks this: the estimated ID (MLE and TwoNN)
   of the centred log-probabilities log p(. | z, s), the logits of the law, over a
   few thousand documents is within 20% of d for d = 2, 4, 8. (On p itself, the
   estimates fall short for d = 8 with the default signal: the softmax bends the
   manifold sharply near the corners of the simplex, and with a few thousand points
   the neighbourhoods are too large to see it as flat.)
2. A model with low loss must predict p(. | z, s_t) at position t. It cannot see z, so
   it has to infer z from the document so far. The Bayes posterior over z concentrates
   at rate about sqrt(d / (t tau^2)) per coordinate (the Fisher information of one
   symbol is about tau^2 / d per coordinate), so beyond the first few d / tau^2
   symbols the ideal prediction lies near that d-dimensional set.
3. The model's logits are a Lipschitz (linear, after the final layer norm) function of
   its last hidden state, and a Lipschitz map cannot raise dimension. So the hidden
   states of a model that predicts well lie on a set of dimension at least d for each
   current symbol. They may carry more, such as the position or how wide the posterior
   still is, so what we claim and measure is that the ID of the embeddings rises with
   d. We do not claim it equals d. `configs/synthetic.yaml` measures it on trained
   models.

The argument holds under three conditions. (a) There are enough symbols per document
to pin down z: doc_tokens * tau^2 * (1 - eps) >> d. (b) The vocabulary can resolve d
directions: 2d + 1 <= V - 1 (checked, with a warning). (c) ``signal`` is large enough
next to ``markov`` and ``noise`` that the z-dependent part of the loss is worth
learning.

Text
----
The pipeline tokenizes text with a byte-level BPE, so each symbol is rendered as a
distinct two-letter word ("aa", "ab", ...) and symbols are separated by single spaces.
GPT-2's pre-tokenizer splits text at the start of each word, so BPE merges never cross
symbols. A BPE with a few hundred entries learns exactly one token per symbol: " ab"
with its leading space, plus "ab" for the first symbol of a document. Asked for more
entries (4096, say), the trainer runs out of merges and stops at about
256 + 1 + 2 * vocab entries, so the vocabulary size hardly matters.

Determinism
-----------
The fixed parameters (W, U) depend only on the seed and the options, never on n_docs;
U does not depend on d either.
Documents are made in blocks of ``BLOCK_DOCS``. Block k draws its randomness from its
own stream (seed, k) and is always computed whole, so document i is the same bit for
bit whatever n_docs is: more documents extend the same corpus.
"""

from __future__ import annotations

import logging
import math
import string
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from idscaling.errors import ConfigError
from idscaling.field import make_field  # noqa: F401  (public: the known-dimension field)

log = logging.getLogger(__name__)

MANIFOLDS = ("torus", "sphere")
LETTERS = string.ascii_lowercase
MAX_VOCAB = len(LETTERS) ** 2  # distinct two-letter words
BLOCK_DOCS = 256  # part of the corpus definition: changing it changes every corpus

# Streams of the seed sequence (seed, stream, ...): parameters and documents never share one.
_PARAMS_STREAM = 0
_DOCS_STREAM = 1


@dataclass(frozen=True)
class SyntheticSample:
    """Symbols (n_docs x doc_tokens, int) and the latent point of each document.

    Latents are angles in [0, 2 pi) (n_docs x d) on the torus, and unit vectors
    (n_docs x (d + 1)) on the sphere.
    """

    symbols: np.ndarray
    latents: np.ndarray


class LatentMarkovSource:
    """The generative process behind the ``synthetic`` corpus (see the module docstring).

    Options: latent_dim (d >= 1), seed, vocab (2..676 symbols), doc_tokens (symbols per
    document, >= 2), noise (probability that a symbol is replaced by a uniform one,
    in [0, 1)), manifold ("torus" or "sphere"), harmonics (torus only, >= 1), signal
    (tau, the scale of the z-dependent logits, >= 0), markov (mu, the scale of the
    previous-symbol logits, >= 0), hidden (width of the teacher layer; 0, the default,
    makes the logits linear in phi(z)), gain (the teacher layer's steepness, >= 0),
    modes (M > 0: each logit is a Matern random field on the sphere, M random Fourier
    modes), smoothness (the field's nu > 0: its Hoelder smoothness, the theory's s),
    bandwidth (the field's inverse length scale, > 0).
    Unknown options raise ConfigError.
    """

    def __init__(self, latent_dim: int, *, seed: int = 0, vocab: int = 32,
                 doc_tokens: int = 128, noise: float = 0.05, manifold: str = "torus",
                 harmonics: int = 1, signal: float = 3.0, markov: float = 1.0,
                 hidden: int = 0, gain: float = 2.0, modes: int = 0,
                 smoothness: float = 1.0, bandwidth: float = 1.0, **unknown):
        if unknown:
            raise ConfigError(
                f"synthetic corpus: unknown option(s) {', '.join(sorted(unknown))}; "
                "known: latent_dim, seed, vocab, doc_tokens, noise, manifold, harmonics, "
                "signal, markov, hidden, gain, modes, smoothness, bandwidth")
        self.latent_dim = _check_int("latent_dim", latent_dim, 1)
        self.seed = _check_int("seed", seed, 0)
        self.vocab = _check_int("vocab", vocab, 2, MAX_VOCAB)
        self.doc_tokens = _check_int("doc_tokens", doc_tokens, 2)
        self.noise = _check_float("noise", noise, 0.0, 1.0, hi_open=True)
        self.signal = _check_float("signal", signal, 0.0)
        self.markov = _check_float("markov", markov, 0.0)
        self.harmonics = _check_int("harmonics", harmonics, 1)
        self.hidden = _check_int("hidden", hidden, 0)
        self.gain = _check_float("gain", gain, 0.0)
        self.modes = _check_int("modes", modes, 0)
        self.smoothness = _check_float("smoothness", smoothness, 0.0)
        self.bandwidth = _check_float("bandwidth", bandwidth, 0.0)
        for key in ("smoothness", "bandwidth"):
            if getattr(self, key) == 0.0:
                raise ConfigError(f"synthetic corpus: {key} must be > 0, got 0.0")
        if manifold not in MANIFOLDS:
            raise ConfigError(
                f"synthetic corpus: manifold must be one of {MANIFOLDS}, got {manifold!r}")
        if manifold == "sphere" and self.harmonics != 1:
            raise ConfigError(
                "synthetic corpus: harmonics applies to the torus only; the sphere uses "
                f"its coordinates (harmonics=1), got harmonics={harmonics}")
        self.manifold = manifold
        if self.modes and (manifold != "sphere" or self.hidden):
            raise ConfigError(
                "synthetic corpus: modes (a random field on the sphere) replaces the "
                "teacher: use it with manifold=sphere and hidden=0 (got "
                f"manifold={manifold}, hidden={hidden})")

        d, v = self.latent_dim, self.vocab
        if 2 * d + 1 > v - 1:
            log.warning(
                "synthetic corpus: latent_dim=%d may be more than vocab=%d symbols can "
                "resolve (want 2*latent_dim + 1 <= vocab - 1); the map from z to the "
                "next-symbol law may fold, and the measured ID may fall short of d", d, v)

        # W and U come from streams of their own, so corpora that differ only in d
        # share the same previous-symbol table U: only the latent part changes.
        w_rng = np.random.default_rng([self.seed, _PARAMS_STREAM, 0])
        u_rng = np.random.default_rng([self.seed, _PARAMS_STREAM, 1])
        self.U = u_rng.standard_normal((v, v))
        if self.modes:
            # A Matern-nu random field on R^(d+1), restricted to S^d: frequencies drawn
            # from its spectral density, a multivariate Student t with 2 nu degrees of
            # freedom and scale `bandwidth`, with uniform phases.
            f_rng = np.random.default_rng([self.seed, _PARAMS_STREAM, 4])
            g = f_rng.standard_normal((self.modes, self.latent_dim + 1))
            u = f_rng.chisquare(2 * self.smoothness, size=(self.modes, 1))
            self.K = self.bandwidth * g * np.sqrt(2 * self.smoothness / u)
            self.phase = f_rng.uniform(0.0, 2 * np.pi, self.modes)
        if self.hidden:
            # The teacher's layer: unit-variance pre-activations (|phi|^2 is constant),
            # times `gain`, plus a unit-variance bias so that units bend in different places.
            t_rng = np.random.default_rng([self.seed, _PARAMS_STREAM, 2])
            self.A = (self.gain * t_rng.standard_normal((self.hidden, self._phi_dim))
                      / math.sqrt(self._phi_norm2))
            self.b = self.gain * t_rng.standard_normal(self.hidden)
        if self.hidden or self.modes:
            # |h(z)| varies with z: scale by its mean square over a fixed sample of z.
            z = self.sample_latents(np.random.default_rng([self.seed, _PARAMS_STREAM, 3]), 4096)
            norm2 = float((self.features(z) ** 2).sum(axis=1).mean())
        else:
            norm2 = self._phi_norm2  # constant in z
        # Unit-variance logits (over the draw of W) at every z, whatever d is.
        self.W = w_rng.standard_normal((v, self.n_features)) / math.sqrt(norm2)
        self.words = symbol_words(v)

    @property
    def n_features(self) -> int:
        return self.modes or self.hidden or self._phi_dim

    @property
    def _phi_dim(self) -> int:
        if self.manifold == "sphere":
            return self.latent_dim + 1
        return 2 * self.latent_dim * self.harmonics

    @property
    def _phi_norm2(self) -> float:
        if self.manifold == "sphere":
            return 1.0
        return self.latent_dim * sum(1.0 / h**2 for h in range(1, self.harmonics + 1))

    def sample_latents(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Uniform points on the manifold: angles (torus) or unit vectors (sphere)."""
        if self.manifold == "sphere":
            x = rng.standard_normal((n, self.latent_dim + 1))
            return x / np.linalg.norm(x, axis=1, keepdims=True)
        return rng.uniform(0.0, 2 * np.pi, size=(n, self.latent_dim))

    def features(self, latents: np.ndarray) -> np.ndarray:
        """The features the logits are linear in: phi(z), the teacher's tanh(A phi(z) + b),
        or the random field's sqrt(2 / M) cos(K z + phase)."""
        if self.modes:
            z = np.asarray(latents, dtype=np.float64)
            return math.sqrt(2.0 / self.modes) * np.cos(z @ self.K.T + self.phase)
        phi = self.embedding(latents)
        return np.tanh(phi @ self.A.T + self.b) if self.hidden else phi

    def embedding(self, latents: np.ndarray) -> np.ndarray:
        """phi(z): the smooth embedding of the manifold."""
        latents = np.asarray(latents, dtype=np.float64)
        if self.manifold == "sphere":
            return latents
        parts = []
        for h in range(1, self.harmonics + 1):
            parts += [np.cos(h * latents) / h, np.sin(h * latents) / h]
        return np.concatenate(parts, axis=1)

    def logits(self, latents: np.ndarray, prev: np.ndarray | int | None = None) -> np.ndarray:
        """tau W phi(z) + mu U[prev] for each row of latents (n x vocab).

        `prev` is the previous symbol, one per row or one for all; None is the start of
        a document, which has no previous-symbol term.
        """
        z_part = self.signal * self.features(latents) @ self.W.T
        if prev is None:
            return z_part
        return z_part + self.markov * self.U[np.asarray(prev)]

    def probs(self, latents: np.ndarray, prev: np.ndarray | int | None = None) -> np.ndarray:
        """The true next-symbol law p(. | z, prev), noise included (n x vocab)."""
        logits = self.logits(latents, prev)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (1.0 - self.noise) * p + self.noise / self.vocab

    def sample(self, n_docs: int, *, progress: bool = True) -> SyntheticSample:
        """The first n_docs documents of this source, as symbols and latents."""
        blocks = list(self.iter_blocks(n_docs, progress=progress))
        return SyntheticSample(symbols=np.concatenate([b.symbols for b in blocks]),
                               latents=np.concatenate([b.latents for b in blocks]))

    def iter_blocks(self, n_docs: int, *, progress: bool = True):
        """The first n_docs documents, block by block (so memory stays one block)."""
        n_docs = _check_int("n_docs", n_docs, 1)
        n_blocks = -(-n_docs // BLOCK_DOCS)
        for k in tqdm(range(n_blocks), desc="synthetic docs", unit="block",
                      disable=not progress or n_blocks < 2):
            block = self._sample_block(k)
            keep = min(BLOCK_DOCS, n_docs - k * BLOCK_DOCS)
            yield SyntheticSample(symbols=block.symbols[:keep], latents=block.latents[:keep])

    def render(self, symbols: np.ndarray) -> list[str]:
        """One text a row: the symbols' words, separated by single spaces."""
        words = np.asarray(self.words, dtype=object)
        return [" ".join(row) for row in words[np.asarray(symbols)]]

    def _sample_block(self, block: int) -> SyntheticSample:
        n, T, V = BLOCK_DOCS, self.doc_tokens, self.vocab
        rng = np.random.default_rng([self.seed, _DOCS_STREAM, block])
        latents = self.sample_latents(rng, n)
        draw = rng.random((n, T))  # inverse-CDF draws for the model's symbols
        is_noise = rng.random((n, T)) < self.noise
        noise_symbols = rng.integers(0, V, size=(n, T))

        # softmax(a + b) is proportional to exp(a) * exp(b): exponentiate each part once.
        z_logits = self.logits(latents)
        z_weights = np.exp(z_logits - z_logits.max(axis=1, keepdims=True))
        markov_logits = self.markov * self.U
        markov_weights = np.exp(markov_logits - markov_logits.max(axis=1, keepdims=True))

        symbols = np.empty((n, T), dtype=np.int16)  # vocab <= 676
        weights = z_weights
        for t in range(T):
            cdf = np.cumsum(weights, axis=1)
            u = draw[:, t:t + 1] * cdf[:, -1:]
            s = np.minimum((cdf <= u).sum(axis=1), V - 1)  # min guards u == total
            s = np.where(is_noise[:, t], noise_symbols[:, t], s)
            symbols[:, t] = s
            weights = z_weights * markov_weights[s]
        return SyntheticSample(symbols=symbols, latents=latents)


def generate_documents(latent_dim: int, n_docs: int, *, seed: int = 0, vocab: int = 32,
                       doc_tokens: int = 128, noise: float = 0.05,
                       manifold: str = "torus", progress: bool = True,
                       **options) -> list[str]:
    """The first `n_docs` documents of the synthetic corpus with latent dimension d.

    Each document is `doc_tokens` two-letter words separated by spaces (see the module
    docstring for the process and why its dimension is `latent_dim`). Other options:
    harmonics, signal, markov, hidden, gain, modes, smoothness, bandwidth (see
    `LatentMarkovSource`); an unknown option raises ConfigError naming it. The same seed and options give the same documents, and
    document i does not depend on n_docs.
    """
    source = LatentMarkovSource(latent_dim, seed=seed, vocab=vocab, doc_tokens=doc_tokens,
                                noise=noise, manifold=manifold, **options)
    docs = [text for block in source.iter_blocks(n_docs, progress=progress)
            for text in source.render(block.symbols)]
    log.info("synthetic corpus: %d documents x %d symbols, latent_dim=%d on a %s, "
             "vocab=%d, noise=%g, signal=%g, markov=%g, harmonics=%d, hidden=%d, gain=%g, "
             "modes=%d, smoothness=%g, bandwidth=%g, seed=%d", n_docs, source.doc_tokens,
             source.latent_dim, source.manifold, source.vocab, source.noise, source.signal,
             source.markov, source.harmonics, source.hidden, source.gain, source.modes,
             source.smoothness, source.bandwidth, source.seed)
    return docs


def symbol_words(vocab: int) -> list[str]:
    """The word of each symbol: 'aa', 'ab', ..., 'az', 'ba', ... (distinct, two letters)."""
    vocab = _check_int("vocab", vocab, 2, MAX_VOCAB)
    return [LETTERS[i // len(LETTERS)] + LETTERS[i % len(LETTERS)] for i in range(vocab)]


def _check_int(key: str, value, lo: int, hi: int | None = None) -> int:
    # bool is an int in Python; `latent_dim: true` in YAML is a mistake, not a 1.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"synthetic corpus: {key} must be an integer, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ConfigError(f"synthetic corpus: {key} must be {bounds}, got {value}")
    return int(value)


def _check_float(key: str, value, lo: float, hi: float | None = None, *,
                 hi_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"synthetic corpus: {key} must be a number, got {value!r}")
    value = float(value)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if not math.isfinite(value) or value < lo or too_high:
        if hi is None:
            bounds = f">= {lo}"
        else:
            bounds = f"in [{lo}, {hi}{')' if hi_open else ']'}"
        raise ConfigError(f"synthetic corpus: {key} must be {bounds}, got {value}")
    return value
