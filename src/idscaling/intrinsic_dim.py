"""Intrinsic dimension of a point cloud: Levina-Bickel MLE and TwoNN, on exact kNN.

Estimators (the `method` argument):

* ``mle``: Levina & Bickel (2005) at each point x with neighbour distances T_1..T_k,
  m(x) = [ (1/(k-1)) sum_{j<k} log(T_k / T_j) ]^-1, combined over points by MacKay &
  Ghahramani (2005): the inverse of the mean of 1/m(x). This is what scikit-dimension's
  ``MLE`` computes by default, and what Havrilla & Liao used.
* ``mle_mean``: the same local estimates combined by their plain mean (Levina-Bickel's
  original rule, biased upward).
* ``twonn``: Facco et al. (2017), maximum likelihood: mu = T_2 / T_1 is Pareto(1, d),
  d = N / sum(log mu).
* ``twonn_fit``: Facco et al.'s line through the origin of -log(1 - F(mu)) against
  log(mu), after dropping the largest 10% of the ratios.

A k range ``k=(k1, k2)`` averages the MLE over k = k1..k2 (Levina & Bickel's recipe).

Protocols: ``full`` estimates on all points at once; ``batched`` (Havrilla & Liao)
shuffles the points, cuts them into batches of `batch_size` (3600 in the paper), estimates
on each batch and reports the mean over batches.

Metrics: ``euclidean``; ``cosine``, the Euclidean (chord) distance between rows scaled to
unit length, which has the same neighbours as 1 - cos and, being a true metric that is
locally proportional to the angle, gives an unbiased dimension; ``sklearn_cosine``,
the distance 1 - cos itself, as scikit-learn's ``metric="cosine"`` computes it (and so,
presumably, the paper's patched scikit-dimension). 1 - cos = chord^2 / 2 is a squared
distance, so every estimator here reports half the dimension on it.

Exact duplicate points (after scaling, for the cosine metrics) are removed first and
counted: they give zero distances, on which every estimator breaks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from idscaling import devices as _devices
from idscaling import knn as _knn
from idscaling.errors import ConfigError, DataError
from idscaling.files import read_json, write_json

log = logging.getLogger(__name__)

METRICS = ("euclidean", "cosine", "sklearn_cosine")
PROTOCOLS = ("batched", "full")
TWONN_DISCARD = 0.1  # fraction of the largest ratios that twonn_fit drops (Facco et al.)
_Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


@dataclass(frozen=True)
class IDEstimate:
    """One intrinsic-dimension estimate.

    id: the estimate; ci_low, ci_high: percentile 95% bootstrap interval (NaN without
    bootstrap); n_points: distinct points that entered the estimate; n_duplicates:
    exact duplicates removed before anything else; protocol: "full" or "batched";
    batch_estimates: the per-batch estimates under the batched protocol (empty for full).
    """

    id: float
    ci_low: float
    ci_high: float
    n_points: int
    n_duplicates: int = 0
    protocol: str = "full"
    method: str = "mle"
    k: int | tuple[int, int] = 20
    metric: str = "euclidean"
    n_batches: int = 1
    batch_size: int | None = None
    bootstrap: int = 0
    batch_estimates: tuple[float, ...] = field(default=(), repr=False)


# ---------------------------------------------------------------------------------------
# public entry points


def estimate_id(X: np.ndarray | torch.Tensor, method: str = "mle", k: int | Sequence[int] = 20,
                metric: str = "euclidean", batch_size: int | None = None, bootstrap: int = 0,
                seed: int = 0, **extra: Any) -> IDEstimate:
    """Intrinsic dimension of the rows of X (n, dim), a NumPy array or torch tensor.

    method: "mle" (default), "mle_mean", "twonn" or "twonn_fit" (see the module doc).
    k: neighbours for the MLE, or a range (k1, k2) to average over; TwoNN ignores it.
    metric: "euclidean", "cosine" or "sklearn_cosine".
    batch_size: None for the full protocol; an int for the batched protocol (the mean of
    estimates on seeded batches of that many points; points beyond the last full batch
    are left out).
    bootstrap: number of half-sample replicates for a 95% interval (0: none, ci_low =
    ci_high = NaN). Each replicate draws half of every batch without replacement and
    searches its neighbours again; the spread of those estimates equals the spread of the
    full one, and the interval is the full estimate +- 1.96 times it. (Resampling the
    per-point quantities instead, with neighbours kept, ignores that neighbouring points
    share neighbours: its intervals covered 84% where 95% was asked.)
    seed: seeds the batching, any subsampling and the bootstrap.
    extra: device (None: CUDA when present), threads, block_size (kNN block),
    max_points (cap on distinct points, a seeded subsample), progress (bool).
    """
    return estimate_ids(X, methods=(method,), ks=(k,), metric=metric, batch_size=batch_size,
                        bootstrap=bootstrap, seed=seed, **extra)[0]


def estimate_ids(X: np.ndarray | torch.Tensor | Points, methods: Sequence[str] = ("mle",),
                 ks: Sequence[int | Sequence[int]] = (20,), metric: str = "euclidean",
                 batch_size: int | None = None, bootstrap: int = 0, seed: int = 0, *,
                 device: str | None = None, threads: int | None = None,
                 block_size: int | None = None, max_points: int | None = None,
                 progress: bool = True, copy: bool = True) -> list[IDEstimate]:
    """Several estimates from one neighbour search: every method in `methods` with every
    k in `ks` (TwoNN once, whatever `ks`), in that order. Arguments as `estimate_id`;
    X may also be `Points` from `prepare_points`, to search several protocols without
    preparing the points again. copy=False lets the preparation overwrite X."""
    methods = [_check_method(m) for m in methods]
    if not methods:
        raise ConfigError("no estimator asked for: intrinsic_dim.estimators is empty")
    uses_k = any(ESTIMATORS[m].uses_k for m in methods)
    kranges = [_check_k(k) for k in ks] if uses_k else []
    if uses_k and not kranges:
        raise ConfigError("the MLE needs at least one k (intrinsic_dim.k)")
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if not isinstance(bootstrap, (int, np.integer)) or bootstrap < 0:
        raise ConfigError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    k_max = max([2] + [hi for _, hi in kranges])
    if batch_size is not None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < k_max + 1:
            raise ConfigError(f"batch_size must be an integer of at least k+1 = {k_max + 1} "
                              f"points, got {batch_size!r}")
    dev = _devices.resolve_device(device)

    with _devices.torch_threads(threads), _devices.exact_fp32(), torch.no_grad():
        if isinstance(X, Points):
            if X.metric != metric:
                raise ConfigError(f"points prepared for metric {X.metric!r}, not {metric!r}")
            P, n_dup = X.data.to(dev), X.n_duplicates
        else:
            pts = prepare_points(X, metric, device=dev, copy=copy)
            P, n_dup = pts.data, pts.n_duplicates
            del pts
        n = P.shape[0]
        if max_points is not None and n > max_points:
            keep = np.sort(np.random.default_rng([seed, 7]).choice(n, int(max_points),
                                                                   replace=False))
            log.info("using a seeded subsample of %d of %d distinct points", max_points, n)
            P = P[torch.from_numpy(keep).to(dev)]
            n = P.shape[0]
        if n < k_max + 1:
            raise DataError(f"only {n} distinct points ({n_dup} duplicates removed): "
                            f"k={k_max} needs at least k+1 = {k_max + 1}")
        batches = _batches(n, batch_size, seed)
        smallest = min(n if b is None else len(b) for b in batches)
        if bootstrap and smallest // 2 < k_max + 1:
            raise DataError(f"the interval searches neighbours in half-samples: a batch of "
                            f"{smallest} points halves to fewer than k+1 = {k_max + 1}")

        def search(b: np.ndarray | None, bar: bool = True) -> np.ndarray:
            """Sorted neighbour distances (n_b, k_max), float64, of one batch."""
            Pb = P if b is None else P[torch.from_numpy(b).to(dev)]
            d2, _ = _knn.knn_sq_torch(Pb, k_max, block_size=block_size,
                                      progress=bar and progress and len(batches) == 1)
            d2 = d2.cpu().numpy()
            return d2 / 2.0 if metric == "sklearn_cosine" else np.sqrt(d2)

        bar = tqdm(total=len(batches), desc="ID batches", unit="batch",
                   disable=not progress or len(batches) < 2)
        workers = torch.get_num_threads() if dev.type == "cpu" else 1
        stats = []
        with contextlib.ExitStack() as stack:
            results = map(search, batches)
            if workers > 1 and len(batches) > 1:
                # Batches are independent: on a CPU one per thread, each running torch
                # single-threaded, scales better than threading every op of every batch.
                stack.enter_context(_devices.torch_threads(1))
                results = stack.enter_context(ThreadPoolExecutor(workers)).map(search, batches)
            for s in results:
                stats.append(s)
                bar.update()
        bar.close()
        keys = [(method, krange) for method in methods
                for krange in (kranges if ESTIMATORS[method].uses_k else [(2, 2)])]
        halves = (_half_sample_estimates(search, batches, n, keys, bootstrap, seed, progress)
                  if bootstrap else None)

    n_used = sum(len(s) for s in stats)
    protocol = "full" if batch_size is None else "batched"
    out = []
    for j, (method, krange) in enumerate(keys):
        per_batch = [ESTIMATORS[method](s, krange) for s in stats]
        value = float(np.mean(per_batch))
        if not math.isfinite(value):
            raise DataError(f"the {method} estimate is not finite ({value}): the "
                            "neighbour distances are degenerate (equidistant points?)")
        lo = hi = math.nan
        if bootstrap:
            # half-samples spread as much as the full estimate does (see
            # _half_sample_estimates): a normal interval around the full estimate
            sd = float(np.std(halves[:, j], ddof=1)) if bootstrap > 1 else math.nan
            lo, hi = value - _Z95 * sd, value + _Z95 * sd
        kout = krange[1] if krange[0] == krange[1] else krange
        out.append(IDEstimate(
            id=value, ci_low=lo, ci_high=hi, n_points=n_used, n_duplicates=n_dup,
            protocol=protocol, method=method, k=kout, metric=metric,
            n_batches=len(stats), batch_size=batch_size, bootstrap=int(bootstrap),
            batch_estimates=tuple(float(v) for v in per_batch) if batch_size else ()))
        log.info("%s k=%s %s %s: id=%.4g [%.4g, %.4g] on %d points in %d batch(es)",
                 method, kout, metric, protocol, value, lo, hi, n_used, len(stats))
    return out


@dataclass(frozen=True)
class Points:
    """Points ready for the neighbour search: checked, scaled for the cosine metrics,
    duplicates removed (`n_duplicates` of them)."""

    data: torch.Tensor
    n_duplicates: int
    metric: str


def prepare_points(X: np.ndarray | torch.Tensor, metric: str, *,
                   device: torch.device | str | None = None, copy: bool = True) -> Points:
    """Check X, scale rows to unit length for the cosine metrics, and drop exact
    duplicate rows, giving the distinct points as a contiguous fp32 tensor on `device`.
    Raises DataError on NaN/inf rows, zero rows under a cosine metric, or when all
    points are identical. copy=False lets it reuse X's memory (scaling and compacting
    in place) when X is an fp32 array that it may overwrite.
    """
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    dev = _devices.resolve_device(device)
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu")
        A = X.numpy() if X.dtype == torch.float32 else X.to(torch.float32).numpy()
        owned = not copy or X.dtype != torch.float32
    else:
        if not isinstance(X, np.ndarray) or X.dtype.kind not in "fiu":
            raise DataError(f"points must be a numeric array, got "
                            f"{getattr(X, 'dtype', type(X).__name__)}")
        A = X.astype(np.float32, copy=False)
        owned = not copy or A is not X
    if A.ndim != 2 or A.shape[0] == 0 or A.shape[1] == 0:
        raise DataError(f"expected a non-empty 2-d array of points (n, dim), got shape "
                        f"{A.shape}")
    if not A.flags.c_contiguous:
        A, owned = np.ascontiguousarray(A), True
    n = len(A)
    step = max(1, 2**24 // A.shape[1])
    for s in range(0, n, step):  # in chunks: a full boolean mask would cost n * dim bytes
        bad = ~np.isfinite(A[s:s + step]).all(axis=1)
        if bad.any():
            n_bad = sum(int((~np.isfinite(A[t:t + step]).all(axis=1)).sum())
                        for t in range(s, n, step))
            raise DataError(f"{n_bad} of {n} points have NaN or inf coordinates "
                            f"(first: row {s + int(np.flatnonzero(bad)[0])})")
    if metric in ("cosine", "sklearn_cosine"):
        if not owned:
            A, owned = A.copy(), True
        for s in range(0, n, step):
            norms = np.linalg.norm(A[s:s + step], axis=1, keepdims=True)
            if (norms == 0).any():
                raise DataError(f"point {s + int(np.flatnonzero(norms == 0)[0])} is a zero "
                                "vector: its cosine distance is undefined")
            A[s:s + step] /= norms
    keep, n_dup = _knn.unique_rows(A)
    if len(keep) == 1 and n > 1:
        raise DataError(f"all {n} points are identical: the dimension is undefined")
    if n_dup:
        log.info("removed %d exact duplicate points of %d", n_dup, n)
        if owned:  # compact in place: keep is ascending, so row keep[i] >= i is read
            for s in range(0, len(keep), step):  # before anything overwrites it
                chunk = keep[s:s + step]
                A[s:s + len(chunk)] = A[chunk]
            A = A[: len(keep)]
        else:
            A = A[keep]
    return Points(torch.from_numpy(A).to(dev), n_dup, metric)


# ---------------------------------------------------------------------------------------
# estimators on sorted neighbour distances


def mle_local_inverse(dist: np.ndarray, k: int) -> np.ndarray:
    """1/m(x) for every row of the ascending neighbour distances `dist` (n, >=k):
    (1/(k-1)) sum_{j<k} log(T_k / T_j)."""
    logs = np.log(dist[:, :k])
    return logs[:, k - 1] - logs[:, : k - 1].mean(axis=1)


def twonn_log_ratios(dist: np.ndarray) -> np.ndarray:
    """log(T_2 / T_1) for every row of the ascending neighbour distances."""
    return np.log(dist[:, 1]) - np.log(dist[:, 0])


def twonn_fit_from_log_ratios(log_mu: np.ndarray, discard: float = TWONN_DISCARD) -> np.ndarray:
    """Facco et al.'s slope through the origin for each row of log_mu (r, N) (or one 1-d
    array): -log(1 - i/N) against the sorted log mu_(i), i = 1..N(1 - discard)."""
    log_mu = np.sort(np.atleast_2d(log_mu), axis=1)
    N = log_mu.shape[1]
    n_keep = int(N * (1 - discard))
    if n_keep < 1:
        raise DataError(f"{N} points leave none for the TwoNN fit")
    x = log_mu[:, :n_keep]
    y = -np.log1p(-np.arange(1, n_keep + 1) / N)
    return (x @ y) / np.einsum("ij,ij->i", x, x)


@dataclass(frozen=True)
class Estimator:
    """An ID estimator: a statistic of each point's ascending neighbour distances (at k, when
    it uses k) and the rule that combines the points' statistics into one dimension. A k
    range (k1, k2) averages the combined estimate over k = k1..k2."""

    statistic: Callable[[np.ndarray, int], np.ndarray]
    combine: Callable[[np.ndarray], float]
    uses_k: bool

    def __call__(self, dist: np.ndarray, krange: tuple[int, int]) -> float:
        ks = range(krange[0], krange[1] + 1) if self.uses_k else [2]
        with np.errstate(divide="ignore"):
            return float(np.mean([self.combine(self.statistic(dist, k)) for k in ks]))


def _two_nn(dist: np.ndarray, k: int) -> np.ndarray:
    return twonn_log_ratios(dist)


# Adding an estimator: one entry here, and its name in the schema's $defs/estimator.
ESTIMATORS = {
    "mle": Estimator(mle_local_inverse, lambda inv: 1.0 / inv.mean(), uses_k=True),
    "mle_mean": Estimator(mle_local_inverse, lambda inv: (1.0 / inv).mean(), uses_k=True),
    "twonn": Estimator(_two_nn, lambda log_mu: len(log_mu) / log_mu.sum(), uses_k=False),
    "twonn_fit": Estimator(_two_nn, lambda log_mu: twonn_fit_from_log_ratios(log_mu)[0],
                           uses_k=False),
}


def _half_sample_estimates(search, batches, n: int, keys, reps: int, seed: int,
                           progress: bool) -> np.ndarray:
    """(reps, len(keys)): each estimator on seeded half-samples of every batch, drawn
    without replacement, with their neighbours searched again within the half.

    Why halves: for an average of n weakly dependent local terms, the variance of an
    m-point subsample's estimate about the full one is (1/m - 1/n) sigma^2, which at
    m = n/2 equals the full estimate's own variance sigma^2 / n. Resampling the local
    terms instead (keeping each point's neighbours) ignores that neighbouring points
    share neighbours, and its intervals come out too narrow.
    """
    rng = np.random.default_rng([seed, 11])
    out = np.empty((reps, len(keys)))
    for r in tqdm(range(reps), desc="ID half-samples", unit="rep", disable=not progress,
                  leave=False):
        per_batch = []
        for b in batches:
            idx = np.arange(n) if b is None else b
            half = np.sort(rng.choice(idx, len(idx) // 2, replace=False))
            dist = search(half, bar=False)
            per_batch.append([ESTIMATORS[method](dist, krange) for method, krange in keys])
        out[r] = np.mean(per_batch, axis=0)
    return out


# ---------------------------------------------------------------------------------------
# the stage


def run_id_stage(emb_dir: Path, out_json: Path, *, estimators: Sequence[str] = ("mle", "twonn"),
                 k: int | Sequence[int] = 20, k_sweep: Sequence[int] = (5, 10, 40),
                 metric: str = "cosine", protocols: Sequence[str] = ("batched", "full"),
                 batch_size: int = 3600, bootstrap: int = 200, seed: int = 0,
                 max_points: int | None = None, device: str | None = None,
                 threads: int | None = None, progress: bool = True) -> dict:
    """Estimate the ID of every layer in `emb_dir` and write the rows to `out_json`.

    Reads the layers that emb_dir/meta.json lists (from `embed_corpus`), or else every
    emb_dir/layer*.npy. For each layer and protocol one neighbour search serves every
    estimator and every k in {k} | k_sweep. One row per layer, estimator, k and
    protocol; TwoNN, which uses two neighbours whatever k, gets one row per layer and
    protocol with k = 2. A k range (k1, k2) gives a row with k = k2 and k_min = k1.
    Writes {"rows": [{layer, estimator, k, k_min, metric, protocol, n_points,
    n_duplicates, n_batches, id, ci_low, ci_high[, n_docs, below_minimum]}, ...],
    ...settings and timings}, the last two from emb_dir/meta.json when it is there;
    NaN intervals (bootstrap 0) are written as null. Returns the same dict.
    """
    t0 = time.perf_counter()
    emb_dir, out_json = Path(emb_dir), Path(out_json)
    layers = _layer_files(emb_dir)
    estimators = [_check_method(m) for m in estimators]
    protocols = list(protocols)
    for p in protocols:
        if p not in PROTOCOLS:
            raise ConfigError(f"unknown ID protocol {p!r}; expected one of "
                              f"{', '.join(PROTOCOLS)}")
    ks = [k] + [kk for kk in k_sweep if _check_k(kk) != _check_k(k)]
    ks = list({_check_k(kk): kk for kk in ks}.values())  # unique, order kept
    meta_path = emb_dir / "meta.json"
    embedding = read_json(meta_path) if meta_path.exists() else None
    # how many documents the points came from, and whether that met the embed stage's minimum
    provenance = ({"n_docs": embedding.get("n_docs_used"),
                   "below_minimum": not embedding.get("enough", True)} if embedding else {})
    rows = []
    for layer, path in layers:
        X = _load_layer(path)
        log.info("layer %d: %d points of dimension %d from %s", layer, X.shape[0],
                 X.shape[1], path)
        try:
            with _devices.torch_threads(threads):
                X = prepare_points(X, metric, device=device, copy=False)  # ours to reuse
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        for protocol in protocols:
            try:
                ests = estimate_ids(
                    X, methods=estimators, ks=ks, metric=metric,
                    batch_size=batch_size if protocol == "batched" else None,
                    bootstrap=bootstrap, seed=seed, device=device, threads=threads,
                    max_points=max_points, progress=progress)
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
            for e in ests:
                k_lo, k_hi = (e.k, e.k) if isinstance(e.k, int) else e.k
                rows.append({
                    "layer": layer, "estimator": e.method, "k": int(k_hi),
                    "k_min": int(k_lo), "metric": e.metric, "protocol": e.protocol,
                    "n_points": e.n_points, "n_duplicates": e.n_duplicates,
                    "n_batches": e.n_batches, "id": e.id, "ci_low": _nan_to_none(e.ci_low),
                    "ci_high": _nan_to_none(e.ci_high), **provenance})
        del X
    result = {
        "rows": rows,
        "emb_dir": str(emb_dir),
        "embedding": embedding,
        "estimators": estimators, "k": k, "k_sweep": list(k_sweep), "metric": metric,
        "protocols": protocols, "batch_size": batch_size, "bootstrap": bootstrap,
        "seed": seed, "max_points": max_points,
        "device": str(_devices.resolve_device(device)), "elapsed_s": time.perf_counter() - t0,
    }
    write_json(out_json, result)
    return result


def _layer_files(emb_dir: Path) -> list[tuple[int, Path]]:
    if not emb_dir.is_dir():
        raise DataError(f"embedding directory {emb_dir} does not exist")
    meta = emb_dir / "meta.json"
    if meta.exists():
        try:
            layers = [int(layer) for layer in read_json(meta)["layers"]]
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            raise DataError(f"{meta} has no valid 'layers' list: {exc}") from None
        found = [(layer, emb_dir / f"layer{layer}.npy") for layer in layers]
        missing = [str(p) for _, p in found if not p.exists()]
        if missing:
            raise DataError(f"{meta} lists layers whose files are missing: {missing}")
    else:
        found = sorted((int(m.group(1)), p) for p in emb_dir.glob("layer*.npy")
                       if (m := re.fullmatch(r"layer(\d+)\.npy", p.name)))
    if not found:
        raise DataError(f"no layer*.npy embeddings in {emb_dir}")
    return found


def _load_layer(path: Path) -> np.ndarray:
    try:
        X = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read embeddings {path}: {exc}") from None
    if X.ndim != 2:
        raise DataError(f"{path} holds an array of shape {X.shape}, expected (points, dim)")
    return X


# ---------------------------------------------------------------------------------------
# helpers


def _check_method(method: str) -> str:
    if method not in ESTIMATORS:
        raise ConfigError(f"unknown ID estimator {method!r}; expected one of "
                          f"{', '.join(ESTIMATORS)}")
    return method


def _check_k(k: int | Sequence[int]) -> tuple[int, int]:
    """k as a (k1, k2) range; a single k is (k, k). The MLE needs k >= 2."""
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
        lo = hi = int(k)
    elif isinstance(k, (list, tuple)) and len(k) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in k):
        lo, hi = int(k[0]), int(k[1])
    else:
        raise ConfigError(f"k must be an integer or a range [k1, k2], got {k!r}")
    if lo < 2 or hi < lo:
        raise ConfigError(f"k must satisfy 2 <= k1 <= k2, got {k!r}")
    return lo, hi


def _batches(n: int, batch_size: int | None, seed: int) -> list[np.ndarray | None]:
    """Row indices of each batch (None: all rows, the full protocol)."""
    if batch_size is None:
        return [None]
    perm = np.random.default_rng([seed, 3]).permutation(n)
    n_batches = n // batch_size
    if n_batches == 0:
        log.warning("only %d points, fewer than one batch of %d: one batch of all of them",
                    n, batch_size)
        return [np.sort(perm)]
    if n % batch_size:
        log.info("batched protocol: %d batches of %d points; %d points beyond the last "
                 "full batch are left out", n_batches, batch_size, n % batch_size)
    return [np.sort(b) for b in perm[: n_batches * batch_size].reshape(n_batches, batch_size)]


def _nan_to_none(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

