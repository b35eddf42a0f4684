"""The result tables: their columns, the collectors that build them from per-job files,
and the readers that check them.

Collectors read the fields a path encodes (corpus, model, D, seed) with
`idscaling.layout`, so the tables carry them as columns and no later stage parses a path.
Every table is written atomically.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from idscaling import layout
from idscaling.errors import DataError
from idscaling.files import atomic_path, read_json

log = logging.getLogger(__name__)

# docs/design.md's columns, in its order
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
SUBSET_COLUMNS = ["corpus", "tokens", "train_tokens", "fraction", "docs", "docs_exact"]
ROBUSTNESS_COLUMNS = ["corpus", "axis", "run", "model", "params_nonembed", "tokens", "seed",
                      "step", "position_lo", "position_hi", "n_points", "id", "ci_low",
                      "ci_high"]

LAW_COLUMNS = [
    # the contract (docs/design.md), in its order
    "corpus", "law", "fixed", "exponent", "exponent_ci_low", "exponent_ci_high", "offset_E",
    "coef", "n_points", "rmse_log", "id", "predicted_exponent", "predicted_ci_low",
    "predicted_ci_high",
    # added: the form, the joint law's data exponent, the rest of the intervals, status
    "form", "exponent_D", "exponent_D_ci_low", "exponent_D_ci_high", "coef_D",
    "predicted_D_exponent", "predicted_D_ci_low", "predicted_D_ci_high",
    "offset_E_ci_low", "offset_E_ci_high", "coef_ci_low", "coef_ci_high", "n_sizes", "n_boot",
    "offset_at_bound", "status", "reason",
]

PREDICTION_COLUMNS = [
    "corpus", "embedder", "estimator", "k", "protocol", "layer", "metric", "is_reference",
    "id", "id_ci_low", "id_ci_high", "smoothness",
    "predicted_alpha_D", "predicted_alpha_D_ci_low", "predicted_alpha_D_ci_high",
    "predicted_alpha_N", "predicted_alpha_N_ci_low", "predicted_alpha_N_ci_high",
    "predicted_alpha_N_s2", "predicted_alpha_N_s2_ci_low", "predicted_alpha_N_s2_ci_high",
    "observed_alpha_D", "observed_alpha_D_ci_low", "observed_alpha_D_ci_high",
    "observed_alpha_D_source",
    "observed_alpha_N", "observed_alpha_N_ci_low", "observed_alpha_N_ci_high",
    "observed_alpha_N_source",
    "implied_smoothness", "implied_smoothness_ci_low", "implied_smoothness_ci_high",
    "verdict", "reason",
]

LOSS_REQUIRED = ["corpus", "model", "params_nonembed", "tokens", "converged"]
ID_REQUIRED = ["corpus", "estimator", "k", "layer", "id"]
HISTORY_REQUIRED = ["step", "tokens_seen", "train_loss", "val_loss"]  # of one history.csv

ROBUSTNESS_REQUIRED = ["corpus", "axis", "run", "params_nonembed", "step", "position_lo",
                       "position_hi", "n_points", "id", "ci_low", "ci_high"]


# ---------------------------------------------------------------------------------------
# collectors


def collect_losses(metrics_paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/losses.csv: one row per run, from its metrics.json."""
    rows = []
    for path in metrics_paths:
        where = layout.parse(path, "run")
        metrics = read_json(path)
        row = {"corpus": where["corpus"], "model": where["model"], "tokens": where["tokens"],
               "seed": where["seed"]}
        missing = [c for c in LOSS_COLUMNS if c not in row and c not in metrics]
        if missing:
            raise DataError(f"{path}: metrics lack {', '.join(missing)}")
        row.update({c: metrics[c] for c in LOSS_COLUMNS if c not in row})
        rows.append(row)
    table = pd.DataFrame(rows, columns=LOSS_COLUMNS).sort_values(
        ["corpus", "params_nonembed", "model", "tokens", "seed"], kind="stable")
    write_csv(table, out_csv)
    return table


def collect_histories(history_paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/histories.csv: every run's history.csv, with the run's corpus, model, D
    (`tokens`) and seed in front."""
    frames = []
    for path in history_paths:
        where = layout.parse(path, "run")
        table = _read_csv(path, "training history", HISTORY_REQUIRED)
        frames.append(table.assign(corpus=where["corpus"], model=where["model"],
                                   tokens=where["tokens"], seed=where["seed"]))
    columns = ["corpus", "model", "tokens", "seed"]
    table = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=columns + HISTORY_REQUIRED))
    table = table[columns + [c for c in table.columns if c not in columns]]
    write_csv(table, out_csv)
    return table


def collect_ids(id_paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/intrinsic_dim.csv: every ID row of every corpus and embedder."""
    table = pd.DataFrame(_json_rows(id_paths, "id"))
    extra = [c for c in table.columns if c not in ID_COLUMNS]
    table = table.reindex(columns=ID_COLUMNS + extra)
    write_csv(table, out_csv)
    return table


def collect_robustness(paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/id_robustness.csv: the ID against model, step and position, every corpus."""
    table = pd.DataFrame(_json_rows(paths, "robustness"), columns=ROBUSTNESS_COLUMNS)
    write_csv(table, out_csv)
    return table


def _json_rows(paths: list[Path], kind: str) -> list[dict]:
    """The "rows" of per-job JSON files, each with the fields its path encodes in front."""
    rows = []
    for path in paths:
        where = layout.parse(path, kind)
        rows += [{**where, **row} for row in read_json(path)["rows"]]
    return rows


def collect_subsets(paths: list[Path], out_csv: Path) -> pd.DataFrame:
    """results/data_grid.csv: every corpus's every D, checked against its train tokens."""
    rows = []
    for path in paths:
        summary = read_json(path)
        missing = [c for c in SUBSET_COLUMNS if c not in summary]
        if missing:
            raise DataError(f"{path}: subset summary lacks {', '.join(missing)}")
        rows.append({c: summary[c] for c in SUBSET_COLUMNS})
    table = pd.DataFrame(rows, columns=SUBSET_COLUMNS).sort_values(["corpus", "tokens"],
                                                                    kind="stable")
    write_csv(table, out_csv)
    return table


def write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


# ---------------------------------------------------------------------------------------
# readers


def _read_csv(path: Path, what: str, required: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: {what} file is empty (not even a header)") from None
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(f"{path}: {what} lacks column(s) {', '.join(missing)}")
    return table


def read_losses(path: Path, loss_column: str = "best_val_loss") -> pd.DataFrame:
    """losses.csv with a `loss` column taken from `loss_column`; failed runs (NaN) dropped."""
    table = _read_csv(path, "losses", LOSS_REQUIRED + [loss_column])
    if table.empty:
        raise DataError(f"{path}: losses table has no runs")
    converged = table["converged"].map(as_bool)
    if converged.isna().any():
        bad = table.loc[converged.isna(), "converged"].iloc[0]
        raise DataError(f"{path}: column converged must be true or false in every row, got {bad!r}")
    table = table.assign(corpus=table["corpus"].astype(str), model=table["model"].astype(str),
                         loss=pd.to_numeric(table[loss_column], errors="coerce"),
                         converged=converged.astype(bool))
    for col in ["params_nonembed", "tokens"]:
        values = pd.to_numeric(table[col], errors="coerce")
        if not (values > 0).all():
            raise DataError(f"{path}: column {col} must be positive numbers in every row")
        table[col] = values.astype(float)
    bad = ~np.isfinite(table["loss"])
    if bad.any():
        log.warning("%s: %d run(s) without a finite %s are left out of the fits: %s",
                    path, bad.sum(), loss_column, run_names(table[bad]))
        table = table[~bad]
    if (table["loss"] <= 0).any():
        raise DataError(f"{path}: {loss_column} must be positive (a cross-entropy in nats)")
    if table.empty:
        raise DataError(f"{path}: no run has a finite {loss_column}")
    return table.reset_index(drop=True)


def read_ids(path: Path) -> pd.DataFrame:
    """intrinsic_dim.csv; optional columns (protocol, CIs, embedder, metric) filled if absent."""
    table = _read_csv(path, "intrinsic-dimension", ID_REQUIRED)
    defaults = {"embedder": "", "protocol": "", "metric": "", "ci_low": math.nan,
                "ci_high": math.nan}
    for col, value in defaults.items():
        if col not in table.columns:
            log.warning("%s: no %s column; taking it as empty", path, col)
            table[col] = value
    table = table.assign(
        corpus=table["corpus"].astype(str), estimator=table["estimator"].astype(str),
        embedder=table["embedder"].fillna("").astype(str),
        protocol=table["protocol"].fillna("").astype(str),
        metric=table["metric"].fillna("").astype(str),
    )
    for col in ["k", "layer", "id", "ci_low", "ci_high"]:
        table[col] = pd.to_numeric(table[col], errors="coerce")
    for col in ["k", "layer"]:
        if table[col].isna().any():
            raise DataError(f"{path}: column {col} must be an integer in every row")
    bad = ~(np.isfinite(table["id"]) & (table["id"] > 0))
    if bad.any():
        log.warning("%s: %d ID row(s) without a finite positive id are left out", path, bad.sum())
        table = table[~bad]
    if table.empty:
        log.warning("%s: no usable intrinsic-dimension rows: no predictions", path)
    return table.reset_index(drop=True)


def read_histories(path: Path) -> pd.DataFrame:
    """histories.csv (collect_histories)."""
    return _read_csv(path, "training histories",
                     ["corpus", "model", "tokens", "seed"] + HISTORY_REQUIRED)


def read_robustness(path: Path) -> pd.DataFrame:
    return _read_csv(path, "ID robustness", ROBUSTNESS_REQUIRED)


# ---------------------------------------------------------------------------------------
# small helpers


def natural_order(names) -> list[str]:
    """Names sorted with their numbers read as numbers: synth-d2 before synth-d16."""
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", str(n))])


def as_bool(value):
    """True/False from a CSV cell (pandas reads a bool column as bool, a mixed one as text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return {"true": True, "false": False, "1": True, "0": False}.get(str(value).strip().lower())


def run_names(runs: pd.DataFrame) -> str:
    return ", ".join(f"{r.corpus}/{r.model}/D{int(r.tokens)}/s{int(getattr(r, 'seed', 0))}"
                     for r in runs.itertuples())
