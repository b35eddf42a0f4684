"""The known-dimension generator, its exact evaluation, the reference and the network's loss."""

import numpy as np
import pytest
import torch

from idscaling.errors import ConfigError
from idscaling.known_d import (Task, entropy, feature_oracle, kl, knn_reference, level_ladder, network_excess, run_one,
                               task_from_config, train_mlp, _document_loss, _symbol_logits)
from idscaling.model import GPT, GPTConfig
from idscaling.schedule import TrainSettings


@pytest.fixture(scope="module")
def task():
    return Task(d=2, s=1.0, symbols=6)


class Oracle(torch.nn.Module):
    """A 'model' that reads z back from the coordinate tokens and answers log p_z after the
    last of them, plus an optional perturbation of its logits."""

    def __init__(self, task, perturb=0.0):
        super().__init__()
        self.task, self.perturb = task, perturb

    def forward(self, idx):
        t = self.task
        digits = idx.reshape(len(idx), t.d + 1, t.digits).numpy()
        q = (digits * t.base ** np.arange(t.digits - 1, -1, -1)).sum(axis=2)
        p = t.probs(t.dequantise(q))
        logits = np.log(p) + self.perturb * np.sin(np.arange(t.vocab))[None, :]
        out = np.zeros((len(idx), idx.shape[1], t.n_tokens))  # earlier positions: wrong on purpose
        out[:, -1, :t.base] = -1e4  # coordinate ids never predicted
        out[:, -1, t.base:] = logits
        return torch.from_numpy(out), None


def test_excess_of_the_bayes_predictor_is_its_quantisation_cost_and_tiny(task):
    z, _ = task.eval_points(512)
    excess = network_excess(Oracle(task), task, z)
    assert np.allclose(excess.mean(), task.quantisation_excess(z), rtol=1e-9, atol=1e-15)
    assert excess.mean() < 1e-5
    # with z given exactly the Bayes predictor has excess exactly 0
    assert np.all(kl(task.probs(z), task.probs(z)) == 0)


def test_excess_of_a_perturbed_predictor_is_the_kl_it_should_be(task):
    z, _ = task.eval_points(512)
    excess = network_excess(Oracle(task, perturb=0.3), task, z)
    p = task.probs(task.dequantise(task.quantise(z)))
    q = p * np.exp(0.3 * np.sin(np.arange(task.vocab)))
    q /= q.sum(axis=1, keepdims=True)
    expected = kl(task.probs(z), q)
    assert excess.mean() > 0.005
    np.testing.assert_allclose(excess, expected, rtol=1e-6, atol=1e-9)


def test_encoding_puts_z_within_one_bin(task):
    z, symbols = task.documents(0, 300)
    tokens = task.encode(z, symbols)
    assert tokens.shape == (300, task.doc_len)
    np.testing.assert_array_equal(tokens[:, :task.coord_tokens], task.coordinates(z))
    assert tokens[:, :task.coord_tokens].max() < task.base
    np.testing.assert_array_equal(tokens[:, task.coord_tokens:], symbols + task.base)
    bin_width = 2.0 / task.base ** task.digits
    assert np.abs(task.dequantise(task.quantise(z)) - z).max() < bin_width


def test_documents_are_nested_in_n_and_differ_by_seed(task):
    z_small, s_small = task.documents(1, 700)
    z_big, s_big = task.documents(1, 2500)
    np.testing.assert_array_equal(z_small, z_big[:700])
    np.testing.assert_array_equal(s_small, s_big[:700])
    assert not np.allclose(task.documents(2, 700)[0], z_small)


def test_symbols_follow_p_z(task):
    z = np.repeat(task.eval_points(1)[0], 4000, axis=0)
    symbols = Task(d=2, s=1.0, symbols=5).sample_symbols(np.random.default_rng(0), task.probs(z))
    freq = np.bincount(symbols.ravel(), minlength=task.vocab) / symbols.size
    np.testing.assert_allclose(freq, task.probs(z[:1])[0], atol=0.01)


def test_the_network_predicts_every_symbol_from_z_among_symbols_only(task):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=task.n_tokens, n_layer=1, n_embd=16, n_head=2, context=task.coord_tokens))
    z, symbols = task.documents(0, 8)
    coords = torch.from_numpy(task.coordinates(z))
    logits, _ = model(coords)
    symbols = torch.from_numpy(symbols)
    # every symbol of a document is scored against the one law read from z, after the last
    # coordinate token; symbols compete only with symbols
    after_z = logits[:, -1, task.base:]
    expected = torch.nn.functional.cross_entropy(after_z.repeat_interleave(task.symbols, 0), symbols.reshape(-1))
    loss = _document_loss(_symbol_logits(model, coords, task), symbols)
    assert torch.allclose(loss, expected, atol=1e-6)
    full = torch.nn.functional.cross_entropy(logits[:, -1].repeat_interleave(task.symbols, 0),
                                             symbols.reshape(-1) + task.base)
    assert not torch.allclose(loss, full, atol=1e-3)
    earlier = torch.nn.functional.cross_entropy(logits[:, -2, task.base:].repeat_interleave(task.symbols, 0),
                                                symbols.reshape(-1))
    assert not torch.allclose(loss, earlier, atol=1e-3)


def test_reference_learns_at_the_theorys_rate_for_d1():
    task = Task(d=1, s=1.0, symbols=16)
    z_eval, _ = task.eval_points(2048)
    tune = task.documents(0, 1024, stream=2)[0]
    sizes = [1024, 4096, 16384]
    excess = []
    for n in sizes:
        ref = knn_reference(task, *task.documents(0, n), tune, z_eval)
        excess.append(ref.excess.mean())
    alpha = -np.polyfit(np.log(sizes), np.log(excess), 1)[0]
    assert abs(alpha - 2 / 3) < 0.08, alpha


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_feature_oracle_on_a_field_of_few_waves_learns_at_the_parametric_rate(noise):
    # A field of one level of M waves is a model of P = M(V - 1) free parameters (softmax
    # ignores a shift shared by all V logits). For such a model the expected excess of the
    # maximum-likelihood fit is P / 2N over N observations; the prior's pull is negligible here.
    task = Task(d=2, s=1.0, vocab=4, symbols=16, levels=1, noise=noise)
    params = len(task.field.phases) * (task.vocab - 1)
    eval_z, _ = task.eval_points(4096)
    n = 4096
    fits = [feature_oracle(task, *task.documents(seed, n), eval_z) for seed in range(20)]
    assert all(f.converged for f in fits)
    excess = np.mean([f.excess.mean() for f in fits])
    assert excess * 2 * n * task.symbols == pytest.approx(params, rel=0.15)


@pytest.mark.parametrize("kwargs, word", [({"noise": 1.0}, "noise"), ({"digits": 0}, "digits"),
                                          ({"temperature": 0}, "temperature")])
def test_bad_task_options_are_named(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        Task(d=2, s=1.0, **kwargs)


def test_mlp_control_learns_the_map_from_the_coordinates():
    # the control sees only what the tokens say z is; with more documents its exact excess
    # falls, and it beats the best predictor that ignores z (the marginal symbol law)
    task = Task(d=1, s=1.0, symbols=8)
    z_eval, _ = task.eval_points(1024)
    tune = task.documents(0, 512, stream=2)
    settings = TrainSettings.from_dict({"batch_size": 64, "lr": 3e-3, "warmup_steps": 20,
                                        "max_steps": 3000, "eval_every": 50,
                                        "early_stop_patience": 3, "schedule": "wsd"})
    small, large = (train_mlp(task, task.documents(0, n), tune, z_eval, {"width": 64, "layers": 2},
                              settings, 0, threads=1) for n in (128, 4096))
    p = task.probs(z_eval)
    marginal = kl(p, np.broadcast_to(p.mean(axis=0), p.shape)).mean()
    assert large.converged and large.excess.mean() < small.excess.mean() / 2
    assert large.excess.mean() < marginal / 4, (large.excess.mean(), marginal)
    assert entropy(p).mean() > 0  # a floor to be above: the excess is not the loss


def test_unknown_estimator_is_named_before_any_work(tmp_path):
    out = tmp_path / "run.json"
    with pytest.raises(ConfigError, match="unknown estimator 'knn'.*base, wide, mlp, mlp_wide, reference"):
        run_one({}, 2, 1.0, 64, 0, "knn", out, out.with_suffix(".npy"))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_there_is_named_before_any_work(tmp_path):
    out = tmp_path / "run.json"
    with pytest.raises(ConfigError, match="'cuda' asked for, but torch sees no CUDA GPU"):
        run_one({}, 2, 1.0, 64, 0, "base", out, out.with_suffix(".npy"), device="cuda")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("s", [1.0, 2.0])
def test_each_rung_of_the_level_ladder_is_the_missing_levels_share(s):
    # knowing one more level removes 2^(-2s) of the field's missing variance, and the excess
    # of a small logit error is quadratic in it: neighbouring rungs stand 2^(2s) apart
    task = Task(d=2, s=s, levels=6)
    rungs = level_ladder(task, task.eval_points(2048)[0], depth=6)
    assert np.all(np.diff(rungs) < 0) and rungs[-1] == 0.0
    ratios = rungs[1:4] / rungs[2:5]
    assert np.all((ratios > 2 ** (2 * s) / 1.5) & (ratios < 2 ** (2 * s) * 1.5)), ratios


def test_config_field_options_reach_the_field():
    from idscaling.config import validate_config
    arms = [{"d": 2, "s": 1.0}]
    known_d = validate_config({"known_d": {"arms": arms, "docs": [64, 128, 256], "levels": 4,
                                           "max_modes": 40, "level_ratio": 1.5}})["known_d"]
    field = task_from_config(known_d, 2, 1.0).field
    np.testing.assert_array_equal(np.bincount(field.level), [12, 27, 40, 40])  # 12 * 1.5^(2j), capped
    np.testing.assert_allclose(np.unique(field.frequencies), 2.0 * 1.5 ** np.arange(4))


def test_the_wide_twins_train_at_their_own_learning_rate(tmp_path):
    # a twin that trains worse than its learner measures its training, not its width; the
    # config can give the twins a smaller lr, and only the twins
    from idscaling.config import validate_config
    known_d = validate_config({"known_d": {
        "arms": [{"d": 1, "s": 1.0}], "docs": [32, 64, 128], "symbols": 4, "eval_points": 128, "tune_docs": 32,
        "model": {"n_layer": 1, "n_embd": 8, "n_head": 2}, "mlp": {"width": 8, "layers": 1},
        "train": {"batch_size": 16, "lr": 4e-3, "warmup_steps": 2, "max_steps": 4, "eval_every": 2},
        "width_lr_scale": 0.25}})["known_d"]
    lrs = {e: run_one(known_d, 1, 1.0, 32, 0, e, tmp_path / f"{e}.json", tmp_path / f"{e}.npy", threads=1,
                      device="cpu")["lr"] for e in ("base", "wide", "mlp", "mlp_wide")}
    assert lrs == pytest.approx({"base": 4e-3, "wide": 1e-3, "mlp": 4e-3, "mlp_wide": 1e-3})
