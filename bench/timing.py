"""Shared by the benchmarks: time several candidates fairly on a shared machine."""

import statistics
import time


def timed(fns, repeats):
    """Median seconds of each function, run round-robin so that a change in the
    machine's load hits them all alike. Returns (medians, last results)."""
    times = [[] for _ in fns]
    results = [None] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], results
