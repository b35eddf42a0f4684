"""ID estimators: against direct NumPy formulas, scikit-dimension, and known manifolds."""

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from idscaling.errors import ConfigError, DataError
from idscaling.intrinsic_dim import (_batches, estimate_id, estimate_ids, prepare_points,
                                     run_id_stage)

FAST = dict(progress=False, threads=1, device="cpu")


def rotate_into(Y, ambient, rng):
    """Y (n, d) placed in R^ambient by a random orthonormal map."""
    Q, _ = np.linalg.qr(rng.standard_normal((ambient, ambient)))
    return (Y @ Q[: Y.shape[1]]).astype(np.float32)


def sphere(n, d, rng):
    Z = rng.standard_normal((n, d + 1))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)


def torus(n, d, rng):
    theta = rng.uniform(0, 2 * np.pi, (n, d))
    return np.concatenate([np.cos(theta), np.sin(theta)], axis=1)


def sorted_neighbour_distances(X):
    D = cdist(X.astype(np.float64), X.astype(np.float64))
    np.fill_diagonal(D, np.inf)
    return np.sort(D, axis=1)


def numpy_mle(T, k, comb="mg"):
    """Levina-Bickel at each point, straight from the formula."""
    m = np.array([1.0 / ((1.0 / (k - 1)) * sum(math.log(t[k - 1] / t[j]) for j in range(k - 1)))
                  for t in T])
    return 1.0 / np.mean(1.0 / m) if comb == "mg" else np.mean(m)


@pytest.fixture(scope="module")
def random_points():
    return np.random.default_rng(0).uniform(size=(1500, 6)).astype(np.float32)


# --------------------------------------------------------------------- exact formulas


def test_mle_equals_direct_numpy_formula(random_points):
    T = sorted_neighbour_distances(random_points)
    for method, comb in (("mle", "mg"), ("mle_mean", "mean")):
        for k in (5, 20):
            got = estimate_id(random_points, method=method, k=k, **FAST).id
            assert got == pytest.approx(numpy_mle(T, k, comb), rel=1e-6)


def test_mle_k_range_averages_over_k(random_points):
    T = sorted_neighbour_distances(random_points)
    want = np.mean([numpy_mle(T, k) for k in range(10, 16)])
    est = estimate_id(random_points, k=(10, 15), **FAST)
    assert est.id == pytest.approx(want, rel=1e-6)
    assert est.k == (10, 15)


def test_twonn_equals_direct_formula_and_scikit_dimension(random_points):
    import skdim

    T = sorted_neighbour_distances(random_points)
    log_mu = np.log(T[:, 1] / T[:, 0])
    ests = estimate_ids(random_points, methods=("twonn", "twonn_fit"), **FAST)
    assert ests[0].id == pytest.approx(len(log_mu) / log_mu.sum(), rel=1e-9)
    X64 = random_points.astype(np.float64)
    sk_fit = skdim.id.TwoNN().fit(X64).dimension_  # linear fit, top 10% dropped
    sk_mle = skdim.id.TwoNN(method="mle", discard_fraction=0.0).fit(X64).dimension_
    assert ests[1].id == pytest.approx(sk_fit, rel=0.02)
    assert ests[0].id == pytest.approx(sk_mle, rel=0.02)


def test_mle_matches_scikit_dimension(random_points):
    import skdim

    sk = skdim.id.MLE().fit(random_points.astype(np.float64), n_neighbors=20).dimension_
    assert estimate_id(random_points, k=20, **FAST).id == pytest.approx(sk, rel=1e-6)


# ------------------------------------------------------------------- known manifolds

MANIFOLDS = {
    "sphere S^5 in R^20": (lambda rng: rotate_into(sphere(10_000, 5, rng), 20, rng), 5),
    "torus T^3 in R^16": (lambda rng: rotate_into(torus(10_000, 3, rng), 16, rng), 3),
    "6-d subspace of R^40": (lambda rng: rotate_into(rng.standard_normal((10_000, 6)), 40,
                                                      rng), 6),
}


@pytest.mark.parametrize("name", MANIFOLDS)
def test_known_manifolds_within_ten_percent(name):
    make, d = MANIFOLDS[name]
    X = make(np.random.default_rng(42))
    ests = estimate_ids(X, methods=("mle", "twonn", "twonn_fit"), ks=(20,), **FAST)
    for e in ests:
        assert e.n_points == 10_000
        assert abs(e.id / d - 1) < 0.10, f"{e.method} on {name}: {e.id:.3f} vs {d}"


def test_cosine_metrics_on_a_cone():
    # Directions on S^4, radii spread over a decade: the cosine dimension is that of the
    # directions (4); Euclidean distances see the radius as one more dimension.
    rng = np.random.default_rng(3)
    X = rotate_into(sphere(6000, 4, rng) * rng.uniform(1, 10, (6000, 1)), 12, rng)
    cos, euc, skl = (estimate_ids(X, methods=("mle", "twonn"), metric=m, **FAST)
                     for m in ("cosine", "euclidean", "sklearn_cosine"))
    for c, e, s in zip(cos, euc, skl):
        assert abs(c.id / 4 - 1) < 0.1
        assert e.id > c.id + 0.5
        # 1 - cos is half the squared chord: every estimator halves, exactly
        assert s.id == pytest.approx(c.id / 2, rel=1e-9)


# ----------------------------------------------------------------------- protocols


def test_batched_protocol_is_the_mean_over_seeded_batches(random_points):
    est = estimate_id(random_points, k=10, batch_size=400, seed=5, **FAST)
    assert est.protocol == "batched" and est.n_batches == 3 and est.n_points == 1200
    assert est.id == pytest.approx(np.mean(est.batch_estimates), rel=1e-12)
    for b, value in zip(_batches(1500, 400, seed=5), est.batch_estimates):
        assert estimate_id(random_points[b], k=10, **FAST).id == pytest.approx(value, rel=1e-9)
    # batches searched in parallel threads, with a progress bar: the same numbers
    pooled = estimate_id(random_points, k=10, batch_size=400, seed=5, progress=True,
                         threads=2, device="cpu")
    assert pooled.batch_estimates == est.batch_estimates
    other = estimate_id(random_points, k=10, batch_size=400, seed=6, **FAST)
    assert other.batch_estimates != est.batch_estimates
    full = estimate_id(random_points, k=10, **FAST)
    assert full.protocol == "full" and full.n_batches == 1 and full.batch_estimates == ()


def test_batched_with_fewer_points_than_a_batch_uses_them_all(random_points):
    est = estimate_id(random_points[:300], k=10, batch_size=400, **FAST)
    assert est.n_batches == 1 and est.n_points == 300
    assert est.id == pytest.approx(estimate_id(random_points[:300], k=10, **FAST).id)


def test_bootstrap_interval(random_points):
    a = estimate_id(random_points, k=10, bootstrap=100, seed=1, **FAST)
    b = estimate_id(random_points, k=10, bootstrap=100, seed=1, **FAST)
    c = estimate_id(random_points, k=10, bootstrap=100, seed=2, **FAST)
    assert a.ci_low < a.id < a.ci_high
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    none = estimate_id(random_points, k=10, **FAST)
    assert math.isnan(none.ci_low) and math.isnan(none.ci_high)
    for method in ("mle_mean", "twonn", "twonn_fit"):
        e = estimate_id(random_points, method=method, k=10, bootstrap=50, batch_size=500,
                        **FAST)
        assert e.ci_low < e.id < e.ci_high, method


@pytest.mark.parametrize("method", ["mle", "twonn"])
def test_interval_covers_at_its_stated_level(method):
    """200 draws of 600 points uniform on S^4 in R^12: the 95% interval must cover the
    estimator's own mean (its bias is the estimator's, not the interval's) 90-99% of the
    time. Resampling per-point terms with neighbours kept covered about 84%."""
    draws, n, d = 200, 600, 4
    values, lows, highs = [], [], []
    for r in range(draws):
        rng = np.random.default_rng([r, 5])
        Y = rng.standard_normal((n, d + 1))
        Y /= np.linalg.norm(Y, axis=1, keepdims=True)
        e = estimate_id(rotate_into(Y, 12, rng), method=method, k=10, bootstrap=40, seed=r,
                        **FAST)
        values.append(e.id), lows.append(e.ci_low), highs.append(e.ci_high)
    values, lows, highs = map(np.asarray, (values, lows, highs))
    truth = values.mean()
    coverage = float(np.mean((lows <= truth) & (truth <= highs)))
    print(f"{method}: 95% interval covered the mean estimate {truth:.3f} in {coverage:.1%} "
          f"of {draws} draws; mean width {np.mean(highs - lows):.3f}, sd of the estimate "
          f"{values.std(ddof=1):.3f}")
    assert 0.90 <= coverage <= 0.99


def test_duplicates_are_removed_and_counted(random_points):
    X = np.concatenate([random_points, random_points[:200], random_points[:50]])
    est = estimate_id(X, k=10, **FAST)
    assert est.n_duplicates == 250 and est.n_points == len(random_points)
    assert est.id == pytest.approx(estimate_id(random_points, k=10, **FAST).id, rel=1e-12)


def test_torch_input_and_caller_array_untouched(random_points):
    X = random_points.copy()
    a = estimate_id(X, metric="cosine", **FAST)
    np.testing.assert_array_equal(X, random_points)
    b = estimate_id(torch.from_numpy(X), metric="cosine", **FAST)
    assert a.id == b.id


# ----------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad,match", [
    (np.nan, "NaN or inf"), (np.inf, "NaN or inf"), (-np.inf, "NaN or inf")])
def test_non_finite_rows_are_named(random_points, bad, match):
    X = random_points.copy()
    X[17, 2] = bad
    with pytest.raises(DataError, match=match) as info:
        estimate_id(X, **FAST)
    assert "row 17" in str(info.value)


def test_bad_inputs_raise_clear_errors(random_points):
    with pytest.raises(DataError, match="needs at least k\\+1"):
        estimate_id(random_points[:15], k=20, **FAST)
    with pytest.raises(DataError, match="identical"):
        estimate_id(np.ones((100, 4), dtype=np.float32), **FAST)
    X = random_points.copy()
    X[5] = 0.0
    with pytest.raises(DataError, match="point 5 is a zero vector"):
        estimate_id(X, metric="cosine", **FAST)
    with pytest.raises(DataError, match="2-d"):
        estimate_id(np.zeros(10, dtype=np.float32), **FAST)
    with pytest.raises(ConfigError, match="estimator"):
        estimate_id(random_points, method="danco", **FAST)
    with pytest.raises(ConfigError, match="metric"):
        estimate_id(random_points, metric="manhattan", **FAST)
    with pytest.raises(ConfigError, match="k must"):
        estimate_id(random_points, k=1, **FAST)
    with pytest.raises(ConfigError, match="batch_size"):
        estimate_id(random_points, k=20, batch_size=10, **FAST)
    with pytest.raises(TypeError):
        estimate_id(random_points, no_such_option=1)


def test_prepare_points_reports_duplicates_after_scaling():
    X = np.array([[1, 0], [2, 0], [0, 1], [0, 3], [1, 1]], dtype=np.float32)
    pts = prepare_points(X, "cosine", device="cpu")
    assert pts.n_duplicates == 2 and pts.data.shape == (3, 2)
    assert prepare_points(X, "euclidean", device="cpu").n_duplicates == 0


# ----------------------------------------------------------------------- the stage


def write_layers(emb_dir, rng, layers=(0, 2), meta=True):
    emb_dir.mkdir(parents=True)
    for L in layers:
        X = rotate_into(sphere(700, 3 + L, rng), 16, rng)
        if L == 0:  # duplicates exercise the in-place compaction of the stage
            X = np.concatenate([X, X[:50]])
        np.save(emb_dir / f"layer{L}.npy", X.astype(np.float16 if L else np.float32))
    if meta:
        (emb_dir / "meta.json").write_text(json.dumps({"model": "m", "layers": list(layers)}))


def test_run_id_stage_writes_every_row(tmp_path):
    rng = np.random.default_rng(9)
    emb = tmp_path / "emb"
    write_layers(emb, rng)
    out = tmp_path / "id" / "m.json"
    res = run_id_stage(emb, out, estimators=("mle", "twonn"), k=10, k_sweep=(5, 10, 15),
                       metric="euclidean", protocols=("batched", "full"), batch_size=300,
                       bootstrap=20, seed=0, **FAST)
    on_disk = json.loads(out.read_text())
    assert on_disk["rows"] == res["rows"]
    assert on_disk["embedding"]["model"] == "m"
    rows = res["rows"]
    # 2 layers x 2 protocols x (3 MLE k's + 1 TwoNN)
    assert len(rows) == 16
    keys = {"layer", "estimator", "k", "metric", "protocol", "n_points", "n_duplicates",
            "id", "ci_low", "ci_high"}
    assert all(keys <= set(r) for r in rows)
    assert {r["k"] for r in rows if r["estimator"] == "mle"} == {5, 10, 15}
    assert {r["k"] for r in rows if r["estimator"] == "twonn"} == {2}
    assert all(r["ci_low"] < r["id"] < r["ci_high"] for r in rows)
    full = next(r for r in rows if r["layer"] == 2 and r["estimator"] == "mle"
                and r["k"] == 10 and r["protocol"] == "full")
    X = np.load(emb / "layer2.npy")
    assert full["id"] == pytest.approx(estimate_id(X, k=10, **FAST).id, rel=1e-12)
    assert abs(full["id"] / 5 - 1) < 0.15
    batched = next(r for r in rows if r["layer"] == 0 and r["protocol"] == "batched")
    assert batched["n_points"] == 600 and batched["n_batches"] == 2
    assert batched["n_duplicates"] == 50
    full0 = next(r for r in rows if r["layer"] == 0 and r["estimator"] == "twonn"
                 and r["protocol"] == "full")
    X0 = np.load(emb / "layer0.npy")
    assert full0["id"] == pytest.approx(estimate_id(X0, method="twonn", **FAST).id, rel=1e-12)
    assert full0["n_duplicates"] == 50 and full0["n_points"] == 700


def test_run_id_stage_without_bootstrap_writes_null_intervals(tmp_path):
    emb = tmp_path / "emb"
    write_layers(emb, np.random.default_rng(1), layers=(4,), meta=False)
    out = tmp_path / "id.json"
    run_id_stage(emb, out, estimators=("twonn",), protocols=("full",), bootstrap=0, **FAST)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 and rows[0]["layer"] == 4
    assert rows[0]["ci_low"] is None and rows[0]["ci_high"] is None


def test_run_id_stage_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        run_id_stage(tmp_path / "nope", tmp_path / "o.json", **FAST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no layer"):
        run_id_stage(tmp_path / "empty", tmp_path / "o.json", **FAST)
    emb = tmp_path / "emb"
    write_layers(emb, np.random.default_rng(2), layers=(1,))
    (emb / "meta.json").write_text(json.dumps({"layers": [1, 3]}))
    with pytest.raises(DataError, match="missing"):
        run_id_stage(emb, tmp_path / "o.json", **FAST)
    (emb / "meta.json").write_text(json.dumps({"layers": [1]}))
    with pytest.raises(DataError, match="layer1.npy: only 700 distinct points"):
        run_id_stage(emb, tmp_path / "o.json", k=700, **FAST)
    np.save(emb / "layer1.npy", np.full((10, 3), np.nan, dtype=np.float32))
    with pytest.raises(DataError, match="layer1.npy: 10 of 10 points have NaN"):
        run_id_stage(emb, tmp_path / "o.json", **FAST)
    with pytest.raises(ConfigError, match="protocol"):
        run_id_stage(emb, tmp_path / "o.json", protocols=("half",), **FAST)
    assert not (tmp_path / "o.json").exists()
