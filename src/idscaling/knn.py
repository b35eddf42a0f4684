"""Exact k nearest neighbours in torch, and exact duplicate removal.

Exact kNN on dense vectors is a matrix product: on a CPU nothing exact beats a bare fp32
GEMM of the same shapes, so the search is built around one:

* Symmetry. Neighbours are searched within one point set, so the score matrix is
  symmetric: each off-diagonal block is computed once and read both along its rows and
  down its columns. That halves the GEMM work.
* Scores. One fp32 GEMM on rows augmented with their squared norms gives blocks of
  -||x - y||^2 / 2, after centring the points (which shrinks the norms that the
  rounding of this expanded form grows with).
* Cheap selection. Each row keeps its c = k + margin best scores. A block is reduced by
  a max over groups of 16 points; only groups whose max beats the row's current c-th
  best are looked into. The points are first put in a locality order (recursive
  principal-direction halving) and the diagonal blocks come first, so each list starts
  close to final and later blocks have few such groups.
* Exact distances. The candidates are re-measured as ||x - y|| in float64 (differences
  of fp32 inputs are exact in float64). A rigorous bound on the fp32 rounding then
  proves, row by row, that no point outside the candidates is nearer than the k-th;
  rows where the proof fails (rare) are searched again in float64.

Memory is bounded by the block size (scores are block x block), not by n^2. The same
code runs on CUDA, with TF32 switched off so that the fp32 products are true fp32.
"""

from __future__ import annotations

import contextlib
import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm.auto import tqdm

from idscaling.devices import torch_threads
from idscaling.errors import DataError

log = logging.getLogger(__name__)

GROUP = 16  # points reduced by one max before selection; blocks are padded to a multiple
_BIG = 1.0e30  # score of padding rows: below any real score, finite so 0 * _BIG is 0
_U32 = 2.0**-24  # unit roundoff of fp32
# working set of one float64 re-measuring chunk: cache-sized on a CPU, large on a GPU
_EXACT_BYTES = {"cpu": 2 * 2**20, "cuda": 2**30}


# ---------------------------------------------------------------------------------------
# duplicates


def unique_rows(X: np.ndarray) -> tuple[np.ndarray, int]:
    """Indices (ascending) of the first occurrence of each distinct row of `X`, and the
    number of rows dropped as exact duplicates of an earlier row.

    Rows are compared by value (so -0.0 equals 0.0). They are grouped by a 64-bit hash of
    their bits, and every claimed duplicate is then compared in full with its
    representative, so the result is exact; on a hash collision (never seen in practice)
    the slow exact path, `np.unique(axis=0)`, decides.
    """
    X = np.ascontiguousarray(X)
    if X.ndim != 2:
        raise DataError(f"expected a 2-d array of points, got shape {X.shape}")
    n = len(X)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    h = _row_hashes(X)
    order = np.argsort(h, kind="stable")  # stable: a group starts at its lowest index
    hs = h[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = hs[1:] != hs[:-1]
    rep = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
    dup_pos = np.flatnonzero(~starts)
    step = max(1, 2**22 // max(1, X.shape[1]))
    for s in range(0, len(dup_pos), step):
        p = dup_pos[s:s + step]
        if not np.all(X[order[p]] == X[rep[p]]):
            log.warning("row hash collision: falling back to exact np.unique on rows")
            _, first = np.unique(X + X.dtype.type(0), axis=0, return_index=True)
            keep = np.sort(first)
            return keep, n - len(keep)
    keep = np.sort(order[starts])
    return keep, n - len(keep)


def _row_hashes(X: np.ndarray) -> np.ndarray:
    """A linear hash of each row's bits modulo 2^64 (random odd multipliers, fixed seed)."""
    canon = X.dtype.kind == "f"
    row_bytes = X.shape[1] * X.dtype.itemsize
    word = next(w for w in (np.uint64, np.uint32, np.uint16, np.uint8)
                if row_bytes % np.dtype(w).itemsize == 0)
    n_words = row_bytes // np.dtype(word).itemsize
    mult = np.random.default_rng(0x1D5CA1E).integers(
        0, 2**64 - 1, size=n_words, dtype=np.uint64, endpoint=True) | np.uint64(1)
    out = np.empty(len(X), dtype=np.uint64)
    step = max(1, 2**21 // max(1, n_words))
    for s in range(0, len(X), step):
        chunk = X[s:s + step]
        if canon:
            chunk = chunk + X.dtype.type(0)  # -0.0 + 0.0 is +0.0: equal values, equal bits
        words = np.ascontiguousarray(chunk).view(word).reshape(len(chunk), n_words)
        out[s:s + step] = words.astype(np.uint64, copy=False) @ mult  # wraps mod 2^64
    return out


# ---------------------------------------------------------------------------------------
# exact kNN


def default_block_size(device: torch.device) -> int:
    # CPU: 2048 x 2048 fp32 scores (16 MiB) keep the GEMM near peak; GPU: 8192 (256 MiB).
    return 8192 if device.type == "cuda" else 2048


def knn_sq_torch(X: torch.Tensor, k: int, *, block_size: int | None = None,
                 margin: int = 4, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Euclidean distances (float64, ascending) and indices of the k nearest
    neighbours of each row of the fp32 tensor `X` (self excluded), on X's device.

    Call inside `exact_fp32()` on CUDA. See the module docstring for the method.

    On a CPU, torch runs single-threaded inside, and the work is shared out in coarse
    pieces (block pairs, re-measuring chunks) to as many Python threads as torch had
    threads (torch releases the GIL). Most ops here are small, and OpenMP's fork/join
    on each of them costs more than it gains, badly so when other jobs share the cores.
    """
    if X.device.type != "cpu":
        return _knn_sq(X, k, block_size, margin, progress, workers=1)
    workers = torch.get_num_threads()
    with torch_threads(1):
        return _knn_sq(X, k, block_size, margin, progress, workers=workers)


def _knn_sq(X: torch.Tensor, k: int, block_size: int | None, margin: int, progress: bool,
            workers: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, dim = X.shape
    dev = X.device
    c = min(k + max(0, int(margin)), n - 1)  # candidates kept per row
    block = block_size or default_block_size(dev)
    block = max(GROUP, block // GROUP * GROUP)
    n_pad = -(-n // GROUP) * GROUP

    # Centre first: distances do not change, norms shrink, and the rounding of the
    # expanded form grows with the norms.
    mean = (X.sum(0, dtype=torch.float64) / n).to(torch.float32)
    A = torch.zeros((n_pad, dim + 2), dtype=torch.float32, device=dev)
    A[:n, :dim].copy_(X).sub_(mean)
    sq = torch.empty(n, dtype=torch.float64, device=dev)
    step = max(1, 2**24 // max(1, dim))
    for s in range(0, n, step):
        e = min(s + step, n)
        sq[s:e] = torch.linalg.vector_norm(A[s:e, :dim], dim=1, dtype=torch.float64).square()
    # A_i . B_j = x_i.x_j - |x_i|^2/2 - |x_j|^2/2 = -|x_i - x_j|^2 / 2, with B = A with its
    # last two columns swapped. Padding rows score -_BIG against everything real.
    A[:n, dim] = (-0.5 * sq).to(torch.float32)
    A[:n, dim + 1] = 1.0
    A[n:, dim] = -_BIG
    perm = torch.arange(dim + 2, device=dev)
    perm[dim], perm[dim + 1] = dim + 1, dim
    # Blocks of near points, met diagonal first: each row's list then fills with good
    # candidates at once, and later blocks have few scores that can beat them. The order
    # only changes how much work the fold does; the result is exact in any order.
    order = _locality_order(A[:n, :dim], block) if n > block else None
    if order is not None:
        A[:n] = A[:n][order]

    best_s = torch.full((n_pad, c), -math.inf, dtype=torch.float32, device=dev)
    best_i = torch.full((n_pad, c), -1, dtype=torch.int64, device=dev)
    starts = list(range(0, n_pad, block))
    pairs = sorted(((i0, j0) for i0 in starts for j0 in starts if j0 >= i0),
                   key=lambda p: (p[1] - p[0], p[0]))  # the diagonal, then outwards
    seen = set()  # row blocks whose lists hold scores already

    def block_pair(job: tuple[int, int, bool, bool]) -> None:
        i0, j0, fresh_i, fresh_j = job
        S = A[i0:i0 + block] @ A[j0:j0 + block][:, perm].T
        if i0 == j0:
            S.fill_diagonal_(-math.inf)
        _fold(best_s, best_i, i0, S, j0, c, fresh=fresh_i, down=False)
        if i0 != j0:  # the same block read down its columns serves rows j0..
            _fold(best_s, best_i, j0, S, i0, c, fresh=fresh_j, down=True)

    # The block pairs of a round touch disjoint rows: they can run side by side.
    bar = tqdm(total=len(pairs), desc="knn blocks", unit="block", leave=False,
               disable=not progress or len(pairs) < 4)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(workers)) if workers > 1 else None
        for rnd in _rounds(pairs):
            jobs = [(i0, j0, i0 not in seen, j0 not in seen) for i0, j0 in rnd]
            seen.update(b for pair in rnd for b in pair)
            for _ in (pool.map(block_pair, jobs) if pool else map(block_pair, jobs)):
                bar.update()
    bar.close()
    A = None  # drop the big matrix now (rebinding, not del, as block_pair still names A)
    cand, worst = best_i[:n], best_s[:n].amin(dim=1)  # worst: each row's c-th best score
    if order is not None:  # back from block order to the caller's row order
        cand, worst = torch.empty_like(cand).index_copy_(0, order, order[cand]), \
            torch.empty_like(worst).index_copy_(0, order, worst)
    d2, idx = _remeasure(X, cand, k, workers=workers)

    if c < n - 1:
        # Every point outside a row's candidates has fp32 score <= its c-th candidate's.
        # With |error of a score| <= (dim + 2) u (|x|^2 + |y|^2) (a dot product's
        # worst-case rounding, plus centring and norm rounding), the row is exact when
        # even the most favourable outsider cannot beat the k-th exact distance.
        coef = (2 * (dim + 2) + 8) * _U32
        err = coef * (sq + sq.max())
        floor = -2.0 * worst.to(torch.float64) - err
        redo = torch.nonzero(floor < d2[:, k - 1]).squeeze(1)
        if len(redo):
            log.info("kNN: %d of %d rows not provably exact from fp32 candidates; "
                     "searching them again in float64", len(redo), n)
            rc = _candidates_fp64(X, mean, redo, c, block)
            d2[redo], idx[redo] = _remeasure(X, rc, k, rows=redo, workers=workers)
    return d2, idx


def _rounds(pairs: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Cut the ordered block pairs into rounds of pairs that share no block (greedily,
    keeping the order), so that the pairs of one round can run at the same time."""
    rounds, left = [], list(pairs)
    while left:
        used, rnd, rest = set(), [], []
        for p in left:
            if used.isdisjoint(p):
                rnd.append(p)
                used.update(p)
            else:
                rest.append(p)
        rounds.append(rnd)
        left = rest
    return rounds


def _locality_order(Y: torch.Tensor, leaf: int) -> torch.Tensor:
    """A permutation of Y's rows that keeps near points near each other: recursive
    halving at the median of the leading principal direction (three power iterations,
    fixed seed) down to parts of at most `leaf` rows."""
    gen = torch.Generator(device=Y.device).manual_seed(0)
    stack, parts = [torch.arange(len(Y), device=Y.device)], []
    while stack:
        ix = stack.pop()
        if len(ix) <= leaf:
            parts.append(ix)
            continue
        Z = Y[ix]
        Z -= Z.mean(dim=0)
        v = torch.randn(Y.shape[1], generator=gen, device=Y.device)
        for _ in range(3):
            v = Z.T @ (Z @ v)
            v /= v.norm().clamp_min(1e-30)
        o = torch.argsort(Z @ v)
        half = len(ix) // 2
        stack += [ix[o[half:]], ix[o[:half]]]  # the lower half is taken next
    return torch.cat(parts)


def _fold(best_s: torch.Tensor, best_i: torch.Tensor, r0: int, S: torch.Tensor,
          col0: int, c: int, fresh: bool, down: bool) -> None:
    """Fold a contiguous block of scores into the running top-c lists of rows r0.. .

    down=False: S's rows are those rows and its columns are points col0.. ; down=True:
    S's columns are the rows and its rows are the points (S read as S.T, never copied).

    Points are reduced first by a max over strided groups of GROUP (group g holds points
    g, g + w, g + 2w, ... for w = points / GROUP, so the max runs over contiguous
    memory). For rows that hold no scores yet, the top-c scores lie in the c groups with
    the largest maxima. Otherwise only groups whose max beats the row's current c-th best
    score can change its list; after the first few blocks those are few, so they are
    picked out sparsely and no selection ever runs over the whole block.
    """
    r, m = (S.shape[1], S.shape[0]) if down else S.shape  # rows to update, points
    w = m // GROUP
    if down:
        M = S.reshape(GROUP, w, r).amax(dim=0).T.contiguous()
        row_step, point_step = 1, r  # flat index of (row a, point p) in S: p * r + a
    else:
        M = S.reshape(r, GROUP, w).amax(dim=1)
        row_step, point_step = m, 1
    flat_S = S.view(-1)
    offs = torch.arange(GROUP, device=S.device) * (w * point_step)
    if fresh:
        groups = _largest(M, min(c, w))  # (r, c) group ids
        a = torch.arange(r, device=S.device).unsqueeze(1)
        flat = ((a * row_step + groups * point_step).unsqueeze(2) + offs).reshape(r, -1)
        vals = flat_S.take(flat)
        pos = _largest(vals, min(c, flat.shape[1]))
        points = (flat.gather(1, pos) - a * row_step) // point_step
        _merge(best_s, best_i, a.squeeze(1) + r0, vals.gather(1, pos), points + col0, c)
        return
    tau = best_s[r0:r0 + r].amin(dim=1)  # each row's current c-th best score
    hit_r, hit_g = torch.nonzero(M > tau.unsqueeze(1), as_tuple=True)
    if len(hit_r) == 0:
        return
    flat = (hit_r * row_step + hit_g * point_step).unsqueeze(1) + offs  # (hits, GROUP)
    vals = flat_S.take(flat)
    keep = torch.nonzero((vals > tau[hit_r].unsqueeze(1)).view(-1)).squeeze(1)
    rr = hit_r[keep // GROUP]  # ascending: nonzero walks rows in order
    vv = vals.view(-1)[keep]
    pp = (flat.view(-1)[keep] - rr * row_step) // point_step
    # Lay the new scores out densely, one padded row per touched row, then merge.
    urows, counts = torch.unique_consecutive(rr, return_counts=True)
    first = torch.cumsum(counts, 0) - counts
    row_pos = torch.repeat_interleave(torch.arange(len(urows), device=S.device), counts)
    slot = torch.arange(len(rr), device=S.device) - first[row_pos]
    width = int(counts.max())
    P = torch.full((len(urows), width), -math.inf, dtype=S.dtype, device=S.device)
    Pi = torch.full((len(urows), width), -1, dtype=torch.int64, device=S.device)
    P[row_pos, slot] = vv
    Pi[row_pos, slot] = pp + col0
    _merge(best_s, best_i, urows + r0, P, Pi, c)


def _largest(x: torch.Tensor, c: int) -> torch.Tensor:
    """Column indices of the c largest entries of each row of x, in no particular order.
    On the CPU NumPy's introselect is several times faster than torch.topk."""
    w = x.shape[1]
    if c >= w:
        return torch.arange(w, device=x.device).expand(x.shape[0], w)
    if x.device.type == "cpu":
        part = np.argpartition(x.numpy(), w - c, axis=1)[:, w - c:]
        return torch.from_numpy(np.ascontiguousarray(part))
    return x.topk(c, dim=1, sorted=False).indices


def _merge(best_s: torch.Tensor, best_i: torch.Tensor, rows: torch.Tensor,
           v: torch.Tensor, ix: torch.Tensor, c: int) -> None:
    """Keep in best_s/best_i[rows] the c largest of the old and the new scores."""
    s = torch.cat([best_s[rows], v], dim=1)
    i = torch.cat([best_i[rows], ix], dim=1)
    pos = _largest(s, c)
    best_s[rows] = s.gather(1, pos)
    best_i[rows] = i.gather(1, pos)


def _remeasure(X: torch.Tensor, cand: torch.Tensor, k: int, rows: torch.Tensor | None = None,
               workers: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact squared distances (float64) from each query row to its candidates; the k
    nearest, ascending. `rows` gives the query rows of `cand` (default: all, in order)."""
    n_q, c = cand.shape
    d2 = torch.empty((n_q, c), dtype=torch.float64, device=X.device)
    step = max(1, _EXACT_BYTES.get(X.device.type, 2**26) // (8 * c * X.shape[1]))

    def measure(s: int) -> None:
        q = X[s:s + step] if rows is None else X[rows[s:s + step]]
        diff = X[cand[s:s + step]].to(torch.float64)  # fp32 - fp32 is exact in float64
        diff.sub_(q.to(torch.float64).unsqueeze(1))
        d2[s:s + step] = torch.linalg.vector_norm(diff, dim=2).square_()

    starts = range(0, n_q, step)
    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(measure, starts):
                pass
    else:
        for s in starts:
            measure(s)
    d2, order = d2.sort(dim=1, stable=True)
    return d2[:, :k].contiguous(), cand.gather(1, order[:, :k])


def _candidates_fp64(X: torch.Tensor, mean: torch.Tensor, rows: torch.Tensor, c: int,
                     block: int) -> torch.Tensor:
    """The c nearest candidates of `rows` by a float64 scan over all points (the float64
    expanded form errs by ~1e-16 |x|^2, far below any gap that fp32 could not resolve)."""
    n = X.shape[0]
    mean64 = mean.to(torch.float64)
    out = torch.empty((len(rows), c), dtype=torch.int64, device=X.device)
    for r0 in range(0, len(rows), block):
        rr = rows[r0:r0 + block]
        Q = X[rr].to(torch.float64) - mean64
        q2 = Q.square().sum(dim=1, keepdim=True)
        best_d = torch.full((len(rr), c), math.inf, dtype=torch.float64, device=X.device)
        best_i = torch.full((len(rr), c), -1, dtype=torch.int64, device=X.device)
        for j0 in range(0, n, block):
            Y = X[j0:j0 + block].to(torch.float64) - mean64
            D = q2 + Y.square().sum(dim=1) - 2.0 * (Q @ Y.T)
            own = (rr >= j0) & (rr < j0 + len(Y))
            D[own.nonzero().squeeze(1), rr[own] - j0] = math.inf
            ids = torch.arange(j0, j0 + len(Y), device=X.device).expand(len(rr), -1)
            best_d, pos = torch.cat([best_d, D], dim=1).topk(c, dim=1, largest=False)
            best_i = torch.cat([best_i, ids], dim=1).gather(1, pos)
        out[r0:r0 + block] = best_i
    return out
