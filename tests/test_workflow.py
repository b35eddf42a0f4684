"""The whole workflow, for real, on configs/test.yaml; then what a re-run plans after changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from idscaling.checkpoint import CHECKPOINT_NAME
from idscaling.tables import ID_COLUMNS, LOSS_COLUMNS
from workflow_utils import copy_workflow, load_config, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

LAWS_COLUMNS = [
    "corpus", "law", "fixed", "exponent", "exponent_ci_low", "exponent_ci_high", "offset_E",
    "coef", "n_points", "rmse_log", "id", "predicted_exponent", "predicted_ci_low",
    "predicted_ci_high",
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """configs/test.yaml run to the end once; the tests below read it or dry-run on it."""
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    started = time.monotonic()
    snakemake(workdir, "--cores", "2", "--configfile", "configs/test.yaml")
    return workdir, time.monotonic() - started


def test_end_to_end_writes_every_table_and_figure(finished_run):
    workdir, seconds = finished_run
    config = load_config(workdir / "configs" / "test.yaml")
    results = workdir / "results"
    n_runs = len(config["corpora"]) * len(config["models"]) * len(config["data_tokens"])

    losses = pd.read_csv(results / "losses.csv")
    assert list(losses.columns) == LOSS_COLUMNS
    assert len(losses) == n_runs
    assert set(losses["corpus"]) == set(config["corpora"])
    assert losses["best_val_loss"].between(0, 20).all()
    # Kaplan's N grows with the model's shape; every run trained at least one step.
    assert (losses["params_nonembed"] < losses["params"]).all()
    assert (losses["steps"] >= 1).all()
    # an engine that learns: every run converged, and more data means lower loss
    assert losses["converged"].all(), losses.loc[~losses["converged"], ["corpus", "model", "tokens"]]
    for _, runs in losses.groupby(["corpus", "model"]):
        assert runs.sort_values("tokens")["best_val_loss"].is_monotonic_decreasing, runs

    ids = pd.read_csv(results / "intrinsic_dim.csv")
    assert list(ids.columns[: len(ID_COLUMNS)]) == ID_COLUMNS
    assert set(ids["corpus"]) == set(config["corpora"])
    assert set(ids["estimator"]) >= {"mle", "twonn"}
    assert (ids["id"] > 0).all()

    laws = pd.read_csv(results / "laws.csv")
    assert set(LAWS_COLUMNS) <= set(laws.columns)
    assert {"data", "model", "joint"} <= set(laws["law"])
    # three sizes per law: the loss falls with D, so every pure data law (2 parameters)
    # fits; no 3-parameter offset form on 3 sizes is reported as a fit (underdetermined,
    # or no fit when the loss does not fall); a law that does not fit says why
    data_pure = (laws["law"] == "data") & (laws["form"] == "pure")
    assert (laws.loc[data_pure, "status"] == "ok").all(), laws.loc[data_pure, ["fixed", "reason"]]
    offset3 = (laws["law"] != "joint") & (laws["form"] == "offset")
    assert laws.loc[offset3, "status"].isin(["underdetermined", "no_fit"]).all()
    assert laws.loc[laws["status"] == "no_fit", "reason"].str.len().gt(10).all()
    for name in ["data_scaling", "model_scaling", "exponents", "id_vs_k", "id_vs_layer", "training_curves"]:
        png = results / "figures" / f"{name}.png"
        assert png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = (results / "summary.md").read_text()
    for corpus in config["corpora"]:
        assert corpus in summary
    assert seconds < 600


def test_rerun_unchanged_has_nothing_to_do(finished_run):
    workdir, _ = finished_run
    assert planned_jobs(workdir, "--configfile", "configs/test.yaml") == {}


def test_report_bundles_tables_and_figures(finished_run):
    workdir, _ = finished_run
    snakemake(workdir, "--report", "report.html", "--configfile", "configs/test.yaml")
    report = (workdir / "report.html").read_text(errors="replace")
    for name in ["data_scaling.png", "exponents.png", "laws.csv", "summary.md"]:
        assert name in report


def _variant(workdir: Path, name: str, change) -> str:
    config = load_config(workdir / "configs" / "test.yaml")
    change(config)
    write_config(workdir / f"{name}.yaml", config)
    return f"{name}.yaml"


def test_adding_a_model_plans_only_its_runs(finished_run):
    workdir, _ = finished_run
    # Smaller than the largest model, so the reference model for embeddings stays.
    path = _variant(workdir, "add_model", lambda c: c["models"].update(extra={"n_layer": 1, "n_embd": 24, "n_head": 2}))
    config = load_config(workdir / path)
    jobs = planned_jobs(workdir, "--configfile", path)
    assert jobs.pop("train") == len(config["corpora"]) * len(config["data_tokens"])
    # every run's ID enters the robustness table: one job per corpus
    assert jobs.pop("id_robustness") == len(config["corpora"])
    assert set(jobs) <= {"collect_losses", "collect_histories", "collect_robustness", "laws", "all"}


def test_adding_a_data_size_plans_only_the_new_runs(finished_run):
    workdir, _ = finished_run
    path = _variant(workdir, "add_d", lambda c: c["data_tokens"].insert(1, 6000))
    config = load_config(workdir / path)
    jobs = planned_jobs(workdir, "--configfile", path)
    assert jobs.pop("train") == len(config["corpora"]) * len(config["models"])
    assert jobs.pop("subset") == len(config["corpora"])
    assert jobs.pop("data_grid") == 1  # the table of checks, not the runs that wait for it
    assert jobs.pop("id_robustness") == len(config["corpora"])
    assert set(jobs) <= {"collect_losses", "collect_histories", "collect_robustness", "laws", "all"}


def test_a_data_size_too_large_for_one_corpus_stops_every_corpus_before_training(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = load_config(workdir / "configs" / "test.yaml")
    config["models"] = {"tiny": config["models"]["tiny"]}
    # a D within the step budget (so the config is valid) but beyond what prose holds
    config["corpora"]["prose"].update(max_docs=10, data_tokens=[4000, 100_000])
    write_config(workdir / "big.yaml", config)
    proc = snakemake(workdir, "--cores", "2", "--configfile", "big.yaml", check=False)
    assert proc.returncode != 0
    terminal = proc.stderr + proc.stdout
    assert "corpus prose has" in terminal and "data_tokens asks for 100,000" in terminal
    # not one run of either corpus started: the check of every D comes first
    assert not list((workdir / "results").glob("*/runs"))
    assert not (workdir / "results" / "data_grid.csv").exists()


def test_a_control_corpus_is_built_from_the_corpus_it_controls(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = load_config(workdir / "configs" / "test.yaml")
    config["corpora"]["code-shuffled"] = {"source": "control", "of": "code"}
    write_config(workdir / "control.yaml", config)
    jobs = planned_jobs(workdir, "--configfile", "control.yaml")
    assert jobs["corpus"] == 3 and jobs["train"] == 3 * len(config["models"]) * len(config["data_tokens"])
    snakemake(workdir, "results/code-shuffled/corpus/docs.parquet", "--cores", "2",
              "--configfile", "control.yaml")
    real = pd.read_parquet(workdir / "results" / "code" / "corpus" / "docs.parquet")["text"]
    control = pd.read_parquet(workdir / "results" / "code-shuffled" / "corpus" / "docs.parquet")["text"]
    assert len(control) == len(real)
    assert all(sorted(a.split()) == sorted(b.split()) for a, b in zip(real, control))
    assert (real != control).mean() > 0.9


def test_settings_that_change_no_result_plan_nothing(finished_run):
    workdir, _ = finished_run
    path = _variant(workdir, "engine", lambda c: c["train"].update(
        compile=True, checkpoint_every=7, log_every=3, peak_flops=1e12))
    assert planned_jobs(workdir, "--configfile", path) == {}


def test_changing_k_plans_id_jobs_not_training(finished_run):
    workdir, _ = finished_run
    path = _variant(workdir, "change_k", lambda c: c["intrinsic_dim"].update(k=8))
    jobs = planned_jobs(workdir, "--configfile", path)
    assert jobs.pop("intrinsic_dim") == 2
    assert jobs.pop("id_robustness") == 2  # it measures with the reference k
    assert set(jobs) <= {"collect_ids", "collect_robustness", "laws", "all"}


def test_changing_lr_plans_training_not_corpus_stages(finished_run):
    workdir, _ = finished_run
    path = _variant(workdir, "change_lr", lambda c: c["train"].update(lr=1e-3))
    config = load_config(workdir / path)
    jobs = planned_jobs(workdir, "--configfile", path)
    assert jobs["train"] == len(config["corpora"]) * len(config["models"]) * len(config["data_tokens"])
    assert not {"corpus", "split", "tokenize", "subset"} & set(jobs)


def test_editing_readme_or_tests_plans_nothing(finished_run):
    workdir, _ = finished_run
    (workdir / "README.md").write_text("changed\n")
    (workdir / "tests").mkdir(exist_ok=True)
    (workdir / "tests" / "test_new.py").write_text("def test_x():\n    assert True\n")
    assert planned_jobs(workdir, "--configfile", "configs/test.yaml") == {}


def _one_run_config(workdir: Path, name: str, **train) -> tuple[str, dict]:
    config = load_config(workdir / "configs" / "test.yaml")
    config["corpora"] = {"code": config["corpora"]["code"]}
    config["models"] = {"mid": config["models"]["mid"]}
    config["data_tokens"] = [16000]
    config["train"].update(train)
    write_config(workdir / f"{name}.yaml", config)
    return f"{name}.yaml", config


def test_sigkill_mid_training_resumes_from_checkpoint(tmp_path):
    """Kill the whole workflow (SIGKILL) after a checkpoint; --rerun-incomplete resumes it."""
    workdir = copy_workflow(tmp_path)
    # long enough after the first checkpoint that the kill lands before the run ends
    path, config = _one_run_config(workdir, "kill", max_steps=1200, checkpoint_every=25,
                                   eval_every=100, early_stop_patience=0)
    target = "results/code/runs/mid/D16000/s0/metrics.json"  # relative: Snakemake matches rules on it
    run = workdir / "results" / "code" / "runs" / "mid" / "D16000" / "s0"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", path],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    ckpt = run / "ckpt" / CHECKPOINT_NAME  # written by rename: once it exists it is whole
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert proc.poll() is None, "the workflow ended before the first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists()

    # A killed Snakemake leaves its lock behind; --unlock is the documented first step.
    snakemake(workdir, "--unlock", "--configfile", path)
    snakemake(workdir, target, "--cores", "2", "--rerun-incomplete", "--configfile", path)
    log = (workdir / "logs" / "code" / "train" / "mid_D16000_s0.log").read_text()
    assert "resuming from checkpoint" in log
    metrics = pd.read_json(run / "metrics.json", typ="series")
    assert metrics["resumed_from"] > 0
    assert metrics["steps"] == config["train"]["max_steps"]


def test_failing_job_leaves_no_output_and_others_stop_before_training(tmp_path):
    workdir = copy_workflow(tmp_path)
    config = load_config(workdir / "configs" / "test.yaml")
    # a JSON-lines corpus without the text field: known only once the corpus job reads it
    (workdir / "notes.jsonl").write_text('{"body": "a note"}\n')
    config["corpora"] = {"code": config["corpora"]["code"],
                         "notes": {"source": "local", "path": "notes.jsonl", "format": "jsonl"}}
    config["models"] = {"tiny": config["models"]["tiny"]}
    config["data_tokens"] = [4000]
    write_config(workdir / "fail.yaml", config)
    proc = snakemake(workdir, "--cores", "2", "--configfile", "fail.yaml", "--keep-going", check=False)
    assert proc.returncode != 0
    reason = "corpora.notes.text_field 'text'"
    assert reason in (workdir / "logs" / "notes" / "corpus.log").read_text()
    # the reason reaches the terminal, not only the log
    terminal = proc.stderr + proc.stdout
    assert "error in logs/notes/corpus.log: " in terminal and reason in terminal
    left = [p for p in (workdir / "results").glob("notes/**/*") if p.is_file()]
    assert left == []
    # --keep-going: the other corpus goes as far as its data-size check; no model of any
    # corpus trains while one corpus's data is not known to be good
    assert (workdir / "results" / "code" / "tokens" / "subsets" / "D4000.json").exists()
    assert not (workdir / "results" / "code" / "runs").exists()


KNOWN_D_MINI = {
    "arms": [{"d": 1, "s": 1.0}],
    "docs": [64, 128, 256],
    "reference_docs": [64, 128, 256, 1024],
    "seeds": [0, 1],
    "symbols": 4,
    "eval_points": 256,
    "tune_docs": 64,
    "model": {"n_layer": 1, "n_embd": 16, "n_head": 2},
    "mlp": {"width": 16, "layers": 1},
    "train": {"batch_size": 16, "lr": 1e-2, "warmup_steps": 5, "max_steps": 60, "eval_every": 10,
              "early_stop_patience": 2},
    "bootstrap": 50,
}


def test_known_d_in_miniature_and_what_reruns(tmp_path):
    """configs/known_d.yaml shrunk: every estimator runs, the exponents get verdicts from
    the rule, the figures exist; a setting that cannot change a result re-runs nothing."""
    workdir = copy_workflow(tmp_path)
    write_config(workdir / "kd.yaml", {"known_d": KNOWN_D_MINI})
    snakemake(workdir, "--cores", "2", "--configfile", "kd.yaml")
    out = workdir / "results" / "known_d"
    runs = pd.read_csv(out / "runs.csv")
    # 3 sizes x 2 seeds of the network and of the MLP, each at twice the width at the
    # largest size and every seed, 4 sizes x 2 seeds of the reference
    assert runs.groupby("estimator").size().to_dict() == {"base": 6, "mlp": 6, "wide": 2,
                                                          "mlp_wide": 2, "reference": 8}
    assert set(runs[runs.estimator.isin(["wide", "mlp_wide"])].docs) == {256}
    assert (runs["excess"] > 0).all() and (runs["floor"] > 0).all()
    assert (runs["quantisation_excess"] < 1e-3 * runs["excess"]).all()
    exponents = pd.read_csv(out / "exponents.csv").set_index("estimator")
    assert exponents.loc["reference", "sizes"] == "64;128;256;1024"
    assert exponents.loc["reference", "predicted"] == pytest.approx(2 / 3)
    assert set(exponents.index) == {"reference", "network", "mlp"}
    assert set(exponents["verdict"]) <= {"agrees", "disagrees", "inconclusive", "underdetermined"}
    assert "## Known dimension" in (out / "summary.md").read_text()
    ladder = pd.read_csv(out / "ladder.csv")
    assert ladder.levels_known.tolist() == list(range(6)) and (ladder.excess.diff().dropna() < 0).all()
    ids = pd.read_csv(out / "ids.csv")
    # the network's blocks and log-probabilities, and the truth, at every k; each calibrated
    assert set(ids["state"]) == {"block1", "logprobs", "true_logprobs"}
    assert set(ids["k"]) == {10, 20, 40, 80}
    truth = ids[(ids["state"] == "true_logprobs") & (ids["k"] == 20)]
    assert truth["calibrated_id"].between(0.8, 1.3).all()  # d = 1
    for name in ("known_d_excess", "known_d_exponents", "known_d_id"):
        assert (workdir / "results" / "figures" / f"{name}.png").stat().st_size > 10_000
    # the report's front page says what the experiment is; its figures and tables are in it
    snakemake(workdir, "--report", "report.html", "--configfile", "kd.yaml")
    report = (workdir / "report.html").read_text(errors="replace")
    assert "the theorem's own problem" in report
    for name in ("known_d_excess.png", "known_d_exponents.png", "summary.md", "runs.csv"):
        assert name in report

    def planned(**changes):
        write_config(workdir / "kd2.yaml", {"known_d": {**KNOWN_D_MINI, **changes}})
        return planned_jobs(workdir, "--configfile", "kd2.yaml")

    assert planned() == {}
    assert planned(threads=2) == {}
    assert planned(margin=0.02) == {"known_d_laws": 1, "all": 1}
    # the reference does not read the training settings, the networks and the MLP do
    assert planned(train={**KNOWN_D_MINI["train"], "lr": 5e-3}) == {
        "known_d_run": 16, "known_d_laws": 1, "all": 1}
    assert planned(mlp={"width": 32, "layers": 1}) == {"known_d_run": 8, "known_d_laws": 1, "all": 1}
    assert planned(width_docs=[128, 256]) == {"known_d_run": 4, "known_d_laws": 1, "all": 1}
    # the twins' own lr re-runs the twins (2 seeds, the network's and the MLP's), nothing else
    assert planned(width_lr_scale=0.25) == {"known_d_run": 4, "known_d_laws": 1, "all": 1}
    # fewer width seeds: the runs already made serve; the laws see fewer of them
    assert planned(width_seeds=[0]) == {"known_d_laws": 1, "all": 1}
    # the field is the generator: every run of the arm re-runs
    assert planned(max_modes=64) == {"known_d_run": 24, "known_d_laws": 1, "all": 1}
    assert planned(level_ratio=1.5) == {"known_d_run": 24, "known_d_laws": 1, "all": 1}
