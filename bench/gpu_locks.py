"""Benchmark: what taking a GPU through idscaling.gpu.acquire_gpus costs a job.

On a fake 8-GPU machine (the device count is replaced; no GPU is needed):

- baseline ``open+flock``: open one lock file, flock it, close it: the system calls
  that any per-device lock must make at least once;
- ``acquire_gpus(1)``, all devices free: takes device 0 at once;
- ``acquire_gpus(1)``, 7 of 8 held by others: scans past seven busy locks;
- ``acquire_gpus(4)``, all free.

Each is timed ``--repeats`` times (round-robin, so load changes hit all alike); the
median is printed with its ratio to the baseline. The point: holding a device costs
microseconds against jobs that run for minutes, so the lock is never the bottleneck.

Run: ``python bench/gpu_locks.py [--repeats 2000]``.
"""

from __future__ import annotations

import os


import argparse
import fcntl
import statistics
import tempfile
import time
from pathlib import Path

from idscaling import gpu


def timed(fns, repeats):
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2000)
    args = ap.parse_args()

    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    os.environ.pop(gpu.HELD_ENV, None)
    gpu.device_count = lambda: 8  # a fake machine; visible_devices() asks this
    with tempfile.TemporaryDirectory() as tmp:
        free_dir, busy_dir = Path(tmp, "free"), Path(tmp, "busy")
        for d in (free_dir, busy_dir):
            gpu._make_lock_dir(d)

        # "Other jobs" hold devices 0..6 of busy_dir through descriptors of their own.
        others = []
        for i in range(7):
            fd = os.open(busy_dir / f"gpu-{i}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX)
            others.append(fd)

        baseline_file = Path(tmp, "one.lock")

        def bare():
            fd = os.open(baseline_file, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)

        def take(n, lock_dir):
            def fn():
                with gpu.acquire_gpus(n, lock_dir=lock_dir, timeout=0):
                    pass
            return fn

        cases = [
            ("baseline open+flock", bare),
            ("acquire_gpus(1), 8 free", take(1, free_dir)),
            ("acquire_gpus(1), 7 of 8 held", take(1, busy_dir)),
            ("acquire_gpus(4), 8 free", take(4, free_dir)),
        ]
        medians = timed([fn for _, fn in cases], args.repeats)
        for fd in others:
            os.close(fd)

    base = medians[0]
    print(f"median of {args.repeats} repeats")
    for (name, _), m in zip(cases, medians):
        print(f"  {name:32s} {m * 1e6:9.1f} us   {m / base:6.1f}x baseline")


if __name__ == "__main__":
    main()
