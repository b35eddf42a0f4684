"""The workflow on a real one-node SLURM cluster, through profiles/slurm.

A session fixture brings the cluster up with .ci/slurm-up.sh (these tests skip, saying
why, only where SLURM cannot be installed: not root, no apt-get). The workflow runs
configs/test.yaml, cut to one corpus, one model and two data sizes (every SLURM job pays
Snakemake's start-up, and the executor polls the queue less often the longer nothing
finishes, so each level of the DAG costs 15-40 s on a loaded 2-core machine), three
ways:

1. locally (`--cores 2`), the reference for the shape of the results;
2. on SLURM with one training job made to fail (a stand-in `idscaling` on PATH that
   writes half a metrics.json and exits 3): the failure must be reported, the other
   jobs must finish (--keep-going), and nothing of the failed job may stay behind;
3. on SLURM again, untouched: only the failed job and what depends on it re-run, and
   the tables match the local run's in columns and rows.

"Ran as a SLURM job" is checked against the cluster's own record: with no accounting
database, slurmctld appends every finished job to its jobcomp file (JobCompLoc), named
after the Snakemake run's UUID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from workflow_utils import REPO, copy_workflow, load_config, write_config

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CONFIG = "slurm-test.yaml"


def _cluster_args() -> list[str]:
    """Overrides for the small test node: every memory and time request of the profile
    scaled down (a --set-resources list replaces the profile's whole list), no GPUs, and
    a queue polled from the first second."""
    import yte

    with open(REPO / "profiles" / "slurm" / "config.yaml") as f:
        profile = yte.process_yaml(f, require_use_yte=True)
    small = {"mem_mb": 1000, "runtime": 10}
    per_rule = [f"{rule}:{key}={small[key]}"
                for rule, resources in profile.get("set-resources", {}).items()
                for key in resources if key in small]
    # The node has no GPUs: whatever the config asks, GPU rules run on CPU here.
    no_gpus = ["train:gpu=0", "embed:gpu=0"]
    return ["--default-resources", "mem_mb=500", "runtime=10",
            "--set-resources", *per_rule, *no_gpus,
            "--slurm-init-seconds-before-status-checks", "1",
            "--latency-wait", "10",
            "--jobs", "8"]


@pytest.fixture(scope="session")
def slurm_cluster():
    """Bring up the loopback cluster; return where it logs finished jobs."""
    script = REPO / ".ci" / "slurm-up.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    reason = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
    if proc.returncode == 2:
        pytest.skip(f"SLURM cannot be installed here: {reason}")
    if proc.returncode != 0:
        pytest.fail(f".ci/slurm-up.sh failed ({proc.returncode}): {proc.stderr[-3000:]}")
    config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True,
                            check=True).stdout
    jobcomp = re.search(r"^JobCompLoc\s*=\s*(\S+)", config, re.M)
    assert jobcomp and Path(jobcomp.group(1)).is_absolute(), \
        "slurm.conf must log finished jobs to a file (JobCompType=jobcomp/filetxt)"
    return {"jobcomp": Path(jobcomp.group(1))}


def _small_test_config() -> dict:
    config = load_config(REPO / "configs" / "test.yaml")
    first_corpus = next(iter(config["corpora"]))
    config["corpora"] = {first_corpus: config["corpora"][first_corpus]}
    config["models"] = dict(list(config["models"].items())[:1])
    config["data_tokens"] = sorted(config["data_tokens"])[:2]
    config["corpora"][first_corpus].pop("data_tokens", None)
    return config


def _failing_run(config: dict) -> str:
    """The training run made to fail: the smallest D, which the embedding (it reads the
    largest model at the largest D) does not need."""
    model = next(iter(config["models"]))
    return f"runs/{model}/D{min(config['data_tokens'])}/s{config['seeds'][0]}"


def _snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--directory", str(workdir),
            "--snakefile", str(workdir / "Snakefile"), "--configfile", CONFIG, *args]


def _env(*path_first: Path) -> dict:
    # The venv's bin on PATH, so that jobs (which inherit it through sbatch --export=ALL)
    # find this interpreter's `idscaling` and `snakemake`.
    path = [str(p) for p in path_first] + [str(Path(sys.executable).parent), os.environ["PATH"]]
    # The profile reads account and partitions from these; the test node has neither.
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDSCALING_SLURM_")}
    return dict(env, PATH=os.pathsep.join(path))


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _failing_idscaling(bin_dir: Path, failing_run: str) -> Path:
    """A stand-in `idscaling` that breaks one training run and passes the rest through."""
    bin_dir.mkdir()
    real = shutil.which("idscaling", path=str(Path(sys.executable).parent))
    assert real, "idscaling is not installed in the test interpreter's environment"
    shim = bin_dir / "idscaling"
    shim.write_text(f"""#!/bin/sh
# Injected by tests/test_slurm.py: the job dies after writing part of its output.
case "$*" in
  *"{failing_run}"*)
    if [ "$1" = train ]; then
      run_dir=$(printf '%s\\n' "$@" | grep '{failing_run}' | head -n1)
      mkdir -p "$run_dir" && printf '{{"best_val_' > "$run_dir/metrics.json"
      echo "injected failure in $run_dir" >&2
      exit 3
    fi ;;
esac
exec "{real}" "$@"
""")
    shim.chmod(0o755)
    return bin_dir


class Run:
    """What one Snakemake invocation did, read from its output and the cluster's record."""

    def __init__(self, proc: subprocess.CompletedProcess, jobcomp: Path, seconds: float):
        self.proc, self.seconds = proc, seconds
        self.text = proc.stdout + proc.stderr
        # --show-failed-logs copies each failed job's logs in, the job-side Snakemake's
        # own "rule ...:" lines among them: count only the submitting process's lines.
        own = re.sub(r"^Logfile [^\n]*:\n={40,}\n.*?^={40,}$", "", self.text, flags=re.M | re.S)
        uuid = re.search(r"SLURM run ID: (\S+)", self.text)
        self.uuid = uuid.group(1) if uuid else None
        self.remote_rules = re.findall(r"^rule (\w+):$", own, re.M)
        self.local_rules = re.findall(r"^localrule (\w+):$", own, re.M)
        self.submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", own)
        self.failed = (re.findall(
            r"^Error in rule (\w+):\n\s+message: SLURM-job '(\d+)' failed", own, re.M))
        # JobId -> JobState for the jobs that this run submitted (named by its UUID).
        self.cluster = {}
        for line in jobcomp.read_text().splitlines():
            fields = dict(re.findall(r"(\w+)=(\S*)", line))
            if self.uuid and fields.get("Name") == self.uuid:
                self.cluster[fields["JobId"]] = fields

    def describe(self) -> str:
        return f"exit {self.proc.returncode} after {self.seconds:.0f} s\n{self.text[-6000:]}"


@pytest.fixture(scope="module")
def runs(slurm_cluster, tmp_path_factory):
    config = _small_test_config()
    local = copy_workflow(tmp_path_factory.mktemp("local"))
    cluster = copy_workflow(tmp_path_factory.mktemp("cluster"))
    write_config(local / CONFIG, config)
    write_config(cluster / CONFIG, config)
    failing_run = _failing_run(config)
    shim = _failing_idscaling(tmp_path_factory.mktemp("shim") / "bin", failing_run)

    # The local reference runs beside the first cluster run: the cluster run spends much
    # of its time waiting for the queue, and the two share this machine's cores.
    started = time.monotonic()
    local_proc = subprocess.Popen(_snakemake_cmd(local, "--cores", "2"), cwd=local, env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = _run(_snakemake_cmd(cluster, "--profile", "profiles/slurm", *_cluster_args()),
                 cluster, _env(shim))
    first = Run(first, slurm_cluster["jobcomp"], time.monotonic() - started)
    # What the failed run left, before the re-run replaces it.
    first.files = {p.relative_to(cluster).as_posix()
                   for p in (cluster / "results").rglob("*") if p.is_file()}
    local_out, _ = local_proc.communicate(timeout=900)
    assert local_proc.returncode == 0, f"the local reference run failed:\n{local_out[-6000:]}"

    started = time.monotonic()
    second = _run(_snakemake_cmd(cluster, "--profile", "profiles/slurm", *_cluster_args()),
                  cluster, _env())
    second = Run(second, slurm_cluster["jobcomp"], time.monotonic() - started)
    return {"local": local, "cluster": cluster, "config": config, "failing_run": failing_run,
            "first": first, "second": second}


def test_failed_job_is_reported_and_the_others_finish(runs):
    first, corpus = runs["first"], next(iter(runs["config"]["corpora"]))
    assert first.proc.returncode != 0, first.describe()
    # Reported: the rule, SLURM's verdict, and the job id that SLURM recorded as failed.
    assert [rule for rule, _ in first.failed] == ["train"], first.describe()
    failed_id = first.failed[0][1]
    assert first.cluster[failed_id]["JobState"] == "FAILED"
    # The failing job's log, shown with the error, says the failure was the injected one.
    assert f"injected failure in results/{corpus}/{runs['failing_run']}" in first.text
    # Nothing of the failed job is left, not even the half file it wrote.
    run_dir = f"results/{corpus}/{runs['failing_run']}/"
    left = sorted(f for f in first.files if f.startswith(run_dir) and "/ckpt/" not in f)
    assert left == [], f"the failed job left {left}"
    # --keep-going: every job that does not need the failed one still ran and succeeded.
    metrics = [f for f in first.files if re.fullmatch(rf"results/{corpus}/runs/.+/metrics\.json", f)]
    n_runs = len(runs["config"]["models"]) * len(runs["config"]["data_tokens"])
    assert len(metrics) == n_runs - 1
    assert "results/intrinsic_dim.csv" in first.files
    assert "results/losses.csv" not in first.files
    states = [job["JobState"] for job_id, job in first.cluster.items() if job_id != failed_id]
    assert states and set(states) == {"COMPLETED"}


@pytest.mark.parametrize("which", ["first", "second"])
def test_every_job_but_the_localrules_ran_as_a_slurm_job(runs, which):
    run = runs[which]
    assert run.uuid, run.describe()
    assert run.remote_rules, run.describe()
    # Every job that Snakemake started outside the localrules went through sbatch, and
    # the cluster recorded each one, in this run's name, in this run's directory.
    assert len(run.submitted) == len(run.remote_rules), run.describe()
    assert sorted(run.cluster) == sorted(run.submitted), run.describe()
    for job in run.cluster.values():
        assert Path(job["WorkDir"]) == runs["cluster"], job
    assert not set(run.local_rules) - {"corpus", "all"}
    assert "corpus" not in run.remote_rules


def test_rerun_completes_only_what_failed(runs):
    second = runs["second"]
    assert second.proc.returncode == 0, second.describe()
    assert set(job["JobState"] for job in second.cluster.values()) == {"COMPLETED"}
    # The failed training run and the jobs downstream of it; nothing that succeeded.
    assert sorted(second.remote_rules) == ["collect_histories", "collect_losses",
                                           "collect_robustness", "id_robustness", "laws",
                                           "train"], second.describe()
    assert "corpus" not in second.local_rules


@pytest.mark.parametrize("table", ["losses.csv", "intrinsic_dim.csv", "laws.csv",
                                   "predictions.csv"])
def test_results_match_a_local_run_in_shape(runs, table):
    local = pd.read_csv(runs["local"] / "results" / table)
    cluster = pd.read_csv(runs["cluster"] / "results" / table)
    assert list(cluster.columns) == list(local.columns)
    assert len(cluster) == len(local) > 0
    key = [c for c in ["corpus", "model", "tokens", "seed", "estimator", "law", "fixed"]
           if c in local.columns]
    assert sorted(map(tuple, cluster[key].astype(str).values)) == \
        sorted(map(tuple, local[key].astype(str).values))
    figures = sorted(p.name for p in (runs["local"] / "results" / "figures").glob("*.png"))
    assert figures and figures == sorted(
        p.name for p in (runs["cluster"] / "results" / "figures").glob("*.png"))

