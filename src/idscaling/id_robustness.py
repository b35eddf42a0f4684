"""The ID's robustness checks (the id_robustness stage): does the corpus's intrinsic
dimension depend on which model, which moment of training, or which context positions
measure it? Havrilla & Liao's ablations, beside the layer and k sweeps of the ID stage.

Three axes, each a set of rows measured with the reference estimator and protocol:

* model: every trained run of the corpus (each model size, data size and seed) embeds the
  same documents and positions as the reference embedding;
* step: the reference run's weight snapshots (train --snapshots: step 0, log-spaced
  steps, the end) embed them too;
* position: the reference embedding's points split into equal-width bins of context
  position, each bin and all positions subsampled to one common size, since the MLE's
  bias depends on the number of points.

A run at its last step and the reference run on the model axis use the protocol of the
reference ID, so they reproduce it; the position rows use the full protocol at the
common size, so they compare with each other (the "all" row), not with the reference.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from idscaling.embed import embed_corpus
from idscaling.errors import ConfigError, DataError
from idscaling.intrinsic_dim import estimate_id
from idscaling.files import read_json, write_json

log = logging.getLogger(__name__)

AXES = ("model", "step", "position")
ROW_KEYS = ["axis", "run", "model", "params_nonembed", "tokens", "seed", "step",
            "position_lo", "position_hi", "n_points", "id", "ci_low", "ci_high"]


def run_robustness(emb_dir: Path, out_json: Path, *, runs: Sequence[tuple[str, Path]],
                   snapshots: Path | None, val_docs: Path, tokenizer: Path,
                   embedding: dict, estimator: str = "mle", k: int = 20,
                   metric: str = "cosine", protocol: str = "batched",
                   batch_size: int | None = 3600, bootstrap: int = 20,
                   position_bins: int = 4, seed: int = 0, max_points: int | None = None,
                   threads: int | None = None,
                   progress: bool = True) -> dict:
    """Measure the ID along the three axes and write {"rows": [...], settings} to out_json.

    emb_dir: the reference embedding (embed stage), with positions.npy; its last layer is
    the one the reference ID uses. runs: (model name, run directory) pairs for the model
    axis, each directory with model.safetensors, config.json and metrics.json.
    snapshots: the reference run's snapshots folder, inside its run directory, with
    steps.json (None, or no steps: no step rows, and a note). val_docs, tokenizer,
    embedding: what the embed stage was given (embed_corpus's keyword arguments,
    fill_docs/fill_skip included, layer and out_dir excepted), so every model sees the
    same documents and positions. The embeddings of each model live in a temporary folder
    beside out_json only while their ID is measured.
    """
    t0 = time.perf_counter()
    emb_dir, out_json = Path(emb_dir), Path(out_json)
    if isinstance(position_bins, bool) or not isinstance(position_bins, int) or position_bins < 1:
        raise ConfigError(f"id_robustness.position_bins must be a positive integer, "
                          f"got {position_bins!r}")
    if "layer" in embedding or "out_dir" in embedding:
        raise ConfigError("run_robustness embeds the last layer itself: leave layer and "
                          "out_dir out of `embedding`")
    estimate = dict(method=estimator, k=k, metric=metric, bootstrap=bootstrap, seed=seed,
                    max_points=max_points, threads=threads, progress=False)
    batch = batch_size if protocol == "batched" else None
    notes = []

    rows = position_rows(emb_dir, position_bins, estimate)
    steps = _snapshot_steps(snapshots)
    if snapshots is not None and not steps:
        notes.append("the reference run kept no snapshots (it was trained before it became "
                     "the reference run; re-running its train job adds them): no step rows")
    todo = [("model", name, Path(path), None) for name, path in runs]
    if steps:
        ref_dir = Path(snapshots).parent
        ref_name = next((name for name, path in runs if Path(path) == ref_dir), ref_dir.name)
        todo += [("step", ref_name, Path(snapshots) / f"step{s}", s) for s in steps]
    out_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".id_robustness.", dir=out_json.parent) as tmp:
        for i, (axis, name, model_dir, step) in enumerate(todo):
            log.info("[%d/%d] %s axis: %s%s", i + 1, len(todo), axis, name,
                     "" if step is None else f" at step {step}")
            out_dir = Path(tmp) / f"{i}"
            embed_corpus(str(model_dir), val_docs, out_dir, tokenizer=tokenizer, layer=-1,
                         threads=threads, progress=progress, **embedding)
            meta = read_json(out_dir / "meta.json")
            X = np.load(out_dir / f"layer{meta['layers'][-1]}.npy")
            try:
                e = estimate_id(X, batch_size=batch, **estimate)
            except DataError as exc:
                raise DataError(f"{axis} axis, {model_dir}: {exc}") from None
            rows.append({"axis": axis, **_run_facts(name, model_dir, axis),
                         "step": step, "n_points": e.n_points, "id": e.id,
                         "ci_low": _finite(e.ci_low), "ci_high": _finite(e.ci_high)})
    rows = [{key: row.get(key) for key in ROW_KEYS} for row in rows]
    result = {"rows": rows, "notes": notes, "estimator": estimator, "k": k, "metric": metric,
              "protocol": protocol, "batch_size": batch_size, "bootstrap": bootstrap,
              "position_bins": position_bins, "seed": seed, "emb_dir": str(emb_dir),
              "elapsed_s": time.perf_counter() - t0}
    write_json(out_json, result)
    return result


def position_rows(emb_dir: Path, bins: int, estimate: dict) -> list[dict]:
    """The ID of the reference embedding's last layer in each bin of context position, and
    of all positions, every one at the size of the smallest bin (full protocol)."""
    meta_path = emb_dir / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"embedding directory {emb_dir} has no meta.json")
    meta = read_json(meta_path)
    positions_path = emb_dir / "positions.npy"
    if not positions_path.is_file():
        raise DataError(f"{emb_dir} has no positions.npy (written by the embed stage since "
                        "the ID's robustness checks exist): re-run its embed job")
    X = np.load(emb_dir / f"layer{max(meta['layers'])}.npy")
    pos = np.load(positions_path)
    if len(pos) != len(X):
        raise DataError(f"{positions_path} has {len(pos)} rows, the layer {len(X)}")
    lo, hi = int(meta.get("min_position", 0)), int(meta["context"])
    edges = np.unique(np.linspace(lo, hi, bins + 1).round().astype(int))
    groups = [("bin", int(a), int(b), np.flatnonzero((pos >= a) & (pos < b)))
              for a, b in zip(edges[:-1], edges[1:])]
    groups.append(("all", lo, hi, np.arange(len(pos))))
    n_common = min(len(g) for *_, g in groups)
    k_max = max(np.atleast_1d(estimate["k"]))
    if n_common < 2 * (k_max + 1):
        raise DataError(f"a position bin of {emb_dir} holds {n_common} points, too few for "
                        f"k={k_max} with half-sample intervals: use fewer position_bins or "
                        "more embedding points")
    rng = np.random.default_rng([estimate["seed"], 11])
    rows = []
    for kind, a, b, idx in groups:
        take = np.sort(rng.choice(idx, n_common, replace=False))
        e = estimate_id(X[take], batch_size=None, **estimate)
        rows.append({"axis": "position", "run": kind,
                     "position_lo": a, "position_hi": b, "n_points": e.n_points, "id": e.id,
                     "ci_low": _finite(e.ci_low), "ci_high": _finite(e.ci_high)})
        log.info("positions [%d, %d): id %.3f on %d points", a, b, e.id, e.n_points)
    return rows


def _snapshot_steps(snapshots: Path | None) -> list[int]:
    if snapshots is None:
        return []
    index = Path(snapshots) / "steps.json"
    if not index.is_file():
        raise DataError(f"{snapshots} has no steps.json (the train stage writes it)")
    return [int(s) for s in read_json(index)["steps"]]


def _run_facts(model: str, model_dir: Path, axis: str) -> dict:
    """Name, model size, D and seed of a run, from its metrics.json (a snapshot's run is
    the folder above snapshots/)."""
    run_dir = model_dir.parent.parent if axis == "step" else model_dir
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise DataError(f"run {run_dir} has no metrics.json")
    m = read_json(metrics_path)
    return {"run": f"{model}/D{m['tokens']}/s{m['seed']}", "model": model,
            "params_nonembed": m["params_nonembed"], "tokens": m["tokens"],
            "seed": m["seed"]}


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None
