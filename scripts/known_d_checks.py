"""The one-off checks the README cites beside the known-d sweep, made repeatable.

Each check trains single runs with `idscaling.known_d.run_one` on the arms of
configs/known_d.yaml (changing only what the check names) and prints one JSON line per
run, then what the check concludes. Nothing is written outside a temporary folder.

    python scripts/known_d_checks.py threads     # does the result depend on the thread count?
    python scripts/known_d_checks.py patience    # is the stuck d = 8 seed stopped too early?
    python scripts/known_d_checks.py mlp-range   # the MLP beyond the sweep's n (its slopes)
    python scripts/known_d_checks.py network-range  # the network beyond the sweep's n
    python scripts/known_d_checks.py stuck       # the sweep's stuck network runs with two other recipes
    python scripts/known_d_checks.py waves       # the MLP's slope on a field of 16x the waves
    python scripts/known_d_checks.py ridge       # does the network beat the reference at d = 8 because the field is few waves?
    python scripts/known_d_checks.py ladder      # which level of the field the sweeps' learners are learning
    python scripts/known_d_checks.py fields      # the learners' slopes on fields of other level structure
    python scripts/known_d_checks.py warmup      # what a longer warmup (it unsticks the stuck runs) costs at small n
    python scripts/known_d_checks.py wide-lr     # do the wide twins train as well as their learners at half the lr?
    python scripts/known_d_checks.py mlp-asymptote  # the MLP's slope at d >= 4 to n = 2^17, three seeds
    python scripts/known_d_checks.py oracle      # the rate each field allows a learner that knows how it was drawn
    python scripts/known_d_checks.py digits      # does the network's state step at z's leading digit (its ID at d = 2, s = 2)?
    python scripts/known_d_checks.py all
"""

from __future__ import annotations

import argparse
import csv
import concurrent.futures as cf
import contextlib
import json
import math
import multiprocessing
import os
import statistics
import tempfile
from pathlib import Path

import yaml

from idscaling import known_d as known_d_module
from idscaling.config import validate_config
from idscaling.known_d import feature_oracle, level_ladder, run_one, task_from_config
from idscaling.synthetic import make_field

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "known_d.yaml"
WIDE_N = (8192, 16384, 32768, 65536)
# The recipe the README's numbers from these checks were measured with (the sweep's);
# pinned here so that a change of the sweep's recipe does not silently change a check.
EARLIER = {"lr": 3e-3, "early_stop_patience": 4}


def _known_d(config: Path = CONFIG, **train) -> dict:
    known_d = validate_config(yaml.safe_load(config.read_text()))["known_d"]
    known_d["train"] = {**known_d["train"], **train}
    return known_d


def _run(known_d: dict, d: int, s: float, n: int, seed: int, estimator: str, threads: int = 1,
         device: str | None = "cpu", **label) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        record = run_one(known_d, d, s, n, seed, estimator, Path(tmp) / "r.json", Path(tmp) / "r.npy",
                         threads=threads, device=device)
    row = {"d": d, "s": s, "docs": n, "seed": seed, "estimator": estimator, "threads": threads,
           **label, "excess": record["excess"], "steps": record.get("steps"), "wall_s": round(record.get("wall_s", 0.0), 1)}
    print(json.dumps(row), flush=True)
    return row


def _parallel(job, jobs: list[tuple]) -> list[dict]:
    """`job(*args)` for every args in `jobs`, as many at a time as there are cores, each in
    a fresh process (so that no run sees another's torch state)."""
    with cf.ProcessPoolExecutor(min(len(jobs), os.cpu_count() or 1),
                                mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(job, *zip(*jobs)))


def threads() -> None:
    """The same network job at 1 thread twice (the sweep's setting) and at 2 threads."""
    known_d = _known_d(**EARLIER)
    a, b, c = (_run(known_d, 2, 2.0, 2048, 0, "base", threads=t) for t in (1, 1, 2))
    print(f"1 thread twice: {'identical' if a['excess'] == b['excess'] else 'DIFFERENT'}; "
          f"2 threads moves the excess by {c['excess'] / a['excess'] - 1:+.1%}")


def patience() -> None:
    """The d = 8, s = 2 network, seed 1, n = 8192, at the sweep's patience and at twice it."""
    base = EARLIER["early_stop_patience"]
    rows = [_run(_known_d(**{**EARLIER, "early_stop_patience": p}), 8, 2.0, 8192, 1, "base", patience=p)
            for p in (base, 2 * base)]
    print(f"patience {base}: {rows[0]['excess']:.4f} after {rows[0]['steps']} steps; "
          f"patience {2 * base}: {rows[1]['excess']:.4f} after {rows[1]['steps']} steps")


def _slopes(rows: list[dict]) -> str:
    x = [math.log(r["docs"]) for r in rows]
    y = [math.log(r["excess"]) for r in rows]
    local = [-(y[i + 1] - y[i]) / (x[i + 1] - x[i]) for i in range(len(rows) - 1)]
    whole = -(y[-1] - y[0]) / (x[-1] - x[0])
    return f"slope {whole:.3f} over n = {rows[0]['docs']}..{rows[-1]['docs']} (local: " + \
        ", ".join(f"{v:.2f}" for v in local) + ")"


def mlp_range() -> None:
    """The MLP control, seed 0, on n = 8k..64k: with the sweep's recipe at d = 2, s = 1 (does
    it keep learning?), and with batch 256 and twice the patience at d >= 4 (its slope
    beyond the sweep's range, against 2s/(2s+d))."""
    default = _known_d(**EARLIER)
    rows = [_run(default, 2, 1.0, n, 0, "mlp", recipe="lr 3e-3") for n in WIDE_N]
    print(f"d = 2, s = 1, lr 3e-3, patience 4: {_slopes(rows)}; theory 0.500")
    larger = _known_d(**{**EARLIER, "batch_size": 256, "early_stop_patience": 8})
    for d, s in ((4, 1.0), (4, 2.0), (8, 2.0)):
        rows = [_run(larger, d, s, n, 0, "mlp", recipe="batch256") for n in WIDE_N]
        print(f"d = {d}, s = {s:g}, batch 256: {_slopes(rows)}; theory {2 * s / (2 * s + d):.3f}")


def network_range() -> None:
    """The network, seed 0, d = 2, s = 1, on n = 8k..64k, with three recipes (does it keep
    learning beyond the sweep's n?): lr 3e-3 and patience 4, and two of less gradient
    noise with twice the patience: a third of the learning rate, and batch 256."""
    recipes = {"lr 3e-3, patience 4": _known_d(**EARLIER),
               "lr 1e-3, patience 8": _known_d(lr=1e-3, early_stop_patience=8),
               "batch 256, lr 3e-3, patience 8": _known_d(batch_size=256, lr=3e-3, early_stop_patience=8)}
    default = _known_d()
    rows = [_run(default, 2, 1.0, n, 0, "reference") for n in WIDE_N]
    print(f"d = 2, s = 1, the reference: {_slopes(rows)}")
    for name, known_d in recipes.items():
        rows = [_run(known_d, 2, 1.0, n, 0, "base", recipe=name) for n in WIDE_N]
        print(f"d = 2, s = 1, {name}: {_slopes(rows)}; theory 0.500; "
              f"excess at n = {WIDE_N[-1]}: {rows[-1]['excess']:.4f} after {rows[-1]['steps']} steps")


def stuck() -> None:
    """The two network runs that stuck at a plateau in the sweep with lr 3e-3 (n = 8192,
    seed 2, at d = 4, s = 1 and d = 8, s = 2), with that recipe, with lr 1e-3 and twice
    the patience, with the GPU sweep's recipe (batch 256, patience 16), and with 400 warmup
    steps instead of 50 (see `warmup` for what that costs at small n)."""
    recipes = {"lr 3e-3, patience 4": _known_d(**EARLIER),
               "lr 1e-3, patience 8": _known_d(lr=1e-3, early_stop_patience=8),
               "GPU sweep's": _known_d(CONFIG.with_name("known_d_gpu.yaml")),
               "warmup 400": _known_d(**EARLIER, warmup_steps=400)}
    for d, s in ((4, 1.0), (8, 2.0)):
        rows = [_run(known_d, d, s, 8192, 2, "base", recipe=name) for name, known_d in recipes.items()]
        print(f"d = {d}, s = {s:g}, n = 8192, seed 2: " + "; ".join(
            f"{name}: {r['excess']:.4f} after {r['steps']} steps" for name, r in zip(recipes, rows)))


def _warmup_job(d: int, s: float, n: int, seed: int, warmup: int) -> dict:
    return _run(_known_d(**EARLIER, warmup_steps=warmup), d, s, n, seed, "base", warmup=warmup)


def warmup() -> None:
    """The network at n = 512 and 2,048, seeds 0 and 1, d = 2, s = 1 and d = 4, s = 2,
    with the sweep's 50 warmup steps and with 400 (which unsticks the stuck runs): what
    the longer warmup costs where runs are short."""
    jobs = [(d, s, n, seed, w) for d, s in ((2, 1.0), (4, 2.0)) for n in (512, 2048)
            for seed in (0, 1) for w in (50, 400)]
    rows = _parallel(_warmup_job, jobs)
    for d, s in ((2, 1.0), (4, 2.0)):
        for n in (512, 2048):
            mean = {w: sum(r["excess"] for r in rows if (r["d"], r["docs"], r["warmup"]) == (d, n, w)) / 2
                    for w in (50, 400)}
            print(f"d = {d}, s = {s:g}, n = {n}: warmup 50 {mean[50]:.4f}, warmup 400 {mean[400]:.4f} "
                  f"(mean of 2 seeds; {mean[400] / mean[50] - 1:+.0%})")


def waves(factor: int = 16) -> None:
    """The MLP control at d = 4, s = 2, seed 0, over the sweep's n, on the sweep's field and
    on one with `factor` times the plane waves per dyadic level (same s): is its steep
    slope an artifact of a field made of few waves?"""
    known_d = _known_d(**EARLIER)
    sizes = known_d["docs"]
    rows = [_run(known_d, 4, 2.0, n, 0, "mlp", waves="default") for n in sizes]
    print(f"default field: {_slopes(rows)}")
    with _more_waves(factor):
        rows = [_run(known_d, 4, 2.0, n, 0, "mlp", waves=f"{factor}x") for n in sizes]
    print(f"{factor}x the waves: {_slopes(rows)}; theory 0.500")


@contextlib.contextmanager
def _more_waves(factor: int):
    """Every arm's field with `factor` times the plane waves per dyadic level (same s)."""
    def more_waves(d, s, seed, levels, **kw):
        per_level = len(make_field(d, s, seed, levels=levels, **kw).frequencies) // levels
        return make_field(d, s, seed, levels=levels, modes=factor * per_level, **kw)

    known_d_module.make_field = more_waves
    try:
        yield
    finally:
        known_d_module.make_field = make_field


def _waves_job(known_d: dict, factor: int, estimator: str, n: int) -> dict:
    with _more_waves(factor):
        return _run(known_d, 8, 2.0, n, 0, estimator, device="auto", waves=f"{factor}x")


def ridge(n: int = 16384, factors=(1, 16, 64)) -> None:
    """d = 8, s = 2, seed 0, n documents, with the GPU sweep's recipe (on CUDA if there is
    one): the network and the reference on the sweep's field and on fields of more plane
    waves per level (same s), all at once. Each wave varies along one direction of R^(d+1), so a
    field of few of them is a sum of ridge functions, which a network can learn faster
    than a local average can; if that is why the network beats the reference there, its
    lead shrinks as the waves multiply."""
    known_d = _known_d(CONFIG.with_name("known_d_gpu.yaml"))
    rows = _parallel(_waves_job, [(known_d, f, e, n) for f in factors for e in ("base", "reference")])
    for f in factors:
        net, ref = (next(r for r in rows if r["waves"] == f"{f}x" and r["estimator"] == e)
                    for e in ("base", "reference"))
        print(f"{f}x the waves: network {net['excess']:.5f}, reference {ref['excess']:.5f}, "
              f"ratio {net['excess'] / ref['excess']:.2f}")


SWEEPS = {"CPU": CONFIG.parents[1] / "docs" / "known_d_cpu" / "runs.csv",
          "GPU": CONFIG.parents[1] / "docs" / "known_d_gpu" / "runs.csv"}


def _rung(excess: float, ladder) -> str:
    """Where an excess sits on the ladder: 'j' when between the rungs of knowing levels < j
    and levels <= j (so level j is being learned)."""
    below = [j for j, e in enumerate(ladder) if e <= excess]
    if not below:
        return f">{len(ladder) - 1}"
    j = below[0] - 1
    if j < 0:
        return "<0"
    # the fraction of rung j's log drop already made: 0 at its top, 1 at the next rung
    frac = math.log(ladder[j] / excess) / math.log(ladder[j] / ladder[j + 1])
    return f"{j + frac:.2f}"


def ladder(depth: int = 4) -> None:
    """For every arm: the excess of a learner that knows exactly the field's first J
    levels (J = 0..depth), and where the committed sweeps' mean network and reference
    excess sit on that ladder at each n (a level index: 1.40 = level 1 learned 40% of
    the way, in log excess). The theory's rate is an envelope over levels: a fit whose
    excess stays within one rung measures how one level is learned."""
    known_d = _known_d()
    runs = {name: list(csv.DictReader(path.open())) for name, path in SWEEPS.items() if path.exists()}
    for a in known_d["arms"]:
        d, s = a["d"], float(a["s"])
        task = task_from_config(known_d, d, s)
        rungs = level_ladder(task, task.eval_points(known_d["eval_points"])[0], depth)
        arm = f"d{d}-s{s:g}"
        print(f"{arm}: knows levels < J, J = 0..{depth}: " + ", ".join(f"{e:.5f}" for e in rungs))
        for name, rows in runs.items():
            for estimator in ("base", "reference"):
                mine = [r for r in rows if r["arm"] == arm and r["estimator"] == estimator]
                sizes = sorted({int(r["docs"]) for r in mine})
                if not sizes:
                    continue
                means = [sum(float(r["excess"]) for r in mine if int(r["docs"]) == n) /
                         sum(int(r["docs"]) == n for r in mine) for n in sizes]
                print(f"  {name} {estimator:>9}: " + ", ".join(
                    f"n={n} {e:.4f} (level {_rung(e, rungs)})" for n, e in zip(sizes, means)))


FIELDS = {"the sweep's": {},
          "2^(jd) waves per level, at most 1024": {"max_modes": 1024},
          "levels 2^(1/4) apart, 2^(jd/4) waves, at most 1024": {"level_ratio": 2 ** 0.25, "levels": 24,
                                                                 "max_modes": 1024}}


def _field_job(design: str, estimator: str, n: int) -> dict:
    known_d = {**_known_d(**EARLIER), **FIELDS[design]}
    return _run(known_d, 4, 2.0, n, 0, estimator, field=design)


def fields() -> None:
    """d = 4, s = 2, seed 0, over the sweep's n: the network, the MLP and the reference on
    the sweep's field and on two fields of more degrees of freedom per scale (same s):
    levels of 2^(jd) waves (as many as the cells at that scale), and, besides, levels a
    quarter octave apart (so no learner can finish one level before the next begins).
    If the learners' steep slopes came from a field of few waves per level, they would
    flatten towards 2s/(2s+d) = 0.5 on these."""
    sizes = _known_d()["docs"]
    jobs = sorted([(f, e, n) for f in FIELDS for e in ("base", "mlp", "reference") for n in sizes],
                  key=lambda j: -j[2])
    rows = _parallel(_field_job, jobs)
    for f in FIELDS:
        for e in ("base", "mlp", "reference"):
            mine = sorted((r for r in rows if r["field"] == f and r["estimator"] == e), key=lambda r: r["docs"])
            print(f"{f} field, {e}: {_slopes(mine)}; theory 0.500")


def _wide_lr_job(d: int, s: float, seed: int, estimator: str, scale: float) -> dict:
    known_d = {**_known_d(**EARLIER), "width_lr_scale": scale}  # run_one scales the twins' lr
    twin = estimator in ("wide", "mlp_wide")
    return _run(known_d, d, s, 8192, seed, estimator, lr=EARLIER["lr"] * (scale if twin else 1.0))


def wide_lr(scale: float = 0.5) -> None:
    """Every arm at n = 8192, seeds 0-2: each learner at the sweep's lr and its wide twin
    at `scale` times it. At the learner's lr the twins trained worse than their learners
    in half the arms, which leaves the approximation error unmeasured; a wider Adam
    network is commonly given a smaller lr."""
    arms = [(a["d"], float(a["s"])) for a in _known_d()["arms"]]
    jobs = [(d, s, seed, est, scale) for d, s in arms for seed in (0, 1, 2)
            for est in ("base", "wide", "mlp", "mlp_wide")]
    _wide_lr_report(_parallel(_wide_lr_job, jobs), arms, scale)


def _wide_lr_report(rows: list[dict], arms, scale: float) -> None:
    for d, s in arms:
        words = []
        for learner, twin, name in (("base", "wide", "network"), ("mlp", "mlp_wide", "MLP")):
            by = {e: {r["seed"]: r["excess"] for r in rows if (r["d"], r["s"], r["estimator"]) == (d, s, e)}
                  for e in (learner, twin)}
            mean = sum(by[learner].values()) / len(by[learner])
            gains = sorted(by[learner][k] - by[twin][k] for k in by[twin])
            words.append(f"{name} {mean:.4f}, its twin at lr x {scale:g} gains "
                         f"{gains[len(gains) // 2] / mean:+.1%} (median over seeds; mean "
                         f"{sum(gains) / len(gains) / mean:+.1%})")
        print(f"d = {d}, s = {s:g}, n = 8192: " + "; ".join(words))


def _mlp_asymptote_job(d: int, s: float, n: int, seed: int, estimator: str) -> dict:
    known_d = _known_d(**{**EARLIER, "batch_size": 256, "early_stop_patience": 8})
    return _run(known_d, d, s, n, seed, estimator)


def mlp_asymptote(sizes=(8192, 16384, 32768, 65536, 131072), seeds=(0, 1, 2)) -> None:
    """The MLP control and the reference at d >= 4, on n = 2^13..2^17, three seeds, with
    the recipe that keeps the MLP learning there (batch 256, patience 8; `mlp-range` ran
    it on one seed). Over the sweep's n = 512..8192 the MLP is steeper than 2s/(2s+d) at
    every d >= 4: if those sizes are pre-asymptotic, its local slope falls towards the
    prediction as n grows."""
    arms = ((4, 1.0), (4, 2.0), (8, 2.0))
    jobs = [(d, s, n, seed, e) for d, s in arms for n in sizes for seed in seeds for e in ("mlp", "reference")]
    # the MLP at twice its width (half its lr) where it flattens: is its floor its width?
    jobs += [(d, s, n, seed, "mlp_wide") for d, s in arms for n in sizes[-2:] for seed in seeds]
    rows = _parallel(_mlp_asymptote_job, sorted(jobs, key=lambda j: -j[2]))

    def mean(d, s, n, estimator):
        return sum(r["excess"] for r in rows if (r["d"], r["s"], r["docs"], r["estimator"]) == (d, s, n, estimator)) / len(seeds)

    for d, s in arms:
        for estimator in ("mlp", "reference"):
            means = [{"docs": n, "excess": mean(d, s, n, estimator)} for n in sizes]
            print(f"d = {d}, s = {s:g}, {estimator} (mean of {len(seeds)} seeds): {_slopes(means)}; "
                  f"theory {2 * s / (2 * s + d):.3f}; excess " + ", ".join(f"{m['excess']:.4f}" for m in means))
        print(f"d = {d}, s = {s:g}, the MLP at twice its width: " + ", ".join(
            f"n = {n}: {mean(d, s, n, 'mlp_wide'):.4f} against {mean(d, s, n, 'mlp'):.4f}" for n in sizes[-2:]))


CELLS = CONFIG.with_name("known_d_cells.yaml")  # the sweep on a field of as many waves per level as cells


def _oracle_job(d: int, s: float, n: int, seed: int, cells: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    known_d = _known_d(CELLS if cells else CONFIG)
    task = task_from_config(known_d, d, s)
    eval_z, _ = task.eval_points(known_d["eval_points"])
    fit = feature_oracle(task, *task.documents(seed, n), eval_z)
    row = {"d": d, "s": s, "docs": n, "seed": seed, "field": "cells" if cells else "sweep's",
           "waves": len(task.field.phases), "excess": float(fit.excess.mean()),
           "iterations": fit.iterations, "converged": fit.converged}
    print(json.dumps(row), flush=True)
    return row


def oracle(sizes=(512, 1024, 2048, 4096, 8192), beyond=(16384, 32768), cell_sizes=(512, 1024, 2048, 4096),
           seed=0) -> None:
    """Every arm: `feature_oracle` (the posterior mode of the field's weights given its
    waves) on the sweep's field, n = 512..32768, and, at d <= 4, on the field of as many
    waves per level as cells (configs/known_d_cells.yaml), n = 512..4096 (its cost grows
    with n times its tens of thousands of waves). The k-NN reference shows the rate of a
    local average; the oracle shows the rate the field allows a learner that finds its
    waves. If that is steeper than 2s/(2s+d), a learner's steeper slope is no evidence
    against the theory: the field is not one of the hard functions the theory's rate is about."""
    arms = [(a["d"], float(a["s"])) for a in _known_d()["arms"]]
    jobs = [(d, s, n, seed, False) for d, s in arms for n in (*sizes, *beyond)]
    jobs += [(d, s, n, seed, True) for d, s in arms if d <= 4 for n in cell_sizes]
    rows = _parallel(_oracle_job, sorted(jobs, key=lambda j: -j[2] * (1 + 40 * j[4]) * j[0]))
    sweep = list(csv.DictReader(SWEEPS["CPU"].open()))
    for d, s in arms:
        arm = f"d{d}-s{s:g}"
        for field in ("sweep's", "cells"):
            mine = sorted((r for r in rows if (r["d"], r["s"], r["field"]) == (d, s, field)), key=lambda r: r["docs"])
            if mine:
                print(f"{arm}, {field} field ({mine[0]['waves']} waves), oracle: {_slopes(mine)}; "
                      f"theory {2 * s / (2 * s + d):.3f}" + ("" if all(r["converged"] for r in mine) else "; NOT CONVERGED"))
        oracle_at = {r["docs"]: r["excess"] for r in rows if (r["d"], r["s"], r["field"]) == (d, s, "sweep's")}
        for estimator in ("reference", "base"):
            mean = {n: statistics.mean(float(r["excess"]) for r in sweep if r["arm"] == arm and
                                       r["estimator"] == estimator and int(r["docs"]) == n) for n in sizes}
            print(f"  CPU sweep {estimator} / oracle on the sweep's field: " +
                  ", ".join(f"n={n} {mean[n] / oracle_at[n]:.2f}" for n in sizes))


def _digits_job(d: int, s: float, seed: int, n: int, recipe: str) -> dict:
    """One network run (the CPU sweep's recipe or the GPU sweep's); its states at the
    held-out points, read against the cells of z's leading digit (one per coordinate)."""
    import numpy as np
    import pandas as pd
    import torch
    from scipy.spatial import cKDTree

    from idscaling.known_d import id_profile, true_logprobs
    from idscaling.known_d_laws import calibrate, sphere_readings

    torch.set_num_threads(1)
    captured = {}
    model_states = known_d_module.model_states

    def capture(model, task, z):
        captured.update(model_states(model, task, z))
        return captured

    known_d_module.model_states = capture
    known_d = _known_d(CONFIG.with_name("known_d_gpu.yaml") if recipe == "GPU" else CONFIG)
    row = {"recipe": recipe, "excess": _run(known_d, d, s, n, seed, "base", recipe=recipe)["excess"]}
    task = task_from_config(known_d, d, s)
    z, _ = task.eval_points(known_d["eval_points"])
    lead = task.quantise(z) // task.base ** (task.digits - 1)
    cell = np.unique(lead, axis=0, return_inverse=True)[1].ravel()
    states = {"block2": captured["block2"], "logprobs": captured["logprobs"],
              "true_logprobs": true_logprobs(task, z)}
    k = 10
    row.update(d=d, s=s, docs=n, seed=seed, points=len(z), cells=int(cell.max() + 1))
    _, z_nn = cKDTree(z).query(z, k + 1)
    row["z_nn_same_cell"] = float((cell[z_nn[:, 1:]] == cell[:, None]).mean())
    # one point per leading-digit cell: what the MLE reads once no two points share a cell
    first = np.unique(cell, return_index=True)[1]
    readings = {m: sphere_readings(m_n, (10, 20), range(1, 2 * d + 3))
                for m, m_n in (("all", len(z)), ("one_per_cell", len(first)))}
    # a step where the leading digit changes: the state moves further per unit of z
    # across a cell's edge than inside it (1 for a smooth map of z)
    pair = z_nn[:, 1]
    same = cell[pair] == cell
    dz = np.linalg.norm(z - z[pair], axis=1)
    for name, x in states.items():
        _, nn = cKDTree(x).query(x, k + 1)
        row[f"{name}_nn_same_cell"] = float((cell[nn[:, 1:]] == cell[:, None]).mean())
        stretch = np.linalg.norm(x - x[pair], axis=1) / dz
        row[f"{name}_edge_stretch"] = float(np.median(stretch[~same]) / np.median(stretch[same]))
        for subset, idx in (("all", slice(None)), ("one_per_cell", first)):
            ids = id_profile({name: x[idx]}, (10, 20))[name]
            table = pd.DataFrame({"k": [10, 20], "id": [ids["10"], ids["20"]]})
            cal = calibrate(table, readings[subset])
            row[f"{name}_{subset}_id20"] = round(float(cal.iloc[1]), 3)
    print(json.dumps(row), flush=True)
    return row


def digits(jobs=((2, 2.0, 2048, "CPU"), (2, 2.0, 8192, "CPU"), (2, 2.0, 32768, "CPU"), (2, 2.0, 32768, "GPU"),
                 (4, 2.0, 8192, "CPU")), seeds=(0, 1, 2)) -> None:
    """Why the network's ID reads under d at d = 2, s = 2 (and rises with k): does its state
    step where the leading digit of a coordinate, one token, changes? For the sweep's
    network (n = 8192, and at d = 2 also 2048 and 32768, and 32768 with the GPU sweep's
    recipe, batch 256 and patience 16): how much further its state moves
    per unit of z across a leading-digit cell's edge than inside a cell, the share of a
    point's 10 nearest neighbours in its state that lie in its own cell (against the same
    for z and for the true log-probabilities), and the calibrated ID at k = 20 on all
    held-out points and on one point per cell."""
    rows = _parallel(_digits_job, sorted([(d, s, seed, n, recipe) for d, s, n, recipe in jobs for seed in seeds],
                                         key=lambda j: -j[3] * (1 + 3 * (j[4] == "GPU"))))
    print()
    for d, s, n, recipe in jobs:
        mine = [r for r in rows if (r["d"], r["s"], r["docs"], r["recipe"]) == (d, s, n, recipe)]
        mean = {key: statistics.mean(r[key] for r in mine) for key in mine[0]
                if key not in ("d", "s", "docs", "seed", "recipe")}
        print(f"d{d}-s{s:g}, n = {n}, {recipe} recipe ({len(mine)} seeds, {mean['points']:.0f} points in {mean['cells']:.0f} leading-digit "
              f"cells; excess {mean['excess']:.4f}): state distance per unit of z across a cell edge / inside a cell: true log p "
              f"{mean['true_logprobs_edge_stretch']:.2f}, network block2 {mean['block2_edge_stretch']:.2f}, "
              f"log q {mean['logprobs_edge_stretch']:.2f}; neighbours in the same cell: z {mean['z_nn_same_cell']:.2f}, true log p "
              f"{mean['true_logprobs_nn_same_cell']:.2f}, network block2 {mean['block2_nn_same_cell']:.2f}, "
              f"network log q {mean['logprobs_nn_same_cell']:.2f}; calibrated ID (k = 20) all points / one per "
              f"cell: block2 {mean['block2_all_id20']:.2f} / {mean['block2_one_per_cell_id20']:.2f}, "
              f"log q {mean['logprobs_all_id20']:.2f} / {mean['logprobs_one_per_cell_id20']:.2f}, true log p "
              f"{mean['true_logprobs_all_id20']:.2f} / {mean['true_logprobs_one_per_cell_id20']:.2f}")


CHECKS = {"threads": threads, "patience": patience, "mlp-range": mlp_range,
          "network-range": network_range, "stuck": stuck, "waves": waves, "ridge": ridge,
          "ladder": ladder, "fields": fields, "warmup": warmup, "wide-lr": wide_lr,
          "mlp-asymptote": mlp_asymptote, "oracle": oracle, "digits": digits}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("check", choices=[*CHECKS, "all"])
    args = parser.parse_args()
    for name, check in CHECKS.items():
        if args.check in (name, "all"):
            check()


if __name__ == "__main__":
    main()
