"""Figures of the laws stage (seaborn style, written atomically as PNG).

Every function draws what there is and says on the plot what is missing (one model, no
fit, no ID), so a thin run still gives every figure. Figures are built on
matplotlib.figure.Figure, not pyplot: no global state, no display backend needed.
"""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from idscaling.predictions import reference_rows, triple
from idscaling.tables import natural_order
from idscaling.files import atomic_path

LOSS_LABEL = "validation loss (nats/token)"
D_LABEL = "training tokens D (unique)"
N_LABEL = "non-embedding parameters N"


def _styled(draw):
    """Run a drawing function under the project's seaborn style, without touching globals."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            return draw(*args, **kwargs)
    return wrapper


def _panels(n: int, ncols_max: int = 3, width: float = 4.8, height: float = 3.8,
            min_width: float = 7.0):
    ncols = max(1, min(n, ncols_max))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(max(width * ncols, min_width), height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def _legend(ax, notes=(), handles=None) -> None:
    """The axes' legend, with `notes` (what is missing, and why) as entries without a
    marker; matplotlib places it where it hides the fewest points."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    blank = [Line2D([], [], linestyle="none", label=textwrap.fill(n, 48, subsequent_indent="  "))
             for n in notes if n]
    if handles or blank:
        ax.legend(handles=list(handles) + blank, loc="best", fontsize=7, framealpha=0.9)


def _message_figure(path: Path, title: str, message: str) -> Path:
    fig, axes = _panels(1, width=6.4, height=3.6)
    ax = axes[0]
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, textwrap.fill(message, 60), ha="center", va="center",
            transform=ax.transAxes, fontsize=11, color="0.25")
    return _save(fig, path)


def compact(v: float) -> str:
    """25000 -> '25k', 1.2e9 -> '1.2B': sizes as a person reads them."""
    for scale, suffix in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]:
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _log_axis(ax, axis: str) -> None:
    # Sizes span decades: ticks at 1, 2, 5 x 10^k, labelled 10k, 20k, 50k. Losses span
    # less than a decade: ticks at every integer-ish step, labelled plainly.
    ax.set(**{f"{axis}scale": "log"})
    target = ax.yaxis if axis == "y" else ax.xaxis
    if axis == "y":
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0,
                                                            5.0, 6.0, 7.0, 8.0, 9.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        target.set_major_formatter(FuncFormatter(lambda v, _: compact(v)))
    target.set_minor_formatter(NullFormatter())


def _short(reason: str, width: int = 90) -> str:
    return textwrap.shorten(reason, width, placeholder=" …")


# ---------------------------------------------------------------------------------------
# loss against D per model, loss against N per D


def _scaling_panel(ax, runs, *, law, group_col, x_col, corpus, fits, labels, symbol):
    groups = labels(runs)
    palette = sns.color_palette("viridis", max(len(groups), 1))
    for color, (key, label) in zip(palette, groups):
        sel = runs[runs[group_col] == key].sort_values(x_col)
        fixed = key if law == "data" else str(int(key))
        offset = fits.get((corpus, law, fixed, "offset"))
        pure = fits.get((corpus, law, fixed, "pure"))
        legend = label
        if offset is not None and offset.ok:
            legend += f": {symbol}={offset.exponent:.2f}"
        elif offset is not None:
            legend = textwrap.fill(f"{legend}: no fit ({_short(offset.reason, 80)})", 48,
                                   subsequent_indent="  ")
        done = sel["converged"] if "converged" in sel else pd.Series(True, index=sel.index)
        ax.scatter(sel.loc[done, x_col], sel.loc[done, "loss"], color=color, s=28, zorder=3,
                   label=legend, edgecolor="white", linewidth=0.5)
        # unconverged runs are not points of the law: drawn hollow, outside it
        ax.scatter(sel.loc[~done, x_col], sel.loc[~done, "loss"], facecolor="none",
                   edgecolor=color, s=28, zorder=3, linewidth=1.0)
        xs = np.geomspace(sel[x_col].min() / 1.3, sel[x_col].max() * 1.3, 100)
        if offset is not None and offset.ok:
            ax.plot(xs, offset.predict(xs), color=color, lw=1.6)
        if pure is not None and pure.ok:
            ax.plot(xs, pure.predict(xs), color=color, lw=1.0, ls="--", alpha=0.8)
    _log_axis(ax, "x")
    _log_axis(ax, "y")
    ax.set_title(corpus)
    _legend(ax)


@_styled
def plot_data_scaling(losses: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Loss against D per model (points) with the fitted offset (solid) and pure (dashed) laws."""
    corpora = natural_order(losses["corpus"].unique())
    if not corpora:
        return _message_figure(path, "Data scaling", "no runs to draw")
    fig, axes = _panels(len(corpora))

    def labels(runs):
        order = runs.groupby("model")["params_nonembed"].first().sort_values()
        return [(m, f"{m} (N={compact(n)})") for m, n in order.items()]

    for ax, corpus in zip(axes, corpora):
        runs = losses[losses["corpus"] == corpus]
        _scaling_panel(ax, runs, law="data", group_col="model", x_col="tokens", corpus=corpus,
                       fits=fits, labels=labels, symbol="α_D")
        ax.set(xlabel=D_LABEL, ylabel=LOSS_LABEL)
    fig.suptitle("Data scaling\n" r"$L(D) = E + B\,D^{-\alpha_D}$ per model (solid), "
                 r"pure $B\,D^{-\alpha}$ (dashed); hollow: not converged, not fitted")
    return _save(fig, path)


@_styled
def plot_model_scaling(losses: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Loss against N per D (points) with the fitted offset (solid) and pure (dashed) laws."""
    corpora = natural_order(losses["corpus"].unique())
    if not corpora:
        return _message_figure(path, "Model scaling", "no runs to draw")
    fig, axes = _panels(len(corpora))

    def labels(runs):
        return [(d, f"D={compact(d)}") for d in sorted(runs["tokens"].unique())]

    for ax, corpus in zip(axes, corpora):
        runs = losses[losses["corpus"] == corpus]
        _scaling_panel(ax, runs, law="model", group_col="tokens", x_col="params_nonembed",
                       corpus=corpus, fits=fits, labels=labels, symbol="α_N")
        ax.set(xlabel=N_LABEL, ylabel=LOSS_LABEL)
    fig.suptitle("Model scaling\n" r"$L(N) = E + A\,N^{-\alpha_N}$ per data size (solid), "
                 r"pure $A\,N^{-\alpha}$ (dashed); hollow: not converged, not fitted")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# observed against predicted exponents (Havrilla & Liao, Figure 2)


@_styled
def plot_exponents(predictions: pd.DataFrame, path: Path) -> Path:
    """Observed α_D against predicted α_D, one point per corpus × estimator, with y = x."""
    title = r"Observed against predicted data exponent $\alpha_D$"
    if predictions.empty:
        return _message_figure(path, title, "no intrinsic dimension measured: nothing to predict")
    rows = reference_rows(predictions)
    drawable = rows[np.isfinite(rows["observed_alpha_D"]) & np.isfinite(rows["predicted_alpha_D"])]
    missing = sorted(set(rows["corpus"]) - set(drawable["corpus"]))
    notes = [f"{c}: no observed α_D (no data-law fit)" for c in missing]
    for corpus, source in drawable.groupby("corpus")["observed_alpha_D_source"].first().items():
        if not source.startswith("joint"):
            notes.append(f"{corpus}: observed α_D from the {source}")

    fig, axes = _panels(1, width=6.4, height=5.2)
    ax = axes[0]
    corpora = natural_order(rows["corpus"].unique())
    colors = dict(zip(corpora, sns.color_palette("tab10", len(corpora))))
    estimators = sorted(rows["estimator"].unique())
    markers = dict(zip(estimators, ["o", "s", "^", "D", "v", "P", "X", "*"]))
    # The axes span the exponents themselves (α_D < 1 for any d and s), not intervals
    # that the data leave open: those run off the top as arrows.
    values = np.concatenate([drawable[c].to_numpy(float) for c in [
        "predicted_alpha_D", "predicted_alpha_D_ci_low", "predicted_alpha_D_ci_high",
        "observed_alpha_D"]])
    values = values[np.isfinite(values)]
    lo, hi = (0.0, 1.0) if values.size == 0 else (min(0.0, values.min()), max(1.0, values.max()))
    pad = 0.05 * (hi - lo) + 0.01
    lo, hi = lo - pad, hi + pad
    open_above = False
    for _, r in drawable.iterrows():
        v, v_lo, v_hi = triple(r, "observed_alpha_D")
        clipped = np.isfinite(v_lo) and not v_hi <= hi  # beyond the axis, or no upper end
        xerr = _err(*triple(r, "predicted_alpha_D"))
        yerr = _err(v, v_lo, min(v_hi, hi)) if np.isfinite(v_lo) else None
        big = bool(r["is_reference"])
        color = colors[r["corpus"]]
        ax.errorbar(r["predicted_alpha_D"], v, xerr=xerr, yerr=yerr,
                    fmt=markers[r["estimator"]], color=color, ms=9 if big else 6,
                    mec="black" if big else "white", capsize=3, lw=1.2, alpha=1 if big else 0.7)
        if clipped:
            open_above = True
            ax.annotate("", xy=(r["predicted_alpha_D"], hi), xytext=(r["predicted_alpha_D"], v),
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2,
                                        alpha=1 if big else 0.7))
    if open_above:
        notes.append("arrow: the observed interval runs past the axis or has no upper end "
                     "(offset not identified)")
    ax.plot([lo, hi], [lo, hi], color="0.4", ls="--", lw=1, label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi),
           xlabel=r"predicted $\alpha_D = 2s/(2s+\hat d)$ (from the ID)",
           ylabel=r"observed $\alpha_D$ (fitted; 95% bootstrap CI)")
    handles = [ax.lines[-1]]
    for c in corpora:
        handles.append(Line2D([], [], color=colors[c], marker="o", ls="none", label=c))
    for e in estimators:
        handles.append(Line2D([], [], color="0.5", marker=markers[e], ls="none", label=f"ID: {e}"))
    handles.append(Line2D([], [], color="0.5", marker="o", mec="black", ms=9, ls="none",
                          label="the reference ID"))
    if drawable.empty:
        notes.insert(0, "nothing to draw: no corpus has both an observed and a predicted α_D")
    _legend(ax, notes, handles=handles)
    ax.set_title(title)
    return _save(fig, path)


def _err(v, lo, hi):
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]


# ---------------------------------------------------------------------------------------
# the intrinsic dimension against k and against the layer


def _id_lines(ax, sel, x_col, with_k=False):
    hue = sorted(sel["estimator"].unique())
    colors = dict(zip(hue, sns.color_palette("deep", len(hue))))
    for (estimator, protocol), g in sel.groupby(["estimator", "protocol"], sort=True):
        g = g.sort_values(x_col)
        lo = (g["id"] - g["ci_low"]).clip(lower=0).to_numpy()
        hi = (g["ci_high"] - g["id"]).clip(lower=0).to_numpy()
        yerr = np.vstack([lo, hi]) if np.isfinite(lo).all() and np.isfinite(hi).all() else None
        label = ", ".join([estimator] + ([protocol] if protocol else [])
                          + ([f"k={int(g['k'].iloc[0])}"] if with_k else []))
        ax.errorbar(g[x_col], g["id"], yerr=yerr, color=colors[estimator],
                    ls="-" if protocol in ("batched", "") else "--", marker="o", ms=5,
                    capsize=3, label=label)


def _id_panels(ids: pd.DataFrame, refs: dict, path: Path, title: str, draw) -> Path:
    """One panel a corpus: draw(ax, corpus, its rows of `ids`, its reference row or None)."""
    if ids.empty:
        return _message_figure(path, title, "no intrinsic dimension measured")
    corpora = natural_order(ids["corpus"].unique())
    fig, axes = _panels(len(corpora))
    for ax, corpus in zip(axes, corpora):
        draw(ax, corpus, ids[ids["corpus"] == corpus], refs.get(corpus, {}).get("row"))
    fig.suptitle(title + " (error bars: bootstrap 95% CI)")
    return _save(fig, path)


@_styled
def plot_id_vs_k(ids: pd.DataFrame, refs: dict, path: Path) -> Path:
    """ID against the neighbourhood size k at the reference layer, per estimator."""
    def draw(ax, corpus, sel, row):
        if row is not None:
            sel = sel[(sel["embedder"] == row["embedder"]) & (sel["layer"] == row["layer"])]
        _id_lines(ax, sel, "k")
        layer = f"layer {int(sel['layer'].iloc[0])}" if len(sel) else ""
        ax.set(xlabel="neighbours k", ylabel="intrinsic dimension d̂", title=f"{corpus} ({layer})")
        _legend(ax, [f"only k = {int(sel['k'].iloc[0])} measured: no sweep to draw"]
                if sel["k"].nunique() < 2 else [])

    return _id_panels(ids, refs, path, "Intrinsic dimension against k", draw)


@_styled
def plot_id_vs_layer(ids: pd.DataFrame, refs: dict, path: Path) -> Path:
    """ID against the embedding layer at the reference k, per estimator."""
    def draw(ax, corpus, sel, row):
        if row is not None:
            sel = sel[sel["embedder"] == row["embedder"]]
            # each estimator at its k nearest the reference k (TwoNN has only k = 2)
            dk = (sel["k"] - row["k"]).abs()
            sel = sel[dk == dk.groupby([sel["estimator"], sel["protocol"]]).transform("min")]
        _id_lines(ax, sel, "layer", with_k=True)
        ax.set(xlabel="layer (0 = token embeddings)", ylabel="intrinsic dimension d̂",
               title=corpus)
        ax.xaxis.get_major_locator().set_params(integer=True)
        if sel["layer"].nunique() < 2:
            only = int(sel["layer"].iloc[0])
            ax.set_xlim(only - 1, only + 1)
            _legend(ax, [f"only layer {only} measured: no profile to draw"])
        else:
            _legend(ax)

    return _id_panels(ids, refs, path, "Intrinsic dimension against layer", draw)


@_styled
def plot_id_robustness(rob: pd.DataFrame, refs: dict, path: Path) -> Path:
    """The ID against model size, training step and context position: a row of three
    panels per corpus, the reference ID's interval as a band."""
    title = "Intrinsic dimension against model, training step and context position"
    if rob.empty:
        return _message_figure(path, title, "no robustness rows measured")
    corpora = natural_order(rob["corpus"].unique())
    fig = Figure(figsize=(14.4, 3.9 * len(corpora)), layout="constrained")
    axes = fig.subplots(len(corpora), 3, squeeze=False)
    for row_axes, corpus in zip(axes, corpora):
        sel = rob[rob["corpus"] == corpus]
        ref = refs.get(corpus, {}).get("row")
        for ax in row_axes:
            if ref is not None and np.isfinite([ref["ci_low"], ref["ci_high"]]).all():
                ax.axhspan(ref["ci_low"], ref["ci_high"], color="0.85", zorder=0,
                           label=f"reference ID {ref['id']:.2f}")
        _robustness_models(row_axes[0], sel[sel["axis"] == "model"], corpus)
        _robustness_steps(row_axes[1], sel[sel["axis"] == "step"], corpus)
        _robustness_positions(row_axes[2], sel[sel["axis"] == "position"], corpus)
    fig.suptitle(title + " (error bars: half-sample 95% CI)")
    return _save(fig, path)


def _robustness_models(ax, sel, corpus):
    ax.set(xlabel=N_LABEL, ylabel="intrinsic dimension d̂", title=f"{corpus}: model")
    if sel.empty:
        _legend(ax, ["no model rows"])
        return
    sizes = sorted(sel["tokens"].unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    for tokens, g in sel.groupby("tokens"):
        g = g.sort_values("params_nonembed")
        ax.errorbar(g["params_nonembed"], g["id"], yerr=_yerr(g), color=colors[tokens],
                    marker="o", ms=5, capsize=3, label=f"D = {compact(tokens)}")
    _log_axis(ax, "x")
    _legend(ax)


def _robustness_steps(ax, sel, corpus):
    ax.set(xlabel="training step (symlog)", ylabel="intrinsic dimension d̂",
           title=f"{corpus}: training step")
    if sel.empty:
        _legend(ax, ["no snapshots of the reference run: no step rows"])
        return
    g = sel.sort_values("step")
    ax.errorbar(g["step"], g["id"], yerr=_yerr(g), color="C0", marker="o", ms=5, capsize=3,
                label=f"run {g['run'].iloc[0]}")
    ax.set_xscale("symlog", linthresh=max(1, float(g.loc[g["step"] > 0, "step"].min()
                                                   if (g["step"] > 0).any() else 1)))
    _legend(ax)


def _robustness_positions(ax, sel, corpus):
    ax.set(xlabel="position in context", ylabel="intrinsic dimension d̂",
           title=f"{corpus}: position")
    bins, everything = sel[sel["run"] == "bin"], sel[sel["run"] == "all"]
    if bins.empty:
        _legend(ax, ["no position rows"])
        return
    mids = (bins["position_lo"] + bins["position_hi"]) / 2
    widths = (bins["position_hi"] - bins["position_lo"]) / 2
    ax.errorbar(mids, bins["id"], xerr=widths, yerr=_yerr(bins), color="C1", marker="o",
                ms=5, capsize=3, ls="none",
                label=f"bins ({_range(bins['n_points'])} distinct points)")
    if not everything.empty:
        ax.axhline(everything["id"].iloc[0], color="C1", ls="--", lw=1,
                   label="all positions, same number of points")
    _legend(ax)


def _range(values) -> str:
    lo, hi = int(values.min()), int(values.max())
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _yerr(g):
    lo = (g["id"] - g["ci_low"]).clip(lower=0).to_numpy(dtype=float)
    hi = (g["ci_high"] - g["id"]).clip(lower=0).to_numpy(dtype=float)
    return np.vstack([lo, hi]) if np.isfinite(lo).all() and np.isfinite(hi).all() else None


# ---------------------------------------------------------------------------------------
# training curves


@_styled
def plot_training_curves(histories: pd.DataFrame, path: Path,
                         model_sizes: dict | None = None) -> Path:
    """Validation (points) and training (faint) loss against tokens seen.

    One row of panels per corpus, one column per model (in order of `model_sizes`, the
    models' N, when given), one line per data size D (and seed).
    """
    title = "Training curves"
    if histories.empty:
        return _message_figure(path, title, "no history.csv files were given")
    h = histories[histories["tokens_seen"] > 0]          # a log axis cannot show step 0
    sizes = model_sizes or {}
    corpora = natural_order(histories["corpus"].unique())
    models = sorted(histories["model"].unique(), key=lambda m: (sizes.get(m, math.inf), m))
    width, height = 4.0, 3.2
    fig = Figure(figsize=(max(width * len(models), 7.0), height * len(corpora)),
                 layout="constrained")
    axes = fig.subplots(len(corpora), len(models), squeeze=False, sharex=True)
    for i, corpus in enumerate(corpora):
        for j, model in enumerate(models):
            ax = axes[i, j]
            runs = h[(h["corpus"] == corpus) & (h["model"] == model)]
            name = model + (f" (N={compact(sizes[model])})" if model in sizes else "")
            ax.set(title=f"{corpus} / {name}", xlabel="tokens seen" if i == len(corpora) - 1
                   else "", ylabel="loss (nats/token)" if j == 0 else "")
            if runs.empty:
                _legend(ax, ["no history for this model"])
                continue
            data_sizes = sorted(runs["tokens"].unique())
            colors = dict(zip(data_sizes, sns.color_palette("viridis", len(data_sizes))))
            several_seeds = runs["seed"].nunique() > 1
            for (D, seed), g in runs.groupby(["tokens", "seed"], sort=True):
                g = g.sort_values("tokens_seen")
                ax.plot(g["tokens_seen"], g["train_loss"], color=colors[D], lw=0.8, alpha=0.35)
                val = pd.to_numeric(g["val_loss"], errors="coerce")
                ax.plot(g["tokens_seen"][val.notna()], val[val.notna()], color=colors[D], marker="o",
                        ms=3, lw=1.4,
                        label=f"D={compact(D)}" + (f", seed {seed}" if several_seeds else ""))
            _log_axis(ax, "x")
            _legend(ax)
    fig.suptitle("Training curves\nvalidation loss (points), training loss (faint), "
                 "one colour per data size D")
    return _save(fig, path)


# ---------------------------------------------------------------------------------------
# synthetic corpora of known dimension


@_styled
def plot_latent_dim(latent: dict, predictions: pd.DataFrame, smoothness: float,
                    path: Path) -> Path:
    """Estimated ID against the known latent d; observed α_D against d with 2s/(2s+d)."""
    fig, axes = _panels(2, width=5.2, height=4.4)
    ax_id, ax_exp = axes
    ref = predictions[predictions["is_reference"] & predictions["corpus"].isin(list(latent))]
    rows = reference_rows(predictions)
    rows = rows[rows["corpus"].isin(list(latent))].assign(d=lambda t: t["corpus"].map(latent))
    d_all = np.array(sorted(latent.values()))
    notes_id, notes_exp = [], []
    missing = sorted(set(latent) - set(rows["corpus"]))
    if missing:
        notes_id.append("no ID for " + ", ".join(missing))

    estimators = sorted(rows["estimator"].unique())
    colors = dict(zip(estimators, sns.color_palette("deep", len(estimators))))
    for (estimator, protocol), g in rows.groupby(["estimator", "protocol"], sort=True):
        g = g.sort_values("d")
        lo = (g["id"] - g["id_ci_low"]).clip(lower=0).to_numpy()
        hi = (g["id_ci_high"] - g["id"]).clip(lower=0).to_numpy()
        yerr = np.vstack([lo, hi]) if np.isfinite(lo).all() and np.isfinite(hi).all() else None
        ax_id.errorbar(g["d"], g["id"], yerr=yerr, color=colors[estimator], marker="o",
                       ls="-" if protocol in ("batched", "") else "--", capsize=3,
                       label=f"{estimator} ({protocol})" if protocol else estimator)
    top = max(d_all.max(), rows["id"].max() if len(rows) else 0) * 1.1
    ax_id.plot([0, top], [0, top], color="0.4", ls="--", lw=1, label="y = x")
    ax_id.set(xlabel="latent dimension d (known)", ylabel="estimated ID d̂",
              title="Estimated against known dimension", xlim=(0, top), ylim=(0, top))
    _legend(ax_id, notes_id)

    grid = np.linspace(max(d_all.min() * 0.5, 0.5), d_all.max() * 1.5, 200)
    ax_exp.plot(grid, 2 * smoothness / (2 * smoothness + grid), color="black", lw=1.5,
                label=f"predicted 2s/(2s+d), s={smoothness:g}")
    obs = ref.assign(d=lambda t: t["corpus"].map(latent)).sort_values("d")
    has = obs[np.isfinite(obs["observed_alpha_D"])]
    for _, r in has.iterrows():
        ax_exp.errorbar(r["d"], r["observed_alpha_D"], capsize=3, color="tab:red", marker="o",
                        yerr=_err(*triple(r, "observed_alpha_D")))
    ax_exp.plot([], [], color="tab:red", marker="o", ls="none",
                label=r"observed $\alpha_D$ (95% CI)")
    ax_exp.scatter(obs["d"], obs["predicted_alpha_D"], facecolor="none", edgecolor="tab:blue",
                   s=40, label="predicted from the estimated ID", zorder=3)
    no_obs = sorted(set(latent) - set(has["corpus"]))
    if no_obs:
        notes_exp.append("no observed α_D for " + ", ".join(no_obs))
    ax_exp.set(xlabel="latent dimension d (known)", ylabel=r"data exponent $\alpha_D$",
               title="Data exponent against known dimension")
    _legend(ax_exp, notes_exp)
    fig.suptitle("Synthetic corpora of known dimension")
    return _save(fig, path)
