"""Benchmark: what running a job through profiles/slurm costs over running it locally.

A toy workflow of ``--jobs`` independent jobs that each write one line (so the time is
all overhead), in one run:

- baseline ``local``: ``snakemake --cores 2``;
- ``slurm``: ``snakemake --profile profiles/slurm`` on the cluster that
  ``.ci/slurm-up.sh`` brings up (with the test's small-node overrides), i.e. sbatch,
  a Snakemake job step inside each SLURM job, and polling squeue;
- ``slurm, 2 levels``: the same jobs as a chain of two levels (each job of level 2
  needs one of level 1), to show what one more level of the DAG adds: the executor
  polls less often the longer no job finishes.

Each is timed ``--repeats`` times (round-robin); the median wall time is printed with
its ratio to the local baseline. Needs root or a running cluster.

Run: ``python bench/slurm_overhead.py [--jobs 4] [--repeats 3]``.
"""

from __future__ import annotations

import os
import sys


import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER_ARGS = ["--default-resources", "mem_mb=200", "runtime=5",
                "--slurm-init-seconds-before-status-checks", "1", "--jobs", "8"]

SNAKEFILE = """
N = {jobs}
rule all:
    input: expand("{{level}}/{{i}}.txt", level=["b"] if {levels} == 2 else ["a"], i=range(N))
localrules: all
rule a:
    output: "a/{{i}}.txt"
    shell: "echo {{wildcards.i}} > {{output}}"
rule b:
    input: "a/{{i}}.txt"
    output: "b/{{i}}.txt"
    shell: "cat {{input}} > {{output}}"
"""


def run(workdir: Path, levels: int, jobs: int, *args: str) -> float:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "Snakefile").write_text(SNAKEFILE.format(jobs=jobs, levels=levels))
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    up = subprocess.run(["bash", str(REPO / ".ci" / "slurm-up.sh")], capture_output=True, text=True)
    if up.returncode != 0:
        raise SystemExit(f"no SLURM cluster: {up.stderr.strip().splitlines()[-1:]}")

    cases = [
        ("local (baseline)", 1, ["--cores", "2"]),
        ("slurm", 1, ["--profile", "profiles/slurm", *CLUSTER_ARGS]),
        ("slurm, 2 levels", 2, ["--profile", "profiles/slurm", *CLUSTER_ARGS]),
    ]
    times = [[] for _ in cases]
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for i, (name, levels, extra) in enumerate(cases):
                times[i].append(run(Path(tmp, f"case{i}"), levels, args.jobs, *extra))
    medians = [statistics.median(t) for t in times]
    print(f"{args.jobs} trivial jobs per level; median of {args.repeats} repeats")
    for (name, _, _), m in zip(cases, medians):
        print(f"  {name:18s} {m:7.1f} s   {m / medians[0]:5.1f}x local")


if __name__ == "__main__":
    main()
