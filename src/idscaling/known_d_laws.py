"""The known-dimension stage's analysis: exponents of the exact excess, with verdicts.

For each arm (d, s) the excess E_z KL(p_z || q) of an estimator falls as B n^(-α); the
theory says α = 2s/(2s+d). There is no floor to fit: the excess is measured against the
generator. α is the least-squares slope of log mean excess on log n; its interval comes
from a bootstrap that resamples, in each replicate, the held-out points (the same draw
for every size, since every run of an arm is scored on the same points) and, for each
size separately, the training seeds (runs at different sizes are independent trainings).

The network's exponent is fitted only over the sizes where it is in the regime the
theory describes: its excess within `reference_factor` of the reference's (estimation,
not optimisation, limits it), the approximation error (what doubling its width gains,
measured where the wide control ran, median over seeds) at most `width_tolerance` of its
excess, and every seed converged. The MLP control is held to the same rule, with its own
wide control. The other sizes are drawn and flagged, never silently dropped.

Where the wide control trains worse than the learner (or did not run), the approximation
error is unmeasured. An approximation error A that does not depend on n can only flatten
the curve (the local slope of B n^(-α) + A is α·B n^(-α)/(B n^(-α) + A) ≤ α), so the
fitted exponent is then a lower bound: it can show a learner steeper than the theory
(`disagrees`), never one that agrees or is shallower (`inconclusive`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from idscaling.errors import DataError
from idscaling.files import read_json, write_text
from idscaling.verdicts import decide

log = logging.getLogger(__name__)

MIN_SIZES = 3  # a pure power law has two parameters: a fit needs more points than that

RUN_COLUMNS = ["arm", "d", "s", "docs", "seed", "estimator", "excess", "floor",
               "quantisation_excess", "k", "n_embd", "lr", "steps", "converged", "wall_s"]
EXPONENT_COLUMNS = ["arm", "d", "s", "estimator", "predicted", "exponent", "ci_low", "ci_high",
                    "n_sizes", "sizes", "levels_spanned", "lower_bound", "verdict", "reason"]


def predicted_exponent(d: float, s: float) -> float:
    return 2 * s / (2 * s + d)


def levels_spanned(sizes, d: float, s: float, level_ratio: float) -> float:
    """How many of the field's levels the theory's envelope n^(-2s/(2s+d)) descends from
    the smallest to the largest of `sizes`: neighbouring levels' shares of the excess stand
    level_ratio^(2s) apart, so the envelope needs level_ratio^(2s+d) times the data per
    level. Over less than one level, a learner that learns the field level by level can
    show any slope from its plateau (near 0) to how fast one level is learned (near 1):
    such a window cannot tell its envelope from how it learns one level. A local average,
    like the reference, has no levels to learn and is not limited so."""
    if len(sizes) < 2:
        return np.nan
    return float(np.log(max(sizes) / min(sizes)) / ((2 * s + d) * np.log(level_ratio)))


ID_COLUMNS = ["arm", "d", "s", "docs", "seed", "estimator", "state", "k", "id", "calibrated_id"]


def read_runs(json_paths: list[Path]) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """The run records as a table, each run's per-point excess keyed by its row index, and
    the intrinsic dimensions the runs measured (one row per state and k)."""
    rows, excess, ids = [], {}, []
    for path in json_paths:
        path = Path(path)
        record = read_json(path)
        missing = [c for c in ("arm", "docs", "seed", "estimator", "excess") if c not in record]
        if missing:
            raise DataError(f"{path}: run record lacks {', '.join(missing)}")
        values = np.load(path.with_suffix(".npy"))
        if values.ndim != 1 or record.get("eval_points", len(values)) != len(values):
            raise DataError(f"{path.with_suffix('.npy')}: expected {record.get('eval_points')} "
                            f"per-point excesses, found shape {values.shape}")
        excess[len(rows)] = values
        rows.append({c: record.get(c, np.nan) for c in RUN_COLUMNS})
        for state, by_k in (record.get("ids") or {}).items():
            ids += [{**{c: record[c] for c in ("arm", "d", "s", "docs", "seed", "estimator")},
                     "state": state, "k": int(k), "id": v} for k, v in by_k.items()]
    ids = pd.DataFrame(ids, columns=ID_COLUMNS[:-1])
    return pd.DataFrame(rows, columns=RUN_COLUMNS), excess, ids


def sphere_readings(n: int, ks, dims, seed: int = 0) -> pd.DataFrame:
    """What the MLE reads on n uniform points of S^m, for each m in `dims` and k in `ks`:
    the estimator's own bias at this n, against which a reading is calibrated."""
    from idscaling.synthetic import uniform_sphere
    from idscaling.known_d import id_profile

    rows = []
    for m in dims:
        points = uniform_sphere(np.random.default_rng([seed, m]), n, m)
        for k, v in id_profile({"sphere": points}, ks)["sphere"].items():
            rows.append({"dim": m, "k": int(k), "reading": v})
    return pd.DataFrame(rows)


def calibrate(ids: pd.DataFrame, readings: pd.DataFrame) -> pd.Series:
    """The dimension m whose uniform sphere the MLE reads as each row's ID (same n, same k),
    by linear interpolation between the dims measured; NaN beyond them."""
    out = pd.Series(np.nan, index=ids.index)
    for k, sel in ids.groupby("k"):
        curve = readings[readings.k == k].sort_values("dim")
        reading = np.maximum.accumulate(curve.reading.to_numpy())  # monotone for np.interp
        out[sel.index] = np.interp(sel["id"], reading, curve.dim, left=np.nan, right=np.nan)
    return out


def slope(log_n: np.ndarray, log_y: np.ndarray) -> np.ndarray:
    """−(least-squares slope) of log_y (..., sizes) on log_n: the exponent α of y ∝ n^-α."""
    x = log_n - log_n.mean()
    return -((log_y - log_y.mean(axis=-1, keepdims=True)) @ x) / (x @ x)


def bootstrap_exponent(docs: np.ndarray, excess: np.ndarray, *, reps: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float, float]:
    """(α, low, high) for excess of shape (sizes, seeds, points); see the module doc."""
    n_sizes, n_seeds, n_points = excess.shape
    if n_sizes < MIN_SIZES:
        raise DataError(f"an exponent needs at least {MIN_SIZES} sizes, got {n_sizes}")
    log_n = np.log(np.asarray(docs, dtype=float))
    alpha = float(slope(log_n, np.log(excess.mean(axis=(1, 2)))))
    if reps == 0:
        return alpha, np.nan, np.nan
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_points, np.full(n_points, 1.0 / n_points), size=reps).T / n_points
    per_run = excess @ weights  # (sizes, seeds, reps): the resampled mean over points
    picks = rng.integers(0, n_seeds, size=(n_sizes, n_seeds, reps))
    centre = per_run.mean(axis=1, keepdims=True)
    # a resampled mean of K seeds spreads (K-1)/K times too little: restore the factor
    inflate = np.sqrt(n_seeds / (n_seeds - 1)) if n_seeds > 1 else 1.0
    spread = np.take_along_axis(per_run, picks, axis=1).mean(axis=1) - centre[:, 0]
    means = np.maximum(centre[:, 0] + inflate * spread, 1e-300)  # (sizes, reps)
    alphas = slope(log_n, np.log(means.T))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(alphas, [tail, 100 - tail])
    return alpha, float(lo), float(hi)


LEARNERS = {"base": "network", "mlp": "mlp"}  # run estimator -> the learner it measures
WIDE = {"base": "wide", "mlp": "mlp_wide"}  # the same learner at twice the width
REGIME_COLUMNS = ["arm", "learner", "docs", "excess", "reference", "ratio", "width_change",
                  "approximation", "in_regime", "why_not"]
MEASURED = "measured"  # the `approximation` of a size whose approximation error was bounded


def width_pairs(sel: pd.DataFrame, estimator: str = "base") -> dict[int, tuple[float, float]]:
    """{size: (the learner's mean excess, how much its wide twin lowers it)} at every size
    where the twin ran, over the seeds where it ran. The gain is the median over seeds of
    the paired differences: at d >= 4 one run in three can stick on a plateau, and a mean
    would read a stuck learner as approximation error, or a stuck twin as none."""
    wide = sel[sel.estimator == WIDE[estimator]]
    base = sel[sel.estimator == estimator]
    pairs = {}
    for docs, w in wide.groupby("docs"):
        b = base[base.docs == docs].set_index("seed").excess
        w = w.set_index("seed").excess
        seeds = w.index.intersection(b.index)
        if len(seeds):
            pairs[int(docs)] = (b[seeds].mean(), float(np.median(b[seeds] - w[seeds])))
    return pairs


def approximation_error(pairs: dict[int, tuple[float, float]], tolerance: float) -> tuple[float, str]:
    """(Δ, how): Δ is how much doubling a learner's width lowers its excess, the largest
    over the sizes in `pairs` (`width_pairs`); `how` is MEASURED, or why Δ bounds nothing.

    Approximation error does not depend on n, and it is the largest share of the excess
    where the excess is smallest, so it is measured at the largest sizes and bounds the
    width's effect at every other (Δ / excess there). A wide twin that trains worse than
    the learner by more than `tolerance` measures its training, not its width: then the
    approximation error is unmeasured, whatever the gap says."""
    if not pairs:
        return np.nan, "unmeasured: no wide twin ran"
    gap = max(g for _, g in pairs.values())
    worse = [f"{-g / b:.1%} worse at n = {n}" for n, (b, g) in pairs.items() if g < -tolerance * b]
    if worse:
        return gap, (f"unmeasured: its wide twin is {', '.join(worse)} (median over seeds; a twin "
                     "that trains worse measures its training, not its width)")
    return gap, MEASURED


def regime_flags(runs: pd.DataFrame, *, reference_factor: float, width_tolerance: float) -> pd.DataFrame:
    """Per arm, learner (the network; the MLP control) and size: whether the learner is in
    the regime its exponent is fitted over (see the module doc), and whether its
    approximation error was measured there (`approximation`; see `fit_arms` for what an
    unmeasured one allows)."""
    rows = []
    for arm, sel in runs.groupby("arm", sort=False):
        reference = sel[sel.estimator == "reference"].groupby("docs").excess.mean()
        for estimator, learner in LEARNERS.items():
            pairs = width_pairs(sel, estimator)
            gap, how = approximation_error(pairs, width_tolerance)
            for docs, runs_n in sel[sel.estimator == estimator].groupby("docs"):
                net, refx = runs_n.excess.mean(), reference.get(docs, np.nan)
                reasons = []
                if not runs_n.converged.astype(bool).all():
                    reasons.append("not converged")
                if not net <= reference_factor * refx:
                    reasons.append(f"{net / refx:.2f}x the reference" if refx == refx
                                   else "no reference at this size")
                change = gap / net
                if how == MEASURED and change > width_tolerance:
                    where = "" if docs in pairs else (
                        f" (the approximation error measured at n = {', '.join(map(str, sorted(pairs)))})")
                    reasons.append(f"doubling the width lowers it {change:.0%}{where}")
                rows.append({"arm": arm, "learner": learner, "docs": int(docs), "excess": net,
                             "reference": refx, "ratio": net / refx, "width_change": change,
                             "approximation": how, "in_regime": not reasons, "why_not": "; ".join(reasons)})
    return pd.DataFrame(rows, columns=REGIME_COLUMNS)


def _stack(runs, excess, arm, estimator, sizes):
    sel = runs[(runs.arm == arm) & (runs.estimator == estimator)]
    seeds = sorted(sel.seed.unique())
    out = np.stack([np.stack([excess[sel[(sel.docs == n) & (sel.seed == s)].index[0]] for s in seeds])
                    for n in sizes])
    return out


def widest_seed_spread(runs: pd.DataFrame, arm: str, estimator: str, sizes) -> str:
    """Where an estimator's seeds differ most (largest over smallest excess) among
    `sizes`, in words; "" with fewer than two seeds. A wide interval that one seed
    makes asks for more seeds, not more sizes."""
    sel = runs[(runs.arm == arm) & (runs.estimator == estimator) & runs.docs.isin(sizes)]
    spread = sel.groupby("docs").excess.agg(["min", "max", "count"])
    spread = spread[spread["count"] > 1]
    if spread.empty:
        return ""
    n = (spread["max"] / spread["min"]).idxmax()
    lo, hi = spread.loc[n, "min"], spread.loc[n, "max"]
    return f"its seeds differ most at n = {int(n)}: {lo:.3g} to {hi:.3g} ({hi / lo:.1f}x)"


def fit_arms(runs: pd.DataFrame, excess: dict, flags: pd.DataFrame, *, margin: float, reps: int,
             level: float, level_ratio: float, reference_docs=None, seed: int = 0) -> pd.DataFrame:
    """One row per arm and estimator: the reference over `reference_docs` (default: every
    size it ran at), the network and the MLP control (where it ran) over the sizes `flags`
    puts in the regime, with the field's levels their sizes span (`levels_spanned`)."""
    rows = []
    for arm, sel in runs.groupby("arm", sort=False):
        d, s = int(sel.d.iloc[0]), float(sel.s.iloc[0])
        pred = predicted_exponent(d, s)
        for estimator in ("reference", *LEARNERS):
            if estimator == "reference":
                ran = sorted(sel[sel.estimator == "reference"].docs.unique())
                sizes = np.array([n for n in ran if reference_docs is None or n in reference_docs])
                name, considered = "reference", pd.DataFrame(columns=REGIME_COLUMNS)
            else:
                if not (sel.estimator == estimator).any():
                    continue
                name = LEARNERS[estimator]
                considered = flags[(flags.arm == arm) & (flags.learner == name)].sort_values("docs")
                sizes = considered[considered.in_regime].docs.to_numpy()
            row = {"arm": arm, "d": d, "s": s, "estimator": name, "predicted": pred,
                   "n_sizes": len(sizes), "sizes": ";".join(str(int(n)) for n in sizes),
                   "levels_spanned": levels_spanned(sizes, d, s, level_ratio), "lower_bound": False}
            if len(sizes) < MIN_SIZES:
                excluded = considered[~considered.in_regime]
                why = "; ".join(f"n={int(r.docs)}: {r.why_not}" for r in excluded.itertuples())
                row.update(exponent=np.nan, ci_low=np.nan, ci_high=np.nan, verdict="underdetermined",
                           reason=f"only {len(sizes)} of {len(considered)} sizes in the regime "
                                  f"(at least {MIN_SIZES} needed); {why}")
            else:
                a, lo, hi = bootstrap_exponent(sizes, _stack(runs, excess, arm, estimator, sizes),
                                               reps=reps, level=level, seed=seed)
                how = considered.approximation.iloc[0] if len(considered) else MEASURED  # one per learner
                if how == MEASURED:
                    verdict, reason = decide((a, lo, hi), (pred, pred, pred), margin)
                else:
                    verdict, _ = decide((a, lo, np.inf), (pred, pred, pred), margin)
                    reason = (f"approximation error {how}. An error that does not depend on n "
                              f"only flattens the curve, so the fitted [{lo:.3f}, {hi:.3f}] bounds "
                              "the exponent from below and only a slope steeper than predicted "
                              "decides: " + (f"{lo:.3f} is above {pred:.3f}" if verdict == "disagrees"
                                             else f"{lo:.3f} is not above {pred:.3f}"))
                spread = widest_seed_spread(runs, arm, estimator, sizes)
                reason += f"; {spread}" if spread else ""
                if estimator != "reference" and row["levels_spanned"] < 1:
                    reason += (f"; its sizes span {row['levels_spanned']:.2f} of the field's levels on "
                               "the theory's envelope, under one: a learner that learns level by level "
                               "can show any slope from near 0 to near 1 there")
                row.update(exponent=a, ci_low=lo, ci_high=hi, lower_bound=how != MEASURED,
                           verdict=verdict, reason=reason)
            rows.append(row)
    return pd.DataFrame(rows, columns=EXPONENT_COLUMNS)


def exponent_text(r) -> str:
    """An exponents.csv row's exponent, interval and bound, or "—" without a fit."""
    if np.isnan(r.exponent):
        return "—"
    return f"{r.exponent:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]" + (" (lower bound)" if r.lower_bound else "")


def summary_markdown(exponents: pd.DataFrame, flags: pd.DataFrame, runs: pd.DataFrame, *,
                     margin: float, level: float) -> str:
    has_mlp = (exponents.estimator == "mlp").any()
    header = "| arm | d | s | 2s/(2s+d) | reference α [CI] | verdict | network α [CI] | sizes fitted | verdict |"
    rule = "|---|---:|---:|---:|---|---|---|---|---|"
    if has_mlp:
        header += " MLP α [CI] | sizes fitted | verdict |"
        rule += "---|---|---|"
    lines = ["## Known dimension: the data exponent of the exact excess", "",
             f"Verdicts against 2s/(2s+d) with margin ±{margin:g}; {level:.0%} bootstrap intervals "
             "over held-out points and seeds. No floor is fitted: the excess E KL(p_z‖q) is "
             "measured against the generator."
             + (" The MLP control reads the same coordinates as a vector, not as digit tokens."
                if has_mlp else ""), "", header, rule]
    for arm, sel in exponents.groupby("arm", sort=False):
        by = sel.set_index("estimator")
        ref, net = by.loc["reference"], by.loc["network"]
        line = (f"| {arm} | {ref.d} | {ref.s:g} | {ref.predicted:.3f} | {exponent_text(ref)} | "
                f"{ref.verdict} | {exponent_text(net)} | {net.n_sizes} | **{net.verdict}** |")
        if has_mlp:
            mlp = by.loc["mlp"] if "mlp" in by.index else None
            line += (" — | 0 | — |" if mlp is None else
                     f" {exponent_text(mlp)} | {mlp.n_sizes} | {mlp.verdict} |")
        lines.append(line)
    lines += ["", "Why each verdict of a learner:", ""]
    for r in exponents[exponents.estimator != "reference"].itertuples():
        lines.append(f"- {r.arm}, {r.estimator}: {r.verdict}: {r.reason}")
    lines += ["", "Sizes outside the regime (drawn hollow in known_d_excess.png):", ""]
    out = flags[~flags.in_regime]
    lines += [f"- {r.arm}, {r.learner}, n = {int(r.docs)}: {r.why_not}"
              for r in out.itertuples()] or ["- none"]
    lines += ["", "Learners whose approximation error is unmeasured (their fitted exponent is a lower "
              "bound; only a slope steeper than predicted decides):", ""]
    unmeasured = flags[flags.approximation != MEASURED].drop_duplicates(["arm", "learner"])
    lines += [f"- {r.arm}, {r.learner}: {r.approximation}" for r in unmeasured.itertuples()] or ["- none"]
    q = runs.groupby("arm").quantisation_excess.max()
    smallest = runs[~runs.estimator.isin(list(WIDE.values()))].groupby("arm").excess.min()
    lines += ["", "Quantisation of z (what the Bayes predictor loses by seeing z only through "
              "its tokens), against the smallest measured excess: " + ", ".join(
                  f"{a} {q[a]:.1e} ({q[a] / smallest[a]:.2%})" for a in q.index), ""]
    return "\n".join(lines)


def id_at_largest_n(ids: pd.DataFrame, k: int = 20) -> pd.DataFrame:
    """Per arm and state: the mean over seeds of the calibrated ID at k, and its lowest and
    highest seed, for the network (base) at its largest n, and for the true
    log-probabilities. The seeds' spread is shown because a network's reading can move
    with its training more than a tolerance on d allows."""
    sel = ids[(ids.k == k) & ids.estimator.isin(["base", "reference"])]
    rows = []
    for (arm, state), g in sel.groupby(["arm", "state"], sort=False):
        g = g[g.docs == g.docs.max()] if state != "true_logprobs" else g[g.docs == g.docs.min()]
        rows.append({"arm": arm, "d": g.d.iloc[0], "s": g.s.iloc[0], "state": state,
                     "docs": int(g.docs.iloc[0]), "seeds": g.seed.nunique(),
                     "calibrated_seeds": g.calibrated_id.notna().sum(), "id": g["id"].mean(),
                     "calibrated_id": g.calibrated_id.mean(), "low": g.calibrated_id.min(),
                     "high": g.calibrated_id.max()})
    return pd.DataFrame(rows)


def _id_cell(row: pd.Series) -> str:
    spread = f" [{row.low:.2f}, {row.high:.2f}]" if row.high > row.low else ""
    # a reading outside the spheres measured has no calibrated value (calibrate)
    outside = (f"; {row.seeds - row.calibrated_seeds} of {row.seeds} seeds outside the calibration"
               if row.calibrated_seeds < row.seeds else "")
    value = "—" if row.calibrated_seeds == 0 else f"{row.calibrated_id:.2f}"
    return f"{value}{spread} (raw {row['id']:.2f}{outside})"


def id_markdown(ids: pd.DataFrame, k: int = 20) -> str:
    if ids.empty:
        return ""
    table = id_at_largest_n(ids, k)
    states = list(dict.fromkeys(table.state))
    lines = ["", f"## Known dimension: intrinsic dimension (MLE, k = {k}), calibrated", "",
             "Calibrated: the m whose uniform sphere S^m the MLE reads the same at this n and k "
             "(the estimator's own bias removed). Network states at the last coordinate token, "
             "from the largest n: mean over seeds [lowest, highest seed]; true_logprobs: centred "
             "log p_z at the same held-out points.", "",
             "| arm | d | " + " | ".join(states) + " |", "|---|---:|" + "---|" * len(states)]
    for arm, g in table.groupby("arm", sort=False):
        g = g.set_index("state")
        cells = [_id_cell(g.loc[s]) if s in g.index else "—" for s in states]
        lines.append(f"| {arm} | {int(g.d.iloc[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


LADDER_DEPTH = 5  # rungs J = 0..5: below the smallest excess any sweep here measured


def ladder_table(runs: pd.DataFrame, known_d: dict, depth: int = LADDER_DEPTH) -> pd.DataFrame:
    """Per arm, the excess of a learner that knows exactly the field's coarsest J levels,
    J = 0..depth, on the arm's held-out points (`known_d.level_ladder`)."""
    from idscaling.known_d import level_ladder, task_from_config

    rows = []
    for arm, sel in runs.groupby("arm", sort=False):
        d, s = int(sel.d.iloc[0]), float(sel.s.iloc[0])
        task = task_from_config(known_d, d, s)
        rungs = level_ladder(task, task.eval_points(known_d["eval_points"])[0], min(depth, task.levels))
        rows += [{"arm": arm, "d": d, "s": s, "levels_known": j, "excess": float(e)} for j, e in enumerate(rungs)]
    return pd.DataFrame(rows, columns=["arm", "d", "s", "levels_known", "excess"])


def ladder_markdown(ladder: pd.DataFrame) -> str:
    depth = int(ladder.levels_known.max())
    lines = ["### The field's level ladder", "",
             "The excess of a learner that knows exactly the field's coarsest J levels and nothing "
             "finer (the dash-dotted rungs in known_d_excess.png). Neighbouring rungs stand about "
             "2^(2s) apart. A learner between rungs J and J+1 is learning level J; the theory's "
             "rate is an envelope over many levels, so a fit that never leaves one rung measures "
             "how one level is learned.", "",
             "| arm | " + " | ".join(f"J = {j}" for j in range(depth + 1)) + " |",
             "|---|" + "---:|" * (depth + 1)]
    for arm, g in ladder.groupby("arm", sort=False):
        cells = [f"{e:.2e}" for e in g.sort_values("levels_known").excess]
        lines.append(f"| {arm} | " + " | ".join(cells + ["—"] * (depth + 1 - len(cells))) + " |")
    return "\n".join(lines) + "\n"


def run_known_d_laws(json_paths: list[Path], out_dir: Path, fig_dir: Path, known_d: dict) -> None:
    from idscaling.known_d_plots import plot_excess, plot_exponents, plot_ids

    runs, excess, ids = read_runs(json_paths)
    if runs.empty:
        raise DataError("known_d: no run records given")
    if not ids.empty:
        dims = range(1, int(max(3 * runs.d.max(), 12)) + 1)
        readings = sphere_readings(known_d["eval_points"], sorted(ids.k.unique()), dims)
        ids["calibrated_id"] = calibrate(ids, readings)
    else:
        ids["calibrated_id"] = []
    flags = regime_flags(runs, reference_factor=known_d["reference_factor"],
                         width_tolerance=known_d["width_tolerance"])
    exponents = fit_arms(runs, excess, flags, margin=known_d["margin"], reps=known_d["bootstrap"],
                         level=known_d["level"], level_ratio=known_d["level_ratio"],
                         reference_docs=known_d.get("reference_docs"))
    ladder = ladder_table(runs, known_d)
    out_dir.mkdir(parents=True, exist_ok=True)
    for table, name in ((runs, "runs.csv"), (flags, "regime.csv"), (exponents, "exponents.csv"),
                        (ids, "ids.csv"), (ladder, "ladder.csv")):
        write_text(out_dir / name, table.to_csv(index=False))
    write_text(out_dir / "summary.md", summary_markdown(exponents, flags, runs, margin=known_d["margin"],
                                                        level=known_d["level"])
               + "\n" + ladder_markdown(ladder) + "\n" + id_markdown(ids))
    plot_ids(id_at_largest_n(ids) if not ids.empty else
             pd.DataFrame(columns=["d", "calibrated_id", "state", "s"]), fig_dir / "known_d_id.png")
    plot_excess(runs, flags, exponents, ladder, fig_dir / "known_d_excess.png")
    plot_exponents(exponents, known_d["margin"], fig_dir / "known_d_exponents.png")
    for r in exponents.itertuples():
        log.info("%s %s: α = %.3f [%.3f, %.3f] vs %.3f: %s", r.arm, r.estimator, r.exponent,
                 r.ci_low, r.ci_high, r.predicted, r.verdict)
