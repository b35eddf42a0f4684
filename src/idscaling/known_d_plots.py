"""Figures of the known-dimension stage: excess against n per arm; exponents against theory."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from idscaling.figures import legend, log_axis, panels, save, styled
from idscaling.known_d_laws import exponent_text

COLORS = {"network": sns.color_palette("deep")[0], "wide": sns.color_palette("deep")[2],
          "reference": sns.color_palette("deep")[3], "mlp": sns.color_palette("deep")[1],
          "mlp_wide": sns.color_palette("deep")[5]}
LABELS = {"network": "network (GPT)", "mlp": "MLP control (z as a vector)", "reference": "k-NN reference"}
RUNG_COLOR = "#8c6d31"
VERDICT_MARKERS = {"agrees": "o", "disagrees": "X", "inconclusive": "s", "underdetermined": "^"}


def _fit_line(ax, sizes, row, y_at, color, style):
    if np.isnan(row.exponent):
        return
    n = np.array([sizes.min(), sizes.max()], dtype=float)
    anchor = np.exp(np.mean(np.log(sizes)))
    ax.plot(n, y_at * (n / anchor) ** -row.exponent, style, color=color, lw=1.2)


def _rungs(ax, rungs: pd.DataFrame) -> None:
    """The field's level ladder over the data's y range and the nearest rung either side of
    it (when within 4x), each rung labelled J."""
    low, high = ax.get_ylim()
    below, above = rungs.excess[rungs.excess < low], rungs.excess[rungs.excess > high]
    if len(below) and below.max() > low / 4:
        low = below.max() / 1.2
    if len(above) and above.min() < high * 4:
        high = above.min() * 1.2
    x = ax.get_xlim()[1]
    for r in rungs.itertuples():
        if low < r.excess < high:
            ax.axhline(r.excess, color=RUNG_COLOR, lw=1.0, ls="-.", zorder=1,
                       label="knows exactly the field's coarsest J levels")
            ax.text(x, r.excess, f"J = {r.levels_known} ", color=RUNG_COLOR, fontsize=7, va="bottom", ha="right")
    ax.set_ylim(low, high)


@styled
def plot_excess(runs: pd.DataFrame, flags: pd.DataFrame, exponents: pd.DataFrame, ladder: pd.DataFrame,
                path: Path) -> Path:
    arms = list(dict.fromkeys(runs.arm))
    fig, axes = panels(len(arms))
    series = {}  # one legend for the figure: the series are the same in every panel
    for ax, arm in zip(axes, arms):
        sel = runs[runs.arm == arm]
        f = flags[flags.arm == arm].sort_values("docs")
        sizes = f.docs.to_numpy(dtype=float)
        # per-seed points, then the seed means as lines
        for est, color, label in (("base", COLORS["network"], LABELS["network"]),
                                  ("wide", COLORS["wide"], "network, 2x width"),
                                  ("mlp", COLORS["mlp"], LABELS["mlp"]),
                                  ("mlp_wide", COLORS["mlp_wide"], "MLP, 2x width"),
                                  ("reference", COLORS["reference"], LABELS["reference"])):
            e = sel[sel.estimator == est]
            if e.empty:
                continue
            ax.scatter(e.docs, e.excess, s=10, color=color, alpha=0.45, lw=0)
            means = e.groupby("docs").excess.mean()
            ax.plot(means.index, means.values, "-", color=color, lw=1.0, alpha=0.6, label=label)
        means = {"reference": sel[sel.estimator == "reference"].groupby("docs").excess.mean()}
        for learner in ("network", "mlp"):
            g = f[f.learner == learner]
            if g.empty:
                continue
            means[learner] = g.set_index("docs").excess
            x, y, inside = g.docs.to_numpy(dtype=float), g.excess.to_numpy(), g.in_regime.to_numpy()
            ax.scatter(x[inside], y[inside], s=40, color=COLORS[learner], zorder=3,
                       label=f"{learner}, in regime (fitted)")
            ax.scatter(x[~inside], y[~inside], s=40, facecolor="white", edgecolor=COLORS[learner],
                       zorder=3, label=f"{learner}, outside regime")
        rows = exponents[exponents.arm == arm].set_index("estimator")
        ref_means = means["reference"]
        d, s = int(sel.d.iloc[0]), float(sel.s.iloc[0])
        pred = rows.loc["reference"].predicted
        n = ref_means.index.to_numpy(dtype=float)
        anchor, centre = np.exp(np.mean(np.log(ref_means.values))), np.exp(np.mean(np.log(n)))
        n = np.array([min(n.min(), sizes.min()), max(n.max(), sizes.max())])
        ax.plot(n, anchor * (n / centre) ** -pred, ":", color="0.3", lw=1.5,
                label="theory slope 2s/(2s+d)")
        notes = [f"2s/(2s+d) = {pred:.3f}"]
        for est in ("reference", "network", "mlp"):
            if est not in rows.index:
                continue
            r = rows.loc[est]
            fitted = np.array([float(x) for x in str(r.sizes).split(";") if x]) if r.n_sizes else np.array([])
            if len(fitted) >= 2:
                ys = means[est].loc[fitted]
                _fit_line(ax, fitted, r, np.exp(np.mean(np.log(ys))), COLORS[est], "--")
            notes.append(f"{est}: " + ("no fit" if np.isnan(r.exponent) else f"α = {exponent_text(r)}")
                         + f", {r.verdict}")
        log_axis(ax, "x")
        ax.set_yscale("log")
        _rungs(ax, ladder[ladder.arm == arm])
        ax.set(xlabel="training documents n", ylabel="excess E KL(p‖q) (nats/symbol)",
               title=f"{arm}: d = {d}, s = {s:g}")
        for handle, label in zip(*ax.get_legend_handles_labels()):
            series.setdefault(label, handle)
        legend(ax, notes, handles=[])
    if series:
        fig.legend(list(series.values()), list(series), loc="outside lower center",
                   ncol=min(5, len(series), max(1, int(fig.get_figwidth() // 2.8))), fontsize=8)
    # one panel is narrower than the title: wrap it to the figure (about 9 characters an inch)
    fig.suptitle(textwrap.fill("Known dimension: exact excess loss against data size (no fitted floor); "
                               "dashed: fitted power laws", int(fig.get_figwidth() * 9)))
    return save(fig, path)


@styled
def plot_exponents(exponents: pd.DataFrame, margin: float, path: Path) -> Path:
    """One panel per estimator: observed exponent (with its interval) against 2s/(2s+d)."""
    learners = [e for e in ("reference", "network", "mlp") if (exponents.estimator == e).any()]
    fig, axes = panels(len(learners), width=4.6, height=4.6)
    lo = min(0.0, np.nanmin(exponents.predicted) - 0.1)
    hi = max(1.0, np.nanmax(exponents[["predicted", "ci_high"]].to_numpy()) + 0.05)
    grid = np.linspace(lo, hi, 2)
    for ax, est in zip(axes, learners):
        ax.plot(grid, grid, "-", color="0.4", lw=1, label="observed = 2s/(2s+d)")
        ax.fill_between(grid, grid - margin, grid + margin, color="0.85", label=f"± margin {margin:g}")
        unfitted = Counter()  # arms with one prediction and no fit would print their labels on top of each other
        for r in exponents[exponents.estimator == est].itertuples():
            x = r.predicted
            if np.isnan(r.exponent):
                shift = 0.03 * unfitted[round(r.predicted, 6)]
                unfitted[round(r.predicted, 6)] += 1
                ax.annotate(f"{r.arm}: {r.verdict}", (x + shift, lo + 0.03), fontsize=7, rotation=90,
                            color=COLORS[est], ha="center", va="bottom")
                continue
            # a lower bound (approximation error unmeasured) points up from its interval
            ax.errorbar(x, r.exponent, yerr=[[r.exponent - r.ci_low], [r.ci_high - r.exponent]],
                        fmt=VERDICT_MARKERS[r.verdict], color=COLORS[est], ms=6, capsize=3,
                        lolims=bool(r.lower_bound))
            ax.annotate(r.arm, (x, r.exponent), fontsize=7, textcoords="offset points",
                        xytext=(6, 0), ha="left", va="center", color=COLORS[est])
        handles, _ = ax.get_legend_handles_labels()
        handles += [Line2D([], [], color="0.3", marker=m, ls="none", label=v)
                    for v, m in VERDICT_MARKERS.items() if v != "underdetermined"]
        if exponents[exponents.estimator == est].lower_bound.astype(bool).any():
            handles.append(Line2D([], [], color="0.3", marker="^", ms=5, ls="none",
                                  label="lower bound (arrow):\napprox. error unmeasured"))
        legend(ax, handles=handles)
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="predicted 2s/(2s+d) (d, s known)",
               ylabel="observed exponent of the excess (95% CI)", title=LABELS[est])
    fig.suptitle("Known dimension: observed data exponent against predicted, with verdicts")
    return save(fig, path)


@styled
def plot_ids(table: pd.DataFrame, path: Path, k: int = 20) -> Path:
    """The calibrated ID per arm and state (known_d_laws.id_at_largest_n) against d; a
    line from its lowest to its highest seed."""
    fig, axes = panels(1, width=6.4, height=5.0)
    ax = axes[0]
    if len(table):
        top = float(max(table.d.max(), np.nanmax(table.high.to_numpy(dtype=float)))) * 1.1 + 0.5
        grid = np.array([0.0, top])
        ax.plot(grid, grid, "-", color="0.4", lw=1, label="ID = d")
        ax.fill_between(grid, 0.85 * grid, 1.15 * grid, color="0.88", label="within 15% of d")
        states = list(dict.fromkeys(table.state))
        jitter = {s: 0.08 * (i - 1) for i, s in enumerate(states)}
        palette = dict(zip(states, sns.color_palette(n_colors=len(states))))
        data = table.assign(x=table.d + table.state.map(jitter), smoothness=table.s.map(lambda v: f"s = {v:g}"))
        ax.vlines(data.x, data.low, data.high, colors=data.state.map(palette).tolist(), lw=1.2, alpha=0.7)
        sns.scatterplot(data=data, x="x", y="calibrated_id", hue="state", style="smoothness", s=70,
                        palette=palette, ax=ax)
        ax.set(xlim=(0, top), ylim=(0, top))
    ax.set(xlabel="latent dimension d (known)", ylabel=f"calibrated MLE ID (k = {k})",
           title="Known dimension: what the network's states measure\n(a line from the lowest to the highest seed)")
    legend(ax)
    return save(fig, path)
