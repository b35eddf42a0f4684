"""The synthetic corpus: its dimension, its law, its text, its determinism, its options."""

import logging
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from idscaling.errors import ConfigError
from idscaling.synthetic import (
    BLOCK_DOCS,
    LatentMarkovSource,
    generate_documents,
    symbol_words,
)


# ------------------------------------------------------------------ small ID estimators
# Written here, independent of idscaling.intrinsic_dim, so that the generator is checked
# against the textbook formulas and not against the code under test elsewhere.

def _knn_distances(X, k):
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    return np.sort(np.partition(D, k, axis=1)[:, :k], axis=1)


def mle_id(X, k=20):
    """Levina-Bickel, combined by MacKay-Ghahramani (mean of the inverses, inverted)."""
    T = _knn_distances(X, k)
    inverse = np.log(T[:, -1:] / T[:, :-1]).sum(axis=1) / (k - 1)
    return 1.0 / inverse.mean()


def twonn_id(X):
    """Facco et al.: the maximum-likelihood d of the Pareto law of mu = r2 / r1."""
    T = _knn_distances(X, 2)
    return len(X) / np.log(T[:, 1] / T[:, 0]).sum()


def centred_log_probs(source, latents, prev):
    """log p(. | z, prev) up to the shift that softmax ignores: the logits of the law."""
    logp = np.log(source.probs(latents, prev))
    return logp - logp.mean(axis=1, keepdims=True)


# ------------------------------------------------------------------ dimension

@pytest.mark.parametrize("manifold, dims", [("torus", (2, 4, 8)), ("sphere", (2, 4))])
def test_next_symbol_laws_have_the_chosen_dimension(manifold, dims):
    estimates = []
    for d in dims:
        source = LatentMarkovSource(d, seed=1, manifold=manifold)
        latents = source.sample_latents(np.random.default_rng(0), 3000)
        X = centred_log_probs(source, latents, prev=5)
        mle, twonn = mle_id(X), twonn_id(X)
        assert mle == pytest.approx(d, rel=0.2), (manifold, d, mle)
        assert twonn == pytest.approx(d, rel=0.2), (manifold, d, twonn)
        estimates.append(mle)
    assert all(a < b for a, b in zip(estimates, estimates[1:])), estimates


def test_teacher_layer_keeps_the_dimension_and_bends_the_law():
    estimates = []
    for d in (2, 4, 8):
        source = LatentMarkovSource(d, seed=1, vocab=64, hidden=64, markov=0.0)
        latents = source.sample_latents(np.random.default_rng(0), 3000)
        X = centred_log_probs(source, latents, prev=None)
        estimates.append(mle_id(X))
        # Looser than without the teacher: at d = 8 the bends show at the scale of the
        # 20th neighbour among 3000 points, and the MLE reads them as extra dimensions.
        assert estimates[-1] == pytest.approx(d, rel=0.35), (d, estimates[-1])
        # Bent: the logits no longer lie in the 2d-dimensional span of phi(z). Without
        # the teacher, 2d principal components hold all of their variance.
        flat = LatentMarkovSource(d, seed=1, vocab=64, markov=0.0)
        for src, bent in ((source, True), (flat, False)):
            L = src.logits(latents)
            sv = np.linalg.svd(L - L.mean(axis=0), compute_uv=False) ** 2
            outside = sv[2 * d:].sum() / sv.sum()
            assert (outside > 0.05) if bent else (outside < 1e-12), (d, bent, outside)
    assert estimates == sorted(estimates)
    # the logits keep the spread that `signal` sets, as without the teacher
    z = source.sample_latents(np.random.default_rng(2), 2000)
    assert source.logits(z).std(axis=1).mean() == pytest.approx(3.0, rel=0.3)


def test_random_field_has_the_chosen_dimension():
    estimates = []
    for d in (2, 4, 8):
        source = LatentMarkovSource(d, seed=1, vocab=64, manifold="sphere", modes=256,
                                    bandwidth=0.5, markov=0.0)
        latents = source.sample_latents(np.random.default_rng(0), 3000)
        estimates.append(mle_id(centred_log_probs(source, latents, prev=None)))
        assert estimates[-1] == pytest.approx(d, rel=0.25), (d, estimates[-1])
    assert estimates == sorted(estimates)
    z = source.sample_latents(np.random.default_rng(2), 2000)
    assert source.logits(z).std(axis=1).mean() == pytest.approx(3.0, rel=0.3)


@pytest.mark.parametrize("nu", [0.5, 1.0, 2.0])
def test_random_field_spectrum_has_the_chosen_smoothness(nu):
    # A Matern-nu field's spectral density falls as |k|^-(2 nu + dim), so |k| has a
    # Pareto tail of index 2 nu: the Hill estimator on the largest |k| reads it.
    source = LatentMarkovSource(3, manifold="sphere", modes=40_000, smoothness=nu)
    norms = np.sort(np.linalg.norm(source.K, axis=1))[::-1]
    top = norms[:800]
    hill = 1.0 / np.log(top[:-1] / top[-1]).mean()
    assert hill == pytest.approx(2 * nu, rel=0.15), (nu, hill)
    # the bandwidth scales the frequencies and nothing else
    wide = LatentMarkovSource(3, manifold="sphere", modes=40_000, smoothness=nu,
                              bandwidth=2.0)
    np.testing.assert_allclose(wide.K, 2.0 * source.K)


def test_dimension_is_the_same_at_the_start_of_a_document():
    source = LatentMarkovSource(4, seed=2)
    latents = source.sample_latents(np.random.default_rng(0), 2000)
    X = centred_log_probs(source, latents, prev=None)
    assert mle_id(X) == pytest.approx(4, rel=0.2)


def test_law_depends_smoothly_on_z():
    # Lipschitz: a small step in z moves the logits by a proportionally small amount.
    source = LatentMarkovSource(8, seed=0)
    z = source.sample_latents(np.random.default_rng(0), 500)
    step = np.random.default_rng(1).standard_normal(z.shape)
    step /= np.linalg.norm(step, axis=1, keepdims=True)
    moved = [np.linalg.norm(source.logits(z + eps * step, 3) - source.logits(z, 3), axis=1)
             for eps in (1e-3, 1e-2)]
    ratio = moved[1] / moved[0]
    assert np.allclose(ratio, 10, rtol=0.05)
    assert moved[0].max() / 1e-3 < 10 * source.signal  # a bounded Lipschitz constant


# ------------------------------------------------------------------ the law it samples

def test_symbols_follow_the_stated_law():
    # Pooled over many documents, the counts of (previous symbol, next symbol) must match
    # the sum of p(next | z_doc, prev) over the occasions: a Pearson chi-square with as
    # many degrees of freedom as cells, give or take the row constraints.
    V = 16
    source = LatentMarkovSource(3, seed=4, vocab=V, doc_tokens=400, noise=0.1, markov=1.5)
    sample = source.sample(BLOCK_DOCS, progress=False)
    S, Z = sample.symbols, sample.latents

    def chi2(latents):
        observed = np.zeros((V + 1, V))  # row V: the start of a document
        expected = np.zeros((V + 1, V))
        np.add.at(observed, (np.full(len(S), V), S[:, 0]), 1)
        expected[V] += source.probs(latents, None).sum(axis=0)
        for t in range(1, S.shape[1]):
            np.add.at(observed, (S[:, t - 1], S[:, t]), 1)
            p = source.probs(latents, S[:, t - 1])
            np.add.at(expected, S[:, t - 1], p)
        return ((observed - expected) ** 2 / expected).sum()

    dof = (V + 1) * (V - 1)
    bound = dof + 6 * math.sqrt(2 * dof)
    assert chi2(Z) < bound
    # The test has power: the same counts judged against the wrong latents fail it.
    shuffled = Z[np.random.default_rng(0).permutation(len(Z))]
    assert chi2(shuffled) > 10 * bound


def test_noise_mixes_in_uniform_symbols():
    V = 8
    clean = LatentMarkovSource(2, seed=0, vocab=V, noise=0.0)
    noisy = LatentMarkovSource(2, seed=0, vocab=V, noise=0.5)
    z = clean.sample_latents(np.random.default_rng(0), 10)
    assert np.allclose(noisy.probs(z, 1), 0.5 * clean.probs(z, 1) + 0.5 / V)
    assert np.allclose(noisy.probs(z, 1).sum(axis=1), 1.0)


def test_signal_sets_how_much_z_matters_not_d():
    # W is scaled so that the logits' spread over symbols stays the same across d.
    spreads = []
    for d in (2, 16):
        source = LatentMarkovSource(d, seed=0, vocab=64, markov=0.0)
        z = source.sample_latents(np.random.default_rng(0), 2000)
        spreads.append(source.logits(z).std(axis=1).mean())
    assert spreads[0] == pytest.approx(spreads[1], rel=0.25)
    assert spreads[0] == pytest.approx(3.0, rel=0.3)  # the default signal


# ------------------------------------------------------------------ text and tokens

def test_documents_are_space_separated_symbol_words():
    docs = generate_documents(3, 7, vocab=40, doc_tokens=20, progress=False)
    words = set(symbol_words(40))
    assert len(docs) == 7
    for doc in docs:
        tokens = doc.split(" ")
        assert len(tokens) == 20 and set(tokens) <= words
    assert len(words) == 40 and all(len(w) == 2 for w in words)


def test_byte_level_bpe_learns_one_token_per_symbol():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    vocab, doc_tokens = 32, 64
    docs = generate_documents(4, 300, vocab=vocab, doc_tokens=doc_tokens, progress=False)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)

    ids = {}
    for word in symbol_words(vocab):
        encoded = tok.encode(" " + word).ids  # GPT-2's convention: the space leads
        assert len(encoded) == 1, (word, tok.encode(" " + word).tokens)
        ids[word] = encoded[0]
    assert len(set(ids.values())) == vocab
    # A whole document is one token per symbol, with no token spanning two symbols.
    for doc in docs[:20]:
        encoding = tok.encode(doc)
        assert len(encoding.ids) == doc_tokens
        assert encoding.ids[1:] == [ids[w] for w in doc.split(" ")[1:]]


# ------------------------------------------------------------------ determinism

def test_same_seed_same_documents_other_seed_other_documents():
    a = generate_documents(2, 5, seed=3, doc_tokens=16, progress=False)
    b = generate_documents(2, 5, seed=3, doc_tokens=16, progress=False)
    c = generate_documents(2, 5, seed=4, doc_tokens=16, progress=False)
    assert a == b
    assert a != c
    assert np.array_equal(LatentMarkovSource(2, seed=3).W, LatentMarkovSource(2, seed=3).W)
    assert not np.array_equal(LatentMarkovSource(2, seed=3).W, LatentMarkovSource(2, seed=4).W)


def test_corpora_that_differ_in_d_share_the_previous_symbol_table():
    # The d sweep changes the latent part only; the bigram table U stays put.
    assert np.array_equal(LatentMarkovSource(2, seed=0).U, LatentMarkovSource(8, seed=0).U)
    assert not np.array_equal(LatentMarkovSource(2, seed=0).U, LatentMarkovSource(2, seed=1).U)


def test_more_documents_extend_the_same_corpus():
    few = generate_documents(4, 3, doc_tokens=8, progress=False)
    one_block = generate_documents(4, BLOCK_DOCS - 1, doc_tokens=8, progress=False)
    more = generate_documents(4, BLOCK_DOCS + 10, doc_tokens=8, progress=False)
    assert one_block[:3] == few
    assert more[:BLOCK_DOCS - 1] == one_block
    assert len(set(more)) > 0.95 * len(more)  # documents differ from one another


def test_options_other_than_the_seed_change_the_corpus():
    base = generate_documents(2, 4, doc_tokens=32, progress=False)
    for option in ({"noise": 0.3}, {"signal": 1.0}, {"markov": 0.0}, {"harmonics": 2},
                   {"manifold": "sphere"}, {"hidden": 16}, {"hidden": 16, "gain": 1.0},
                   {"manifold": "sphere", "modes": 32},
                   {"manifold": "sphere", "modes": 32, "smoothness": 2.0},
                   {"manifold": "sphere", "modes": 32, "bandwidth": 2.0}):
        assert generate_documents(2, 4, doc_tokens=32, progress=False, **option) != base


# ------------------------------------------------------------------ validation

def test_unknown_option_is_named():
    with pytest.raises(ConfigError, match="temprature"):
        generate_documents(2, 5, temprature=1.0)


@pytest.mark.parametrize("args, kwargs, key", [
    ((0, 5), {}, "latent_dim"),
    ((2.5, 5), {}, "latent_dim"),
    ((True, 5), {}, "latent_dim"),
    ((2, 0), {}, "n_docs"),
    ((2, 5), {"vocab": 1}, "vocab"),
    ((2, 5), {"vocab": 10_000}, "vocab"),
    ((2, 5), {"doc_tokens": 1}, "doc_tokens"),
    ((2, 5), {"noise": 1.0}, "noise"),
    ((2, 5), {"noise": -0.1}, "noise"),
    ((2, 5), {"noise": "low"}, "noise"),
    ((2, 5), {"signal": -1.0}, "signal"),
    ((2, 5), {"markov": float("nan")}, "markov"),
    ((2, 5), {"harmonics": 0}, "harmonics"),
    ((2, 5), {"manifold": "cube"}, "manifold"),
    ((2, 5), {"manifold": "sphere", "harmonics": 2}, "harmonics"),
    ((2, 5), {"seed": -1}, "seed"),
    ((2, 5), {"hidden": -1}, "hidden"),
    ((2, 5), {"hidden": 1.5}, "hidden"),
    ((2, 5), {"gain": -1.0}, "gain"),
    ((2, 5), {"modes": 8}, "modes"),  # a random field needs the sphere
    ((2, 5), {"manifold": "sphere", "modes": 8, "hidden": 4}, "modes"),
    ((2, 5), {"manifold": "sphere", "modes": 8, "smoothness": 0.0}, "smoothness"),
    ((2, 5), {"manifold": "sphere", "modes": 8, "bandwidth": 0}, "bandwidth"),
])
def test_bad_values_are_rejected_by_name(args, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        generate_documents(*args, progress=False, **kwargs)


def test_warns_when_the_vocabulary_cannot_resolve_d(caplog):
    with caplog.at_level(logging.WARNING, logger="idscaling.synthetic"):
        LatentMarkovSource(8, vocab=32)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="idscaling.synthetic"):
        LatentMarkovSource(16, vocab=32)
    assert any("latent_dim=16" in r.getMessage() for r in caplog.records)
