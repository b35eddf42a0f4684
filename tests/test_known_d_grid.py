"""scripts/known_d_grid.py: the known-d sweep without Snakemake (for a GPU box)."""

import subprocess
import sys

import pandas as pd
import yaml

from idscaling import layout
from idscaling.config import validate_config
from idscaling.known_d import sweep_jobs
from workflow_utils import REPO

TINY = {"known_d": {"arms": [{"d": 1, "s": 1.0}], "docs": [32, 64, 128], "seeds": [0], "symbols": 4,
                    "eval_points": 128, "tune_docs": 32, "model": {"n_layer": 1, "n_embd": 8, "n_head": 1},
                    "mlp_control": False, "bootstrap": 20,
                    "train": {"batch_size": 16, "max_steps": 20, "eval_every": 10, "early_stop_patience": 1}}}


def grid(config, root, *args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "known_d_grid.py"), str(config),
                           "--root", str(root), "--jobs", "1", *args],
                          capture_output=True, text=True, timeout=600)


def test_the_grid_runs_the_workflows_jobs_into_its_layout_then_resumes(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    proc = grid(config, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sweep_jobs(validate_config(TINY)["known_d"])
    for job in jobs:
        assert (tmp_path / "out" / layout.KNOWN_D_RECORD.format(**job)).exists(), job
    runs = pd.read_csv(tmp_path / "out" / "results" / "known_d" / "runs.csv")
    assert len(runs) == len(jobs)
    assert (tmp_path / "out" / "results" / "known_d" / "summary.md").read_text().count("d1-s1") >= 1
    # a second call finds every record and trains nothing
    again = grid(config, tmp_path / "out")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(jobs)} jobs, {len(jobs)} already done" in again.stdout


def test_jobs_past_the_deadline_are_listed_not_silently_dropped(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    proc = grid(config, tmp_path / "out", "--deadline", "0")
    assert proc.returncode != 0
    assert "jobs not started" in proc.stdout and "d1-s1/n128/s0/wide" in proc.stdout
    assert "no job finished" in proc.stderr
    assert not (tmp_path / "out" / "results" / "known_d" / "summary.md").exists()
