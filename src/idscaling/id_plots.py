"""Figures of the intrinsic dimension (laws stage): against k, against the layer, and
against the model, the training step and the context position (id_robustness)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from idscaling.figures import (N_LABEL, compact, legend, log_axis, message_figure, panels,
                               save, styled)
from idscaling.tables import natural_order


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
        return message_figure(path, title, "no intrinsic dimension measured")
    corpora = natural_order(ids["corpus"].unique())
    fig, axes = panels(len(corpora))
    for ax, corpus in zip(axes, corpora):
        draw(ax, corpus, ids[ids["corpus"] == corpus], refs.get(corpus, {}).get("row"))
    fig.suptitle(title + " (error bars: bootstrap 95% CI)")
    return save(fig, path)


@styled
def plot_id_vs_k(ids: pd.DataFrame, refs: dict, path: Path) -> Path:
    """ID against the neighbourhood size k at the reference layer, per estimator."""
    def draw(ax, corpus, sel, row):
        if row is not None:
            sel = sel[(sel["embedder"] == row["embedder"]) & (sel["layer"] == row["layer"])]
        _id_lines(ax, sel, "k")
        layer = f"layer {int(sel['layer'].iloc[0])}" if len(sel) else ""
        ax.set(xlabel="neighbours k", ylabel="intrinsic dimension d̂", title=f"{corpus} ({layer})")
        legend(ax, [f"only k = {int(sel['k'].iloc[0])} measured: no sweep to draw"]
                if sel["k"].nunique() < 2 else [])

    return _id_panels(ids, refs, path, "Intrinsic dimension against k", draw)


@styled
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
            legend(ax, [f"only layer {only} measured: no profile to draw"])
        else:
            legend(ax)

    return _id_panels(ids, refs, path, "Intrinsic dimension against layer", draw)


@styled
def plot_id_robustness(rob: pd.DataFrame, refs: dict, path: Path) -> Path:
    """The ID against model size, training step and context position: a row of three
    panels per corpus, the reference ID's interval as a band."""
    title = "Intrinsic dimension against model, training step and context position"
    if rob.empty:
        return message_figure(path, title, "no robustness rows measured")
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
    return save(fig, path)


def _robustness_models(ax, sel, corpus):
    ax.set(xlabel=N_LABEL, ylabel="intrinsic dimension d̂", title=f"{corpus}: model")
    if sel.empty:
        legend(ax, ["no model rows"])
        return
    sizes = sorted(sel["tokens"].unique())
    colors = dict(zip(sizes, sns.color_palette("viridis", len(sizes))))
    for tokens, g in sel.groupby("tokens"):
        g = g.sort_values("params_nonembed")
        ax.errorbar(g["params_nonembed"], g["id"], yerr=_yerr(g), color=colors[tokens],
                    marker="o", ms=5, capsize=3, label=f"D = {compact(tokens)}")
    log_axis(ax, "x")
    legend(ax)


def _robustness_steps(ax, sel, corpus):
    ax.set(xlabel="training step (symlog)", ylabel="intrinsic dimension d̂",
           title=f"{corpus}: training step")
    if sel.empty:
        legend(ax, ["no snapshots of the reference run: no step rows"])
        return
    g = sel.sort_values("step")
    ax.errorbar(g["step"], g["id"], yerr=_yerr(g), color="C0", marker="o", ms=5, capsize=3,
                label=f"run {g['run'].iloc[0]}")
    ax.set_xscale("symlog", linthresh=max(1, float(g.loc[g["step"] > 0, "step"].min()
                                                   if (g["step"] > 0).any() else 1)))
    legend(ax)


def _robustness_positions(ax, sel, corpus):
    ax.set(xlabel="position in context", ylabel="intrinsic dimension d̂",
           title=f"{corpus}: position")
    bins, everything = sel[sel["run"] == "bin"], sel[sel["run"] == "all"]
    if bins.empty:
        legend(ax, ["no position rows"])
        return
    mids = (bins["position_lo"] + bins["position_hi"]) / 2
    widths = (bins["position_hi"] - bins["position_lo"]) / 2
    ax.errorbar(mids, bins["id"], xerr=widths, yerr=_yerr(bins), color="C1", marker="o",
                ms=5, capsize=3, ls="none",
                label=f"bins ({_range(bins['n_points'])} distinct points)")
    if not everything.empty:
        ax.axhline(everything["id"].iloc[0], color="C1", ls="--", lw=1,
                   label="all positions, same number of points")
    legend(ax)


def _range(values) -> str:
    lo, hi = int(values.min()), int(values.max())
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def _yerr(g):
    lo = (g["id"] - g["ci_low"]).clip(lower=0).to_numpy(dtype=float)
    hi = (g["ci_high"] - g["id"]).clip(lower=0).to_numpy(dtype=float)
    return np.vstack([lo, hi]) if np.isfinite(lo).all() and np.isfinite(hi).all() else None
