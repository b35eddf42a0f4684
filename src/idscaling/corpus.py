"""Corpus stage: read a source, clean it, write one row per document; then split it.

Sources (``spec["source"]``):

- ``builtin``: see :mod:`idscaling.builtin` (``python-stdlib``, ``python-docs``, ``synthetic``).
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

import codecs
import glob
import gzip
import hashlib
import io
import itertools
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from idscaling import builtin
from idscaling.errors import ConfigError, DataError
from idscaling.files import atomic_path, write_json

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
_TEXT_FORMATS = ("text", "jsonl", "parquet")
_GZIP_MAGIC = b"\x1f\x8b"
# Rows per parquet row group / text chunk read at once: small enough to stream, large
# enough that per-batch overhead vanishes.
_BATCH_DOCS = 8192
_BATCH_CHARS = 64 << 20
_READ_CHARS = 4 << 20


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
        docs = _iter_local(name, spec, clean["normalize_newlines"], info)
    elif source == "control":
        if base_docs is None:
            raise ConfigError(f"corpora.{name}: a control needs the documents of corpus "
                              f"{spec.get('of')!r} (base_docs)")
        docs = control_documents(name, spec, Path(base_docs))
        info.update(control_of=spec.get("of"), control_kind=spec.get("kind", "shuffle"))
    else:
        docs = _iter_hf(name, spec, Path(cache_dir), threads, max_docs, info)
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


# --------------------------------------------------------------------------- local


def _iter_local(name: str, spec: dict, normalize_newlines: bool,
                info: dict) -> Iterator[str | None]:
    files = local_files(name, spec)
    fmt = spec.get("format", "auto")
    if fmt not in _TEXT_FORMATS + ("auto",):
        raise ConfigError(f"corpora.{name}.format: must be one of text, jsonl, parquet, auto; "
                          f"got {fmt!r}")
    compression = spec.get("compression", "auto")
    if compression not in ("auto", "gzip", "none", None):
        raise ConfigError(f"corpora.{name}.compression: must be auto, gzip or none; "
                          f"got {compression!r}")
    encoding = spec.get("encoding", "utf-8")
    try:
        codecs.lookup(encoding)
    except LookupError as e:
        raise ConfigError(f"corpora.{name}.encoding: unknown encoding {encoding!r}") from e
    separator = spec.get("separator")
    if separator is not None and (not isinstance(separator, str) or separator == ""):
        raise ConfigError(f"corpora.{name}.separator: must be null or a non-empty string, "
                          f"got {separator!r}")
    text_field = spec.get("text_field", "text")
    formats = {path: (fmt if fmt != "auto" else _guess_format(path)) for path in files}
    info["files"] = len(files)
    info["formats"] = sorted(set(formats.values()))
    log.info("corpus %s: %d file(s) from %s, format(s) %s", name, len(files), spec["path"],
             ", ".join(info["formats"]))
    return _read_local(name, files, formats, compression or "none", encoding, separator,
                       text_field, normalize_newlines)


def _read_local(name, files, formats, compression, encoding, separator, text_field,
                normalize_newlines) -> Iterator[str | None]:
    for path in files:
        fmt = formats[path]
        if fmt == "parquet":
            if compression == "gzip":
                raise ConfigError(f"corpora.{name}.compression: gzip does not apply to "
                                  f"parquet files ({path}); parquet compresses internally")
            yield from _read_parquet(name, path, text_field)
        elif fmt == "jsonl":
            yield from _read_jsonl(name, path, compression, encoding, text_field)
        else:
            yield from _read_text(name, path, compression, encoding, separator,
                                  normalize_newlines)


def local_files(name: str, spec: dict) -> list[Path]:
    """The files a `source: local` spec names, sorted; DataError naming the key if none."""
    if not spec.get("path"):
        raise ConfigError(f"corpora.{name}.path: required for source: local")
    pattern = os.path.expanduser(str(spec["path"]))
    if any(ch in pattern for ch in "*?["):
        files = sorted((Path(p) for p in glob.glob(pattern, recursive=True)),
                       key=lambda p: p.as_posix())
        files = [p for p in files if p.is_file()]
        if not files:
            raise DataError(f"corpus {name}: no file matches corpora.{name}.path {pattern!r}")
        return files
    root = Path(pattern)
    if root.is_file():
        return [root]
    if root.is_dir():
        # Hidden files and directories (.git, .DS_Store, editor swap files) are not corpus.
        files = sorted((p for p in root.rglob("*") if p.is_file()
                        and not any(part.startswith(".") for part in p.relative_to(root).parts)),
                       key=lambda p: p.relative_to(root).as_posix())
        if not files:
            raise DataError(f"corpus {name}: directory {root} (corpora.{name}.path) holds no files")
        return files
    raise DataError(f"corpus {name}: corpora.{name}.path {pattern!r} does not exist")


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson"):
        return "jsonl"
    if last == ".parquet":
        return "parquet"
    return "text"


def _open_binary(path: Path, compression: str) -> BinaryIO:
    raw = open(path, "rb")
    if compression == "gzip" or (compression == "auto" and raw.peek(2)[:2] == _GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def _bad_byte_offset(path: Path, compression: str, encoding: str) -> tuple[int, str]:
    """Where decoding ``path`` fails: (byte offset in the decompressed stream, reason)."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    consumed = 0
    with _open_binary(path, compression) as f:
        while chunk := f.read(1 << 20):
            pending = decoder.getstate()[0]
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as e:
                return consumed - len(pending) + e.start, e.reason
            consumed += len(chunk)
        pending = decoder.getstate()[0]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            return consumed - len(pending) + e.start, e.reason
    return -1, "unknown"


def _undecodable(name: str, path: Path, compression: str, encoding: str) -> DataError:
    offset, reason = _bad_byte_offset(path, compression, encoding)
    gz = " (after gzip decompression)" if compression != "none" and _is_gzip(path) else ""
    return DataError(f"corpus {name}: {path} is not valid {encoding} at byte offset "
                     f"{offset}{gz}: {reason}; set corpora.{name}.encoding or fix the file")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_text(name, path, compression, encoding, separator,
               normalize_newlines) -> Iterator[str]:
    # newline=None translates \r\n and \r across chunk boundaries, before splitting.
    f = io.TextIOWrapper(_open_binary(path, compression), encoding=encoding, errors="strict",
                         newline=None if normalize_newlines else "")
    try:
        with f:
            if separator is None:
                yield f.read()
                return
            rest = ""
            while chunk := f.read(_READ_CHARS):
                parts = (rest + chunk).split(separator)
                rest = parts.pop()
                yield from parts
            if rest:  # a file that ends with the separator has no empty last document
                yield rest
    except UnicodeDecodeError:
        raise _undecodable(name, path, compression, encoding) from None
    except (OSError, EOFError) as e:
        raise DataError(f"corpus {name}: cannot read {path}: {e}") from e


def _read_jsonl(name, path, compression, encoding, text_field) -> Iterator[str | None]:
    offset = 0
    try:
        with _open_binary(path, compression) as f:
            for lineno, line in enumerate(f, 1):
                try:
                    s = line.decode(encoding)
                except UnicodeDecodeError as e:
                    raise DataError(
                        f"corpus {name}: {path} line {lineno} is not valid {encoding} at byte "
                        f"offset {offset + e.start}: {e.reason}") from e
                offset += len(line)
                if not s.strip():
                    continue
                try:
                    record = json.loads(s)
                except json.JSONDecodeError as e:
                    raise DataError(f"corpus {name}: {path} line {lineno} is not JSON: {e}") from e
                if not isinstance(record, dict):
                    raise DataError(f"corpus {name}: {path} line {lineno} is a JSON "
                                    f"{type(record).__name__}, not an object")
                if text_field not in record:
                    raise DataError(f"corpus {name}: corpora.{name}.text_field {text_field!r} "
                                    f"is not in {path} line {lineno}; its fields: "
                                    f"{', '.join(map(str, record)) or '(none)'}")
                yield _check_text(name, record[text_field], text_field, f"{path} line {lineno}")
    except (OSError, EOFError) as e:
        raise DataError(f"corpus {name}: cannot read {path}: {e}") from e


def _check_text(name: str, value: Any, text_field: str, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise DataError(f"corpus {name}: corpora.{name}.text_field {text_field!r} in {where} is "
                    f"a {type(value).__name__}, not text")


def _read_parquet(name: str, path: Path, text_field: str) -> Iterator[str | None]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"corpus {name}: {path} is not a readable parquet file: {e}") from e
    schema = pf.schema_arrow
    if text_field not in schema.names:
        raise DataError(f"corpus {name}: corpora.{name}.text_field {text_field!r} is not a "
                        f"column of {path}; its columns: {', '.join(schema.names)}")
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"corpus {name}: corpora.{name}.text_field {text_field!r} in {path} "
                        f"has type {kind}, not string")
    for batch in pf.iter_batches(batch_size=_BATCH_DOCS, columns=[text_field]):
        yield from batch.column(0).to_pylist()


# --------------------------------------------------------------------------- hf


def _iter_hf(name: str, spec: dict, cache_dir: Path, threads: int, max_docs: int | None,
             info: dict) -> Iterator[str | None]:
    if not spec.get("dataset"):
        raise ConfigError(f"corpora.{name}.dataset: required for source: hf")
    # Imported here: datasets is slow to import and only this source needs it.
    import datasets

    split = spec.get("split", "train")
    streaming = bool(spec.get("streaming", False))
    text_field = spec.get("text_field", "text")
    kwargs: dict[str, Any] = {"split": split, "streaming": streaming,
                              "revision": spec.get("revision")}
    if spec.get("config") is not None:
        kwargs["name"] = spec["config"]
    for key in ("data_dir", "data_files"):
        if spec.get(key) is not None:
            kwargs[key] = spec[key]
    user_cache = [v for v in ("HF_DATASETS_CACHE", "HF_HOME") if os.environ.get(v)]
    if user_cache:
        log.info("corpus %s: %s is set, so datasets' own cache is used", name, user_cache[0])
    else:
        kwargs["cache_dir"] = str(cache_dir / "hf")
        log.info("corpus %s: datasets cache under %s", name, kwargs["cache_dir"])
    if not streaming and threads > 1:
        kwargs["num_proc"] = threads
    try:
        ds = datasets.load_dataset(spec["dataset"], **kwargs)
    except Exception as e:  # datasets raises many types; all mean "cannot load this"
        raise DataError(f"corpus {name}: cannot load corpora.{name}.dataset "
                        f"{spec['dataset']!r} (split {split!r}): {type(e).__name__}: {e}") from e

    columns = ds.column_names
    if columns is None:  # a stream whose features are unknown until read
        first = next(iter(ds), None)
        columns = list(first) if first is not None else [text_field]
    if text_field not in columns:
        raise DataError(f"corpus {name}: corpora.{name}.text_field {text_field!r} is not a "
                        f"field of {spec['dataset']!r}; its fields: {', '.join(columns)}")
    info["hf_datasets_version"] = datasets.__version__
    # what a re-run months later needs to read the same text (meta's sha256 checks it did)
    info.update(hf_dataset=spec["dataset"], hf_config=spec.get("config"), hf_split=split,
                hf_revision=spec.get("revision"),
                hf_fingerprint=getattr(ds, "_fingerprint", None) if not streaming else None)
    if spec.get("revision") is None:
        log.warning("corpus %s: corpora.%s.revision is not set, so the dataset's current "
                    "version was read; pin a revision (a commit or tag) to read the same "
                    "text again later", name, name)
    if streaming:
        ds = ds.select_columns([text_field])
        if max_docs is not None:
            ds = ds.take(max_docs)
    elif max_docs is not None and max_docs < len(ds):
        ds = ds.select(range(max_docs))
    return _hf_texts(name, ds, text_field)


def _hf_texts(name: str, ds: Any, text_field: str) -> Iterator[str | None]:
    for batch in ds.iter(batch_size=1000):
        for value in batch[text_field]:
            yield _check_text(name, value, text_field, "the dataset")


def _describe_source(spec: dict) -> str:
    keys = ("name", "path", "dataset", "split")
    return ", ".join(f"{k}: {spec[k]}" for k in keys if spec.get(k) is not None)


def _format_drops(dropped: dict) -> str:
    parts = [f"{reason} {n}" for reason, n in dropped.items() if n]
    return ", ".join(parts) or "none"
