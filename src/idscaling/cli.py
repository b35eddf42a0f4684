"""`idscaling <stage> ...`: the command line that the workflow's rules call.

Each subcommand parses its arguments and calls one library function; the science lives
in the modules. Errors a user can act on print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

from idscaling.errors import IDScalingError

log = logging.getLogger("idscaling")


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON: {error}") from None


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


def cmd_corpus(args) -> None:
    from idscaling.corpus import build_corpus

    build_corpus(args.name, args.spec, args.out_docs, args.out_meta,
                 cache_dir=args.cache_dir, threads=args.threads, base_docs=args.base_docs)


def cmd_split(args) -> None:
    from idscaling.corpus import split_corpus

    split_corpus(args.docs, args.train, args.val, val_fraction=args.val_fraction,
                 seed=args.seed, corpus=args.corpus)


def cmd_tokenize(args) -> None:
    from idscaling.tokenization import tokenize_corpus

    opts = dict(args.tokenizer)
    tokenize_corpus(args.train_docs, args.val_docs, args.out_dir, kind=opts.pop("kind", "bpe"),
                    threads=args.threads, corpus=args.corpus,
                    tokenizer_file=args.shared_tokenizer, **opts)


def cmd_shared_tokenizer(args) -> None:
    from idscaling.tokenization import train_shared_tokenizer

    docs = dict(_named_paths(args.corpus, "shared-tokenizer: --corpus", "NAME=TRAIN_PARQUET"))
    train_shared_tokenizer(docs, args.out_dir, threads=args.threads,
                           **_picked(args.tokenizer, "vocab_size", "min_frequency"))


def cmd_subset(args) -> None:
    from idscaling.tokenization import check_subset

    check_subset(args.meta, args.tokens, args.out, corpus=args.corpus, context=args.context,
                 train_bin=args.train_bin)


def cmd_train(args) -> None:
    from idscaling.train import train_run

    engine = dict(args.engine)
    # the workflow names the runs that keep snapshots (the reference runs) among the engine keys
    keep = [Path(r).resolve() for r in engine.pop("snapshot_runs", [])]
    snapshots = args.snapshots or args.run_dir.resolve() in keep

    def train() -> None:
        train_run(args.train_bin, args.val_bin, args.meta, args.run_dir, model=args.model,
                  tokens=args.tokens, seed=args.seed, train={**args.train, **engine},
                  threads=args.threads, snapshots=snapshots)

    if "LOCAL_RANK" in os.environ:  # a torchrun worker: the launcher holds the devices
        train()
    else:
        _with_gpus(args.gpus, "training", lambda devices: (
            _relaunch_under_torchrun(len(devices)) if len(devices) > 1 else train()))


def _picked(options: dict, *keys: str) -> dict:
    """The keys of a config section that are there; the library owns the defaults of the
    rest (equal to the schema's)."""
    return {k: options[k] for k in keys if k in options}


def _with_gpus(n: int, what: str, work) -> None:
    """Run `work(devices)` holding `n` GPUs no other job holds (n=0 hides every GPU)."""
    from idscaling.gpu import acquire_gpus

    with acquire_gpus(n) as devices:
        if n:
            log.info("GPUs taken for %s: %s", what, devices or "none visible, so CPU")
        work(devices)


def _relaunch_under_torchrun(gpus: int) -> None:
    """Run this same command once per held device under torchrun (DDP)."""
    from idscaling.gpu import torchrun_command

    cmd = torchrun_command(gpus, sys.argv[1:])
    log.info("launching DDP: %s", " ".join(cmd))
    result = subprocess.run(cmd)
    if result.returncode:
        raise IDScalingError(f"torchrun exited with status {result.returncode}")


def cmd_embed(args) -> None:
    from idscaling.embed import embed_corpus

    fill = _fill_from_train(args, "embed")
    _with_gpus(args.gpus, "embedding", lambda devices: embed_corpus(
        args.model, args.val_docs, args.out_dir, tokenizer=args.tokenizer,
        context=args.context, threads=args.threads, **fill, **args.options))


def _fill_from_train(args, stage: str) -> dict:
    """embed_corpus's fill_docs/fill_skip from --train-docs and --seen: the train documents
    past those the largest D holds (documents [0, docs) lie whole in its first D tokens,
    document `docs` partly)."""
    from idscaling.errors import ConfigError
    from idscaling.files import read_json

    if args.train_docs is None:
        return {}
    if args.seen is None:
        raise ConfigError(f"{stage}: --train-docs needs --seen, the subset summary of the "
                          "largest D, to skip the documents a run trained on")
    return {"fill_docs": args.train_docs, "fill_skip": int(read_json(args.seen)["docs"]) + 1}


def _named_paths(items: list[str], flag: str, what: str) -> list[tuple[str, Path]]:
    """NAME=PATH arguments as (name, path) pairs."""
    from idscaling.errors import ConfigError

    pairs = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"{flag} {item!r} is not {what}")
        pairs.append((name, Path(path)))
    return pairs


def cmd_intrinsic_dim(args) -> None:
    from idscaling.intrinsic_dim import run_id_stage

    run_id_stage(args.emb_dir, args.out, threads=args.threads, **args.options)


def cmd_id_robustness(args) -> None:
    from idscaling.id_robustness import run_robustness

    embedding = {k: v for k, v in args.embedding.items() if k != "layer"}
    embedding |= _fill_from_train(args, "id-robustness")
    ident = args.id_options
    runs = _named_paths(args.run, "id-robustness: --run", "MODEL=RUN_DIR")
    opts = {k: v for k, v in args.options.items() if k != "enabled"}
    _with_gpus(args.gpus, "the ID's robustness checks", lambda devices: run_robustness(
        args.emb_dir, args.out, runs=runs, snapshots=args.snapshots, val_docs=args.val_docs,
        tokenizer=args.tokenizer, embedding={**embedding, "context": args.context},
        threads=args.threads, **opts, **_picked(ident, "estimator", "k", "metric", "protocol",
                                                "batch_size", "seed", "max_points")))


def cmd_collect_robustness(args) -> None:
    from idscaling.tables import collect_robustness

    collect_robustness(args.files, args.out)


def cmd_collect_losses(args) -> None:
    from idscaling.tables import collect_losses

    collect_losses(args.metrics, args.out)


def cmd_collect_subsets(args) -> None:
    from idscaling.tables import collect_subsets

    collect_subsets(args.files, args.out)


def cmd_collect_histories(args) -> None:
    from idscaling.tables import collect_histories

    collect_histories(args.files, args.out)


def cmd_collect_ids(args) -> None:
    from idscaling.tables import collect_ids

    collect_ids(args.files, args.out)


def cmd_laws(args) -> None:
    from idscaling.laws_stage import run_laws

    theory = args.theory
    laws = {"loss_column" if k == "loss" else k: v for k, v in args.laws.items()}
    run_laws(args.losses, args.ids, args.histories, args.out_dir,
             reference={"k": args.k, **_picked(theory, "estimator", "protocol")},
             robustness_csv=args.robustness,
             **_picked(theory, "smoothness", "margin"),
             **_picked(laws, "bootstrap", "seed", "loss_column", "converged_only"))


def cmd_known_d_run(args) -> None:
    from idscaling.known_d import run_one

    run_one(args.options, args.d, args.s, args.docs, args.seed, args.estimator, args.out,
            args.out.with_suffix(".npy"), threads=args.threads, device=args.device)


def cmd_known_d_laws(args) -> None:
    from idscaling.known_d_laws import run_known_d_laws

    run_known_d_laws(args.runs, args.out_dir, args.fig_dir, args.options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="idscaling", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="stage")

    p = sub.add_parser("corpus", help="read a corpus source into docs.parquet")
    p.add_argument("--name", required=True, help="the corpus name (config key)")
    p.add_argument("--spec", required=True, type=_json, help="the corpus source, as JSON")
    p.add_argument("--out-docs", required=True, type=Path)
    p.add_argument("--out-meta", required=True, type=Path)
    p.add_argument("--cache-dir", required=True, type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--base-docs", type=_optional_path, default=None,
                   help="source: control: the documents of the corpus it is derived from")
    p.set_defaults(func=cmd_corpus)

    p = sub.add_parser("split", help="split documents into train and val, seeded")
    p.add_argument("--corpus", default="")
    p.add_argument("--docs", required=True, type=Path)
    p.add_argument("--train", required=True, type=Path)
    p.add_argument("--val", required=True, type=Path)
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("tokenize", help="train or load a tokenizer; write train.bin and val.bin")
    p.add_argument("--corpus", default="")
    p.add_argument("--train-docs", required=True, type=Path)
    p.add_argument("--val-docs", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--tokenizer", type=_json, default={"kind": "bpe"},
                   help='the tokenizer section as JSON, e.g. {"kind": "bpe", "vocab_size": 4096}')
    p.add_argument("--shared-tokenizer", type=_optional_path, default=None,
                   help="tokenizer.json of shared-tokenizer (with tokenizer.shared: true)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("shared-tokenizer", help="one BPE trained on the train splits of every corpus")
    p.add_argument("--corpus", action="append", default=[], help="NAME=TRAIN_PARQUET, repeated")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--tokenizer", type=_json, default={}, help="the tokenizer section as JSON")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_shared_tokenizer)

    p = sub.add_parser("subset", help="check that a data size fits the corpus")
    p.add_argument("--corpus", default="")
    p.add_argument("--meta", required=True, type=Path)
    p.add_argument("--tokens", required=True, type=int)
    p.add_argument("--context", type=int, default=0)
    p.add_argument("--train-bin", type=_optional_path, default=None,
                   help="train.bin, to count the whole documents in the first D ids")
    p.add_argument("--out", required=True, type=Path)
    p.set_defaults(func=cmd_subset)

    p = sub.add_parser("train", help="train one GPT on the first D tokens")
    p.add_argument("--train-bin", required=True, type=Path)
    p.add_argument("--val-bin", required=True, type=Path)
    p.add_argument("--meta", required=True, type=Path)
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--model", required=True, type=_json, help='shape, e.g. {"n_layer": 2, "n_embd": 64, "n_head": 2}')
    p.add_argument("--tokens", required=True, type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=_json, default={}, help="the train section as JSON")
    p.add_argument("--engine", type=_json, default={},
                   help="train keys that change no result (compile, checkpoint_every, ...)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--gpus", type=int, default=0, help="GPUs for this run (>1: DDP under torchrun)")
    p.add_argument("--snapshots", action="store_true",
                   help="keep log-spaced weight snapshots (the ID against training step)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("embed", help="token embeddings of val documents from a reference model")
    p.add_argument("--model", required=True, help="a run directory, or a Hugging Face id or local directory")
    p.add_argument("--val-docs", required=True, type=Path)
    p.add_argument("--tokenizer", type=_optional_path, default=None)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--options", type=_json, default={}, help="the embedding section as JSON")
    p.add_argument("--train-docs", type=Path, default=None,
                   help="train split that tops up a small val split (documents no run saw)")
    p.add_argument("--seen", type=Path, default=None,
                   help="subsets/D{largest}.json: how many train documents runs trained on")
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--gpus", type=int, default=0)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("intrinsic-dim", help="estimate the intrinsic dimension of embeddings")
    p.add_argument("--emb-dir", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--options", type=_json, default={}, help="the intrinsic_dim section as JSON")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=cmd_intrinsic_dim)

    p = sub.add_parser("id-robustness",
                       help="the ID against model size, training step and context position")
    p.add_argument("--emb-dir", required=True, type=Path, help="the reference embedding")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--run", action="append", default=[], help="MODEL=RUN_DIR, repeated")
    p.add_argument("--snapshots", type=_optional_path, default=None)
    p.add_argument("--val-docs", required=True, type=Path)
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--train-docs", type=Path, default=None)
    p.add_argument("--seen", type=Path, default=None)
    p.add_argument("--embedding", type=_json, default={}, help="the embedding section as JSON")
    p.add_argument("--id-options", type=_json, default={},
                   help="the intrinsic_dim section with the reference estimator and protocol")
    p.add_argument("--options", type=_json, default={}, help="the id_robustness section")
    p.add_argument("--context", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--gpus", type=int, default=0)
    p.set_defaults(func=cmd_id_robustness)

    p = sub.add_parser("collect-robustness", help="gather the ID robustness files into one table")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect_robustness)

    p = sub.add_parser("collect-losses", help="gather metrics.json files into losses.csv")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("metrics", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect_losses)

    p = sub.add_parser("collect-subsets", help="gather the data-size checks into one table")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect_subsets)

    p = sub.add_parser("collect-histories", help="gather the runs' history.csv files into one table")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect_histories)

    p = sub.add_parser("collect-ids", help="gather intrinsic-dimension files into one table")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("files", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect_ids)

    p = sub.add_parser("laws", help="fit scaling laws, set predictions beside them, draw, summarise")
    p.add_argument("--losses", required=True, type=Path)
    p.add_argument("--ids", required=True, type=Path)
    p.add_argument("--histories", type=Path, default=None, help="histories.csv")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--laws", type=_json, default={})
    p.add_argument("--theory", type=_json, default={})
    p.add_argument("--k", type=int, default=20, help="the k whose ID the predictions use")
    p.add_argument("--robustness", type=Path, default=None, help="id_robustness.csv")
    p.set_defaults(func=cmd_laws)

    p = sub.add_parser("known-d-run", help="one estimator of one known-dimension arm on n documents")
    p.add_argument("--d", required=True, type=int)
    p.add_argument("--s", required=True, type=float)
    p.add_argument("--docs", required=True, type=int)
    p.add_argument("--seed", required=True, type=int)
    p.add_argument("--estimator", required=True, help="one of idscaling.known_d.ESTIMATORS")
    p.add_argument("--options", required=True, type=_json, help="the known_d section as JSON")
    p.add_argument("--out", required=True, type=Path, help="the record (.json); the excess goes beside it (.npy)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto",
                   help="torch device of the learners; auto: CUDA when there is one, else the CPU")
    p.set_defaults(func=cmd_known_d_run)

    p = sub.add_parser("known-d-laws", help="exponents of the known-dimension sweep, verdicts, figures")
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--fig-dir", required=True, type=Path)
    p.add_argument("--options", required=True, type=_json, help="the known_d section as JSON")
    p.add_argument("runs", nargs="+", type=Path)
    p.set_defaults(func=cmd_known_d_laws)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except IDScalingError as error:
        print(f"idscaling {args.stage}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
