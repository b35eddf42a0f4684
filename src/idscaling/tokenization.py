"""Tokenize stage: a tokenizer for the corpus, and its train/val splits as flat id files.

``kind: bpe`` trains a byte-level BPE (GPT-2's scheme: ByteLevel pre-tokenizer and
decoder, 256 byte symbols, special token ``<|endoftext|>``) on the train split only, so
that decode(encode(doc)) == doc for every document. ``kind: pretrained`` loads a
Hugging Face fast tokenizer by hub name or local directory through
``transformers.AutoTokenizer`` (hub names need the network or a filled cache with
``HF_HUB_OFFLINE=1``), or a ``tokenizers`` JSON file directly (e.g. another corpus's
``tokens/tokenizer.json``). ``shared: true`` trains one BPE on the train splits of every
corpus (`train_shared_tokenizer`) and tokenizes each corpus with it, so that nats/token
and D mean the same thing for every corpus.

Each split becomes one ``.bin`` file: every document's ids followed by the end-of-text
id, ``uint16`` when the vocabulary fits in 65,536 ids, else ``uint32``. A literal
"<|endoftext|>" inside a document is encoded as text, not as the special token
(``encode_special_tokens``; the flag is not stored in tokenizer.json, so a later stage
that encodes raw text must set it again to get the same ids).

Encoding runs ``Tokenizer.encode_batch_fast`` (no offsets) over batches of documents on
the Rust thread pool, sized from ``threads`` through ``RAYON_NUM_THREADS``; the pool is
created once per process, so the first tokenize call in a process fixes its size.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from idscaling.config import data_size_problem
from idscaling.corpus import DocumentHasher, read_documents
from idscaling.errors import ConfigError, DataError
from idscaling.files import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

EOT_TOKEN = "<|endoftext|>"
# Documents per encode_batch call: enough to keep every Rust thread busy, small enough
# that one batch of ids stays a few MB.
ENCODE_BATCH_DOCS = 512


def set_threads(threads: int) -> None:
    """Size the ``tokenizers`` Rust thread pool (effective before its first use)."""
    threads = max(1, int(threads))
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true" if threads > 1 else "false"


def tokenize_corpus(train_docs: Path, val_docs: Path, out_dir: Path, *, kind: str = "bpe",
                    vocab_size: int = 4096, name: str | None = None, threads: int = 1,
                    corpus: str = "", min_frequency: int = 2,
                    eot_token: str | None = None, shared: bool = False,
                    tokenizer_file: Path | None = None) -> dict:
    """Build the tokenizer and encode both splits into ``out_dir``.

    Writes ``tokenizer.json`` (a ``tokenizers`` JSON, loadable with
    ``tokenizers.Tokenizer.from_file``), ``train.bin``, ``val.bin`` and ``meta.json``
    (vocab_size, eot_id, eot_token, dtype, train/val tokens and docs, tokenizer kind,
    name and sha256, source_sha256 over the split documents, ...). All four appear
    together or not at all. ``eot_token`` overrides the end-of-text token of a
    pretrained tokenizer (default: "<|endoftext|>" if it has one, else eos, else sep).
    shared: a BPE trained on every corpus, read from `tokenizer_file` (the output of
    `train_shared_tokenizer`) instead of trained on this corpus. Returns the meta dict.
    """
    where = f"corpus {corpus}" if corpus else "tokenize"
    out_dir = Path(out_dir)
    set_threads(threads)
    n_train = _count_docs(train_docs, where, "train")
    n_val = _count_docs(val_docs, where, "val")

    if shared and kind != "bpe":
        raise ConfigError("tokenizer.shared applies to kind: bpe (a pretrained tokenizer is "
                          "already the same for every corpus)")
    if shared != (tokenizer_file is not None):
        raise ConfigError("tokenizer.shared needs the shared tokenizer file, and only it does")
    if shared:
        tokenizer, _ = load_pretrained(str(tokenizer_file), eot_token=EOT_TOKEN)
        eot_token, tokenizer_name = EOT_TOKEN, "byte-level-bpe, shared by every corpus"
    elif kind == "bpe":
        if eot_token not in (None, EOT_TOKEN):
            raise ConfigError(f"tokenizer.eot_token: a trained BPE always uses {EOT_TOKEN}")
        tokenizer = train_bpe(read_documents(train_docs), vocab_size=vocab_size,
                              min_frequency=min_frequency, length=n_train,
                              desc=f"{where}: train BPE")
        eot_token, tokenizer_name = EOT_TOKEN, "byte-level-bpe"
        if tokenizer.get_vocab_size() < vocab_size:
            log.warning("%s: BPE stopped at %d tokens (asked for %d): the train split has "
                        "too few pairs seen %d+ times", where, tokenizer.get_vocab_size(),
                        vocab_size, min_frequency)
    elif kind == "pretrained":
        tokenizer, eot_token = load_pretrained(name, eot_token=eot_token)
        tokenizer_name = str(name)
    else:
        raise ConfigError(f"tokenizer.kind: must be bpe or pretrained, got {kind!r}")

    tokenizer.encode_special_tokens = True
    eot_id = tokenizer.token_to_id(eot_token)
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    dtype = token_dtype(vocab)
    log.info("%s: tokenizer %s, vocabulary %d, end-of-text %r = %d, ids as %s",
             where, tokenizer_name, vocab, eot_token, eot_id, dtype.name)

    hasher = DocumentHasher()
    with ExitStack() as stack:
        # Entered first, renamed last: meta.json appears only once the rest is in place.
        meta_tmp = stack.enter_context(atomic_path(out_dir / "meta.json"))
        tok_tmp = stack.enter_context(atomic_path(out_dir / "tokenizer.json"))
        train_tmp = stack.enter_context(atomic_path(out_dir / "train.bin"))
        val_tmp = stack.enter_context(atomic_path(out_dir / "val.bin"))
        tokenizer.save(str(tok_tmp))
        train_tokens = encode_to_bin(tokenizer, train_docs, train_tmp, eot_id=eot_id,
                                     dtype=dtype, hasher=hasher, desc=f"{where}: encode train")
        val_tokens = encode_to_bin(tokenizer, val_docs, val_tmp, eot_id=eot_id,
                                   dtype=dtype, hasher=hasher, desc=f"{where}: encode val")
        meta: dict[str, Any] = {
            "vocab_size": vocab,
            "eot_id": eot_id,
            "eot_token": eot_token,
            "dtype": dtype.name,
            "train_tokens": train_tokens,
            "val_tokens": val_tokens,
            "train_docs": n_train,
            "val_docs": n_val,
            "tokenizer_kind": kind,
            "tokenizer_shared": bool(shared),
            "tokenizer_name": tokenizer_name,
            "tokenizer_sha256": _file_sha256(tok_tmp),
            "source_sha256": hasher.hexdigest(),
            "vocab_size_requested": vocab_size if kind == "bpe" else None,
            "min_frequency": min_frequency if kind == "bpe" else None,
            "encode_special_tokens": True,
            "tokenizers_version": _tokenizers_version(),
        }
        write_json(meta_tmp, meta)
    log.info("%s: %d train tokens in %d documents, %d val tokens in %d documents",
             where, train_tokens, n_train, val_tokens, n_val)
    return meta


def train_shared_tokenizer(train_docs: dict[str, Path], out_dir: Path, *,
                           vocab_size: int = 4096, min_frequency: int = 2,
                           threads: int = 1) -> dict:
    """One byte-level BPE trained on the train splits of several corpora (name -> docs
    parquet), written to out_dir/tokenizer.json with out_dir/meta.json (the corpora and
    their documents). Every corpus's documents count as they are: a larger corpus has
    more say in the merges, as in any mixture a tokenizer is trained on."""
    out_dir = Path(out_dir)
    if not train_docs:
        raise ConfigError("tokenizer.shared: no corpus to train the shared tokenizer on")
    set_threads(threads)
    counts = {name: _count_docs(path, f"corpus {name}", "train") for name, path in train_docs.items()}

    def every_corpus() -> Iterator[list[str]]:
        for path in train_docs.values():
            yield from read_documents(path)

    tokenizer = train_bpe(every_corpus(), vocab_size=vocab_size, min_frequency=min_frequency,
                          length=sum(counts.values()),
                          desc=f"shared BPE on {len(train_docs)} corpora")
    with atomic_path(out_dir / "tokenizer.json") as tmp:
        tokenizer.save(str(tmp))
    meta = {"corpora": counts, "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
            "vocab_size_requested": vocab_size, "min_frequency": min_frequency,
            "tokenizer_sha256": _file_sha256(out_dir / "tokenizer.json")}
    write_json(out_dir / "meta.json", meta)
    log.info("shared tokenizer: %d tokens from the train splits of %s", meta["vocab_size"],
             ", ".join(f"{n} ({c} documents)" for n, c in counts.items()))
    return meta


def train_bpe(texts: Iterable[list[str]], *, vocab_size: int = 4096, min_frequency: int = 2,
              length: int | None = None, desc: str = "train BPE"):
    """Train a byte-level BPE with special token "<|endoftext|>" on batches of texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if not isinstance(vocab_size, int) or vocab_size < 257:
        raise ConfigError(f"tokenizer.vocab_size: must be an integer >= 257 (256 byte symbols "
                          f"and {EOT_TOKEN}), got {vocab_size!r}")
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: it would insert a character, and decode(encode(doc)) must be doc.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bar = tqdm(total=length, unit="doc", desc=desc)

    def counted() -> Iterator[list[str]]:
        for batch in texts:
            bar.update(len(batch))
            yield batch

    with bar:
        tokenizer.train_from_iterator(counted(), trainer=trainer, length=length)
    return tokenizer


def load_pretrained(name: str | None, *, eot_token: str | None = None):
    """Load a fast tokenizer; return (``tokenizers.Tokenizer``, end-of-text token).

    ``name``: a hub id, a local directory (``AutoTokenizer``), or a tokenizer.json file.
    Truncation and padding are switched off: they belong to a model's inputs, not to a
    corpus's ids.
    """
    from tokenizers import Tokenizer

    if not name:
        raise ConfigError("tokenizer.name: required for tokenizer.kind: pretrained "
                          "(a hub id such as gpt2, a local directory, or a tokenizer.json)")
    path = Path(name)
    candidates: list[str | None] = [EOT_TOKEN]
    if path.is_file():
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception on a bad file
            raise ConfigError(f"tokenizer.name: {path} is not a tokenizers JSON file: {e}") from e
    else:
        # Imported here: transformers takes seconds to import and bpe does not need it.
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(name)
        except Exception as e:
            raise ConfigError(
                f"tokenizer.name: cannot load tokenizer {name!r}: {type(e).__name__}: {e}. "
                "Without network access give a local directory, or set HF_HUB_OFFLINE=1 "
                "with the tokenizer already in the Hugging Face cache") from e
        if not getattr(hf, "is_fast", False) or getattr(hf, "backend_tokenizer", None) is None:
            raise ConfigError(f"tokenizer.name: {name!r} has no fast (Rust) tokenizer; "
                              "only fast tokenizers can be saved as tokenizer.json")
        tokenizer = hf.backend_tokenizer
        candidates += [hf.eos_token, hf.sep_token]
    tokenizer.no_truncation()
    tokenizer.no_padding()

    if eot_token is not None:
        if tokenizer.token_to_id(eot_token) is None:
            raise ConfigError(f"tokenizer.eot_token: {eot_token!r} is not in the vocabulary "
                              f"of {name!r}")
        return tokenizer, eot_token
    for token in candidates:
        if token and tokenizer.token_to_id(token) is not None:
            if token != EOT_TOKEN:
                log.warning("tokenizer %s has no %s; documents are joined by %r instead",
                            name, EOT_TOKEN, token)
            return tokenizer, token
    raise ConfigError(f"tokenizer.name: {name!r} has no {EOT_TOKEN}, eos or sep token to join "
                      "documents with; set tokenizer.eot_token")


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (vocab_size <= 65,536), else ``uint32``."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def encode_to_bin(tokenizer, docs: Path, out: Path, *, eot_id: int, dtype: np.dtype,
                  hasher: DocumentHasher | None = None, batch_docs: int = ENCODE_BATCH_DOCS,
                  desc: str = "encode") -> int:
    """Encode every document of a docs parquet, each followed by ``eot_id``, appending
    the ids to ``out`` as ``dtype``; return the number of ids written.

    Writes ``out`` directly: callers wrap it in ``atomic_path``.
    """
    pf = pq.ParquetFile(docs)
    total = 0
    with open(out, "wb") as f, tqdm(total=pf.metadata.num_rows, unit="doc", desc=desc) as bar:
        for batch in pf.iter_batches(batch_size=batch_docs, columns=["text"]):
            texts = batch.column(0).to_pylist()
            encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
            ids = _join_with_eot([e.ids for e in encodings], eot_id, dtype)
            ids.tofile(f)
            total += len(ids)
            if hasher is not None:
                for text in texts:
                    hasher.update(text.encode("utf-8"))
            bar.update(len(texts))
    return total


def _join_with_eot(ids: list[list[int]], eot_id: int, dtype: np.dtype) -> np.ndarray:
    if not ids:
        return np.empty(0, dtype=dtype)
    # One small array per document, then one copy: faster than a flat Python list.
    return np.concatenate([np.array(x + [eot_id], dtype=dtype) for x in ids])


# ---------------------------------------------------------------------------------------
# reading the .bin files back


def read_tokens_meta(path: Path) -> dict:
    """Load and check tokens/meta.json."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token metadata {path} does not exist")
    meta = read_json(path)
    for key in ("vocab_size", "eot_id", "dtype", "train_tokens", "val_tokens"):
        if key not in meta:
            raise DataError(f"token metadata {path} lacks the key {key!r}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"token metadata {path}: dtype must be uint16 or uint32, got {meta['dtype']!r}")
    if not isinstance(meta["vocab_size"], int) or meta["vocab_size"] < 1:
        raise DataError(f"token metadata {path}: vocab_size must be a positive integer")
    return meta


def open_tokens(path: Path, dtype: str, expected: int, vocab_size: int, check_upto: int) -> np.memmap:
    """Memory-map a flat token file and check its length and the ids it holds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token file {path} does not exist")
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != expected * itemsize:
        raise DataError(
            f"token file {path} has {size} bytes; meta.json says {expected} {dtype} ids "
            f"({expected * itemsize} bytes)"
        )
    data = np.memmap(path, dtype=dtype, mode="r")
    # an id outside the vocabulary would crash an embedding lookup (a device assert on GPU)
    chunk = 1 << 24
    for i in range(0, check_upto, chunk):
        top = int(data[i : min(i + chunk, check_upto)].max())
        if top >= vocab_size:
            raise DataError(f"token file {path} holds id {top}, outside the vocabulary of {vocab_size}")
    return data


def check_subset(meta_json: Path, tokens: int, out_json: Path, *, corpus: str = "",
                 context: int = 0, train_bin: Path | None = None) -> dict:
    """Check that a data size D fits the corpus before training; write its summary.

    Raises ``DataError`` when ``tokens`` exceeds the train tokens, when it is not more
    than ``context`` (not one training window), or when the validation split is not
    more than ``context`` tokens. Else writes ``out_json`` with tokens, train_tokens,
    fraction and docs: the whole documents in the first ``tokens`` ids of ``train_bin``
    (exact when it is given, else estimated from the mean document length).
    """
    meta = read_tokens_meta(meta_json)
    name = corpus or "?"
    train_tokens, val_tokens = int(meta["train_tokens"]), int(meta["val_tokens"])
    if not isinstance(tokens, (int, np.integer)) or tokens < 1:
        raise ConfigError(f"data_tokens: must be positive integers, got {tokens!r}")
    problem = data_size_problem(int(tokens), context, train_tokens, name)
    if problem:
        raise DataError(problem)
    if val_tokens <= context:
        raise DataError(f"corpus {name} has {val_tokens:,} val tokens, not more than "
                        f"train.context {context:,}; raise split.val_fraction")

    if train_bin is not None:
        docs, exact = _count_eot(Path(train_bin), np.dtype(meta["dtype"]), int(meta["eot_id"]),
                                 tokens), True
    else:
        docs, exact = int(tokens * int(meta["train_docs"]) / train_tokens), False
    summary = {"corpus": corpus, "tokens": int(tokens), "train_tokens": train_tokens,
               "fraction": tokens / train_tokens, "docs": docs, "docs_exact": exact,
               "context": context}
    write_json(out_json, summary)
    log.info("corpus %s: D=%d is %.1f%% of the train split, %d whole documents",
             name, tokens, 100 * summary["fraction"], docs)
    return summary


def _count_eot(bin_path: Path, dtype: np.dtype, eot_id: int, tokens: int) -> int:
    ids = np.memmap(bin_path, dtype=dtype, mode="r")
    count, step = 0, 1 << 24
    for start in range(0, min(tokens, len(ids)), step):
        count += int(np.count_nonzero(ids[start:min(start + step, tokens)] == eot_id))
    return count


def _count_docs(docs: Path, where: str, split: str) -> int:
    try:
        n = pq.ParquetFile(docs).metadata.num_rows
    except FileNotFoundError as e:
        raise DataError(f"{where}: {split} documents {docs} do not exist") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"{where}: {split} documents {docs} are not a parquet file: {e}") from e
    if n == 0:
        raise DataError(f"{where}: the {split} split ({docs}) has no documents")
    return n


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _tokenizers_version() -> str:
    import tokenizers

    return tokenizers.__version__
