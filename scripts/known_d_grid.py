"""Run a known-dimension sweep without Snakemake: its jobs in parallel on one machine, then
its analysis.

For a GPU box that has PyTorch but not the workflow's environment. The jobs are the
workflow's (`idscaling.known_d.sweep_jobs`), each one `run_one` (what the known_d_run rule
calls), longest first; the records land in the workflow's layout under --root, and the
analysis is the known_d_laws rule's (`run_known_d_laws`), so the folder reads like one the
workflow wrote. Jobs not started by --deadline seconds are left out and listed; the
analysis then runs on what finished.

    python scripts/known_d_grid.py configs/known_d_gpu.yaml --root out --jobs 12 --deadline 420
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import sys
import time
from pathlib import Path

import yaml

from idscaling import layout
from idscaling.config import validate_config
from idscaling.known_d import sweep_jobs

# rough cost of a job, to start the longest first: the learners by size and width, the
# k-NN reference last (it is cheap)
_WEIGHT = {"wide": 2.0, "base": 1.0, "mlp_wide": 0.4, "mlp": 0.3, "reference": 0.05}


def _run(known_d: dict, job: dict, root: str, device: str | None) -> dict:
    import logging

    from idscaling.known_d import run_one

    logging.basicConfig(level=logging.WARNING)
    out = Path(root) / layout.KNOWN_D_RECORD.format(**job)
    start = time.perf_counter()
    record = run_one(known_d, job["d"], job["s"], job["docs"], job["seed"], job["estimator"],
                     out, out.with_suffix(".npy"), threads=1, device=device)
    return {**job, "device": record.get("device"), "excess": record["excess"], "steps": record.get("steps"),
            "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--root", type=Path, required=True, help="results/ is written under it")
    parser.add_argument("--jobs", type=int, default=4, help="runs at a time")
    parser.add_argument("--deadline", type=float, default=None, help="start no job after this many seconds")
    parser.add_argument("--device", default=None, help="torch device (default: the config's known_d.device)")
    parser.add_argument("--estimators", nargs="+", default=None, help="run only these (and skip the analysis)")
    parser.add_argument("--docs", nargs="+", type=int, default=None, help="run only these sizes (and skip the analysis)")
    args = parser.parse_args()

    known_d = validate_config(yaml.safe_load(args.config.read_text()))["known_d"]
    device = args.device or known_d["device"]
    jobs = sorted(sweep_jobs(known_d), key=lambda j: -_WEIGHT[j["estimator"]] * j["docs"])
    todo = [j for j in jobs if not (args.root / layout.KNOWN_D_RECORD.format(**j)).exists()
            and (args.estimators is None or j["estimator"] in args.estimators)
            and (args.docs is None or j["docs"] in args.docs)]
    print(f"{len(jobs)} jobs, {len(jobs) - len(todo)} already done; {args.jobs} at a time", flush=True)

    start = time.perf_counter()
    left_out = []
    # spawn: a forked child cannot initialise CUDA
    with cf.ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < args.jobs:
                if args.deadline is not None and time.perf_counter() - start > args.deadline:
                    left_out, queue = queue, []
                    break
                pending.add(pool.submit(_run, known_d, queue.pop(0), str(args.root), device))
            if not pending:
                break
            done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for f in done:
                row = f.result()
                print(json.dumps({**row, "t": round(time.perf_counter() - start)}), flush=True)
    if left_out:
        print(f"deadline: {len(left_out)} jobs not started: "
              + ", ".join(Path(layout.KNOWN_D_RECORD.format(**j)).parent.as_posix() + "/" + j["estimator"]
                          for j in left_out), flush=True)

    if args.estimators or args.docs:
        sys.exit(1 if left_out else 0)
    from idscaling.known_d_laws import run_known_d_laws

    records = [p for j in jobs if (p := args.root / layout.KNOWN_D_RECORD.format(**j)).exists()]
    if not records:
        sys.exit("no job finished: nothing to analyse")
    out = args.root / "results"
    run_known_d_laws(records, out / "known_d", out / "figures", known_d)
    print((out / "known_d" / "summary.md").read_text())
    sys.exit(1 if left_out else 0)


if __name__ == "__main__":
    main()
