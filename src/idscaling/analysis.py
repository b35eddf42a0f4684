"""The `laws` stage: fit the scaling laws, set the ID's predictions beside them, draw, summarise.

Reads `losses.csv`, `intrinsic_dim.csv` and the runs' `history.csv` files; writes
`laws.csv`, `predictions.csv`, `summary.md` and `figures/*.png` under one directory.

Decisions a reader of the tables should know:

- N is `params_nonembed` (Kaplan's N), D is `tokens` (unique training tokens); every run
  is one point, so several seeds give several points at one size.
- laws.csv: one row per corpus × law × fixed × form. The joint law has one row
  (form `offset`): `exponent` is its α (model), `exponent_D` its β (data), with
  `predicted_*` the α_N prediction and `predicted_D_*` the α_D prediction.
- The observed exponents that predictions.csv and summary.md set against the theory are
  pooled over all runs of a corpus: α_D is the joint law's β and α_N its α. When the
  joint law cannot be fitted, α_D comes from the offset data law of the largest model
  with a fit (α_N: the offset model law at the largest D with a fit), and
  `observed_source` says so.
- The verdict (`idscaling.verdicts`) is `agrees` when the observed α_D interval lies inside
  the predicted one widened by the margin, `disagrees` when the two intervals exclude each
  other, `inconclusive` otherwise, with the reason. Overlap alone decides nothing.
- A law with no more points than parameters is `underdetermined`: it gets no numbers and
  never supplies an observed exponent.
- Only converged runs (losses.csv `converged`: the val loss plateaued, then the lr was
  annealed) are points of a law, unless `converged_only=False`; the summary counts and
  names the runs left out, and the figures draw them hollow.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from idscaling.errors import DataError
from idscaling.io import atomic_path, write_text
from idscaling.laws import PowerLaw, fit_joint_law, fit_power_law
from idscaling.theory import implied_smoothness, predict_exponents
from idscaling.verdicts import decide

log = logging.getLogger(__name__)

DEFAULT_REFERENCE = {"estimator": "mle", "k": 20, "protocol": "batched", "layer": "last"}
DEFAULT_MARGIN = 0.05  # theory.margin in the schema
LAW_PARAMETERS = {("data", "offset"): 3, ("data", "pure"): 2, ("model", "offset"): 3,
                  ("model", "pure"): 2, ("joint", "offset"): 5}

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
HISTORY_REQUIRED = ["step", "tokens", "train_loss", "val_loss"]
ROBUSTNESS_REQUIRED = ["corpus", "axis", "run", "params_nonembed", "step", "position_lo",
                       "position_hi", "n_points", "id", "ci_low", "ci_high"]


def natural_order(names) -> list[str]:
    """Names sorted with their numbers read as numbers: synth-d2 before synth-d16."""
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", str(n))])


def run_laws(losses_csv: Path, id_csv: Path, history_paths: list[Path], out_dir: Path, *,
             smoothness: float = 1.0, bootstrap: int = 1000, seed: int = 0,
             reference: dict | None = None, corpora: dict | None = None,
             loss_column: str = "best_val_loss", draw: bool = True,
             margin: float = DEFAULT_MARGIN, converged_only: bool = True,
             robustness_csv: Path | None = None) -> dict:
    """Fit every law of every corpus, predict exponents from the IDs, draw and summarise.

    Writes out_dir/laws.csv, out_dir/predictions.csv, out_dir/summary.md and
    out_dir/figures/{data_scaling, model_scaling, exponents, id_vs_k, id_vs_layer,
    training_curves}.png, plus figures/latent_dim.png when `corpora` (the config's
    mapping) has corpora with a `latent_dim`. `reference` picks the ID that laws.csv and
    the summary use (default mle, k=20, batched, last layer). `draw=False` skips the
    figures (tables only). `converged_only` fits converged runs only. `robustness_csv`
    (id_robustness.csv) adds figures/id_robustness.png and a line per corpus to the
    summary. Returns the paths written and the tables.
    """
    out_dir = Path(out_dir)
    reference = {**DEFAULT_REFERENCE, **(reference or {})}
    losses = read_losses(losses_csv, loss_column)
    ids = read_ids(id_csv)
    histories = read_histories(history_paths)
    robustness = read_robustness(robustness_csv) if robustness_csv is not None else None

    refs = {c: reference_id(ids[ids["corpus"] == c], reference, c)
            for c in natural_order(set(losses["corpus"]) | set(ids["corpus"]))}
    fitted = losses[losses["converged"]] if converged_only else losses
    if len(fitted) < len(losses):
        log.warning("%d of %d runs did not converge and are left out of the fits: %s",
                    len(losses) - len(fitted), len(losses),
                    _run_names(losses[~losses["converged"]]))
    laws, fits = fit_laws(fitted, refs, smoothness=smoothness, bootstrap=bootstrap, seed=seed)
    predictions = predictions_table(ids, laws, refs, smoothness, margin)

    paths = {"laws": out_dir / "laws.csv", "predictions": out_dir / "predictions.csv",
             "summary": out_dir / "summary.md"}
    _write_csv(laws, paths["laws"])
    _write_csv(predictions, paths["predictions"])

    figures = _draw(losses, fits, predictions, ids, refs, histories, corpora, smoothness,
                    out_dir / "figures", robustness) if draw else {}
    write_text(paths["summary"], summary_markdown(laws, predictions, refs, smoothness=smoothness,
                                                  bootstrap=bootstrap, reference=reference,
                                                  loss_column=loss_column, margin=margin,
                                                  runs=losses, converged_only=converged_only,
                                                  robustness=robustness))
    log.info("wrote %s, %s, %s and %d figures", *paths.values(), len(figures))
    return {**paths, "figures": figures, "laws_table": laws, "predictions_table": predictions}


def _draw(losses, fits, predictions, ids, refs, histories, corpora, smoothness, fig_dir,
          robustness=None):
    """Every figure of the stage; {name: path}."""
    from idscaling import plots   # seaborn is slow to import: only when drawing

    figures = {
        "data_scaling": plots.plot_data_scaling(losses, fits, fig_dir / "data_scaling.png"),
        "model_scaling": plots.plot_model_scaling(losses, fits, fig_dir / "model_scaling.png"),
        "exponents": plots.plot_exponents(predictions, fig_dir / "exponents.png"),
        "id_vs_k": plots.plot_id_vs_k(ids, refs, fig_dir / "id_vs_k.png"),
        "id_vs_layer": plots.plot_id_vs_layer(ids, refs, fig_dir / "id_vs_layer.png"),
        "training_curves": plots.plot_training_curves(
            histories, fig_dir / "training_curves.png",
            model_sizes=losses.groupby("model")["params_nonembed"].first().to_dict()),
    }
    if robustness is not None:
        figures["id_robustness"] = plots.plot_id_robustness(
            robustness, refs, fig_dir / "id_robustness.png")
    latent = _latent_dims(corpora)
    if latent:
        figures["latent_dim"] = plots.plot_latent_dim(
            latent, predictions, smoothness, fig_dir / "latent_dim.png")
    return figures


# ---------------------------------------------------------------------------------------
# reading


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
    converged = table["converged"].map(_as_bool)
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
                    path, bad.sum(), loss_column, _run_names(table[bad]))
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


def read_histories(paths: list[Path]) -> pd.DataFrame:
    """All history.csv files in one table with corpus, model, D and seed from their paths."""
    frames = []
    for path in paths or []:
        path = Path(path)
        table = _read_csv(path, "training history", HISTORY_REQUIRED)
        parts = path.parts
        try:
            corpus, runs, model, d, s = parts[-6:-1]
            if runs != "runs" or not d.startswith("D") or not s.startswith("s"):
                raise ValueError
            tokens, run_seed = int(d[1:]), int(s[1:])
        except ValueError:
            raise DataError(f"{path}: not a results/{{corpus}}/runs/{{model}}/D{{tokens}}/"
                            "s{seed}/history.csv path") from None
        frames.append(table.assign(corpus=corpus, model=model, D=tokens, seed=run_seed))
    if not frames:
        return pd.DataFrame(columns=HISTORY_REQUIRED + ["corpus", "model", "D", "seed"])
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------
# the reference ID of a corpus


def read_robustness(path: Path) -> pd.DataFrame:
    return _read_csv(path, "ID robustness", ROBUSTNESS_REQUIRED)


def reference_id(ids: pd.DataFrame, reference: dict, corpus: str) -> dict:
    """The ID row that laws.csv uses for `corpus`, closest to `reference`, and a note.

    Preference on a mismatch: the estimator first, then the protocol, the layer and the
    nearest k. Returns {"row": the ID row (a Series) or None, "note": what was not as asked}.
    """
    if ids.empty:
        return {"row": None, "note": f"no intrinsic dimension for corpus {corpus}"}
    embedders = sorted(ids["embedder"].unique())
    embedder = reference.get("embedder") or embedders[0]
    notes = []
    if embedder not in embedders:
        notes.append(f"embedder {embedder} not measured; used {embedders[0]}")
        embedder = embedders[0]
    elif len(embedders) > 1 and not reference.get("embedder"):
        notes.append(f"several embedders ({', '.join(embedders)}); used {embedder}")
    rows = ids[ids["embedder"] == embedder]
    last = int(rows["layer"].max())
    want_layer = last if str(reference["layer"]) == "last" else int(reference["layer"])
    score = pd.DataFrame({
        "estimator": rows["estimator"] != reference["estimator"],
        "protocol": rows["protocol"] != reference["protocol"],
        "layer": rows["layer"] != want_layer,
        "k": (rows["k"] - reference["k"]).abs(),
    })
    best = score.sort_values(["estimator", "protocol", "layer", "k"], kind="stable").index[0]
    row = rows.loc[best]
    if score.loc[best].any():
        layer_name = "last layer" if str(reference["layer"]) == "last" else f"layer {want_layer}"
        notes.append(f"reference ID ({reference['estimator']}, k={reference['k']}, "
                     f"{reference['protocol']}, {layer_name}) not measured; used "
                     f"{row['estimator']}, k={int(row['k'])}, {row['protocol'] or '-'}, "
                     f"layer {int(row['layer'])}")
    note = "; ".join(notes)
    if note:
        log.warning("corpus %s: %s", corpus, note)
    log.info("corpus %s: reference ID %.3g (%s, k=%d, %s, layer %d)", corpus, row["id"],
             row["estimator"], int(row["k"]), row["protocol"], int(row["layer"]))
    return {"row": row, "note": note}


def _id_interval(row) -> tuple[float, float] | None:
    """The row's ID interval, or None when it has none usable."""
    ci = (row["ci_low"], row["ci_high"])
    return ci if all(np.isfinite(ci)) and 0 < ci[0] <= ci[1] else None


def _predict(row, smoothness: float):
    return predict_exponents(row["id"], smoothness, id_ci=_id_interval(row))


# ---------------------------------------------------------------------------------------
# fitting


def _fit_seed(seed: int, *key) -> list[int]:
    # A fit's resamples depend on what it is, not on how many fits came before it.
    return [seed, zlib.crc32("/".join(map(str, key)).encode())]


def fit_laws(losses: pd.DataFrame, refs: dict, *, smoothness: float = 1.0,
             bootstrap: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Fit data laws (per model), model laws (per D), both forms, and the joint law.

    Returns (laws table in LAW_COLUMNS, fits keyed by (corpus, law, fixed, form)).
    """
    jobs = []
    for corpus, runs in losses.groupby("corpus", sort=True):
        by_size = runs.sort_values("params_nonembed")
        for model in by_size["model"].unique():
            jobs += [(corpus, "data", model, form) for form in ("offset", "pure")]
        for tokens in sorted(runs["tokens"].unique()):
            jobs += [(corpus, "model", str(int(tokens)), form) for form in ("offset", "pure")]
        jobs.append((corpus, "joint", "", "offset"))

    rows, fits = [], {}
    for corpus, law, fixed, form in tqdm(jobs, desc="fitting laws", unit="fit", leave=False):
        runs = losses[losses["corpus"] == corpus]
        if law == "data":
            sel = runs[runs["model"] == fixed]
            x = sel["tokens"].to_numpy()
        elif law == "model":
            sel = runs[runs["tokens"] == float(fixed)]
            x = sel["params_nonembed"].to_numpy()
        else:
            sel = runs
        seed_ = _fit_seed(seed, corpus, law, fixed)
        if law == "joint":
            fit = fit_joint_law(sel["params_nonembed"].to_numpy(), sel["tokens"].to_numpy(),
                                sel["loss"].to_numpy(), bootstrap=bootstrap, seed=seed_)
        else:
            fit = fit_power_law(x, sel["loss"].to_numpy(), offset=form == "offset",
                                bootstrap=bootstrap, seed=seed_,
                                size_name="D (tokens)" if law == "data" else "N (parameters)")
        fits[(corpus, law, fixed, form)] = fit
        rows.append(_law_row(corpus, law, fixed, form, fit, refs.get(corpus), smoothness))
        status = "ok" if fit.ok else "no fit"
        log.info("%s %s law %s (%s): %s%s", corpus, law, fixed or "(all runs)", form, status,
                 f": {fit.reason}" if fit.reason else "")
    return pd.DataFrame(rows, columns=LAW_COLUMNS), fits


def _law_row(corpus, law, fixed, form, fit, ref, smoothness) -> dict:
    nan = math.nan
    row = dict.fromkeys(LAW_COLUMNS, nan)
    row.update(corpus=corpus, law=law, fixed=fixed, form=form, n_points=fit.n_points,
               rmse_log=fit.rmse_log, n_boot=fit.n_boot,
               status="ok" if fit.ok else "no_fit")
    n_params = LAW_PARAMETERS[(law, form)]
    if fit.ok and fit.n_points <= n_params:
        # it passes through every point: its rmse is 0 and its numbers say nothing
        row.update(status="underdetermined", rmse_log=nan,
                   reason=f"{fit.n_points} points for {n_params} parameters")
    elif isinstance(fit, PowerLaw):
        row.update(exponent=fit.exponent, exponent_ci_low=fit.exponent_ci_low,
                   exponent_ci_high=fit.exponent_ci_high, offset_E=fit.offset, coef=fit.coef,
                   offset_E_ci_low=fit.offset_ci_low, offset_E_ci_high=fit.offset_ci_high,
                   coef_ci_low=fit.coef_ci_low, coef_ci_high=fit.coef_ci_high,
                   n_sizes=fit.n_sizes)
    else:
        row.update(exponent=fit.alpha, exponent_ci_low=fit.alpha_ci_low,
                   exponent_ci_high=fit.alpha_ci_high, offset_E=fit.E, coef=fit.A,
                   offset_E_ci_low=fit.E_ci_low, offset_E_ci_high=fit.E_ci_high,
                   coef_ci_low=fit.A_ci_low, coef_ci_high=fit.A_ci_high,
                   exponent_D=fit.beta, exponent_D_ci_low=fit.beta_ci_low,
                   exponent_D_ci_high=fit.beta_ci_high, coef_D=fit.B,
                   offset_at_bound=fit.offset_at_bound)
    notes = [r for r in (fit.reason, row["reason"] if isinstance(row["reason"], str) else "") if r]
    pred = _predict(ref["row"], smoothness) if ref and ref["row"] is not None else None
    if pred is None:
        notes.append(ref["note"] if ref else f"no intrinsic dimension for corpus {corpus}")
    else:
        if ref["note"]:
            notes.append(f"ID: {ref['note']}")
        data = (pred.alpha_D, pred.alpha_D_ci_low, pred.alpha_D_ci_high)
        model = (pred.alpha_N, pred.alpha_N_ci_low, pred.alpha_N_ci_high)
        cols = ["predicted_exponent", "predicted_ci_low", "predicted_ci_high"]
        row.update(id=pred.id, **dict(zip(cols, data if law == "data" else model)))
        if law == "joint":
            row.update(dict(zip(["predicted_D_exponent", "predicted_D_ci_low",
                                 "predicted_D_ci_high"], data)))
    row["reason"] = "; ".join(notes)
    return row


# ---------------------------------------------------------------------------------------
# predictions and verdicts


def observed_exponents(laws: pd.DataFrame, corpus: str) -> dict:
    """The pooled observed α_D and α_N of a corpus (see the module docstring)."""
    rows = laws[(laws["corpus"] == corpus) & (laws["status"] == "ok")]
    out = {}
    joint = rows[rows["law"] == "joint"]
    for name, exp_col, law, key in [("alpha_D", "exponent_D", "data", "data"),
                                    ("alpha_N", "exponent", "model", "model")]:
        if len(joint):
            j = joint.iloc[0]
            source = "joint law " + ("beta" if name == "alpha_D" else "alpha")
            high = j[f"{exp_col}_ci_high"]
            if _as_bool(j["offset_at_bound"]) is True:
                # E unidentified: the whole loss's exponent bounds the excess's from below
                high, source = math.inf, source + ", a lower bound: E at its bound 0"
            out[name] = (j[exp_col], j[f"{exp_col}_ci_low"], high, source)
            continue
        single = rows[(rows["law"] == law) & (rows["form"] == "offset")]
        if single.empty:
            out[name] = (math.nan, math.nan, math.nan, "")
            continue
        if law == "data":
            # the largest model: closest to the theory's regime of an unconstrained network
            pick = single.iloc[-1]     # fit_laws orders data laws by model size
            source = f"offset data law of model {pick['fixed']} (no joint fit)"
        else:
            pick = single.iloc[np.argmax(single["fixed"].astype(float).to_numpy())]
            source = f"offset model law at D={pick['fixed']} (no joint fit)"
        out[name] = (pick["exponent"], pick["exponent_ci_low"], pick["exponent_ci_high"], source)
    return out


def verdict(observed: tuple, predicted: tuple, margin: float = DEFAULT_MARGIN) -> tuple[str, str]:
    """(verdict, one line) for observed and predicted α_D (value, low, high) triples: the
    rule of `idscaling.verdicts.decide`, or ('', why) when there is nothing to compare."""
    o, olo, ohi = observed
    p, plo, phi = predicted
    if not np.isfinite(o):
        return "", "no verdict: no observed data exponent"
    if not np.isfinite(p):
        return "", "no verdict: no predicted data exponent"
    word, why = decide((o, olo, ohi), (p, plo, phi), margin)
    return word, (f"observed α_D {_fmt(o, olo, ohi)} vs predicted {_fmt(p, plo, phi)}, "
                  f"margin ±{margin:g}: {word} ({why})")


def triple(row, name: str) -> tuple:
    """(value, ci_low, ci_high) of the column `name` of a table row."""
    return row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"]


def _span(row, name: str) -> str:
    """'v [lo, hi]' of the column `name` of a table row."""
    return _fmt(*triple(row, name))


def _fmt(v, lo=math.nan, hi=math.nan, with_ci=True) -> str:
    if not np.isfinite(v):
        return "–"
    if with_ci and np.isfinite(lo) and np.isfinite(hi):
        return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"
    if with_ci and np.isfinite(lo) and hi == math.inf:
        return f"{v:.3g} [≥ {lo:.3g}]"
    return f"{v:.3g}"


def predictions_table(ids: pd.DataFrame, laws: pd.DataFrame, refs: dict,
                      smoothness: float, margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """One row per corpus × (embedder, estimator, k, protocol, layer, metric) ID row."""
    rows = []
    for corpus, group in ids.groupby("corpus", sort=True):
        observed = observed_exponents(laws, corpus)
        ref_row = refs.get(corpus, {}).get("row")
        for idx, r in group.sort_values(["embedder", "estimator", "protocol", "k",
                                         "layer"]).iterrows():
            ci = _id_interval(r)
            pred = _predict(r, smoothness)
            oD, oN = observed["alpha_D"], observed["alpha_N"]
            s = implied_smoothness(oD[0], pred.id) if np.isfinite(oD[0]) else math.nan
            s_lo = s_hi = math.nan
            if np.isfinite(oD[1]) and np.isfinite(oD[2]):
                d_lo, d_hi = ci or (pred.id, pred.id)
                s_lo, s_hi = implied_smoothness(oD[1], d_lo), implied_smoothness(oD[2], d_hi)
            reasons = []
            if np.isfinite(oD[0]) and not np.isfinite(s):
                reasons.append(f"no smoothness reproduces α_D = {oD[0]:.3g} (needs 0 < α_D < 1)")
            if ci is None:
                reasons.append("ID has no interval")
            v, line = verdict(oD[:3], (pred.alpha_D, pred.alpha_D_ci_low, pred.alpha_D_ci_high), margin)
            reasons.append(line)
            is_ref = ref_row is not None and ref_row.name == idx
            rows.append({
                "corpus": corpus, "embedder": r["embedder"], "estimator": r["estimator"],
                "k": int(r["k"]), "protocol": r["protocol"], "layer": int(r["layer"]),
                "metric": r["metric"], "is_reference": is_ref,
                "id": pred.id, "id_ci_low": r["ci_low"], "id_ci_high": r["ci_high"],
                "smoothness": smoothness,
                "predicted_alpha_D": pred.alpha_D, "predicted_alpha_D_ci_low": pred.alpha_D_ci_low,
                "predicted_alpha_D_ci_high": pred.alpha_D_ci_high,
                "predicted_alpha_N": pred.alpha_N, "predicted_alpha_N_ci_low": pred.alpha_N_ci_low,
                "predicted_alpha_N_ci_high": pred.alpha_N_ci_high,
                "predicted_alpha_N_s2": pred.alpha_N_s2,
                "predicted_alpha_N_s2_ci_low": pred.alpha_N_s2_ci_low,
                "predicted_alpha_N_s2_ci_high": pred.alpha_N_s2_ci_high,
                "observed_alpha_D": oD[0], "observed_alpha_D_ci_low": oD[1],
                "observed_alpha_D_ci_high": oD[2], "observed_alpha_D_source": oD[3],
                "observed_alpha_N": oN[0], "observed_alpha_N_ci_low": oN[1],
                "observed_alpha_N_ci_high": oN[2], "observed_alpha_N_source": oN[3],
                "implied_smoothness": s, "implied_smoothness_ci_low": s_lo,
                "implied_smoothness_ci_high": s_hi, "verdict": v, "reason": "; ".join(reasons),
            })
    table = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    if table.empty:     # keep the column types that readers and figures expect
        text = {"corpus", "embedder", "estimator", "protocol", "metric", "verdict", "reason",
                "observed_alpha_D_source", "observed_alpha_N_source"}
        table = table.astype({c: object if c in text else bool if c == "is_reference"
                              else float for c in PREDICTION_COLUMNS})
    return table


def reference_rows(predictions: pd.DataFrame) -> pd.DataFrame:
    """Each corpus's prediction rows beside its reference: every estimator and protocol at
    the reference embedder and layer, at the k nearest the reference k (TwoNN, say, has
    only k = 2)."""
    picked = []
    for _, ref in predictions[predictions["is_reference"]].iterrows():
        same = predictions[(predictions["corpus"] == ref["corpus"])
                           & (predictions["embedder"] == ref["embedder"])
                           & (predictions["layer"] == ref["layer"])]
        order = (same["k"] - ref["k"]).abs().sort_values(kind="stable").index
        picked.append(same.loc[order].drop_duplicates(["estimator", "protocol"]))
    if not picked:
        return predictions.iloc[:0]
    return pd.concat(picked).sort_values(["corpus", "estimator", "protocol"], kind="stable")


# ---------------------------------------------------------------------------------------
# summary


def summary_markdown(laws: pd.DataFrame, predictions: pd.DataFrame, refs: dict, *,
                     smoothness: float, bootstrap: int, reference: dict,
                     loss_column: str, margin: float = DEFAULT_MARGIN,
                     runs: pd.DataFrame | None = None, converged_only: bool = True,
                     robustness: pd.DataFrame | None = None) -> str:
    """results/summary.md: per corpus the ID, predicted and observed exponents, a verdict."""
    layer = "last layer" if str(reference["layer"]) == "last" else f"layer {reference['layer']}"
    out = [
        "# Does the intrinsic dimension predict the scaling exponents?",
        "",
        f"Theory (Havrilla & Liao 2024): α_D = 2s/(2s+d), α_N = 2s/d with smoothness s = "
        f"{smoothness:g}, and α_N at s = 2 beside it (4/d, Sharma & Kaplan's α_N). Reference ID: "
        f"{reference['estimator']}, k={reference['k']}, {reference['protocol']}, {layer}. "
        f"Loss: {loss_column} (nats/token). Intervals: 95%, bootstrap over runs "
        f"({bootstrap} resamples) for observed exponents, carried from the ID interval "
        "for predicted ones. Observed exponents are the joint law's, pooled over all runs "
        "of a corpus, unless said otherwise.",
        "",
    ]
    for corpus in natural_order(set(laws["corpus"]) | set(refs)):
        out += [f"## {corpus}", ""]
        if runs is not None:
            out += [_runs_line(runs[runs["corpus"] == corpus], converged_only), ""]
        ref = refs.get(corpus, {})
        row = ref.get("row")
        pred = predictions[(predictions["corpus"] == corpus) & predictions["is_reference"]]
        if row is None or pred.empty:
            oD = observed_exponents(laws, corpus)["alpha_D"]
            out += ["**Verdict: none** — no ID to predict from.", "",
                    f"- ID: none ({ref.get('note') or 'not measured'})",
                    f"- observed α_D: {_fmt(*oD[:3])} ({oD[3] or 'no fit'})", ""]
        else:
            p = pred.iloc[0]
            id_desc = (f"{p['estimator']}, k={p['k']}, {p['protocol'] or '-'}, layer {p['layer']}"
                       + (f", embedder {p['embedder']}" if p["embedder"] else ""))
            v, line = verdict(triple(p, "observed_alpha_D"), triple(p, "predicted_alpha_D"), margin)
            out += [
                f"**Verdict: {v or 'none'}** — {line}",
                "",
                f"- ID ({id_desc}): {_span(p, 'id')}{_id_basis(row)}"
                + (f" — {ref['note']}" if ref.get("note") else ""),
                f"- predicted α_D = 2s/(2s+d): {_span(p, 'predicted_alpha_D')}",
                f"- predicted α_N = 2s/d: {_span(p, 'predicted_alpha_N')} at s = "
                f"{smoothness:g}; {_span(p, 'predicted_alpha_N_s2')} at s = 2 (4/d, "
                "Sharma–Kaplan's)",
                f"- observed α_D: {_span(p, 'observed_alpha_D')} "
                f"({p['observed_alpha_D_source'] or 'no fit'})",
                f"- observed α_N: {_span(p, 'observed_alpha_N')} "
                f"({p['observed_alpha_N_source'] or 'no fit'})",
                f"- smoothness implied by the observed α_D: {_span(p, 'implied_smoothness')}",
            ]
            if robustness is not None:
                out += _robustness_lines(robustness[robustness["corpus"] == corpus])
            out += [""]
            others = reference_rows(predictions)
            others = others[(others["corpus"] == corpus) & ~others["is_reference"]]
            if len(others):
                out += ["Other estimators at the same layer (at the k nearest the reference):",
                        "", "| estimator | protocol | k | ID | predicted α_D | verdict |",
                        "|---|---|---|---|---|---|"]
                for _, o in others.iterrows():
                    out.append(f"| {o['estimator']} | {o['protocol'] or '-'} | {o['k']} | "
                               f"{_span(o, 'id')} | {_span(o, 'predicted_alpha_D')} | "
                               f"{o['verdict'] or 'none'} |")
                out.append("")
        fits = laws[laws["corpus"] == corpus]
        out += ["Fitted laws:", "",
                "| law | fixed | form | exponent | E | points | rmse (log) | status |",
                "|---|---|---|---|---|---|---|---|"]
        for _, f in fits.iterrows():
            exponent = _span(f, "exponent")
            if f["law"] == "joint" and f["status"] == "ok":
                exponent = f"α={exponent}, β={_span(f, 'exponent_D')}"
            status = f["status"].replace("_", " ")
            if f["reason"]:
                status += f": {f['reason']}"
            out.append(f"| {f['law']} | {f['fixed'] or '(all)'} | {f['form']} | {exponent} | "
                       f"{_fmt(f['offset_E'])} | {int(f['n_points'])} | {_fmt(f['rmse_log'])} | "
                       f"{status.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def _robustness_lines(rob: pd.DataFrame) -> list[str]:
    """How far the ID moves with the model, the training step and the context position."""
    def spread(sel, label):
        if sel.empty:
            return None
        lo, hi = sel.loc[sel["id"].idxmin()], sel.loc[sel["id"].idxmax()]
        return f"{sel['id'].min():.2f} ({label(lo)}) to {sel['id'].max():.2f} ({label(hi)})"

    lines = []
    models = spread(rob[rob["axis"] == "model"], lambda r: r["run"])
    if models:
        lines.append(f"- ID across the {int((rob['axis'] == 'model').sum())} trained runs: "
                     f"{models}")
    steps = rob[rob["axis"] == "step"].sort_values("step")
    if len(steps):
        lines.append("- ID over training of the reference run: " + ", ".join(
            f"{r['id']:.2f} at step {int(r['step'])}" for _, r in steps.iterrows()))
    bins = rob[(rob["axis"] == "position") & (rob["run"] == "bin")]
    every = rob[(rob["axis"] == "position") & (rob["run"] == "all")]
    positions = spread(bins, lambda r: f"positions {int(r['position_lo'])}-"
                                       f"{int(r['position_hi']) - 1}")
    if positions:
        lines.append(f"- ID by context position: {positions}"
                     + (f"; all positions at the same {int(every['n_points'].iloc[0]):,} points:"
                        f" {every['id'].iloc[0]:.2f}" if len(every) else ""))
    return lines


def _id_basis(row) -> str:
    """' from 8,000 points of 250 documents', with a warning below the embed stage's minimum."""
    points, docs = row.get("n_points"), row.get("n_docs")
    if points is None or pd.isna(points):
        return ""
    out = f", from {int(points):,} points" + (
        f" of {int(docs):,} documents" if docs is not None and not pd.isna(docs) else "")
    if _as_bool(row.get("below_minimum", False)):
        out += (" — **below the configured minimum (embedding.min_points, min_docs): "
                "a weak estimate**")
    return out


def _runs_line(runs: pd.DataFrame, converged_only: bool) -> str:
    done = int(runs["converged"].sum())
    line = f"Runs: {done} of {len(runs)} converged (val loss plateaued, then lr annealed)"
    if done == len(runs):
        return line + "."
    names = _run_names(runs[~runs["converged"]])
    if converged_only:
        return (line + f"; the laws use only those. Left out, not converged: {names}. "
                "More steps (train.max_steps) would let them plateau.")
    return line + f"; the laws use all runs (laws.converged_only is off), also: {names}."


# ---------------------------------------------------------------------------------------
# small helpers


def _as_bool(value):
    """True/False from a CSV cell (pandas reads a bool column as bool, a mixed one as text)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    return {"true": True, "false": False, "1": True, "0": False}.get(str(value).strip().lower())


def _run_names(runs: pd.DataFrame) -> str:
    return ", ".join(f"{r.corpus}/{r.model}/D{int(r.tokens)}/s{int(getattr(r, 'seed', 0))}"
                     for r in runs.itertuples())


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _latent_dims(corpora: dict | None) -> dict:
    """{corpus: latent_dim} for synthetic corpora of known dimension."""
    out = {}
    for name, spec in (corpora or {}).items():
        if isinstance(spec, dict) and "latent_dim" in spec:
            out[str(name)] = float(spec["latent_dim"])
    return out
