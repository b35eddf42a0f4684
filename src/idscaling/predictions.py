"""What the intrinsic dimension predicts, what the laws observed, and the verdict.

- The reference ID of a corpus is one row of intrinsic_dim.csv (`reference_id`): the
  configured estimator, protocol, layer and k, or the nearest measured, with a note.
- The observed exponents set against the theory are pooled over all runs of a corpus: α_D
  is the joint law's β and α_N its α. When the joint law cannot be fitted, α_D comes from
  the offset data law of the largest model with a fit (α_N: the offset model law at the
  largest D with a fit), and `observed_source` says so. A joint law with E at its bound 0
  gives lower bounds only (no upper end).
- The verdict (`idscaling.verdicts`) is `agrees` when the observed α_D interval lies inside
  the predicted one widened by the margin, `disagrees` when the two intervals exclude each
  other, `inconclusive` otherwise, with the reason. Overlap alone decides nothing.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd

from idscaling.tables import PREDICTION_COLUMNS, as_bool
from idscaling.theory import implied_smoothness, predict_exponents
from idscaling.verdicts import decide

log = logging.getLogger(__name__)

DEFAULT_REFERENCE = {"estimator": "mle", "k": 20, "protocol": "batched", "layer": "last"}
DEFAULT_MARGIN = 0.05  # theory.margin in the schema


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


def predict(row, smoothness: float):
    return predict_exponents(row["id"], smoothness, id_ci=_id_interval(row))


def observed_exponents(laws: pd.DataFrame, corpus: str) -> dict:
    """The pooled observed α_D and α_N of a corpus (see the module docstring):
    {name: (value, low, high, source)}."""
    rows = laws[(laws["corpus"] == corpus) & (laws["status"] == "ok")]
    out = {}
    joint = rows[rows["law"] == "joint"]
    for name, exp_col, law, key in [("alpha_D", "exponent_D", "data", "data"),
                                    ("alpha_N", "exponent", "model", "model")]:
        if len(joint):
            j = joint.iloc[0]
            source = "joint law " + ("beta" if name == "alpha_D" else "alpha")
            high = j[f"{exp_col}_ci_high"]
            if as_bool(j["offset_at_bound"]) is True:
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
    return word, (f"observed α_D {fmt(o, olo, ohi)} vs predicted {fmt(p, plo, phi)}, "
                  f"margin ±{margin:g}: {word} ({why})")


def triple(row, name: str) -> tuple:
    """(value, ci_low, ci_high) of the column `name` of a table row."""
    return row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"]


def fmt(v, lo=math.nan, hi=math.nan, with_ci=True) -> str:
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
            pred = predict(r, smoothness)
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
