"""The laws stage end to end on synthetic tables: a known law plus noise, IDs by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from idscaling.laws_stage import run_laws
from idscaling.predictions import verdict
from idscaling.tables import LAW_COLUMNS, collect_histories
from idscaling.errors import DataError

# Chinchilla-like truth on a laptop scale: L = E + A/N^alpha + B/D^beta (nats)
TRUTH = {"E": 2.0, "A": 25.0, "alpha": 0.3, "B": 115.0, "beta": 0.4}
MODELS = {"xs": (1, 32), "s": (2, 64), "m": (4, 128)}
DATA = [25_000, 50_000, 100_000, 400_000]
CONTRACT = ["corpus", "law", "fixed", "exponent", "exponent_ci_low", "exponent_ci_high",
            "offset_E", "coef", "n_points", "rmse_log", "id", "predicted_exponent",
            "predicted_ci_low", "predicted_ci_high"]
FIGURES = ["data_scaling", "model_scaling", "exponents", "id_vs_k", "id_vs_layer",
           "training_curves"]


def make_inputs(root: Path, corpora=("code", "prose"), models=MODELS, data=DATA, noise=0.002,
                ids_for=None, estimators=("mle", "twonn"), seed=0, floor=TRUTH["E"]):
    """Write losses.csv, intrinsic_dim.csv, history.csv files and histories.csv under `root`."""
    rng = np.random.default_rng(seed)
    runs, histories = [], []
    for c, corpus in enumerate(corpora):
        E = floor + 0.3 * c
        for model, (n_layer, n_embd) in models.items():
            N = 12 * n_layer * n_embd**2
            for D in data:
                loss = (E + TRUTH["A"] * N ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"])
                loss *= math.exp(rng.normal(0, noise))
                runs.append(dict(corpus=corpus, model=model, n_layer=n_layer, n_embd=n_embd,
                                 n_head=2, params=N + 512 * n_embd, params_nonembed=N, tokens=D,
                                 seed=0, steps=100, epochs=1.0, best_val_loss=loss,
                                 final_val_loss=loss * 1.01, train_loss=loss * 0.99, wall_s=1.0,
                                 device="cpu", converged=True))
                path = root / corpus / "runs" / model / f"D{D}" / "s0" / "history.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                step = np.arange(0, 60, 10)
                train = loss + 3.0 * np.exp(-step / 20)
                pd.DataFrame(dict(step=step, tokens_seen=step * 1024, lr=1e-3, train_loss=train,
                                  val_loss=np.where(step % 20 == 0, train * 1.02, np.nan),
                                  elapsed_s=step * 0.1)).to_csv(path, index=False)
                histories.append(path)
    pd.DataFrame(runs).to_csv(root / "losses.csv", index=False)
    ids = []
    for c, corpus in enumerate(ids_for if ids_for is not None else corpora):
        for estimator in estimators:
            for protocol in ("batched", "full"):
                # TwoNN looks at two neighbours only: its rows carry k = 2
                for k in ((2,) if estimator == "twonn" else (10, 20)):
                    for layer in (0, 1, 2):
                        d = (8.0 + 4 * c) * (1 + 0.1 * layer) * (1 + 0.01 * k)
                        d *= 1.1 if estimator == "twonn" else 1.0
                        ids.append(dict(corpus=corpus, embedder="trained", layer=layer,
                                        estimator=estimator, k=k, metric="cosine",
                                        protocol=protocol, n_points=3600, n_duplicates=0,
                                        id=d, ci_low=0.95 * d, ci_high=1.05 * d))
    pd.DataFrame(ids, columns=["corpus", "embedder", "layer", "estimator", "k", "metric",
                               "protocol", "n_points", "n_duplicates", "id", "ci_low",
                               "ci_high"]).to_csv(root / "intrinsic_dim.csv", index=False)
    collect_histories(histories, root / "histories.csv")
    return root / "losses.csv", root / "intrinsic_dim.csv", root / "histories.csv"


def _is_png(path: Path) -> bool:
    png = b"\x89PNG\r\n\x1a\n"
    return path.is_file() and path.read_bytes()[:8] == png and path.stat().st_size > 5000


def test_run_laws_writes_every_output_and_recovers_the_law(tmp_path):
    losses, ids, histories = make_inputs(tmp_path / "in")
    out = tmp_path / "results"
    result = run_laws(losses, ids, histories, out, bootstrap=40, seed=1,
                      reference={"estimator": "mle", "k": 20, "protocol": "batched",
                                 "layer": "last"})
    for name in FIGURES:
        assert _is_png(out / "figures" / f"{name}.png"), name
    assert set(result["figures"]) == set(FIGURES)
    assert not list(out.rglob("*.tmp"))

    laws = pd.read_csv(out / "laws.csv", keep_default_na=False, na_values=[""])
    assert list(laws.columns[: len(CONTRACT)]) == CONTRACT
    assert list(laws.columns) == LAW_COLUMNS
    # per corpus: 3 models x 2 forms + 4 data sizes x 2 forms + 1 joint
    assert len(laws) == 2 * (3 * 2 + 4 * 2 + 1)
    # 3 models: each model law's offset form has 3 points for 3 parameters
    underdetermined = (laws["law"] == "model") & (laws["form"] == "offset")
    assert (laws.loc[underdetermined, "status"] == "underdetermined").all()
    assert laws.loc[underdetermined, "exponent"].isna().all()
    assert laws.loc[underdetermined, "reason"].str.contains("3 points for 3 parameters").all()
    ok = laws[~underdetermined]
    assert (ok["status"] == "ok").all(), ok.loc[ok["status"] != "ok", "reason"].tolist()

    joint = laws[laws["law"] == "joint"].set_index("corpus")
    assert joint["exponent"].to_numpy() == pytest.approx(TRUTH["alpha"], abs=0.05)
    assert joint["exponent_D"].to_numpy() == pytest.approx(TRUTH["beta"], abs=0.05)
    assert joint.loc["code", "offset_E"] == pytest.approx(TRUTH["E"], abs=0.1)
    assert (joint["exponent_ci_low"] <= joint["exponent"]).all()
    assert (joint["exponent"] <= joint["exponent_ci_high"]).all()

    # the reference ID: mle, k=20, batched, last layer (2) -> d = 8 * 1.2 * 1.2 for code
    d_code = 8.0 * 1.2 * 1.2
    data = laws[(laws["law"] == "data") & (laws["corpus"] == "code")]
    assert data["id"].to_numpy() == pytest.approx(d_code)
    assert data["predicted_exponent"].to_numpy() == pytest.approx(2 / (2 + d_code))
    model = laws[(laws["law"] == "model") & (laws["corpus"] == "code")]
    assert model["predicted_exponent"].to_numpy() == pytest.approx(2 / d_code)
    assert set(laws["form"]) == {"offset", "pure"}

    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    # corpora x protocols x layers x (two k for mle, one for twonn)
    assert len(preds) == 2 * 2 * 3 * (2 + 1)
    ref = preds[preds["is_reference"]]
    assert sorted(ref["corpus"]) == ["code", "prose"]
    assert (ref["estimator"] == "mle").all() and (ref["k"] == 20).all()
    assert (ref["layer"] == 2).all() and (ref["protocol"] == "batched").all()
    code = ref[ref["corpus"] == "code"].iloc[0]
    assert code["observed_alpha_D"] == pytest.approx(joint.loc["code", "exponent_D"])
    assert code["predicted_alpha_N_s2"] == pytest.approx(4 / d_code)
    s = code["implied_smoothness"]
    assert 2 * s / (2 * s + d_code) == pytest.approx(code["observed_alpha_D"])
    assert code["verdict"] in ("agrees", "disagrees", "inconclusive")

    summary = (out / "summary.md").read_text()
    for corpus in ("code", "prose"):
        assert f"## {corpus}" in summary
    assert summary.count("**Verdict:") == 2
    assert summary.count("| twonn | batched | 2 |") == 2     # the other estimator, at its k
    assert f"{2 / (2 + d_code):.3g}" in summary
    assert result["laws"] == out / "laws.csv"


def test_thin_data_still_gives_every_figure_and_says_why(tmp_path):
    # one corpus, one model, two data sizes: nothing can be fitted
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("solo",),
                                         models={"xs": (1, 32)}, data=[1000, 2000])
    out = tmp_path / "results"
    run_laws(losses, ids, histories, out, bootstrap=20)
    for name in FIGURES:
        assert _is_png(out / "figures" / f"{name}.png"), name
    laws = pd.read_csv(out / "laws.csv", keep_default_na=False, na_values=[""])
    assert (laws["status"] == "no_fit").all()
    assert laws["exponent"].isna().all()
    assert laws["reason"].str.contains("distinct sizes").all()
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False, na_values=[""])
    assert preds["observed_alpha_D"].isna().all()
    assert preds["verdict"].isna().all()
    assert "Verdict: none" in (out / "summary.md").read_text()


def test_no_ids_and_no_histories_still_give_every_figure(tmp_path):
    losses, ids, _ = make_inputs(tmp_path / "in", corpora=("solo",), ids_for=(),
                                 data=DATA[:3])
    out = tmp_path / "results"
    run_laws(losses, ids, None, out, bootstrap=0)
    for name in FIGURES:
        assert _is_png(out / "figures" / f"{name}.png"), name
    assert pd.read_csv(out / "predictions.csv").empty
    assert "Verdict: none" in (out / "summary.md").read_text()


def test_reference_id_falls_back_and_says_so(tmp_path):
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("code",),
                                         estimators=("twonn",), data=DATA[:3])
    out = tmp_path / "results"
    run_laws(losses, ids, histories, out, bootstrap=0, draw=False)
    assert not (out / "figures").exists()
    laws = pd.read_csv(out / "laws.csv", keep_default_na=False, na_values=[""])
    assert laws["reason"].str.contains("not measured; used twonn").all()
    assert laws["id"].to_numpy() == pytest.approx(8.0 * 1.2 * 1.02 * 1.1)   # twonn, k=2, last layer
    assert "not measured; used twonn" in (out / "summary.md").read_text()


def test_corpus_without_an_id_gets_laws_but_no_prediction(tmp_path):
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("code", "prose"),
                                         ids_for=("code",), data=DATA[:3])
    out = tmp_path / "results"
    run_laws(losses, ids, histories, out, bootstrap=0, draw=False)
    laws = pd.read_csv(out / "laws.csv", keep_default_na=False, na_values=[""])
    prose = laws[laws["corpus"] == "prose"]
    assert prose["id"].isna().all() and prose["predicted_exponent"].isna().all()
    assert prose["reason"].str.contains("no intrinsic dimension for corpus prose").all()
    assert laws[laws["corpus"] == "code"]["id"].notna().all()


def test_unconverged_runs_are_not_points_of_a_law_and_the_summary_names_them(tmp_path):
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("code",))
    table = pd.read_csv(losses)
    # an undertrained run sits far above the law: fitted, it would bend the data exponent
    bad = (table["model"] == "m") & (table["tokens"] == DATA[-1])
    table.loc[bad, "best_val_loss"] *= 1.5
    table.loc[bad, "converged"] = False
    table.to_csv(losses, index=False)

    result = run_laws(losses, ids, histories, tmp_path / "out", bootstrap=40, draw=False)
    laws = result["laws_table"].set_index(["law", "fixed", "form"])
    assert laws.loc[("data", "m", "offset"), "n_points"] == len(DATA) - 1
    assert laws.loc[("data", "xs", "offset"), "n_points"] == len(DATA)
    assert laws.loc[("joint", "", "offset"), "n_points"] == 3 * len(DATA) - 1
    assert laws.loc[("joint", "", "offset"), "exponent_D"] == pytest.approx(TRUTH["beta"], abs=0.05)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "Runs: 11 of 12 converged" in summary and f"code/m/D{DATA[-1]}/s0" in summary

    # with converged_only off, the bad run is a point again and moves the exponent
    every = run_laws(losses, ids, histories, tmp_path / "all", bootstrap=40, draw=False,
                     converged_only=False)["laws_table"].set_index(["law", "fixed", "form"])
    assert every.loc[("joint", "", "offset"), "n_points"] == 3 * len(DATA)
    joint_rmse = [t.loc[("joint", "", "offset"), "rmse_log"] for t in (laws, every)]
    assert joint_rmse[1] > 10 * joint_rmse[0]

    table.astype({"converged": object}).where(~bad, "maybe").to_csv(losses, index=False)
    with pytest.raises(DataError, match="converged.*maybe"):
        run_laws(losses, ids, histories, tmp_path / "x", bootstrap=40, draw=False)


def test_an_unidentified_offset_leaves_a_lower_bound_and_no_verdict(tmp_path):
    # no irreducible loss in the data: the joint fit puts E at 0, and the exponents it
    # reports are the whole loss's, lower bounds on the excess's
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("code",), floor=0.0)
    result = run_laws(losses, ids, histories, tmp_path / "out", bootstrap=40, draw=False)
    joint = result["laws_table"].set_index("law").loc["joint"]
    assert joint["offset_at_bound"] is True and "bound 0" in joint["reason"]
    ref = result["predictions_table"].query("is_reference").iloc[0]
    assert math.isinf(ref["observed_alpha_D_ci_high"]) and "lower bound" in ref["observed_alpha_D_source"]
    # the data's beta (0.4) bounds the excess's exponent from below, above the predicted
    # 2/(2+d) for d = 11.5: that much the data do decide
    assert ref["verdict"] == "disagrees" and "at least" in ref["reason"]
    low = ref["observed_alpha_D_ci_low"]
    assert f"[≥ {low:.3g}]" in (tmp_path / "out" / "summary.md").read_text()


def test_bad_inputs_raise_errors_that_name_the_problem(tmp_path):
    losses, ids, histories = make_inputs(tmp_path / "in", corpora=("code",), data=DATA[:3])
    table = pd.read_csv(losses).drop(columns=["params_nonembed"])
    broken = tmp_path / "broken.csv"
    table.to_csv(broken, index=False)
    with pytest.raises(DataError, match="params_nonembed"):
        run_laws(broken, ids, histories, tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        run_laws(tmp_path / "missing.csv", ids, histories, tmp_path / "out")
    with pytest.raises(DataError, match="final_val_loss|best_val_loss"):
        pd.read_csv(losses).assign(best_val_loss=-1.0).to_csv(broken, index=False)
        run_laws(broken, ids, histories, tmp_path / "out")
    assert not (tmp_path / "out" / "laws.csv").exists()


def test_history_paths_must_follow_the_layout(tmp_path):
    path = tmp_path / "somewhere" / "history.csv"
    path.parent.mkdir()
    pd.DataFrame(dict(step=[0], tokens_seen=[0], lr=[0.1], train_loss=[1.0], val_loss=[1.0],
                      elapsed_s=[0.0])).to_csv(path, index=False)
    with pytest.raises(DataError, match="history.csv: not a run path"):
        collect_histories([path], tmp_path / "histories.csv")
    assert not (tmp_path / "histories.csv").exists()


@pytest.mark.parametrize("observed, predicted, expected", [
    ((0.30, 0.25, 0.35), (0.20, 0.18, 0.22), "disagrees"),
    ((0.30, 0.28, 0.32), (0.29, 0.27, 0.31), "agrees"),
    ((0.30, 0.10, 0.90), (0.24, 0.22, 0.26), "inconclusive"),   # overlap is not agreement
    ((0.30, math.nan, math.nan), (0.31, 0.29, 0.33), "inconclusive"),
    ((math.nan, math.nan, math.nan), (0.30, 0.2, 0.4), ""),
    ((0.30, 0.25, 0.35), (math.nan, math.nan, math.nan), ""),
])
def test_verdict_decides_with_a_margin(observed, predicted, expected):
    word, line = verdict(observed, predicted, 0.05)
    assert word == expected
    assert line and ("no verdict" in line) == (expected == "")


def test_corpora_are_ordered_with_numbers_read_as_numbers():
    from idscaling.tables import natural_order

    assert natural_order(["synth-d16", "synth-d2", "python", "synth-d4", "synth-d8"]) == [
        "python", "synth-d2", "synth-d4", "synth-d8", "synth-d16"]
