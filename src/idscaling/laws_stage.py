"""The `laws` stage: fit the scaling laws, set the ID's predictions beside them, draw,
summarise.

Reads `losses.csv`, `intrinsic_dim.csv`, `histories.csv` and (optionally)
`id_robustness.csv`; writes `laws.csv`, `predictions.csv`, `summary.md` and
`figures/*.png` under one directory.

Decisions a reader of the tables should know:

- N is `params_nonembed` (Kaplan's N), D is `tokens` (unique training tokens); every run
  is one point, so several seeds give several points at one size.
- laws.csv: one row per corpus × law × fixed × form. The joint law has one row
  (form `offset`): `exponent` is its α (model), `exponent_D` its β (data), with
  `predicted_*` the α_N prediction and `predicted_D_*` the α_D prediction.
- A law with no more points than parameters is `underdetermined`: it gets no numbers and
  never supplies an observed exponent.
- Only converged runs (losses.csv `converged`: the val loss plateaued, then the lr was
  annealed) are points of a law, unless `converged_only=False`; the summary counts and
  names the runs left out, and the figures draw them hollow.
- Predictions, observed exponents and verdicts: `idscaling.predictions`.
"""

from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from idscaling.files import write_text
from idscaling.laws import PowerLaw, fit_joint_law, fit_power_law
from idscaling.predictions import (DEFAULT_MARGIN, DEFAULT_REFERENCE, predict,
                                   predictions_table, reference_id)
from idscaling.summary import summary_markdown
from idscaling.tables import (LAW_COLUMNS, natural_order, read_histories, read_ids,
                              read_losses, read_robustness, run_names, write_csv)

log = logging.getLogger(__name__)

LAW_PARAMETERS = {("data", "offset"): 3, ("data", "pure"): 2, ("model", "offset"): 3,
                  ("model", "pure"): 2, ("joint", "offset"): 5}


def run_laws(losses_csv: Path, id_csv: Path, histories_csv: Path | None, out_dir: Path, *,
             smoothness: float = 1.0, bootstrap: int = 1000, seed: int = 0,
             reference: dict | None = None,
             loss_column: str = "best_val_loss", draw: bool = True,
             margin: float = DEFAULT_MARGIN, converged_only: bool = True,
             robustness_csv: Path | None = None) -> dict:
    """Fit every law of every corpus, predict exponents from the IDs, draw and summarise.

    Writes out_dir/laws.csv, out_dir/predictions.csv, out_dir/summary.md and
    out_dir/figures/{data_scaling, model_scaling, exponents, id_vs_k, id_vs_layer,
    training_curves}.png. `reference` picks the ID that laws.csv and the summary use (default mle, k=20, batched, last layer). `draw=False` skips the
    figures (tables only). `converged_only` fits converged runs only. `robustness_csv`
    (id_robustness.csv) adds figures/id_robustness.png and a line per corpus to the
    summary. Returns the paths written and the tables.
    """
    out_dir = Path(out_dir)
    reference = {**DEFAULT_REFERENCE, **(reference or {})}
    losses = read_losses(losses_csv, loss_column)
    ids = read_ids(id_csv)
    histories = (read_histories(histories_csv) if histories_csv is not None else
                 pd.DataFrame(columns=["corpus", "model", "tokens", "seed", "step",
                                       "tokens_seen", "train_loss", "val_loss"]))
    robustness = read_robustness(robustness_csv) if robustness_csv is not None else None

    refs = {c: reference_id(ids[ids["corpus"] == c], reference, c)
            for c in natural_order(set(losses["corpus"]) | set(ids["corpus"]))}
    fitted = losses[losses["converged"]] if converged_only else losses
    if len(fitted) < len(losses):
        log.warning("%d of %d runs did not converge and are left out of the fits: %s",
                    len(losses) - len(fitted), len(losses),
                    run_names(losses[~losses["converged"]]))
    laws, fits = fit_laws(fitted, refs, smoothness=smoothness, bootstrap=bootstrap, seed=seed)
    predictions = predictions_table(ids, laws, refs, smoothness, margin)

    paths = {"laws": out_dir / "laws.csv", "predictions": out_dir / "predictions.csv",
             "summary": out_dir / "summary.md"}
    write_csv(laws, paths["laws"])
    write_csv(predictions, paths["predictions"])

    figures = _draw(losses, fits, predictions, ids, refs, histories, out_dir / "figures",
                    robustness) if draw else {}
    write_text(paths["summary"], summary_markdown(laws, predictions, refs, smoothness=smoothness,
                                                  bootstrap=bootstrap, reference=reference,
                                                  loss_column=loss_column, margin=margin,
                                                  runs=losses, converged_only=converged_only,
                                                  robustness=robustness))
    log.info("wrote %s, %s, %s and %d figures", *paths.values(), len(figures))
    return {**paths, "figures": figures, "laws_table": laws, "predictions_table": predictions}


def _draw(losses, fits, predictions, ids, refs, histories, fig_dir, robustness=None):
    """Every figure of the stage; {name: path}."""
    from idscaling import id_plots, plots   # seaborn is slow to import: only when drawing

    figures = {
        "data_scaling": plots.plot_data_scaling(losses, fits, fig_dir / "data_scaling.png"),
        "model_scaling": plots.plot_model_scaling(losses, fits, fig_dir / "model_scaling.png"),
        "exponents": plots.plot_exponents(predictions, fig_dir / "exponents.png"),
        "id_vs_k": id_plots.plot_id_vs_k(ids, refs, fig_dir / "id_vs_k.png"),
        "id_vs_layer": id_plots.plot_id_vs_layer(ids, refs, fig_dir / "id_vs_layer.png"),
        "training_curves": plots.plot_training_curves(
            histories, fig_dir / "training_curves.png",
            model_sizes=losses.groupby("model")["params_nonembed"].first().to_dict()),
    }
    if robustness is not None:
        figures["id_robustness"] = id_plots.plot_id_robustness(
            robustness, refs, fig_dir / "id_robustness.png")
    return figures


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
    own = row["reason"] if isinstance(row["reason"], str) else ""
    notes = [r for r in (fit.reason, "" if own in (fit.reason or "") else own) if r]
    pred = predict(ref["row"], smoothness) if ref and ref["row"] is not None else None
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
