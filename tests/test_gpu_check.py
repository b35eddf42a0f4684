"""bench/gpu_check.py --dry: the GPU visit's script runs on CPU, so it cannot rot between visits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_runs_every_check(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry"] and report["errors"] == {}
    results = report["results"]
    throughput = results["throughput/tiny/compile=False"]
    assert throughput["engine_tokens_per_s"] > 0 and throughput["plain_tokens_per_s"] > 0
    assert abs(results["knn_id"]["id"] - results["knn_id"]["true_d"]) < 0.5
    assert results["workflow"]["planned_train_jobs"] == 4
    resume = results["resume"]
    assert 0 < resume["resumed_from"] < resume["max_steps"] == resume["steps"]
    # one line per figure on the terminal
    assert "kNN MLE" in proc.stdout and "SIGKILL" in proc.stdout and "ratio" in proc.stdout
