"""Benchmark: the tokenize stage against the bare encoder, on the built-in corpora.

For each built-in corpus (python-stdlib, python-docs) in one run:

- baseline ``encode_batch``: ``Tokenizer.encode_batch`` of the stage's own tokenizer on
  the same documents (train + val) already in memory, in one call;
- ``encode_batch_fast``: the same without offsets (what the stage calls), for reference;
- stage ``tokenize``: ``tokenize_corpus`` with that tokenizer given as a tokenizer.json
  (``kind: pretrained``): read parquet, encode, join with end-of-text, hash, write .bin;
- stage ``corpus+split+tokenize``: the same after ``build_corpus`` and ``split_corpus``
  (read the sources, clean, write parquet), i.e. the whole path from source to ids;
- ``tokenize with BPE training``: ``tokenize_corpus(kind="bpe")``, training included
  (training is not encoding; shown so that its cost is known).

Each is timed ``--repeats`` times; the median is printed with the rate in tokens/s and
the ratio of rates against the baseline. The issue's goal: the stage reaches at least
70% of the bare encoder's rate.

Run: ``python bench/tokenize.py [--threads 2] [--repeats 5]``.
"""

import os

# Progress bars would only add noise here (tqdm reads this when it is imported).
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import logging
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from timing import timed




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--corpora", nargs="+", default=["python-stdlib", "python-docs"])
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from tokenizers import Tokenizer

    from idscaling.corpus import build_corpus, split_corpus
    from idscaling.tokenization import set_threads, tokenize_corpus

    set_threads(args.threads)  # before any encoding: the Rust pool is sized once
    print(f"threads={args.threads} repeats={args.repeats} (median times)")
    for name in args.corpora:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            spec = {"source": "builtin", "name": name}

            def corpus_split():
                build_corpus(name, spec, d / "docs.parquet", d / "meta.json",
                             cache_dir=d / "cache", threads=args.threads)
                split_corpus(d / "docs.parquet", d / "train.parquet", d / "val.parquet",
                             corpus=name)

            (t_corpus,), _ = timed([corpus_split], 1)
            (t_bpe,), (meta,) = timed([lambda: tokenize_corpus(
                d / "train.parquet", d / "val.parquet", d / "bpe", kind="bpe",
                vocab_size=args.vocab_size, threads=args.threads, corpus=name)], 1)
            tok_json = d / "bpe" / "tokenizer.json"
            tokens = meta["train_tokens"] + meta["val_tokens"]

            tokenizer = Tokenizer.from_file(str(tok_json))
            tokenizer.encode_special_tokens = True
            texts = (pq.read_table(d / "train.parquet", columns=["text"])["text"].to_pylist()
                     + pq.read_table(d / "val.parquet", columns=["text"])["text"].to_pylist())

            def stage():
                return tokenize_corpus(d / "train.parquet", d / "val.parquet", d / "out",
                                       kind="pretrained", name=str(tok_json),
                                       threads=args.threads, corpus=name)

            (t_base, t_fast, t_stage), (_, _, m2) = timed([
                lambda: tokenizer.encode_batch(texts, add_special_tokens=False),
                lambda: tokenizer.encode_batch_fast(texts, add_special_tokens=False),
                stage,
            ], args.repeats)
            assert m2["train_tokens"] + m2["val_tokens"] == tokens, "stage and BPE run disagree"

            print(f"\n{name}: {len(texts)} documents, {tokens:,} tokens "
                  f"(+ corpus & split: {t_corpus:.2f} s, once)")
            rows = [
                ("baseline encode_batch (in memory)", t_base),
                ("encode_batch_fast (in memory)", t_fast),
                ("stage tokenize (read, encode, write)", t_stage),
                ("corpus+split+tokenize (read, clean, encode, write)", t_stage + t_corpus),
                ("tokenize with BPE training (once)", t_bpe),
            ]
            for label, t in rows:
                print(f"  {label:52s} {t:8.3f} s {tokens / t / 1e6:7.2f} Mtok/s "
                      f"ratio {t_base / t:5.2f}")


if __name__ == "__main__":
    main()
