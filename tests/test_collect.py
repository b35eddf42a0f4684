"""The collectors: per-run metrics and per-corpus ID files into the contract's tables."""

import json

import pandas as pd
import pytest

from idscaling.tables import ID_COLUMNS, LOSS_COLUMNS, collect_ids, collect_losses, collect_subsets
from idscaling.errors import DataError


def _metrics(tmp_path, corpus, model, tokens, seed, loss, n_embd, **drop):
    run = tmp_path / "results" / corpus / "runs" / model / f"D{tokens}" / f"s{seed}"
    run.mkdir(parents=True)
    metrics = {"best_val_loss": loss, "final_val_loss": loss + 0.1, "train_loss": loss - 0.1,
               "steps": 10, "tokens_seen": 10 * tokens, "epochs": 1.5, "tokens_per_s": 1e4,
               "wall_s": 3.0, "device": "cpu", "converged": True, "params": 1000 + n_embd ** 2 * 12,
               "params_nonembed": n_embd ** 2 * 12, "seed": seed, "n_layer": 1,
               "n_embd": n_embd, "n_head": 2}
    for key in drop:
        metrics.pop(key)
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run / "metrics.json"


def test_losses_table_has_the_contract_columns_sorted_by_size(tmp_path):
    paths = [_metrics(tmp_path, "c", "big", 2000, 0, 3.0, 64),
             _metrics(tmp_path, "c", "small", 4000, 1, 4.0, 16),
             _metrics(tmp_path, "c", "small", 2000, 1, 4.5, 16)]
    table = collect_losses(paths, tmp_path / "losses.csv")
    assert list(table.columns) == LOSS_COLUMNS
    written = pd.read_csv(tmp_path / "losses.csv")
    assert written["model"].tolist() == ["small", "small", "big"]
    assert written["tokens"].tolist() == [2000, 4000, 2000]
    assert written["seed"].tolist() == [1, 1, 0]
    assert written["best_val_loss"].tolist() == [4.5, 4.0, 3.0]


def test_missing_metric_is_named(tmp_path):
    path = _metrics(tmp_path, "c", "m", 2000, 0, 3.0, 16, best_val_loss=None)
    with pytest.raises(DataError, match="best_val_loss"):
        collect_losses([path], tmp_path / "losses.csv")
    assert not (tmp_path / "losses.csv").exists()


def test_path_outside_the_layout_is_refused(tmp_path):
    stray = tmp_path / "metrics.json"
    stray.write_text("{}")
    with pytest.raises(DataError, match="results layout"):
        collect_losses([stray], tmp_path / "losses.csv")


def test_id_table_puts_the_contract_columns_first(tmp_path):
    folder = tmp_path / "results" / "prose" / "intrinsic_dim"
    folder.mkdir(parents=True)
    rows = [{"layer": 2, "estimator": "mle", "k": 20, "metric": "cosine", "protocol": "batched",
             "n_points": 100, "n_duplicates": 3, "id": 7.5, "ci_low": 7.0, "ci_high": 8.0,
             "n_batches": 1}]
    (folder / "trained.json").write_text(json.dumps({"rows": rows}))
    table = collect_ids([folder / "trained.json"], tmp_path / "ids.csv")
    assert list(table.columns) == ID_COLUMNS + ["n_batches"]
    assert table.loc[0, "corpus"] == "prose" and table.loc[0, "embedder"] == "trained"
    assert table.loc[0, "id"] == 7.5


def test_data_grid_table_orders_corpora_and_sizes_and_names_a_bad_file(tmp_path):
    paths = []
    for corpus, tokens in [("b", 2000), ("a", 4000), ("a", 1000)]:
        path = tmp_path / corpus / f"D{tokens}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(dict(corpus=corpus, tokens=tokens, train_tokens=10_000,
                                        fraction=tokens / 10_000, docs=3, docs_exact=True,
                                        context=32)))
        paths.append(path)
    table = collect_subsets(paths, tmp_path / "grid.csv")
    assert list(zip(table["corpus"], table["tokens"])) == [("a", 1000), ("a", 4000), ("b", 2000)]
    paths[0].write_text(json.dumps({"corpus": "b", "tokens": 2000}))
    with pytest.raises(DataError, match="D2000.json: subset summary lacks train_tokens"):
        collect_subsets(paths, tmp_path / "grid2.csv")
    assert not (tmp_path / "grid2.csv").exists()
