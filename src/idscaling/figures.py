"""The figure toolkit of every stage that draws: the project's seaborn style, panels,
legends that say what is missing, size formatting, atomic PNG output. Figures are built on
matplotlib.figure.Figure, not pyplot: no global state, no display backend needed."""

from __future__ import annotations

import functools
import math
import textwrap
from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from idscaling.files import atomic_path

LOSS_LABEL = "validation loss (nats/token)"
D_LABEL = "training tokens D (unique)"
N_LABEL = "non-embedding parameters N"


def styled(draw):
    """Run a drawing function under the project's seaborn style, without touching globals."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
            return draw(*args, **kwargs)
    return wrapper


def panels(n: int, ncols_max: int = 3, width: float = 4.8, height: float = 3.8,
            min_width: float = 7.0):
    ncols = max(1, min(n, ncols_max))
    nrows = max(1, math.ceil(n / ncols))
    fig = Figure(figsize=(max(width * ncols, min_width), height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return Path(path)


def legend(ax, notes=(), handles=None) -> None:
    """The axes' legend, with `notes` (what is missing, and why) as entries without a
    marker; matplotlib places it where it hides the fewest points."""
    if handles is None:
        handles, _ = ax.get_legend_handles_labels()
    blank = [Line2D([], [], linestyle="none", label=textwrap.fill(n, 48, subsequent_indent="  "))
             for n in notes if n]
    if handles or blank:
        ax.legend(handles=list(handles) + blank, loc="best", fontsize=7, framealpha=0.9)


def message_figure(path: Path, title: str, message: str) -> Path:
    fig, axes = panels(1, width=6.4, height=3.6)
    ax = axes[0]
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, textwrap.fill(message, 60), ha="center", va="center",
            transform=ax.transAxes, fontsize=11, color="0.25")
    return save(fig, path)


def compact(v: float) -> str:
    """25000 -> '25k', 1.2e9 -> '1.2B': sizes as a person reads them."""
    for scale, suffix in [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]:
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def log_axis(ax, axis: str) -> None:
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


def short(reason: str, width: int = 90) -> str:
    return textwrap.shorten(reason, width, placeholder=" …")
