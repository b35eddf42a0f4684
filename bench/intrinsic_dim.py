"""Benchmark: ID estimation against a bare fp32 matrix product and scikit-dimension.

Exact kNN on dense vectors is a matrix product, so on a CPU nothing exact beats a bare
fp32 product of the same shapes: that is the baseline. On the same 20,000 x 256 points
with k = 20 this times, in one run, median of --repeats:

  bare      X @ X.T in fp32 (torch, the same threads)          the baseline
  ours      estimate_id(X, "mle", k=20), Euclidean, full protocol
  skdim     scikit-dimension's MLE().fit(X, n_neighbors=20)

and prints ours/bare (goal: <= 1.5) and skdim/ours (goal: > 1).

--scale runs the paper's protocol at its size instead: 1,000,000 x 768 points, batches
of 3600, cosine distance, k = 20, MLE and TwoNN with 200 bootstrap replicates, end to
end (duplicate removal included), in a fresh process so that its peak memory (RSS,
which includes the 2.9 GiB of input points) is its own. Goal: peak under 8 GiB.

    python bench/intrinsic_dim.py [--repeats 5] [--threads N] [--device cuda]
    python bench/intrinsic_dim.py --scale [--points 1000000]
    python bench/intrinsic_dim.py --scale --protocol full --device cuda   # on a GPU

Wall times on a machine whose cores other jobs share are noisy; the CPU-time column,
with --threads 1, measures the work itself.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch


def manifold_points(n: int, ambient: int, latent: int = 12, seed: int = 0,
                    chunk: int = 100_000) -> np.ndarray:
    """n points on a smooth `latent`-dimensional manifold in R^ambient (random Fourier
    features of a Gaussian latent; the MLE gives about 12.5 at 20,000 points), built in
    chunks to keep memory at the output size."""
    rng = np.random.default_rng(seed)
    W = 0.3 * rng.standard_normal((latent, ambient)).astype(np.float32)
    b = rng.uniform(0, 2 * np.pi, ambient).astype(np.float32)
    X = np.empty((n, ambient), dtype=np.float32)
    for s in range(0, n, chunk):
        Z = rng.standard_normal((min(chunk, n - s), latent)).astype(np.float32)
        X[s:s + len(Z)] = np.cos(Z @ W + b)
    return X


def timed(fn, repeats: int, device: str = "cpu") -> tuple[float, float, object]:
    """Median wall time and median process CPU time of fn over `repeats` calls."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        _sync(device)
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare(repeats: int, threads: int | None, device: str) -> None:
    from idscaling.intrinsic_dim import estimate_id
    from idscaling.devices import exact_fp32

    if threads:
        torch.set_num_threads(threads)
    X = manifold_points(20_000, 256)
    Xt = torch.from_numpy(X).to(device)
    print(f"20,000 x 256 fp32 points, k=20, Euclidean, full protocol, device={device}, "
          f"torch threads={torch.get_num_threads()}, median of {repeats}")
    print(f"  {'':30s} {'wall s':>8s} {'cpu s':>8s}")

    estimate_id(X[:2000], k=20, progress=False, device=device)  # warm up
    with exact_fp32():  # TF32 off on CUDA: the same fp32 product that estimate_id does
        bare, bare_cpu, _ = timed(lambda: Xt @ Xt.T, repeats, device)
    ours, ours_cpu, est = timed(lambda: estimate_id(X, k=20, progress=False, device=device),
                                repeats, device)
    print(f"  {'bare fp32 X @ X.T (baseline)':30s} {bare:8.3f} {bare_cpu:8.3f}")
    print(f"  {'estimate_id mle':30s} {ours:8.3f} {ours_cpu:8.3f}   id = {est.id:.4f}")

    import skdim

    sk, sk_cpu, sk_id = timed(lambda: skdim.id.MLE().fit(X, n_neighbors=20).dimension_,
                              max(1, repeats // 2))
    print(f"  {'scikit-dimension MLE':30s} {sk:8.3f} {sk_cpu:8.3f}   id = {sk_id:.4f}")
    print(f"ratio estimate_id / bare product = {ours / bare:.2f} wall, "
          f"{ours_cpu / bare_cpu:.2f} cpu   (goal <= 1.5)")
    print(f"ratio scikit-dimension / estimate_id = {sk / ours:.2f} wall   (goal > 1)")
    if torch.get_num_threads() > 1 and device == "cpu":
        print("(cpu time with several threads counts OpenMP spin-waits; compare it only "
              "with --threads 1)")


def scale(points: int, threads: int | None, device: str, protocol: str) -> None:
    from idscaling.intrinsic_dim import estimate_ids

    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    X = manifold_points(points, 768)
    made = time.perf_counter() - t0
    batch_size = 3600 if protocol == "batched" else None
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    ests = estimate_ids(X, methods=("mle", "twonn"), ks=(20,), metric="cosine",
                        batch_size=batch_size, bootstrap=200, seed=0, device=device)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(f"{points:,} x 768 fp32 points ({X.nbytes / 2**30:.2f} GiB), {protocol} protocol"
          f"{' (3600)' if batch_size else ''}, cosine, k=20, bootstrap 200, device={device}, "
          f"torch threads={torch.get_num_threads()}")
    for e in ests:
        print(f"  {e.method:5s} id = {e.id:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}] "
              f"on {e.n_points:,} points in {e.n_batches} batch(es)")
    print(f"  end to end {took:.1f} s (making the points: {made:.1f} s)")
    print(f"  peak RSS {peak:.2f} GiB   (goal < 8 GiB; includes the input points)")
    if device.startswith("cuda"):
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--scale", action="store_true", help="the 1M x 768 run instead")
    ap.add_argument("--points", type=int, default=1_000_000)
    ap.add_argument("--protocol", choices=("batched", "full"), default="batched",
                    help="protocol of the --scale run (full: meant for a GPU)")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale and not args._child:
        # a fresh process, so that ru_maxrss is the scale run's own peak
        cmd = [sys.executable, __file__, "--scale", "--_child", "--points", str(args.points),
               "--device", args.device, "--protocol", args.protocol]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        raise SystemExit(subprocess.call(cmd))
    if args.scale:
        scale(args.points, args.threads, args.device, args.protocol)
    else:
        compare(args.repeats, args.threads, args.device)


if __name__ == "__main__":
    main()
