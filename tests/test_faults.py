"""A full file system during tokenization, training and embedding: the stage fails with an
error that names the file and says why, leaves none of its outputs, and after space is
freed the same call completes. The file system is a small tmpfs the test mounts (root
only; skipped with the reason elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from idscaling.corpus import write_documents
from idscaling.errors import OutputError
from idscaling.tokenization import tokenize_corpus
from idscaling.train import train_run


def _mount(path: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                   check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs; grow(size) remounts it larger, as freeing space would."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    try:
        _mount(mount, "256k")
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        pytest.skip(f"cannot mount a tmpfs here: {getattr(e, 'stderr', e)}")

    def grow(size="64m"):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True,
                       capture_output=True)

    yield mount, grow
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # lazy: open maps


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_tokenization_on_a_full_disk(tmp_path, small_fs):
    mount, grow = small_fs
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(400)]
    train = [" ".join(rng.choice(words, 400)) for _ in range(300)]  # ~120k ids: > 256 KiB
    write_documents(tmp_path / "train.parquet", train)
    write_documents(tmp_path / "val.parquet", train[:20])
    out = mount / "tokens"
    with pytest.raises(OutputError, match=r"(train|val)\.bin: the file system .* is full"):
        tokenize_corpus(tmp_path / "train.parquet", tmp_path / "val.parquet", out,
                        vocab_size=600, corpus="c")
    assert _files(out) == []  # all four outputs together or none, no temp files
    grow()
    meta = tokenize_corpus(tmp_path / "train.parquet", tmp_path / "val.parquet", out,
                           vocab_size=600, corpus="c")
    assert _files(out) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    assert meta["train_tokens"] > 0


def test_training_on_a_full_disk(tmp_path, small_fs):
    mount, grow = small_fs
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    ids = np.random.default_rng(0).integers(1, 256, 20_000).astype(np.uint16)
    ids.tofile(tokens / "train.bin")
    ids[:4000].tofile(tokens / "val.bin")
    (tokens / "meta.json").write_text(json.dumps(dict(
        vocab_size=256, eot_id=0, dtype="uint16", train_tokens=20_000, val_tokens=4000)))
    # 4 x 128 weights and their optimiser state: a checkpoint of about 1 MB
    kw = dict(model=dict(n_layer=2, n_embd=128, n_head=2), tokens=8000, seed=0, threads=1,
              train=dict(context=32, batch_size=4, max_steps=6, warmup_steps=1, eval_every=3,
                         eval_tokens=256, checkpoint_every=3))
    run_dir = mount / "run"
    with pytest.raises(OutputError, match=r"last\.pt.*full|full.*last\.pt|ckpt"):
        train_run(tokens / "train.bin", tokens / "val.bin", tokens / "meta.json", run_dir, **kw)
    left = _files(run_dir)
    assert not {"metrics.json", "model.safetensors", "history.csv", "config.json"} & set(left)
    assert not [f for f in left if f.endswith(".tmp")], left
    grow()
    m = train_run(tokens / "train.bin", tokens / "val.bin", tokens / "meta.json", run_dir, **kw)
    assert m["steps"] == 6
    assert {"metrics.json", "model.safetensors", "history.csv", "config.json"} <= set(_files(run_dir))


def test_embedding_on_a_full_disk(tmp_path, small_fs):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel

    from idscaling.embed import EOT, embed_corpus

    mount, grow = small_fs
    texts = [f"document {i} " + "some words here " * 8 for i in range(200)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOT], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(tmp_path / "tokenizer.json"))
    GPT2LMHeadModel(GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=64,
                               n_layer=1, n_head=2)).save_pretrained(tmp_path / "model")
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_parquet(tmp_path / "val.parquet")
    out = mount / "emb"
    kw = dict(tokenizer=tmp_path / "tokenizer.json", layer="all", tokens_per_doc=32,
              progress=False, threads=1, device="cpu")
    # 2 layers x ~5,600 points x 64 floats = 2.9 MB: the map's blocks cannot be had
    with pytest.raises(OutputError, match=r"layer\d\.npy"):
        embed_corpus(str(tmp_path / "model"), tmp_path / "val.parquet", out, **kw)
    assert _files(out) == []
    grow()
    meta = embed_corpus(str(tmp_path / "model"), tmp_path / "val.parquet", out, **kw)
    assert _files(out) == ["layer0.npy", "layer1.npy", "meta.json", "positions.npy"]
    assert np.load(out / "layer1.npy").shape == (meta["n_points"], 64)
