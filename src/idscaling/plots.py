"""Figures of the laws stage: the scaling laws, the exponents and the training curves
(the ID figures: id_plots.py; the toolkit: figures.py).

Every function draws what there is and says on the plot what is missing (one model, no
fit, no ID), so a thin run still gives every figure. Figures are built on
matplotlib.figure.Figure, not pyplot: no global state, no display backend needed.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from idscaling.predictions import reference_rows, triple
from idscaling.tables import natural_order
from idscaling.figures import (D_LABEL, LOSS_LABEL, N_LABEL, compact, legend, log_axis,
                               message_figure, panels, save, short, styled)

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
        entry = label
        if offset is not None and offset.ok:
            entry += f": {symbol}={offset.exponent:.2f}"
        elif offset is not None:
            entry = textwrap.fill(f"{entry}: no fit ({short(offset.reason, 80)})", 48,
                                  subsequent_indent="  ")
        done = sel["converged"] if "converged" in sel else pd.Series(True, index=sel.index)
        ax.scatter(sel.loc[done, x_col], sel.loc[done, "loss"], color=color, s=28, zorder=3,
                   label=entry, edgecolor="white", linewidth=0.5)
        # unconverged runs are not points of the law: drawn hollow, outside it
        ax.scatter(sel.loc[~done, x_col], sel.loc[~done, "loss"], facecolor="none",
                   edgecolor=color, s=28, zorder=3, linewidth=1.0)
        xs = np.geomspace(sel[x_col].min() / 1.3, sel[x_col].max() * 1.3, 100)
        if offset is not None and offset.ok:
            ax.plot(xs, offset.predict(xs), color=color, lw=1.6)
        if pure is not None and pure.ok:
            ax.plot(xs, pure.predict(xs), color=color, lw=1.0, ls="--", alpha=0.8)
    log_axis(ax, "x")
    log_axis(ax, "y")
    ax.set_title(corpus)
    legend(ax)


@styled
def plot_data_scaling(losses: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Loss against D per model (points) with the fitted offset (solid) and pure (dashed) laws."""
    corpora = natural_order(losses["corpus"].unique())
    if not corpora:
        return message_figure(path, "Data scaling", "no runs to draw")
    fig, axes = panels(len(corpora))

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
    return save(fig, path)


@styled
def plot_model_scaling(losses: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Loss against N per D (points) with the fitted offset (solid) and pure (dashed) laws."""
    corpora = natural_order(losses["corpus"].unique())
    if not corpora:
        return message_figure(path, "Model scaling", "no runs to draw")
    fig, axes = panels(len(corpora))

    def labels(runs):
        return [(d, f"D={compact(d)}") for d in sorted(runs["tokens"].unique())]

    for ax, corpus in zip(axes, corpora):
        runs = losses[losses["corpus"] == corpus]
        _scaling_panel(ax, runs, law="model", group_col="tokens", x_col="params_nonembed",
                       corpus=corpus, fits=fits, labels=labels, symbol="α_N")
        ax.set(xlabel=N_LABEL, ylabel=LOSS_LABEL)
    fig.suptitle("Model scaling\n" r"$L(N) = E + A\,N^{-\alpha_N}$ per data size (solid), "
                 r"pure $A\,N^{-\alpha}$ (dashed); hollow: not converged, not fitted")
    return save(fig, path)


# ---------------------------------------------------------------------------------------
# observed against predicted exponents (Havrilla & Liao, Figure 2)


@styled
def plot_exponents(predictions: pd.DataFrame, path: Path) -> Path:
    """Observed α_D against predicted α_D, one point per corpus × estimator, with y = x."""
    title = r"Observed against predicted data exponent $\alpha_D$"
    if predictions.empty:
        return message_figure(path, title, "no intrinsic dimension measured: nothing to predict")
    rows = reference_rows(predictions)
    drawable = rows[np.isfinite(rows["observed_alpha_D"]) & np.isfinite(rows["predicted_alpha_D"])]
    missing = sorted(set(rows["corpus"]) - set(drawable["corpus"]))
    notes = [f"{c}: no observed α_D (no data-law fit)" for c in missing]
    for corpus, source in drawable.groupby("corpus")["observed_alpha_D_source"].first().items():
        if not source.startswith("joint"):
            notes.append(f"{corpus}: observed α_D from the {source}")

    fig, axes = panels(1, width=6.4, height=5.2)
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
    legend(ax, notes, handles=handles)
    ax.set_title(title)
    return save(fig, path)


def _err(v, lo, hi):
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]


# ---------------------------------------------------------------------------------------
# training curves


@styled
def plot_training_curves(histories: pd.DataFrame, path: Path,
                         model_sizes: dict | None = None) -> Path:
    """Validation (points) and training (faint) loss against tokens seen.

    One row of panels per corpus, one column per model (in order of `model_sizes`, the
    models' N, when given), one line per data size D (and seed).
    """
    title = "Training curves"
    if histories.empty:
        return message_figure(path, title, "no history.csv files were given")
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
                legend(ax, ["no history for this model"])
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
            log_axis(ax, "x")
            legend(ax)
    fig.suptitle("Training curves\nvalidation loss (points), training loss (faint), "
                 "one colour per data size D")
    return save(fig, path)
