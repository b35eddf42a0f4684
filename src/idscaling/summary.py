"""results/summary.md: per corpus the verdict first, then the ID, the predicted and
observed exponents, the ID's robustness, and every fitted law."""

from __future__ import annotations


import pandas as pd

from idscaling.predictions import (DEFAULT_MARGIN, fmt, observed_exponents, reference_rows,
                                   triple, verdict)
from idscaling.tables import as_bool, natural_order, run_names


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
                    f"- observed α_D: {fmt(*oD[:3])} ({oD[3] or 'no fit'})", ""]
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
                       f"{fmt(f['offset_E'])} | {int(f['n_points'])} | {fmt(f['rmse_log'])} | "
                       f"{status.replace('|', '/')} |")
        out.append("")
    return "\n".join(out)


def _span(row, name: str) -> str:
    """'v [lo, hi]' of the column `name` of a table row."""
    return fmt(*triple(row, name))


def _robustness_lines(rob: pd.DataFrame) -> list[str]:
    """How far the ID moves with the model, the training step and the context position."""
    def spread(sel, label):
        if sel.empty:
            return None
        lo, hi = sel.loc[sel["id"].idxmin()], sel.loc[sel["id"].idxmax()]
        return f"{lo['id']:.2f} ({label(lo)}) to {hi['id']:.2f} ({label(hi)})"

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
    if as_bool(row.get("below_minimum", False)):
        out += (" — **below the configured minimum (embedding.min_points, min_docs): "
                "a weak estimate**")
    return out


def _runs_line(runs: pd.DataFrame, converged_only: bool) -> str:
    done = int(runs["converged"].sum())
    line = f"Runs: {done} of {len(runs)} converged (val loss plateaued, then lr annealed)"
    if done == len(runs):
        return line + "."
    names = run_names(runs[~runs["converged"]])
    if converged_only:
        return (line + f"; the laws use only those. Left out, not converged: {names}. "
                "More steps (train.max_steps) would let them plateau.")
    return line + f"; the laws use all runs (laws.converged_only is off), also: {names}."
