"""Gather per-job JSON into tables: run metrics, ID estimates (the two tables of
docs/design.md) and the data-size checks."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from idscaling.errors import DataError
from idscaling.io import atomic_path, read_json

LOSS_COLUMNS = [
    "corpus", "model", "n_layer", "n_embd", "n_head", "params", "params_nonembed",
    "tokens", "seed", "steps", "epochs", "best_val_loss", "final_val_loss", "train_loss",
    "wall_s", "device", "converged",
]
# docs/design.md's columns first, in its order; then what says how each estimate was made.
ID_COLUMNS = [
    "corpus", "embedder", "layer", "estimator", "k", "metric", "n_points", "id", "ci_low",
    "ci_high", "protocol", "n_duplicates", "n_docs", "below_minimum",
]

# The layout is the contract: results/{corpus}/runs/{model}/D{tokens}/s{seed}/metrics.json
RUN_PATH = re.compile(r"(?P<corpus>[^/]+)/runs/(?P<model>[^/]+)/D(?P<tokens>\d+)/s(?P<seed>\d+)/metrics\.json$")
ROBUSTNESS_PATH = re.compile(r"(?P<corpus>[^/]+)/id_robustness\.json$")
ID_PATH = re.compile(r"(?P<corpus>[^/]+)/intrinsic_dim/(?P<embedder>[^/]+)\.json$")


def _match(pattern: re.Pattern, path: Path, what: str) -> dict:
    m = pattern.search(Path(path).as_posix())
    if not m:
        raise DataError(f"{path}: not a {what} path of the results layout")
    return m.groupdict()


def collect_losses(metrics_paths: list[Path], out_csv: Path) -> pd.DataFrame:
    rows = []
    for path in metrics_paths:
        where = _match(RUN_PATH, path, "run metrics")
        metrics = read_json(path)
        config = read_json(Path(path).with_name("config.json")) if Path(path).with_name("config.json").exists() else {}
        row = {
            "corpus": where["corpus"],
            "model": where["model"],
            "n_layer": metrics.get("n_layer", config.get("n_layer")),
            "n_embd": metrics.get("n_embd", config.get("n_embd")),
            "n_head": metrics.get("n_head", config.get("n_head")),
            "tokens": int(where["tokens"]),
            "seed": int(where["seed"]),
        }
        missing = [c for c in LOSS_COLUMNS if c not in row and c not in metrics]
        if missing:
            raise DataError(f"{path}: metrics lack {', '.join(missing)}")
        row.update({c: metrics[c] for c in LOSS_COLUMNS if c not in row})
        rows.append(row)
    table = pd.DataFrame(rows, columns=LOSS_COLUMNS).sort_values(
        ["corpus", "params_nonembed", "model", "tokens", "seed"], kind="stable"
    )
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def collect_ids(id_paths: list[Path], out_csv: Path) -> pd.DataFrame:
    rows = []
    for path in id_paths:
        where = _match(ID_PATH, path, "intrinsic-dimension")
        for row in read_json(path)["rows"]:
            rows.append({**where, **row})
    table = pd.DataFrame(rows)
    extra = [c for c in table.columns if c not in ID_COLUMNS]
    table = table.reindex(columns=ID_COLUMNS + extra)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def collect_robustness(paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/id_robustness.csv: the ID against model, step and position, every corpus."""
    from idscaling.id_robustness import ROW_KEYS

    rows = []
    for path in paths:
        where = _match(ROBUSTNESS_PATH, path, "ID robustness")
        rows += [{**where, **row} for row in read_json(path)["rows"]]
    table = pd.DataFrame(rows, columns=["corpus"] + ROW_KEYS)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def collect_subsets(paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/data_grid.csv: every corpus's every D, checked against its train tokens."""
    columns = ["corpus", "tokens", "train_tokens", "fraction", "docs", "docs_exact"]
    rows = []
    for path in paths:
        summary = read_json(path)
        missing = [c for c in columns if c not in summary]
        if missing:
            raise DataError(f"{path}: subset summary lacks {', '.join(missing)}")
        rows.append({c: summary[c] for c in columns})
    table = pd.DataFrame(rows, columns=columns).sort_values(["corpus", "tokens"], kind="stable")
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table
