"""How long Snakemake takes to build the DAG of a paper-scale grid (dry-run).

Times `snakemake -n` on configs/paper.yaml (8 models x 3 seeds over 7 + 7 + 8 data
sizes = 528 training jobs) and on the same config cut to a tenth of the training jobs
(3 x 4 x 5 x 1 = 60), median of `--repeats` runs each, in one process, and prints the
ratio. Goal: the 528-job DAG in under 20 s on a 2-core laptop.

    python bench/dag_scale.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def dry_run_seconds(workdir: Path, configfile: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile", str(configfile)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, proc.stdout


def train_jobs(stdout: str) -> int:
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "train":
            return int(parts[1])
    raise RuntimeError("no train jobs in the dry-run output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in ["Snakefile", "config.yaml", "configs", "workflow", "envs"]:
            src = REPO / name
            (shutil.copytree if src.is_dir() else shutil.copy2)(src, workdir / name)
        paper = yaml.safe_load((REPO / "configs" / "paper.yaml").read_text())
        tenth = dict(paper)
        tenth["models"] = dict(list(paper["models"].items())[:4])
        tenth["data_tokens"] = paper["data_tokens"][:5]
        tenth["seeds"] = paper["seeds"][:1]
        tenth["corpora"] = {
            name: {k: v for k, v in spec.items() if k != "data_tokens"} | (
                {"data_tokens": spec["data_tokens"][:5]} if "data_tokens" in spec else {})
            for name, spec in paper["corpora"].items()
        }
        (workdir / "tenth.yaml").write_text(yaml.safe_dump(tenth))

        results = {}
        for label, configfile in [("paper", REPO / "configs" / "paper.yaml"), ("tenth", workdir / "tenth.yaml")]:
            times, jobs = [], None
            for _ in range(args.repeats):
                seconds, stdout = dry_run_seconds(workdir, configfile)
                times.append(seconds)
                jobs = train_jobs(stdout)
            results[label] = (statistics.median(times), jobs)
            print(f"{label:>6}: {jobs:4d} training jobs, DAG dry-run median {results[label][0]:.2f} s "
                  f"over {args.repeats} runs ({', '.join(f'{t:.2f}' for t in times)})")
    ratio = results["paper"][0] / results["tenth"][0]
    print(f"ratio paper/tenth: {ratio:.2f}x time for {results['paper'][1] / results['tenth'][1]:.1f}x jobs")
    print(f"goal: paper-scale DAG under 20 s -> {'met' if results['paper'][0] < 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
