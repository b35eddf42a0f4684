# Helpers and input functions. No science here: the values below only name files and
# pass config through `params`, so a config change re-runs exactly what it touches.

import json
import os
import re

from idscaling import layout
from idscaling.config import KNOWN_D_TASK_KEYS, NON_RESULT_TRAIN_KEYS, load_schema, validate_config
from idscaling.errors import ConfigError, DataError

SCHEMA = load_schema(workflow.source_path("../schemas/config.schema.yaml"))
try:
    validate_config(config, SCHEMA)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


CORPORA = list(config["corpora"])
CORPUS_DOCS = "results/{corpus}/corpus/docs.parquet"


def corpus_inputs(wildcards):
    """A control corpus is built from the documents of the corpus it controls."""
    spec = config["corpora"][wildcards.corpus]
    if spec["source"] == "control":
        return {"base": CORPUS_DOCS.format(corpus=spec["of"])}
    return {}


def check_local_sources():
    """A local path that matches nothing fails here, before any job, not in the corpus job.
    Corpora already built are not checked: their source may be gone on purpose."""
    for name, spec in config["corpora"].items():
        if spec["source"] == "local" and not os.path.exists(CORPUS_DOCS.format(corpus=name)):
            from idscaling.sources import local_files  # pyarrow: only when there is work

            try:
                local_files(name, spec)
            except (ConfigError, DataError) as error:
                raise WorkflowError(f"config: {error}") from None


check_local_sources()
MODELS = list(config["models"])
SEEDS = list(config["seeds"])
NAME = SCHEMA["$defs"]["name"]["pattern"].removeprefix("^").removesuffix("$")


wildcard_constraints:
    corpus=NAME,
    model=NAME,
    embedder=NAME,
    tokens=r"\d+",
    seed=r"\d+",


# Every job writes its log; when it fails, the log's last line (the error) also goes to the
# terminal, where the user is looking, not only to the file.
TO_LOG = (
    " > {log:q} 2>&1 || {{ status=$?; echo \"error in {log}: $(tail -n 1 {log:q})\" >&2;"
    " exit $status; }}"
)


def as_json(value):
    """A config value as one compact JSON string, for `params` and `{params.x:q}`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


# train: what can change a result goes to the train rule's params (a change re-runs the
# runs); the rest reaches the shell command outside params (Snakemake does not track
# it), so toggling compile or checkpoint_every re-runs nothing.
TRAIN_RESULT = as_json(
    {k: v for k, v in config["train"].items() if k not in NON_RESULT_TRAIN_KEYS}
)


SHARED_TOKENIZER = "results/shared_tokenizer/tokenizer.json"
SHARED_TOKENIZER_CORPORA = [c for c in CORPORA if config["corpora"][c]["source"] != "control"]


def tokenize_inputs(wildcards):
    inputs = {"train": f"results/{wildcards.corpus}/corpus/train.parquet",
              "val": f"results/{wildcards.corpus}/corpus/val.parquet"}
    if config["tokenizer"]["shared"]:
        inputs["shared"] = SHARED_TOKENIZER
    return inputs


def corpus_source(corpus):
    """What the corpus stage reads: the spec without the keys that only later stages use."""
    return {k: v for k, v in config["corpora"][corpus].items() if k != "data_tokens"}


run_dir = layout.run_dir
RUN_DIR = layout.RUN_DIR


def data_tokens(corpus):
    """The D grid of a corpus: its own `data_tokens`, else the global one."""
    return sorted(config["corpora"][corpus].get("data_tokens") or config["data_tokens"])


def corpus_runs(corpus):
    """(model, tokens, seed) of every run of a corpus."""
    return [(m, d, s) for m in MODELS for d in data_tokens(corpus) for s in SEEDS]


def all_runs():
    return [(c, *run) for c in CORPORA for run in corpus_runs(c)]


def nonembedding_params(shape):
    # Kaplan's N for a GPT-2 block stack: 12 * n_layer * n_embd^2.
    return 12 * shape["n_layer"] * shape["n_embd"] ** 2


def reference_run(corpus):
    """(model, tokens, seed) of the run whose embeddings measure the corpus's ID."""
    named = config["embedding"]["run"]
    if named:
        model, tokens, seed = named.split("/")
        return model, int(tokens[1:]), int(seed[1:])
    largest = max(
        MODELS,
        key=lambda m: (nonembedding_params(config["models"][m]), config["models"][m]["n_layer"]),
    )
    return largest, data_tokens(corpus)[-1], SEEDS[0]


def robustness_enabled():
    return bool(CORPORA) and config["id_robustness"]["enabled"]


def snapshot_runs():
    """The runs that keep weight snapshots: each corpus's reference run."""
    if not robustness_enabled():
        return []
    return [run_dir(c, *reference_run(c)) for c in CORPORA]


# Which runs keep snapshots goes with the engine keys, outside params: the reference run
# moving to a new model re-runs nothing (the new one trains anyway).
TRAIN_ENGINE = as_json(
    {**{k: v for k, v in config["train"].items() if k in NON_RESULT_TRAIN_KEYS},
     "snapshot_runs": snapshot_runs()}
)


# What embed_corpus takes; model, run and fill_from_train choose the rule's inputs instead.
EMBED_OPTIONS = as_json(
    {k: v for k, v in config["embedding"].items() if k not in ("model", "run", "fill_from_train")}
)


def embedder_name():
    model = config["embedding"]["model"]
    if model == "trained":
        return "trained"
    return re.sub(r"[^A-Za-z0-9_-]+", "--", model).strip("-")


def embedding_model(wildcards):
    if config["embedding"]["model"] == "trained":
        return run_dir(wildcards.corpus, *reference_run(wildcards.corpus))
    return config["embedding"]["model"]


def embed_inputs(wildcards):
    corpus = wildcards.corpus
    inputs = {"val": f"results/{corpus}/corpus/val.parquet"}
    if config["embedding"]["fill_from_train"]:
        # train documents past the largest D's are ones no run of this corpus trained on
        inputs["train"] = f"results/{corpus}/corpus/train.parquet"
        inputs["seen"] = f"results/{corpus}/tokens/subsets/D{data_tokens(corpus)[-1]}.json"
    if config["embedding"]["model"] == "trained":
        ref = run_dir(wildcards.corpus, *reference_run(wildcards.corpus))
        inputs["weights"] = f"{ref}/model.safetensors"
        inputs["model_config"] = f"{ref}/config.json"
        inputs["tokenizer"] = f"results/{wildcards.corpus}/tokens/tokenizer.json"
    return inputs


DATA_GRID = "results/data_grid.csv"


def subset_files():
    return [f"results/{c}/tokens/subsets/D{d}.json" for c in CORPORA for d in data_tokens(c)]


def metrics_files():
    return [f"{run_dir(*run)}/metrics.json" for run in all_runs()]


def history_files():
    return [f"{run_dir(*run)}/history.csv" for run in all_runs()]


def id_files():
    return [layout.ID_FILE.format(corpus=c, embedder=embedder_name()) for c in CORPORA]


def robustness_inputs(wildcards):
    corpus = wildcards.corpus
    runs = [run_dir(corpus, *run) for run in corpus_runs(corpus)]
    ref = run_dir(corpus, *reference_run(corpus))
    inputs = {"emb_dir": f"results/{corpus}/embeddings/{embedder_name()}", "snapshots": f"{ref}/snapshots",
              "weights": [f"{r}/model.safetensors" for r in runs],
              "metrics": [f"{r}/metrics.json" for r in runs]}
    return {**embed_inputs(wildcards), **inputs}


def robustness_runs(wildcards):
    """--run MODEL=DIR for every run of the corpus."""
    corpus = wildcards.corpus
    return " ".join(f"--run {run[0]}={run_dir(corpus, *run)}" for run in corpus_runs(corpus))


def robustness_files():
    if not robustness_enabled():
        return []
    return [layout.ROBUSTNESS_FILE.format(corpus=c) for c in CORPORA]


FIGURES = ["data_scaling", "model_scaling", "exponents", "id_vs_k", "id_vs_layer", "training_curves"]


def figure_names():
    return FIGURES + (["id_robustness"] if robustness_enabled() else [])


def laws_outputs():
    return ["results/laws.csv", "results/predictions.csv", "results/summary.md"] + [
        f"results/figures/{name}.png" for name in figure_names()
    ]


# what every run of an arm reads: its generator and its held-out points
KNOWN_D_RUN_KEYS = KNOWN_D_TASK_KEYS + ("eval_points", "tune_docs")
KNOWN_D_ESTIMATOR_KEYS = {"reference": ("reference",), "base": ("model", "train"),
                          "wide": ("model", "train", "width_lr_scale"), "mlp": ("mlp", "train"),
                          "mlp_wide": ("mlp", "train", "width_lr_scale")}


def known_d_run_options(wildcards):
    """The known_d keys that a run of this estimator reads, and no other."""
    keys = KNOWN_D_RUN_KEYS + KNOWN_D_ESTIMATOR_KEYS[wildcards.estimator]
    return as_json({k: v for k, v in config["known_d"].items() if k in keys})


# The device goes into the command, not params: like the train engine keys it re-runs nothing.
KNOWN_D_DEVICE = config["known_d"]["device"] if config.get("known_d") else None

# the analysis reads the generator too: it draws the field's level ladder
KNOWN_D_LAW_KEYS = KNOWN_D_TASK_KEYS + ("eval_points", "docs", "reference_docs", "reference_factor",
                                        "width_tolerance", "margin", "bootstrap", "level")


def known_d_arms():
    """Arm name -> {d, s}; the name is what the run folders are called."""
    from idscaling.known_d import arm_name

    arms = (config.get("known_d") or {}).get("arms", [])
    return {arm_name(a["d"], a["s"]): a for a in arms}


def known_d_arm(name):
    return known_d_arms()[name]


def known_d_records():
    from idscaling.known_d import sweep_jobs

    kd = config.get("known_d")
    return [layout.KNOWN_D_RECORD.format(**job) for job in sweep_jobs(kd)] if kd else []


def known_d_outputs():
    if not config.get("known_d"):
        return []
    return ["results/known_d/exponents.csv", "results/known_d/summary.md",
            "results/figures/known_d_excess.png", "results/figures/known_d_exponents.png",
            "results/figures/known_d_id.png"]


def corpus_outputs():
    if not CORPORA:
        return []
    return (["results/losses.csv", "results/intrinsic_dim.csv"] + laws_outputs()
            + (["results/id_robustness.csv"] if robustness_enabled() else []))
