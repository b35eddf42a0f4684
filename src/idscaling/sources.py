"""The readers of the `local` and `hf` corpus sources: each yields a corpus's raw
document texts (None for a null field, which the cleaner drops) and records what it read
in `info` (corpus.build_corpus's meta.json). See corpus.py's docstring for the options."""

from __future__ import annotations

import codecs
import glob
import gzip
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from idscaling.errors import ConfigError, DataError

log = logging.getLogger(__name__)

_TEXT_FORMATS = ("text", "jsonl", "parquet")
_GZIP_MAGIC = b"\x1f\x8b"
# Text read at once from a local file, and parquet rows per batch: small enough to stream.
_READ_CHARS = 4 << 20
_BATCH_DOCS = 8192


# --------------------------------------------------------------------------- local


def iter_local(name: str, spec: dict, normalize_newlines: bool,
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


def iter_hf(name: str, spec: dict, cache_dir: Path, threads: int, max_docs: int | None,
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
