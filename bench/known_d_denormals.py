"""What flushing subnormal floats saves a known-d training run on the CPU.

Trains the network's wide twin (width 128) of configs/known_d.yaml at d = 4, s = 1,
n = 8192, seed 1 for exactly `--steps` steps (no early stop), with subnormals flushed
(what `known_d._fit` does) and without (the baseline), each `--repeats` times in its own
process, and prints the median seconds of each and their ratio.

    python bench/known_d_denormals.py [--steps 1600] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUN = """
import sys, json, tempfile, pathlib, torch
if sys.argv[1] == "keep":
    torch.set_flush_denormal = lambda on: False  # the baseline: subnormals computed as such
sys.path.insert(0, str(pathlib.Path(sys.argv[3]) / "scripts"))
from known_d_checks import _known_d
from idscaling.known_d import run_one
with tempfile.TemporaryDirectory() as tmp:
    r = run_one(_known_d(max_steps=int(sys.argv[2]), early_stop_patience=10**6), 4, 1.0, 8192, 1, "wide",
                pathlib.Path(tmp) / "r.json", pathlib.Path(tmp) / "r.npy", threads=1)
print(json.dumps({"wall_s": r["wall_s"], "steps": r["steps"], "excess": r["excess"]}))
"""


def seconds(mode: str, steps: int) -> float:
    out = subprocess.run([sys.executable, "-c", RUN, mode, str(steps), str(REPO)], check=True,
                         capture_output=True, text=True).stdout
    record = json.loads(out.strip().splitlines()[-1])
    if record["steps"] != steps:
        raise RuntimeError(f"the {mode} run took {record['steps']} steps, not {steps}")
    return float(record["wall_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times = {mode: [] for mode in ("keep", "flush")}
    for i in range(args.repeats):
        for mode in times:
            times[mode].append(seconds(mode, args.steps))
            print(f"repeat {i + 1}/{args.repeats}, subnormals {mode}: {times[mode][-1]:.1f} s", flush=True)
    keep, flush = (statistics.median(times[m]) for m in ("keep", "flush"))
    print(f"median of {args.repeats}: subnormals kept {keep:.1f} s, flushed {flush:.1f} s "
          f"for {args.steps} steps: {keep / flush:.2f}x faster flushed")


if __name__ == "__main__":
    main()
