"""Exact kNN and duplicate removal against brute-force NumPy/SciPy references."""

import logging

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from idscaling import knn as knn_mod
from idscaling.devices import exact_fp32
from idscaling.intrinsic_dim import prepare_points
from idscaling.knn import knn_sq_torch, unique_rows


def knn(X, k, *, metric="euclidean", device="cpu", **kwargs):
    """(distances, indices) of the search the estimators run: the points prepared as they
    are for them (cosine: rows scaled to unit length), then the exact fp32 search. Raw rows
    for the Euclidean metric, so that duplicates stay in."""
    P = (prepare_points(X, metric, device=device).data if metric != "euclidean"
         else torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device))
    with exact_fp32(), torch.no_grad():
        d2, idx = knn_sq_torch(P, k, **kwargs)
    return d2.sqrt().cpu().numpy(), idx.cpu().numpy()


def brute_force(X, k, metric="euclidean"):
    X = X.astype(np.float64)
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    D = cdist(X, X)
    np.fill_diagonal(D, np.inf)
    return np.sort(D, axis=1)[:, :k], D


@pytest.mark.parametrize("n,dim,k,block", [
    (500, 5, 10, 128),     # several blocks, n not a multiple of the group size
    (777, 7, 20, 64),      # many small blocks
    (300, 64, 5, 2048),    # one block
    (40, 3, 39, 2048),     # k = n - 1: every other point is a neighbour
])
def test_knn_matches_brute_force(n, dim, k, block):
    rng = np.random.default_rng(n)
    X = (rng.standard_normal((n, dim)) + 3.0).astype(np.float32)
    ref, D = brute_force(X, k)
    dist, idx = knn(X, k, block_size=block, progress=False)
    assert dist.shape == idx.shape == (n, k)
    np.testing.assert_allclose(dist, ref, rtol=1e-12)
    # the indices point at points at exactly those distances, never at the row itself
    np.testing.assert_allclose(np.take_along_axis(D, idx, axis=1), dist, rtol=1e-12)
    assert not (idx == np.arange(n)[:, None]).any()


def test_knn_cosine_is_chord_distance():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 12)).astype(np.float32) * rng.uniform(0.1, 10, (400, 1))
    ref, _ = brute_force(X.astype(np.float32), 8, metric="cosine")
    dist, _ = knn(X, 8, metric="cosine", block_size=128, progress=False)
    # fp32 normalisation rounds each coordinate; the chord is exact after that
    np.testing.assert_allclose(dist, ref, rtol=1e-5)


def test_rows_not_provable_in_fp32_are_searched_again_exactly(caplog):
    # Two tight clusters far apart: the fp32 expanded form cannot separate neighbours
    # (|x|^2 ~ 1e7 against distances^2 ~ 1e-4), so every row goes to the float64 path.
    rng = np.random.default_rng(2)
    X = rng.standard_normal((600, 16)) * 1e-2
    X[:300, 0] += 3e3
    X[300:, 0] -= 3e3
    X = X.astype(np.float32)
    ref, _ = brute_force(X, 10)
    with caplog.at_level(logging.INFO, logger="idscaling.knn"):
        dist, _ = knn(X, 10, block_size=128, margin=0, progress=False)
    assert "not provably exact" in caplog.text
    np.testing.assert_allclose(dist, ref, rtol=1e-12)


def test_duplicates_are_neighbours_at_zero_distance():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((100, 4)).astype(np.float32)
    X[50] = X[7]
    dist, idx = knn(X, 3, progress=False)
    assert dist[7, 0] == 0.0 and idx[7, 0] == 50
    assert dist[50, 0] == 0.0 and idx[50, 0] == 7


def test_unique_rows_keeps_first_occurrences():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((1000, 9)).astype(np.float32)
    X[500:600] = X[:100]
    X[700] = X[701] = X[702] = X[3]
    X[800] = 0.0
    X[801] = -0.0  # equal by value to row 800
    keep, n_dup = unique_rows(X)
    ref_unique, ref_first = np.unique(X + 0.0, axis=0, return_index=True)
    assert n_dup == 1000 - len(ref_unique) == 104
    np.testing.assert_array_equal(keep, np.sort(ref_first))


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.int32, np.uint8])
def test_unique_rows_other_dtypes(dtype):
    rng = np.random.default_rng(5)
    X = rng.integers(0, 3, size=(400, 3)).astype(dtype)  # many duplicates
    keep, n_dup = unique_rows(X)
    ref = np.unique(X, axis=0)
    assert len(keep) == len(ref) and n_dup == 400 - len(ref)
    assert len(np.unique(X[keep], axis=0)) == len(keep)


def test_unique_rows_survives_hash_collisions(monkeypatch, caplog):
    rng = np.random.default_rng(6)
    X = rng.standard_normal((50, 4)).astype(np.float32)
    X[10] = X[20]
    monkeypatch.setattr(knn_mod, "_row_hashes", lambda A: np.zeros(len(A), np.uint64))
    with caplog.at_level(logging.WARNING, logger="idscaling.knn"):
        keep, n_dup = unique_rows(X)
    assert "collision" in caplog.text
    assert n_dup == 1 and 20 not in keep and 10 in keep and len(keep) == 49


def test_exact_fp32_restores_matmul_settings():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    torch.set_float32_matmul_precision("high")
    try:
        with exact_fp32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before[1])
        torch.backends.cuda.matmul.allow_tf32 = before[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_knn_on_gpu_matches_cpu():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((5000, 48)).astype(np.float32)
    d_cpu, _ = knn(X, 20, progress=False)
    d_gpu, _ = knn(X, 20, device="cuda", block_size=1024, progress=False)
    np.testing.assert_allclose(d_gpu, d_cpu, rtol=1e-12)
