"""Corpus stage: read a source, clean it, write one row per document; then split it.

Sources (``spec["source"]``):

- ``builtin``: see :mod:`idscaling.builtin` (``python-stdlib``, ``python-docs``).
- ``local``: ``path`` is a file, a directory (every non-hidden file below it, sorted) or a
  glob (sorted matches). ``format`` is ``text`` (a document per file, or the file cut by
  ``separator``), ``jsonl`` or ``parquet`` (both read ``text_field``), or ``auto`` (the
  default: by extension, ``.jsonl``/``.ndjson`` and ``.parquet``, else text).
  ``compression`` is ``auto`` (gzip when the file starts with gzip's magic bytes),
  ``gzip`` or ``none``; ``encoding`` defaults to ``utf-8`` and decoding is strict.
- ``hf``: ``datasets.load_dataset(dataset, config, split=..., streaming=..., revision=...)``
  (and ``data_dir``/``data_files`` when given).
  Its cache goes to ``cache_dir/hf`` unless the user set ``HF_HOME`` or
  ``HF_DATASETS_CACHE`` (then datasets' own cache is used, so a shared cluster cache is
  honoured). Offline mode is datasets' own (``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE``).

``max_docs`` caps the documents read from any source (before cleaning). Cleaning, each
step switchable under ``clean:``, runs in this order: newline normalisation (``\\r\\n``
and ``\\r`` to ``\\n``; for ``text`` files it happens while reading, so that
``separator`` sees normalised text), dropping empty (whitespace-only) documents, length
bounds in characters, then exact-duplicate removal (first occurrence kept). Null values
in a jsonl/parquet/hf field are always dropped. Every drop is counted in ``meta.json``.

Document hashes (``sha256`` in meta.json) are over the UTF-8 bytes of each document in
order, each preceded by its length as 8 little-endian bytes, so that a boundary moved
between two documents changes the hash.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from idscaling import builtin
from idscaling.errors import ConfigError, DataError
from idscaling.files import atomic_path, write_json
from idscaling.sources import iter_hf, iter_local

log = logging.getLogger(__name__)

DEFAULT_CLEAN = {"normalize_newlines": True, "drop_empty": True, "dedup": True,
                 "min_chars": 0, "max_chars": None}
DOCS_SCHEMA = pa.schema([("id", pa.int64()), ("text", pa.string())])

# data_tokens may sit in a corpus's config (its own D grid); later stages read it.
_COMMON_KEYS = {"source", "clean", "max_docs", "data_tokens"}
_SOURCE_KEYS = {
    "local": {"path", "format", "text_field", "separator", "compression", "encoding"},
    "hf": {"dataset", "config", "split", "text_field", "streaming", "revision", "data_dir",
           "data_files"},
    "control": {"of", "kind", "seed"},
}
CONTROL_KINDS = ("shuffle", "unigram")
# Rows per parquet row group / text chunk read at once: small enough to stream, large
# enough that per-batch overhead vanishes.
_BATCH_DOCS = 8192
_BATCH_CHARS = 64 << 20


# --------------------------------------------------------------------------- public


def build_corpus(name: str, spec: dict, out_docs: Path, out_meta: Path, *,
                 cache_dir: Path, threads: int = 1, base_docs: Path | None = None) -> dict:
    """Read corpus ``name`` from its source ``spec``, clean it, and write it.

    Writes ``out_docs`` (parquet with columns ``id`` int64 and ``text`` string, one row a
    document, ids 0..n-1 in source order) and ``out_meta`` (JSON: the spec, the cleaning
    options, counts read/kept/dropped by reason, characters, and the documents' sha256).
    Returns the meta dict. Raises ``ConfigError`` for a bad spec and ``DataError``
    (naming the corpus, key and file) for missing, empty, malformed or undecodable input.
    A ``control`` source is a negative control derived from another corpus's built
    documents (``base_docs``): see `control_documents`.
    """
    spec = dict(spec)
    source = spec.get("source")
    if source not in ("builtin", "local", "hf", "control"):
        raise ConfigError(f"corpora.{name}.source: must be builtin, local, hf or control, "
                          f"got {source!r}")
    if source in _SOURCE_KEYS:
        unknown = sorted(set(spec) - _COMMON_KEYS - _SOURCE_KEYS[source])
        if unknown:
            raise ConfigError(f"corpora.{name}: unknown key(s) {', '.join(unknown)} for "
                              f"source {source}; known: "
                              f"{', '.join(sorted(_COMMON_KEYS | _SOURCE_KEYS[source]))}")
    clean = clean_options(spec.get("clean"), name)
    max_docs = spec.get("max_docs")
    if max_docs is not None and (not isinstance(max_docs, int) or max_docs < 1):
        raise ConfigError(f"corpora.{name}.max_docs: must be a positive integer, got {max_docs!r}")

    info: dict[str, Any] = {}
    if source == "builtin":
        docs: Iterable[str | None] = builtin.iter_builtin(spec, name)
        info.update(builtin.corpus_info(spec))
        log.info("corpus %s: builtin %s (no download, cache_dir unused)", name, spec.get("name"))
    elif source == "local":
        docs = iter_local(name, spec, clean["normalize_newlines"], info)
    elif source == "control":
        if base_docs is None:
            raise ConfigError(f"corpora.{name}: a control needs the documents of corpus "
                              f"{spec.get('of')!r} (base_docs)")
        docs = control_documents(name, spec, Path(base_docs))
        info.update(control_of=spec.get("of"), control_kind=spec.get("kind", "shuffle"))
    else:
        docs = iter_hf(name, spec, Path(cache_dir), threads, max_docs, info)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)

    cleaner = Cleaner(**clean, corpus=name)
    with atomic_path(out_docs) as tmp:
        kept = write_documents(tmp, cleaner(docs), desc=f"corpus {name}")
        if kept == 0:  # raised inside, so that the temp file goes too
            c = cleaner.counts
            if c["read"] == 0:
                raise DataError(f"corpus {name}: the source read no documents "
                                f"({_describe_source(spec)})")
            raise DataError(f"corpus {name}: no documents left after cleaning: read "
                            f"{c['read']}, dropped {_format_drops(cleaner.dropped)}; "
                            f"check corpora.{name}.clean")

    meta = {
        "corpus": name,
        "source": spec,
        "clean": clean,
        "max_docs": max_docs,
        "documents_read": cleaner.counts["read"],
        "documents": kept,
        "dropped": cleaner.dropped,
        "chars": cleaner.counts["chars"],
        "bytes": cleaner.counts["bytes"],
        "sha256": cleaner.hasher.hexdigest(),
        **info,
    }
    write_json(out_meta, meta)
    log.info("corpus %s: read %d documents, kept %d (dropped %s), %d characters",
             name, meta["documents_read"], kept, _format_drops(cleaner.dropped), meta["chars"])
    return meta


def control_documents(name: str, spec: dict, base_docs: Path) -> Iterator[str]:
    """Documents of a negative control, one per document of `base_docs`, seeded:

    * ``shuffle``: the document's words (runs of non-space) in a random order, the
      whitespace between them where it was: its words and length stay, their order goes;
    * ``unigram``: as many words as the document has, drawn independently from the word
      frequencies of the whole base corpus, joined by single spaces: only the unigram
      statistics stay.

    A corpus whose structure is what the ID and the exponents measure should come out
    different from its control; one that does not is measuring something else.
    """
    kind, seed = spec.get("kind", "shuffle"), spec.get("seed", 0)
    if kind not in CONTROL_KINDS:
        raise ConfigError(f"corpora.{name}.kind: must be one of {', '.join(CONTROL_KINDS)}, "
                          f"got {kind!r}")
    texts = _read_docs_table(base_docs, f"control {name}")["text"].to_pylist()
    words = [re.findall(r"\S+", t or "") for t in texts]
    if kind == "unigram":
        vocab, counts = np.unique(np.concatenate([np.array(w, dtype=object) for w in words
                                                  if w] or [np.array([], dtype=object)]),
                                  return_counts=True)
        if len(vocab) == 0:
            raise DataError(f"control {name}: corpus {spec.get('of')!r} has no words")
        p = counts / counts.sum()
    for i, (text, ws) in enumerate(zip(texts, words)):
        rng = np.random.default_rng([seed, i])
        if kind == "shuffle":
            parts = re.split(r"(\S+)", text or "")
            order = iter(rng.permutation(len(ws)))
            yield "".join(ws[next(order)] if j % 2 else part for j, part in enumerate(parts))
        else:
            yield " ".join(vocab[rng.choice(len(vocab), len(ws), p=p)])


def split_corpus(docs: Path, train_out: Path, val_out: Path, *, val_fraction: float = 0.05,
                 seed: int = 0, corpus: str = "") -> dict:
    """Split a docs parquet by document into train and validation, seeded.

    One seeded permutation of the documents: its first ``round(n * val_fraction)`` (at
    least 1) go to ``val_out``, the rest to ``train_out`` *in permutation order*. That
    order defines the nested data subsets: D tokens are the first D ids of train.bin, so
    a larger D only adds documents. Both files have the docs schema (id, text), ids kept.
    Returns {"train_docs", "val_docs", "seed", "val_fraction"}.
    """
    where = f"corpus {corpus}" if corpus else f"corpus file {docs}"
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"split.val_fraction: must be between 0 and 1 (exclusive), "
                          f"got {val_fraction!r}")
    table = _read_docs_table(docs, where)
    n = table.num_rows
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise DataError(f"{where} has {n} document(s): too few to split into train and "
                        f"validation (split.val_fraction={val_fraction})")
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = order[:n_val], order[n_val:]
    with atomic_path(train_out) as tmp_train, atomic_path(val_out) as tmp_val:
        _write_rows(table, train_idx, tmp_train)
        _write_rows(table, np.sort(val_idx), tmp_val)
    log.info("%s: %d documents -> %d train, %d val (val_fraction=%s, seed=%d)",
             where, n, n - n_val, n_val, val_fraction, seed)
    return {"train_docs": int(n - n_val), "val_docs": int(n_val), "seed": seed,
            "val_fraction": val_fraction}


def clean_options(clean: dict | None, corpus: str = "") -> dict:
    """The cleaning options with defaults filled in; unknown keys are a ConfigError."""
    clean = dict(clean or {})
    unknown = sorted(set(clean) - set(DEFAULT_CLEAN))
    if unknown:
        raise ConfigError(f"corpora.{corpus}.clean: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(DEFAULT_CLEAN)}")
    opts = {**DEFAULT_CLEAN, **clean}
    lo, hi = opts["min_chars"], opts["max_chars"]
    if not isinstance(lo, int) or lo < 0:
        raise ConfigError(f"corpora.{corpus}.clean.min_chars: must be an integer >= 0, got {lo!r}")
    if hi is not None and (not isinstance(hi, int) or hi < max(lo, 1)):
        raise ConfigError(f"corpora.{corpus}.clean.max_chars: must be null or an integer "
                          f">= min_chars and >= 1, got {hi!r}")
    return opts


class DocumentHasher:
    """sha256 over documents: each one's UTF-8 length (8 bytes, little-endian), then it."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, data: bytes) -> None:
        self._h.update(len(data).to_bytes(8, "little"))
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class Cleaner:
    """Streaming cleaner: call it on an iterable of documents (None for a null value) to
    get the kept ones; ``counts``, ``dropped`` and ``hasher`` describe what it saw."""

    def __init__(self, normalize_newlines: bool = True, drop_empty: bool = True,
                 dedup: bool = True, min_chars: int = 0, max_chars: int | None = None,
                 corpus: str = ""):
        self.corpus = corpus
        self.normalize_newlines = normalize_newlines
        self.drop_empty = drop_empty
        self.dedup = dedup
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.counts = {"read": 0, "kept": 0, "chars": 0, "bytes": 0}
        self.dropped = {"null": 0, "empty": 0, "too_short": 0, "too_long": 0, "duplicate": 0}
        self.hasher = DocumentHasher()
        self._seen: set[bytes] = set()

    def __call__(self, docs: Iterable[str | None]) -> Iterator[str]:
        for text in docs:
            self.counts["read"] += 1
            reason = self._drop_reason(text)
            if reason is not None:
                self.dropped[reason] += 1
                continue
            if self.normalize_newlines and "\r" in text:
                text = text.replace("\r\n", "\n").replace("\r", "\n")
                # Normalising can empty or shorten a document: check again.
                reason = self._drop_reason(text)
                if reason is not None:
                    self.dropped[reason] += 1
                    continue
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as e:
                # Only a lone surrogate (e.g. a "\ud800" escape in JSON) gets here.
                raise DataError(f"corpus {self.corpus}: document {self.counts['read'] - 1} "
                                f"(0-based, as read) holds text that is not valid "
                                f"Unicode at character {e.start}: {e.reason}") from e
            if self.dedup:
                digest = hashlib.blake2b(data, digest_size=16).digest()
                if digest in self._seen:
                    self.dropped["duplicate"] += 1
                    continue
                self._seen.add(digest)
            self.counts["kept"] += 1
            self.counts["chars"] += len(text)
            self.counts["bytes"] += len(data)
            self.hasher.update(data)
            yield text

    def _drop_reason(self, text: str | None) -> str | None:
        if text is None:
            return "null"
        if self.drop_empty and not text.strip():
            return "empty"
        if len(text) < self.min_chars:
            return "too_short"
        if self.max_chars is not None and len(text) > self.max_chars:
            return "too_long"
        return None


def write_documents(path: Path, texts: Iterable[str], *, desc: str = "documents") -> int:
    """Stream ``texts`` into a docs parquet at ``path`` (ids 0..n-1); return n.

    Writes ``path`` directly: callers wrap it in ``atomic_path``.
    """
    n = 0
    batch: list[str] = []
    chars = 0
    with pq.ParquetWriter(path, DOCS_SCHEMA, compression="zstd") as writer, \
            tqdm(unit="doc", desc=desc) as bar:
        def flush() -> None:
            nonlocal n, batch, chars
            if batch:
                ids = pa.array(np.arange(n, n + len(batch), dtype=np.int64))
                writer.write_table(pa.table([ids, pa.array(batch, pa.string())],
                                            schema=DOCS_SCHEMA))
                n += len(batch)
                bar.update(len(batch))
                batch, chars = [], 0

        for text in texts:
            batch.append(text)
            chars += len(text)
            if len(batch) >= _BATCH_DOCS or chars >= _BATCH_CHARS:
                flush()
        flush()
    return n


def read_documents(path: Path, *, batch_size: int = 1024) -> Iterator[list[str]]:
    """Yield the ``text`` column of a docs parquet in lists of up to ``batch_size``."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size, columns=["text"]):
        yield batch.column(0).to_pylist()


# --------------------------------------------------------------------------- split


def _read_docs_table(docs: Path, where: str) -> pa.Table:
    try:
        table = pq.read_table(docs, columns=["id", "text"])
    except FileNotFoundError as e:
        raise DataError(f"{where}: documents file {docs} does not exist") from e
    except (pa.ArrowInvalid, KeyError) as e:
        raise DataError(f"{where}: {docs} is not a docs parquet with columns id, text: {e}") from e
    if table.num_rows == 0:
        raise DataError(f"{where}: {docs} holds no documents")
    return table


def _write_rows(table: pa.Table, indices: np.ndarray, path: Path) -> None:
    # Take in slices so that only one slice of reordered text is held beside the table.
    with pq.ParquetWriter(path, DOCS_SCHEMA, compression="zstd") as writer:
        for start in range(0, len(indices), _BATCH_DOCS):
            writer.write_table(table.take(pa.array(indices[start:start + _BATCH_DOCS])))


def _describe_source(spec: dict) -> str:
    keys = ("name", "path", "dataset", "split")
    return ", ".join(f"{k}: {spec[k]}" for k in keys if spec.get(k) is not None)


def _format_drops(dropped: dict) -> str:
    parts = [f"{reason} {n}" for reason, n in dropped.items() if n]
    return ", ".join(parts) or "none"
