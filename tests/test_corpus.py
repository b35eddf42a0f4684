"""Corpus stage: local and hf sources, cleaning, errors, atomic output, split."""

import gzip
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from idscaling import corpus as corpus_mod
from idscaling import sources
from idscaling.corpus import DocumentHasher, build_corpus, split_corpus, write_documents
from idscaling.errors import ConfigError, DataError


def build(tmp_path, spec, name="c"):
    out = tmp_path / "out"
    meta = build_corpus(name, spec, out / "docs.parquet", out / "meta.json",
                        cache_dir=tmp_path / "cache")
    table = pq.read_table(out / "docs.parquet")
    return table["text"].to_pylist(), meta, table


def leftovers(tmp_path):
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# ---------------------------------------------------------------- local text


def test_directory_one_document_per_file_sorted_hidden_skipped(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_text("bee")
    (src / "a.txt").write_text("ay")
    (src / "sub" / "c.md").write_text("sea")
    (src / ".hidden").write_text("secret")
    (src / ".git").mkdir()
    (src / ".git" / "x").write_text("git object")
    texts, meta, table = build(tmp_path, {"source": "local", "path": str(src)})
    assert texts == ["ay", "bee", "sea"]
    assert table["id"].to_pylist() == [0, 1, 2]
    assert table.schema.field("id").type == pa.int64()
    assert meta["files"] == 3 and meta["documents"] == 3


def test_glob_and_separator_and_trailing_separator(tmp_path):
    (tmp_path / "x1.txt").write_text("one\n\ntwo\n\n")
    (tmp_path / "x2.txt").write_text("three")
    (tmp_path / "y.txt").write_text("not matched")
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "x*.txt"),
                                      "format": "text", "separator": "\n\n"})
    assert texts == ["one", "two", "three"]
    assert meta["dropped"]["empty"] == 0  # no phantom empty document after the last separator


def test_separator_across_read_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_READ_CHARS", 7)
    docs = [f"document number {i}" for i in range(20)]
    (tmp_path / "big.txt").write_text("<SEP>".join(docs))
    texts, _, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "big.txt"),
                                   "separator": "<SEP>"})
    assert texts == docs


def test_newlines_normalised_before_splitting_and_switchable(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\r\n\r\nc\rd")
    texts, _, _ = build(tmp_path, {"source": "local", "path": str(path), "separator": "\n\n"})
    assert texts == ["a\nb", "c\nd"]
    texts, _, _ = build(tmp_path, {"source": "local", "path": str(path),
                                   "clean": {"normalize_newlines": False}})
    assert texts == ["a\r\nb\r\n\r\nc\rd"]


def test_gzip_detected_by_content(tmp_path):
    with gzip.open(tmp_path / "doc.txt.gz", "wt") as f:
        f.write("compressed text")
    (tmp_path / "plain.gz").write_text("not gzip despite the name")
    texts, _, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "*.gz")})
    assert texts == ["compressed text", "not gzip despite the name"]


# ---------------------------------------------------------------- jsonl / parquet


def write_jsonl(path, records, opener=open):
    with opener(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def test_jsonl_gzip_and_text_field(tmp_path):
    write_jsonl(tmp_path / "d.jsonl.gz", [{"body": "first", "n": 1}, {"body": "second"}],
                opener=gzip.open)
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl.gz"),
                                      "text_field": "body"})
    assert texts == ["first", "second"]
    assert meta["formats"] == ["jsonl"]


def test_jsonl_wrong_text_field_lists_fields(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"body": "x", "title": "y"}])
    with pytest.raises(DataError, match=r"corpora\.c\.text_field 'text'.*body, title"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl")})
    assert leftovers(tmp_path) == []


def test_jsonl_bad_line_and_non_text_value(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 2 is not JSON"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "bad.jsonl")})
    write_jsonl(tmp_path / "num.jsonl", [{"text": 3}])
    with pytest.raises(DataError, match=r"num\.jsonl line 1 is a int, not text"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "num.jsonl")})


def test_parquet_field_nulls_counted_and_wrong_field(tmp_path):
    pq.write_table(pa.table({"content": ["a", None, "b"], "k": [1, 2, 3]}),
                   tmp_path / "d.parquet")
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "d.parquet"),
                                      "format": "parquet", "text_field": "content"})
    assert texts == ["a", "b"]
    assert meta["dropped"]["null"] == 1 and meta["documents_read"] == 3
    with pytest.raises(DataError, match=r"'text' is not a column of .*d\.parquet; its columns: "
                                        r"content, k"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "d.parquet")})
    with pytest.raises(DataError, match=r"has type int64, not string"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "d.parquet"),
                         "text_field": "k"})


# ---------------------------------------------------------------- cleaning


def test_cleaning_counts_and_hash(tmp_path):
    docs = ["keep me", "", "   \n", "keep me", "tiny", "x" * 50, "also kept"]
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in docs])
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl"),
                                      "clean": {"min_chars": 5, "max_chars": 20}})
    assert texts == ["keep me", "also kept"]
    assert meta["dropped"] == {"null": 0, "empty": 2, "too_short": 1, "too_long": 1,
                               "duplicate": 1}
    assert meta["documents_read"] == 7 and meta["documents"] == 2
    h = DocumentHasher()
    for t in texts:
        h.update(t.encode())
    assert meta["sha256"] == h.hexdigest()
    assert meta["chars"] == sum(map(len, texts))


def test_cleaning_switched_off_keeps_everything(tmp_path):
    docs = ["dup", "dup", " "]
    write_jsonl(tmp_path / "d.jsonl", [{"text": t} for t in docs])
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl"),
                                      "clean": {"dedup": False, "drop_empty": False}})
    assert texts == docs
    assert sum(meta["dropped"].values()) == 0


def test_hash_separates_document_boundaries(tmp_path):
    a, b = DocumentHasher(), DocumentHasher()
    for t in ["ab", "c"]:
        a.update(t.encode())
    for t in ["a", "bc"]:
        b.update(t.encode())
    assert a.hexdigest() != b.hexdigest()


def test_max_docs_caps_reading(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"text": f"doc {i}"} for i in range(10)])
    texts, meta, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl"),
                                      "max_docs": 4})
    assert texts == [f"doc {i}" for i in range(4)] and meta["documents_read"] == 4


# ---------------------------------------------------------------- bad input


def test_missing_path_and_no_match_name_corpus_and_key(tmp_path):
    with pytest.raises(DataError, match=r"corpus prose: corpora\.prose\.path .* does not exist"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "nope.txt")}, name="prose")
    with pytest.raises(DataError, match=r"corpus prose: no file matches corpora\.prose\.path"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "*.nope")}, name="prose")


def test_empty_corpus_after_cleaning_leaves_nothing(tmp_path):
    (tmp_path / "a.txt").write_text("  \n ")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(DataError, match=r"corpus c: no documents left after cleaning: read 2, "
                                        r"dropped empty 2"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "*.txt")})
    assert leftovers(tmp_path) == []


def test_undecodable_bytes_name_file_and_offset(tmp_path):
    (tmp_path / "a.txt").write_text("fine")
    (tmp_path / "b.txt").write_bytes(b"ok " * 5 + b"\xff tail")
    with pytest.raises(DataError, match=r"b\.txt is not valid utf-8 at byte offset 15"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "*.txt")})
    # the first file was already read and written: still nothing is left behind
    assert leftovers(tmp_path) == []


def test_undecodable_offset_inside_gzip_and_across_chunks(tmp_path):
    # The offset search reads 1 MiB chunks: put a 2-byte character across the first
    # boundary (byte 1,048,575 starts it) and the bad byte just after it.
    data = b"a" + "é".encode() * (1 << 19) + b"\xff rest"
    with gzip.open(tmp_path / "z.txt.gz", "wb") as f:
        f.write(data)
    with pytest.raises(DataError, match=r"byte offset 1048577 \(after gzip decompression\)"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "z.txt.gz")})


def test_undecodable_jsonl_offset(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(b'{"text": "a"}\n{"text": "\xfe"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl line 2 is not valid utf-8 at byte offset 24"):
        build(tmp_path, {"source": "local", "path": str(tmp_path / "d.jsonl")})


def test_other_encoding_by_key(tmp_path):
    (tmp_path / "l1.txt").write_bytes("café".encode("latin-1"))
    texts, _, _ = build(tmp_path, {"source": "local", "path": str(tmp_path / "l1.txt"),
                                   "encoding": "latin-1"})
    assert texts == ["café"]


def test_bad_spec_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"corpora\.c: unknown key\(s\) textfield"):
        build(tmp_path, {"source": "local", "path": "x", "textfield": "t"})
    with pytest.raises(ConfigError, match=r"corpora\.c\.source"):
        build(tmp_path, {"source": "s3", "path": "x"})
    with pytest.raises(ConfigError, match=r"corpora\.c\.clean: unknown key\(s\) dedupe"):
        build(tmp_path, {"source": "local", "path": "x", "clean": {"dedupe": True}})
    with pytest.raises(ConfigError, match=r"corpora\.c\.max_docs"):
        build(tmp_path, {"source": "local", "path": "x", "max_docs": 0})


# ---------------------------------------------------------------- hf


@pytest.fixture
def hf_dataset_dir(tmp_path, monkeypatch):
    """A dataset folder that datasets.load_dataset(path) loads like a hub dataset."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    root = tmp_path / "my_dataset"
    (root / "data").mkdir(parents=True)
    pq.write_table(pa.table({"story": [f"story {i}" for i in range(30)], "n": list(range(30))}),
                   root / "data" / "train-00000-of-00001.parquet")
    return root


@pytest.mark.parametrize("streaming", [False, True])
def test_hf_local_dataset_with_max_docs(tmp_path, hf_dataset_dir, streaming):
    spec = {"source": "hf", "dataset": str(hf_dataset_dir), "split": "train",
            "text_field": "story", "streaming": streaming, "max_docs": 12, "revision": None}
    texts, meta, _ = build(tmp_path, spec)
    assert texts == [f"story {i}" for i in range(12)]
    assert meta["documents_read"] == 12
    assert (meta["hf_dataset"], meta["hf_split"], meta["hf_revision"]) == (
        str(hf_dataset_dir), "train", None)
    assert (meta["hf_fingerprint"] is None) == streaming
    if not streaming:  # prepared arrow files go under cache_dir (no HF_HOME set here)
        assert list((tmp_path / "cache" / "hf").iterdir())


@pytest.mark.parametrize("env", [None, "HF_HOME", "HF_DATASETS_CACHE"])
def test_hf_call_passes_keys_and_honours_user_cache(tmp_path, monkeypatch, env):
    import datasets

    seen = {}

    def fake_load_dataset(path, **kwargs):
        seen.update(kwargs, path=path)
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    if env:
        monkeypatch.setenv(env, str(tmp_path / "user-cache"))
    spec = {"source": "hf", "dataset": "org/name", "config": "en", "split": "validation",
            "revision": "abc123", "streaming": False, "data_dir": "data/sql",
            "data_tokens": [1000]}
    with pytest.raises(DataError, match=r"org/name.*split 'validation'.*stop here"):
        build(tmp_path, spec)
    assert seen["path"] == "org/name" and seen["name"] == "en"
    assert seen["revision"] == "abc123" and seen["split"] == "validation"
    assert seen["data_dir"] == "data/sql" and "data_tokens" not in seen
    assert seen.get("cache_dir") == (None if env else str(tmp_path / "cache" / "hf"))


def test_hf_wrong_text_field_and_missing_dataset(tmp_path, hf_dataset_dir):
    with pytest.raises(DataError, match=r"corpora\.c\.text_field 'text' is not a field .*"
                                        r"story, n"):
        build(tmp_path, {"source": "hf", "dataset": str(hf_dataset_dir), "streaming": True})
    with pytest.raises(DataError, match=r"cannot load corpora\.c\.dataset"):
        build(tmp_path, {"source": "hf", "dataset": str(tmp_path / "absent"), "streaming": True})
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- split


def make_docs(tmp_path, n):
    path = tmp_path / "docs.parquet"
    corpus_mod.write_documents(path, (f"doc {i}" for i in range(n)))
    return path


def test_split_by_document_seeded_and_nested(tmp_path):
    docs = make_docs(tmp_path, 100)
    out = {}
    for seed in (0, 0, 1):
        tr, va = tmp_path / f"tr{seed}.parquet", tmp_path / f"va{seed}.parquet"
        info = split_corpus(docs, tr, va, val_fraction=0.1, seed=seed, corpus="c")
        out.setdefault(seed, []).append((pq.read_table(tr)["id"].to_pylist(),
                                         pq.read_table(va)["id"].to_pylist()))
        assert info["train_docs"] == 90 and info["val_docs"] == 10
    (tr0, va0), (tr0b, va0b) = out[0]
    assert (tr0, va0) == (tr0b, va0b)  # same seed, same split and order
    assert sorted(tr0 + va0) == list(range(100)) and not set(tr0) & set(va0)
    assert tr0 != sorted(tr0)  # train is in shuffled order, which defines the D prefixes
    assert out[1][0][0] != tr0
    text = pq.read_table(tmp_path / "tr0.parquet")
    assert text["text"].to_pylist() == [f"doc {i}" for i in tr0]  # rows stay whole


def test_split_too_small_and_bad_fraction(tmp_path):
    docs = make_docs(tmp_path, 1)
    with pytest.raises(DataError, match=r"corpus tiny has 1 document\(s\): too few"):
        split_corpus(docs, tmp_path / "t.parquet", tmp_path / "v.parquet", corpus="tiny")
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "v.parquet").exists()
    with pytest.raises(ConfigError, match=r"split\.val_fraction"):
        split_corpus(make_docs(tmp_path, 10), tmp_path / "t.parquet", tmp_path / "v.parquet",
                     val_fraction=1.0)
    with pytest.raises(DataError, match=r"does not exist"):
        split_corpus(tmp_path / "absent.parquet", tmp_path / "t.parquet", tmp_path / "v.parquet")


def test_split_at_least_one_val_document(tmp_path):
    info = split_corpus(make_docs(tmp_path, 5), tmp_path / "t.parquet", tmp_path / "v.parquet",
                        val_fraction=0.01)
    assert info == {"train_docs": 4, "val_docs": 1, "seed": 0, "val_fraction": 0.01}
    assert np.array_equal(np.sort(pq.read_table(tmp_path / "t.parquet")["id"].to_numpy()),
                          np.setdiff1d(np.arange(5),
                                       pq.read_table(tmp_path / "v.parquet")["id"].to_numpy()))


# ---------------------------------------------------------------- negative controls


def test_shuffle_control_keeps_each_documents_words_and_loses_their_order(tmp_path):
    base = ["the cat sat on the mat\nand then it slept", "one two three four five six seven",
            "", "single"]
    write_documents(tmp_path / "base.parquet", base)
    spec = {"source": "control", "of": "real", "kind": "shuffle", "seed": 3}
    texts, meta, _ = build_corpus_with_base(tmp_path, spec)
    kept = [b for b in base if b]
    assert len(texts) == len(kept)
    for before, after in zip(kept, texts):
        assert sorted(before.split()) == sorted(after.split())
        assert len(after) == len(before)
        assert re.findall(r"\s+", after) == re.findall(r"\s+", before)  # the layout stays
    assert texts[1] != kept[1]  # seven words: a shuffle that keeps their order is 1 in 5040
    assert meta["control_of"] == "real" and meta["control_kind"] == "shuffle"
    again, _, _ = build_corpus_with_base(tmp_path, spec, out="again")
    assert again == texts  # seeded


def test_unigram_control_keeps_lengths_and_word_frequencies(tmp_path):
    base = ["a a a a b", "a b c"] * 200
    write_documents(tmp_path / "base.parquet", base)
    texts, _, _ = build_corpus_with_base(tmp_path, {"source": "control", "of": "real",
                                                    "kind": "unigram", "clean": {"dedup": False}})
    assert [len(t.split()) for t in texts] == [len(b.split()) for b in base]
    words = " ".join(texts).split()
    assert set(words) == {"a", "b", "c"}
    assert words.count("a") / len(words) == pytest.approx(5 / 8, abs=0.03)  # 1000 of 1600


def build_corpus_with_base(tmp_path, spec, out="out"):
    d = tmp_path / out
    meta = build_corpus("ctl", spec, d / "docs.parquet", d / "meta.json",
                        cache_dir=tmp_path / "cache", base_docs=tmp_path / "base.parquet")
    table = pq.read_table(d / "docs.parquet")
    return table["text"].to_pylist(), meta, table
