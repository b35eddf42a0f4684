"""Benchmark: fitting every law of the default run with bootstrap intervals.

Two workloads, each timed against a baseline in the same run:

- ``default run``: the grid of ``config.yaml`` (its corpora, models and data_tokens, one
  run per model x D x seed), losses drawn from a Chinchilla-like law with 1% noise.
  Ours: ``idscaling.laws_stage.fit_laws`` (what the laws stage runs): per corpus the offset
  and pure data law of every model, the offset and pure model law of every D, and the
  joint law, each with ``--bootstrap`` resamples.
- ``chinchilla``: the joint law on Epoch AI's 240 Chinchilla points (tests/data).

Baseline ``curve_fit loop``: a plain loop of ``scipy.optimize.curve_fit`` (least squares
on the loss, started from the full-data fit) over the same fits and the same resamples
(the same seeded multiplicity vectors). Fits that the baseline fails on are counted. The
pure law's baseline is ``numpy.polyfit`` in log-log space per resample.

Each is timed ``--repeats`` times, round-robin; the median is printed with the ratio.
The issue's goal: all laws of the default run with 1000 resamples in seconds.

Run: ``python bench/fit_laws.py [--repeats 3] [--bootstrap 1000] [--config config.yaml]``.
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")   # progress bars would only add noise here

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import OptimizeWarning, curve_fit

from idscaling import laws
from idscaling.laws_stage import _fit_seed, fit_laws
from timing import timed

ROOT = Path(__file__).resolve().parents[1]




def default_losses(config_path: Path, seed: int = 0) -> pd.DataFrame:
    """A losses table on the config's grid, from L = E + A/N^0.3 + B/D^0.4 with 1% noise."""
    config = yaml.safe_load(config_path.read_text())
    rng = np.random.default_rng(seed)
    rows = []
    for c, corpus in enumerate(config["corpora"]):
        for model, shape in config["models"].items():
            N = 12 * shape["n_layer"] * shape["n_embd"] ** 2
            for D in config["data_tokens"]:
                for s in config.get("seeds", [0]):
                    loss = (2.0 + 0.3 * c + 25.0 * N**-0.3 + 115.0 * D**-0.4)
                    rows.append(dict(corpus=corpus, model=model, params_nonembed=float(N),
                                     tokens=float(D), seed=s,
                                     loss=loss * np.exp(rng.normal(0, 0.01))))
    return pd.DataFrame(rows)


def _offset(x, E, A, alpha):
    return E + A * x ** (-alpha)


def _joint(X, E, A, alpha, B, beta):
    return E + A * X[0] ** (-alpha) + B * X[1] ** (-beta)


def curve_fit_loop(fits):
    """The baseline: one curve_fit (or polyfit) per fit per resample. Returns failures."""
    failures = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        for kind, X, y, p0, W in fits:
            for w in W:
                idx = np.repeat(np.arange(len(y)), w.astype(int))
                try:
                    if kind == "pure":
                        np.polyfit(np.log(X[idx]), np.log(y[idx]), 1)
                    elif kind == "offset":
                        curve_fit(_offset, X[idx], y[idx], p0=p0, maxfev=2000)
                    else:
                        curve_fit(_joint, X[:, idx], y[idx], p0=p0, maxfev=4000)
                except (RuntimeError, ValueError, np.linalg.LinAlgError):
                    failures += 1
    return failures


def baseline_jobs(losses, fitted, bootstrap, seed):
    """The same fits and resamples as fit_laws, as (kind, X, y, p0, multiplicities)."""
    jobs = []
    for (corpus, law, fixed, form), fit in fitted.items():
        runs = losses[losses["corpus"] == corpus]
        if not fit.ok:
            continue
        if law == "joint":
            X = runs[["params_nonembed", "tokens"]].to_numpy().T
            p0 = [fit.E, fit.A, fit.alpha, fit.B, fit.beta]
            sizes = [X[0], X[1]]
        else:
            sel = runs[runs["model"] == fixed] if law == "data" else \
                runs[runs["tokens"] == float(fixed)]
            X = sel["tokens" if law == "data" else "params_nonembed"].to_numpy()
            p0 = [fit.offset, fit.coef, fit.exponent]
            sizes = [X]
            runs = sel
        W, _ = laws._resample(len(runs), bootstrap, _fit_seed(seed, corpus, law, fixed), sizes)
        jobs.append((form if law != "joint" else "joint", X, runs["loss"].to_numpy(), p0, W))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    args = ap.parse_args()

    losses = default_losses(args.config)
    n_corpora, n_runs = losses["corpus"].nunique(), len(losses)
    _, fitted = fit_laws(losses, {}, bootstrap=0)
    jobs = baseline_jobs(losses, fitted, args.bootstrap, seed=0)
    print(f"default run ({args.config.name}): {n_corpora} corpora, {n_runs} runs, "
          f"{len(fitted)} laws ({len(jobs)} fitted), {args.bootstrap} resamples each")
    (ours, base), (_, failures) = timed(
        [lambda: fit_laws(losses, {}, bootstrap=args.bootstrap, seed=0),
         lambda: curve_fit_loop(jobs)], args.repeats)
    print(f"  ours  fit_laws (batched L-BFGS, Huber)  {ours:8.2f} s")
    print(f"  base  curve_fit loop                    {base:8.2f} s   "
          f"({failures} resamples failed)")
    print(f"  ratio baseline / ours                   {base / ours:8.1f}x")

    table = pd.read_csv(ROOT / "tests" / "data" / "chinchilla_svg_extracted_data.csv")
    table = table.sort_values("loss").iloc[:-5]
    N = table["Model Size"].to_numpy()
    D = table["Training FLOP"].to_numpy() / (6 * N)
    L = table["loss"].to_numpy()
    fit = laws.fit_joint_law(N, D, L)
    W, _ = laws._resample(len(L), args.bootstrap, 0, [N, D])
    job = [("joint", np.stack([N, D]), L, [fit.E, fit.A, fit.alpha, fit.B, fit.beta], W)]
    print(f"chinchilla joint law: {len(L)} points, {args.bootstrap} resamples")
    (ours, base), (_, failures) = timed(
        [lambda: laws.fit_joint_law(N, D, L, bootstrap=args.bootstrap, seed=0),
         lambda: curve_fit_loop(job)], args.repeats)
    print(f"  ours  fit_joint_law                     {ours:8.2f} s")
    print(f"  base  curve_fit loop                    {base:8.2f} s   "
          f"({failures} resamples failed)")
    print(f"  ratio baseline / ours                   {base / ours:8.1f}x")


if __name__ == "__main__":
    main()
