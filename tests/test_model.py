"""The GPT-2 model: shapes, parameter counts, causality, loss, transformers layout."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from idscaling.errors import ConfigError
from idscaling.model import GPT, GPTConfig, cross_entropy, export_hf


def tiny(vocab=100, bias=True, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab, n_layer=2, n_embd=32, n_head=4, context=16, bias=bias, **kw)
    return GPT(cfg)


def perturb(model: GPT) -> GPT:
    # fresh biases and LayerNorms are 0 and 1: make every parameter matter for the tests
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def test_forward_shapes_and_initial_loss_near_uniform():
    model = tiny(vocab=100)
    idx, targets = torch.randint(0, 100, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 100)  # padded rows (to 128) are cut
    assert model.transformer.wte.weight.shape == (128, 32)
    # small init: predictions are near uniform, so the loss is near ln(vocab)
    assert abs(loss.item() - math.log(100)) < 0.1
    assert model(idx)[1] is None


def test_head_is_tied_to_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("bias", [True, False])
def test_num_params_matches_gpt2_formula(bias):
    V, L, d, T = 100, 2, 32, 16
    model = tiny(vocab=V, bias=bias)
    per_block = 12 * d * d + (13 * d if bias else 2 * d)  # + biases, 2 LayerNorms
    non_embedding = L * per_block + (2 * d if bias else d)  # + final LayerNorm
    assert model.num_params(non_embedding=True) == non_embedding
    assert model.num_params() == non_embedding + V * d + T * d


def test_flops_per_token_counts_6n_plus_attention():
    model = tiny(vocab=100)
    n = model.num_params() - 16 * 32  # position embeddings are a lookup
    assert model.flops_per_token() == 6 * n + 12 * 2 * 32 * 16


def test_causal_future_tokens_do_not_change_past_logits():
    model = perturb(tiny())
    a = torch.randint(0, 100, (2, 16))
    b = a.clone()
    b[:, 10:] = (b[:, 10:] + 1) % 100
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[:, :10], lb[:, :10], atol=1e-6)
    assert not torch.allclose(la[:, 10:], lb[:, 10:], atol=1e-3)


def test_sequence_longer_than_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


def test_config_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ConfigError, match="n_head"):
        GPTConfig(vocab_size=10, n_layer=1, n_embd=30, n_head=4, context=8)
    with pytest.raises(ConfigError, match="n_layer"):
        GPTConfig(vocab_size=10, n_layer=0, n_embd=32, n_head=4, context=8)


def test_cpu_cross_entropy_matches_torch_value_and_gradient():
    torch.manual_seed(1)
    logits = (4 * torch.randn(64, 50)).requires_grad_()
    ref = logits.detach().clone().requires_grad_()
    targets = torch.randint(0, 50, (64,))
    loss = cross_entropy(logits, targets)
    want = F.cross_entropy(ref, targets)
    (3 * loss).backward()
    (3 * want).backward()
    assert loss.item() == pytest.approx(want.item(), abs=1e-6)
    assert torch.allclose(logits.grad, ref.grad, atol=1e-7)


def test_cpu_cross_entropy_survives_extreme_logits():
    logits = torch.tensor([[0.0, 500.0, -500.0]], requires_grad=True)
    loss = cross_entropy(logits, torch.tensor([2]))
    assert loss.item() == pytest.approx(1000.0)  # exact although p underflows to 0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_dropout_active_only_in_training():
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 100, (2, 16))
    model.train()
    assert not torch.equal(model(idx)[0], model(idx)[0])
    model.eval()
    assert torch.equal(model(idx)[0], model(idx)[0])


@pytest.mark.parametrize("bias", [True, False])
def test_transformers_loads_export_with_identical_logits(tmp_path, bias):
    transformers = pytest.importorskip("transformers")
    model = perturb(tiny(vocab=100, bias=bias))
    export_hf(model, tmp_path, eot_id=7)

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["vocab_size"] == 100
    assert config["n_positions"] == 16 and config["eos_token_id"] == 7
    assert GPTConfig(**config["idscaling"]["gpt_config"]) == model.config
    assert not list(tmp_path.glob(".*.tmp"))

    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in hf.parameters()) >= model.num_params()
    idx = torch.randint(0, 100, (3, 16))
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(ours, theirs, atol=1e-5)
