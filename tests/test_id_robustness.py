"""The ID's robustness checks: against context position (a known answer per position), and
against model and training step (every model sees the reference embedding's points)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from idscaling.embed import EOT, embed_corpus
from idscaling.errors import ConfigError, DataError
from idscaling.id_robustness import run_robustness
from idscaling.intrinsic_dim import estimate_id

FAST = dict(threads=1, progress=False)


def sphere(n, d, ambient, rng):
    """n points uniform on S^d, rotated into R^ambient."""
    x = rng.standard_normal((n, d + 1))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))
    return (x @ q[: d + 1]).astype(np.float32)


def write_embedding(d, X, positions, context):
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "layer3.npy", X)
    np.save(d / "positions.npy", positions.astype(np.int32))
    (d / "meta.json").write_text(json.dumps({"layers": [3], "context": context,
                                             "min_position": 0}))


def test_position_bins_read_the_dimension_of_their_own_positions(tmp_path):
    """Early positions on S^2, late ones on S^6: each bin reads its own dimension, all
    positions together read something between, every row at one number of points."""
    rng = np.random.default_rng(0)
    early, late = sphere(1500, 2, 16, rng), sphere(1500, 6, 16, rng)
    X = np.concatenate([early, late])
    positions = np.concatenate([rng.integers(0, 32, 1500), rng.integers(32, 64, 1500)])
    write_embedding(tmp_path / "emb", X, positions, context=64)
    out = run_robustness(tmp_path / "emb", tmp_path / "rob.json", runs=[], snapshots=None,
                         val_docs=tmp_path / "unused", tokenizer=tmp_path / "unused",
                         embedding={}, k=20, bootstrap=20, position_bins=2, **FAST)
    rows = pd.DataFrame(out["rows"])
    bins = rows[rows["run"] == "bin"].sort_values("position_lo")
    everything = rows[rows["run"] == "all"].iloc[0]
    assert list(bins["position_lo"]) == [0, 32] and list(bins["position_hi"]) == [32, 64]
    assert bins["id"].iloc[0] == pytest.approx(2.0, abs=0.3)
    assert bins["id"].iloc[1] == pytest.approx(5.8, abs=0.6)  # the MLE reads S^6 low
    assert bins["id"].iloc[0] < everything["id"] < bins["id"].iloc[1]
    assert set(rows["n_points"]) == {1500}
    assert ((rows["ci_low"] < rows["id"]) & (rows["id"] < rows["ci_high"])).all()
    assert json.loads((tmp_path / "rob.json").read_text())["rows"] == out["rows"]


def test_position_axis_needs_positions_and_enough_points(tmp_path):
    rng = np.random.default_rng(1)
    write_embedding(tmp_path / "emb", sphere(300, 2, 8, rng), rng.integers(0, 64, 300), 64)
    kwargs = dict(runs=[], snapshots=None, val_docs=tmp_path, tokenizer=tmp_path,
                  embedding={}, k=20, **FAST)
    with pytest.raises(DataError, match="too few for k=20"):
        run_robustness(tmp_path / "emb", tmp_path / "a.json", position_bins=16, **kwargs)
    with pytest.raises(ConfigError, match="position_bins"):
        run_robustness(tmp_path / "emb", tmp_path / "b.json", position_bins=0, **kwargs)
    (tmp_path / "emb" / "positions.npy").unlink()
    with pytest.raises(DataError, match="positions.npy"):
        run_robustness(tmp_path / "emb", tmp_path / "c.json", position_bins=2, **kwargs)
    assert not list(tmp_path.glob("*.json"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three random GPT-2s in the engine's run layout (one with two snapshots), a tokenizer,
    val documents, and the reference embedding of the first run."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    d = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(words, 60)) for _ in range(80)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(d / "tokenizer.json"))
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(d / "val.parquet")

    def model(path, width, seed, tokens):
        torch.manual_seed(seed)
        cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=32, n_embd=width,
                         n_layer=1, n_head=2)
        GPT2LMHeadModel(cfg).save_pretrained(path)
        (path / "metrics.json").write_text(json.dumps(
            {"params_nonembed": 12 * width ** 2, "tokens": tokens, "seed": 0}))

    ref = d / "big" / "D2000" / "s0"
    model(ref, 32, 0, 2000)
    model(d / "small" / "D2000" / "s0", 16, 1, 2000)
    model(d / "small" / "D1000" / "s0", 16, 2, 1000)
    for step, seed in [(0, 3), (7, 4)]:
        model(ref / "snapshots" / f"step{step}", 32, seed, 2000)
    (ref / "snapshots" / "steps.json").write_text(json.dumps({"steps": [0, 7]}))
    embedding = dict(docs=60, tokens_per_doc=20, context=32, device="cpu")
    embed_corpus(str(ref), d / "val.parquet", d / "emb", tokenizer=d / "tokenizer.json",
                 layer=-1, **embedding, **FAST)
    return d, ref, embedding


def test_every_model_and_snapshot_embeds_the_reference_points(runs, tmp_path):
    d, ref, embedding = runs
    pairs = [("big", ref), ("small", d / "small/D2000/s0"), ("small", d / "small/D1000/s0")]
    id_options = dict(k=10, metric="cosine", protocol="batched", batch_size=500, bootstrap=10)
    out = run_robustness(d / "emb", tmp_path / "rob.json", runs=pairs,
                         snapshots=ref / "snapshots", val_docs=d / "val.parquet",
                         tokenizer=d / "tokenizer.json", embedding=embedding,
                         position_bins=2, **id_options, **FAST)
    rows = pd.DataFrame(out["rows"])
    models = rows[rows["axis"] == "model"]
    assert list(models["run"]) == ["big/D2000/s0", "small/D2000/s0", "small/D1000/s0"]
    assert list(models["params_nonembed"]) == [12 * 32 ** 2, 12 * 16 ** 2, 12 * 16 ** 2]
    # the reference run's row is the ID stage's estimate of the reference embedding: the
    # same documents, positions and protocol
    X = np.load(d / "emb" / "layer1.npy")
    direct = estimate_id(X, method="mle", k=10, metric="cosine", batch_size=500, bootstrap=10,
                         seed=0, **FAST)
    big = models.iloc[0]
    assert (big["id"], big["ci_low"], big["ci_high"], big["n_points"]) == pytest.approx(
        (direct.id, direct.ci_low, direct.ci_high, direct.n_points))
    # other models measure the same number of points, and another geometry
    assert set(models["n_points"]) == {direct.n_points}
    assert len(set(models["id"].round(6))) == 3
    steps = rows[rows["axis"] == "step"]
    assert list(steps["step"]) == [0, 7] and set(steps["run"]) == {"big/D2000/s0"}
    assert steps["id"].nunique() == 2 and not np.isclose(steps["id"], big["id"]).any()


def test_a_reference_run_without_snapshots_says_so(runs, tmp_path):
    d, ref, embedding = runs
    snaps = tmp_path / "run" / "snapshots"
    snaps.mkdir(parents=True)
    (snaps / "steps.json").write_text(json.dumps({"steps": []}))
    out = run_robustness(d / "emb", tmp_path / "rob.json", runs=[], snapshots=snaps,
                         val_docs=d / "val.parquet", tokenizer=d / "tokenizer.json",
                         embedding=embedding, k=10, position_bins=1, bootstrap=0, **FAST)
    assert {r["axis"] for r in out["rows"]} == {"position"}
    assert "no snapshots" in out["notes"][0]
