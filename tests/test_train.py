"""The training engine: outputs, schedule, data windows, resume, failures, DDP."""

import csv
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from idscaling.devices import peak_flops
from idscaling.errors import ConfigError, DataError, TrainingError
from idscaling.model import GPT, GPTConfig
from idscaling.schedule import TrainSettings, cooldown_after, lr_at, planned_cooldown
from idscaling.train import (
    make_optimizer,
    optimizer_step,
    train_run,
    train_window_starts,
    val_window_starts,
)

VOCAB = 96  # not a multiple of 64: the padded vocabulary is exercised
SHAPE = {"n_layer": 1, "n_embd": 16, "n_head": 2}
TRAIN = {
    "context": 16, "batch_size": 8, "lr": 3e-2, "warmup_steps": 2, "max_steps": 12,
    "eval_every": 4, "eval_tokens": 256, "checkpoint_every": 4, "early_stop_patience": 0,
    "log_every": 2,
}
DESIGN_METRICS = {"best_val_loss", "final_val_loss", "train_loss", "steps", "tokens_seen", "epochs",
                  "tokens_per_s", "wall_s", "device", "params", "params_nonembed", "seed"}


def write_tokens(d: Path, n_train=6000, n_val=1200, period=7, vocab=VOCAB, dtype="uint16") -> Path:
    """Learnable token files: a noisy periodic sequence, so the loss can fall."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def ids(n):
        base = (np.arange(n) % period) * 5 % vocab
        noise = rng.random(n) < 0.1
        return np.where(noise, rng.integers(0, vocab, n), base).astype(dtype)

    ids(n_train).tofile(d / "train.bin")
    ids(n_val).tofile(d / "val.bin")
    meta = dict(vocab_size=vocab, eot_id=0, dtype=dtype, train_tokens=n_train, val_tokens=n_val)
    (d / "meta.json").write_text(json.dumps(meta))
    return d


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens"))


def run(data: Path, run_dir: Path, tokens=4000, seed=0, **train_overrides) -> dict:
    kw = {k: train_overrides.pop(k) for k in ("step_callback", "ckpt_dir", "snapshots")
          if k in train_overrides}
    return train_run(data / "train.bin", data / "val.bin", data / "meta.json", run_dir,
                     model=SHAPE, tokens=tokens, seed=seed, train={**TRAIN, **train_overrides},
                     threads=1, **kw)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted run, shared by the tests that compare against it."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    return run_dir, run(data, run_dir)


class Interrupt(Exception):
    pass


def interrupt_at(k):
    def callback(step):
        if step == k:
            raise Interrupt(step)
    return callback


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------- settings


def test_lr_schedule_warms_up_then_decays_to_floor():
    s = TrainSettings(lr=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=110)
    lrs = [lr_at(i, s) for i in range(120)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # warmup rises
    assert all(a >= b for a, b in zip(lrs[9:110], lrs[10:111]))  # cosine falls
    assert lrs[60] == pytest.approx(0.55e-3)  # half way: mean of peak and floor
    assert lrs[110] == pytest.approx(1e-4) and lrs[119] == pytest.approx(1e-4)


def test_weight_decay_on_weight_matrices_and_embeddings_only():
    model = GPT(GPTConfig(vocab_size=64, n_layer=2, n_embd=16, n_head=2, context=8))
    opt = make_optimizer(model, TrainSettings(weight_decay=0.1), fused=False)
    decay = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert set(decay) == {0.1, 0.0}
    for name, p in model.named_parameters():
        # LayerNorm gains and every bias are left alone; matrices and embeddings decay
        exempt = name.endswith(".bias") or ".ln_" in name
        assert (id(p) in decay[0.0 if exempt else 0.1]), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_gradients_are_clipped_to_the_configured_norm(clip):
    model = GPT(GPTConfig(vocab_size=64, n_layer=1, n_embd=16, n_head=2, context=8))
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    n = sum(p.numel() for p in model.parameters())
    optimizer_step(model, torch.optim.SGD(model.parameters(), lr=1.0), None, clip)
    step = torch.cat([(b - p.detach()).ravel() for b, p in zip(before, model.parameters())])
    # plain SGD with lr 1 moves the weights by the (clipped) gradient itself
    assert step.norm().item() == pytest.approx(clip if clip else 100.0 * n ** 0.5, rel=1e-4)
    assert all(p.grad is None for p in model.parameters())


def test_wsd_schedule_is_constant_then_decays_linearly_to_floor():
    s = TrainSettings(lr=1e-3, min_lr_ratio=0.1, warmup_steps=10, max_steps=120,
                      schedule="wsd", cooldown_fraction=0.2)
    assert planned_cooldown(s) == (100, 20)  # 20 steps: a fifth of the 100 before it
    lrs = [lr_at(i, s) for i in range(130)]
    assert lrs[0] == pytest.approx(1e-4) and all(x == 1e-3 for x in lrs[9:100])
    assert all(a > b for a, b in zip(lrs[99:119], lrs[100:120]))  # the decay falls
    steps = np.diff(lrs[100:120])
    assert np.allclose(steps, steps[0])  # linearly
    assert lrs[119] == pytest.approx(1e-4) and lrs[129] == pytest.approx(1e-4)
    # a plateau moves the decay: it starts where told and lasts a fifth of what came before
    assert cooldown_after(40, s) == (40, 8)
    early = [lr_at(i, s, (40, 8)) for i in range(50)]
    assert early[39] == 1e-3 and early[47] == pytest.approx(1e-4) and early[40] < 1e-3


def test_settings_take_defaults_and_reject_bad_values():
    s = TrainSettings.from_dict({"lr": 2e-3, "micro_batch_size": None})
    assert s.lr == 2e-3 and s.context == 128 and s.micro_batch_size is None and s.val_seed == 1234
    with pytest.raises(ConfigError, match="micro_batch_size"):
        TrainSettings.from_dict({"batch_size": 32, "micro_batch_size": 5})
    with pytest.raises(ConfigError, match="precision"):
        TrainSettings.from_dict({"precision": "fp8"})
    with pytest.raises(ConfigError, match="max_steps"):
        TrainSettings.from_dict({"max_steps": 0})
    with pytest.raises(ConfigError, match="train.lr: .1e-3. is not of type .number."):
        TrainSettings.from_dict({"lr": "1e-3"})  # YAML 1.1 reads 1e-3 (no dot) as a string


def test_peak_flops_for_mfu_by_device_name_and_precision():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16", None) == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe", "bf16", None) == pytest.approx(756e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "fp32", None) == pytest.approx(156e12)  # TF32
    assert peak_flops("NVIDIA L40S", "bf16", None) == pytest.approx(362e12)  # not "L4"
    assert peak_flops("Some Future GPU", "bf16", None) is None
    assert peak_flops("Some Future GPU", "bf16", 1e15) == 1e15


# ------------------------------------------------------------------------- data


def test_val_windows_depend_on_val_seed_only_and_do_not_overlap():
    a = val_window_starts(10_000, 16, 1600, val_seed=1)
    assert np.array_equal(a, val_window_starts(10_000, 16, 1600, val_seed=1))
    assert not np.array_equal(a, val_window_starts(10_000, 16, 1600, val_seed=2))
    assert len(a) == 100 and np.all(np.diff(a) >= 16) and a.max() + 16 < 10_000
    everything = val_window_starts(100, 16, 10**6, val_seed=1)  # more asked than there is
    assert np.array_equal(everything, np.arange(6) * 16)
    with pytest.raises(DataError, match="val.bin holds 16 tokens"):
        val_window_starts(16, 16, 256, val_seed=1)


def test_train_windows_stay_inside_the_subset_and_differ_by_rank_and_step():
    starts = train_window_starts(0, 0, 3, 10_000, tokens=100, context=16)
    assert starts.min() >= 0 and starts.max() + 16 <= 99  # the target of the last id is id 99
    assert np.array_equal(starts, train_window_starts(0, 0, 3, 10_000, 100, 16))
    assert not np.array_equal(starts, train_window_starts(0, 1, 3, 10_000, 100, 16))
    assert not np.array_equal(starts, train_window_starts(0, 0, 4, 10_000, 100, 16))


@pytest.mark.parametrize("tokens, message", [
    (16, "data_tokens 16 is not more than train.context 16"),
    (7000, "has 6,000 train tokens; data_tokens asks for 7,000"),
])
def test_token_count_outside_range_names_both_numbers(data, tmp_path, tokens, message):
    with pytest.raises(DataError, match=message):
        run(data, tmp_path / "run", tokens=tokens)


def test_bad_token_files_are_named(tmp_path):
    d = write_tokens(tmp_path / "short", n_val=10)
    with pytest.raises(DataError, match="val.bin holds 10 tokens"):
        run(d, tmp_path / "run")
    d = write_tokens(tmp_path / "ids", vocab=200)
    meta = json.loads((d / "meta.json").read_text())
    (d / "meta.json").write_text(json.dumps({**meta, "vocab_size": VOCAB}))
    with pytest.raises(DataError, match="train.bin holds id"):
        run(d, tmp_path / "run")
    (d / "meta.json").write_text(json.dumps({**meta, "train_tokens": 5000}))
    with pytest.raises(DataError, match="train.bin has 12000 bytes"):
        run(d, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


# -------------------------------------------------------------------- a full run


def test_run_writes_outputs_and_learns(reference):
    run_dir, m = reference
    assert DESIGN_METRICS <= set(m)
    assert m == json.loads((run_dir / "metrics.json").read_text())
    assert m["steps"] == 12 and m["tokens_seen"] == 12 * 8 * 16
    assert m["epochs"] == pytest.approx(12 * 8 * 16 / 4000)
    assert m["device"] == "cpu" and m["precision"] == "fp32" and m["tokens_per_s"] > 0
    model = GPT(GPTConfig(vocab_size=VOCAB, context=16, **SHAPE))
    assert (m["params"], m["params_nonembed"]) == (model.num_params(), model.num_params(True))
    assert m["best_val_loss"] <= m["final_val_loss"]
    assert m["final_val_loss"] < math.log(VOCAB) - 1.0  # the periodic signal is learnt

    rows = read_history(run_dir)
    assert list(rows[0]) == ["step", "tokens_seen", "lr", "train_loss", "val_loss", "elapsed_s"]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8, 10, 12]
    val = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert len(val) == 3 and val[-1] == pytest.approx(m["final_val_loss"], rel=1e-5)
    assert min(val) == pytest.approx(m["best_val_loss"], rel=1e-5)
    assert not [p for p in run_dir.rglob("*.tmp")]


def test_checkpoint_loads_weights_only_and_matches_export(reference):
    transformers = pytest.importorskip("transformers")
    run_dir, _ = reference
    ckpt = torch.load(run_dir / "ckpt" / "last.pt", weights_only=True)
    assert ckpt["state"]["step"] == 12 and ckpt["state"]["done"]
    model = GPT(GPTConfig(vocab_size=VOCAB, context=16, **SHAPE)).eval()
    model.load_state_dict(ckpt["model"])
    hf = transformers.GPT2LMHeadModel.from_pretrained(run_dir).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], hf(idx).logits, atol=1e-5)


def test_gradient_accumulation_matches_one_big_batch(data, tmp_path, reference):
    _, m = reference
    acc = run(data, tmp_path / "run", micro_batch_size=2)  # 4 micro-steps of 2 sequences
    assert acc["final_val_loss"] == pytest.approx(m["final_val_loss"], abs=1e-5)
    assert acc["train_loss"] == pytest.approx(m["train_loss"], abs=1e-5)


def test_seed_changes_the_run_but_not_the_validation_windows(data, tmp_path, reference, monkeypatch):
    import idscaling.train as train_mod

    seen = []
    original = train_mod._evaluate
    monkeypatch.setattr(train_mod, "_evaluate",
                        lambda *a, **k: seen.append(a[2].copy()) or original(*a, **k))
    _, m = reference
    other = run(data, tmp_path / "run", seed=1, max_steps=4)
    first = seen[0]
    run(data, tmp_path / "run2", seed=2, max_steps=4)
    assert np.array_equal(first, seen[-1])
    assert other["final_val_loss"] != m["final_val_loss"]


# ------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_to_the_same_loss(data, tmp_path, reference, caplog):
    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        run(data, run_dir, step_callback=interrupt_at(6))  # last checkpoint: step 4
    assert not (run_dir / "metrics.json").exists()
    with caplog.at_level(logging.INFO, logger="idscaling"):
        m = run(data, run_dir)
    assert "resuming from checkpoint" in caplog.text and "at step 4" in caplog.text
    assert m["resumed_from"] == 4 and m["steps"] == ref["steps"]
    for key in ("final_val_loss", "best_val_loss", "train_loss"):
        assert m[key] == pytest.approx(ref[key], abs=1e-5)
    ours, theirs = read_history(run_dir), read_history(ref_dir)
    assert [r["val_loss"] for r in ours] == [r["val_loss"] for r in theirs]


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_snapshots_are_log_spaced_survive_a_resume_and_end_at_the_final_model(data, tmp_path,
                                                                              reference):
    whole = tmp_path / "whole"
    run(data, whole, snapshots=True, eval_every=2)
    # eval_every 2, 12 steps: 0, then 2 x 2^j (2, 4, 8; not 6 or 10), then the end
    steps = json.loads((whole / "snapshots" / "steps.json").read_text())["steps"]
    assert steps == [0, 2, 4, 8, 12]
    final, last = _weights(whole / "model.safetensors"), _weights(whole / "snapshots/step12/model.safetensors")
    assert all(torch.equal(final[k], last[k]) for k in final)
    first = _weights(whole / "snapshots/step0/model.safetensors")
    assert not torch.equal(first["transformer.h.0.mlp.c_fc.weight"],
                           final["transformer.h.0.mlp.c_fc.weight"])
    # killed after the checkpoint of step 8: the resumed run still has the earlier ones
    resumed = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        run(data, resumed, snapshots=True, eval_every=2, step_callback=interrupt_at(10))
    run(data, resumed, snapshots=True, eval_every=2)
    assert json.loads((resumed / "snapshots" / "steps.json").read_text())["steps"] == steps
    for step in steps:
        a = _weights(whole / f"snapshots/step{step}/model.safetensors")
        b = _weights(resumed / f"snapshots/step{step}/model.safetensors")
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), step
    # a run without snapshots lists none, so every run has the same outputs
    ref_dir, _ = reference
    assert json.loads((ref_dir / "snapshots" / "steps.json").read_text()) == {"steps": []}


def test_resume_with_dropout_replays_the_same_masks(data, tmp_path):
    ref = run(data, tmp_path / "ref", dropout=0.2, max_steps=8)
    with pytest.raises(Interrupt):
        run(data, tmp_path / "run", dropout=0.2, max_steps=8, step_callback=interrupt_at(5))
    m = run(data, tmp_path / "run", dropout=0.2, max_steps=8)
    assert m["resumed_from"] == 4
    assert m["final_val_loss"] == pytest.approx(ref["final_val_loss"], abs=1e-5)
    assert m["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)


def test_run_killed_by_sigkill_resumes_to_the_same_loss(data, tmp_path, reference):
    _, ref = reference
    run_dir = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from idscaling.train import train_run
        d = Path({str(data)!r})
        def die(step):
            if step == 8:  # just after the checkpoint at step 8
                os.kill(os.getpid(), signal.SIGKILL)
        train_run(d / "train.bin", d / "val.bin", d / "meta.json", Path({str(run_dir)!r}),
                  model={SHAPE!r}, tokens=4000, seed=0, train={TRAIN!r}, threads=1, step_callback=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run_dir / "metrics.json").exists()
    m = run(data, run_dir)
    assert m["resumed_from"] == 8 and m["steps"] == ref["steps"]
    assert m["final_val_loss"] == pytest.approx(ref["final_val_loss"], abs=1e-5)
    assert m["train_loss"] == pytest.approx(ref["train_loss"], abs=1e-5)


def test_finished_run_called_again_only_rewrites_outputs(data, tmp_path, reference):
    ref_dir, ref = reference
    run_dir = tmp_path / "run"
    shutil.copytree(ref_dir, run_dir)
    for name in ("metrics.json", "history.csv", "model.safetensors", "config.json"):
        (run_dir / name).unlink()  # as Snakemake does before it reruns a job
    # what a process killed inside atomic writes leaves behind
    stale = [run_dir / "ckpt" / ".last.pt.abc123.tmp", run_dir / ".metrics.json.xyz.tmp"]
    for path in stale:
        path.write_text("half")
    m = run(data, run_dir, step_callback=lambda step: pytest.fail("trained again"))
    assert m["resumed_from"] == 12
    assert not any(path.exists() for path in stale)
    assert {k: m[k] for k in DESIGN_METRICS} == {k: ref[k] for k in DESIGN_METRICS}
    assert (run_dir / "history.csv").read_text() == (ref_dir / "history.csv").read_text()
    assert (run_dir / "model.safetensors").read_bytes() == (ref_dir / "model.safetensors").read_bytes()


def test_checkpoint_of_another_configuration_is_not_resumed(data, tmp_path, caplog):
    run_dir = tmp_path / "run"
    with pytest.raises(Interrupt):
        run(data, run_dir, lr=1e-2, step_callback=interrupt_at(5))
    with caplog.at_level(logging.WARNING, logger="idscaling"):
        m = run(data, run_dir, max_steps=4)
    assert "another configuration" in caplog.text
    assert m["resumed_from"] is None and m["steps"] == 4


# ------------------------------------------------------------- stopping and failure


def test_early_stopping_after_patience_evals_without_improvement(data, tmp_path, monkeypatch):
    import idscaling.train as train_mod

    losses = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    monkeypatch.setattr(train_mod, "_evaluate", lambda *a, **k: next(losses))
    # D = 256 tokens is two steps of 128: one epoch is behind every evaluation here
    m = run(data, tmp_path / "run", tokens=256, early_stop_patience=2, eval_every=2, max_steps=20)
    assert m["stopped_early"] and m["steps"] == 8
    assert (m["best_val_loss"], m["best_step"], m["final_val_loss"]) == (2.0, 4, 2.6)
    assert not m["converged"]  # plateaued, but stopped at a high lr: not annealed


def test_wsd_plateau_starts_the_decay_instead_of_stopping(data, tmp_path, monkeypatch):
    import idscaling.train as train_mod

    losses = iter([3.0, 2.0, 2.5, 2.6, 2.4, 1.9, 1.8, 1.85, 1.9, 2.0])
    monkeypatch.setattr(train_mod, "_evaluate", lambda *a, **k: next(losses))
    m = run(data, tmp_path / "run", tokens=256, early_stop_patience=2, eval_every=2,
            max_steps=40, schedule="wsd", cooldown_fraction=0.5, warmup_steps=0,
            cooldown_from="plateau")
    # best 2.0 at step 4; steps 6 and 8 do not improve: the decay starts at step 8 and
    # runs 4 more steps (half of 8), and the run ends annealed at step 12
    assert m["stopped_early"] and m["cooldown_start"] == 8 and m["steps"] == 12
    assert (m["best_val_loss"], m["best_step"]) == (1.9, 12)
    assert m["converged"]  # plateaued, then annealed
    lrs = [float(r["lr"]) for r in read_history(tmp_path / "run")]
    assert lrs[-1] == pytest.approx(TRAIN["lr"] * TrainSettings().min_lr_ratio)
    assert all(x == TRAIN["lr"] for x in lrs[:4])  # constant until the plateau


@pytest.mark.parametrize("cooldown_from", ["best", "plateau"])
def test_wsd_decay_starts_from_the_best_state(data, tmp_path, monkeypatch, cooldown_from):
    import idscaling.train as train_mod

    losses = iter([3.0, 2.0, 2.5, 2.6, 2.4, 2.3, 2.2])
    seen = {}

    def evaluate(model, *a, **k):
        seen["model"] = model
        seen.setdefault("params", []).append(
            {n: p.detach().clone() for n, p in model.named_parameters()})
        return next(losses)

    def after_step(step):
        if step == 8:  # the plateau: the decay's first step comes next
            seen["at_plateau"] = {n: p.detach().clone() for n, p in seen["model"].named_parameters()}

    monkeypatch.setattr(train_mod, "_evaluate", evaluate)
    m = run(data, tmp_path / "run", tokens=256, early_stop_patience=2, eval_every=2,
            max_steps=40, schedule="wsd", cooldown_fraction=0.5, warmup_steps=0,
            cooldown_from=cooldown_from, step_callback=after_step)
    best, plateau = seen["params"][1], seen["params"][3]  # evaluations at steps 4 and 8
    same = lambda a, b: all(torch.equal(a[n], b[n]) for n in a)
    if cooldown_from == "best":
        # the decay starts from the weights of step 4 and lasts half of those 4 steps
        assert same(seen["at_plateau"], best) and not same(seen["at_plateau"], plateau)
        assert (m["cooldown_start"], m["steps"]) == (8, 10)
    else:
        assert same(seen["at_plateau"], plateau)
        assert (m["cooldown_start"], m["steps"]) == (8, 12)
    assert m["converged"]


def test_no_plateau_before_the_run_has_seen_its_data_once(data, tmp_path, monkeypatch):
    import idscaling.train as train_mod

    monkeypatch.setattr(train_mod, "_evaluate", lambda *a, **k: 2.0)  # flat from the start
    # D = 4000 tokens at 128 a step: one epoch ends after step 31
    m = run(data, tmp_path / "run", tokens=4000, early_stop_patience=2, eval_every=4,
            max_steps=60)
    assert m["stopped_early"] and m["steps"] == 32  # the first evaluation past one epoch


def test_wsd_run_that_never_plateaus_is_not_converged(data, tmp_path, monkeypatch):
    import idscaling.train as train_mod

    losses = iter([3.0 - 0.1 * i for i in range(20)])  # still improving at every evaluation
    monkeypatch.setattr(train_mod, "_evaluate", lambda *a, **k: next(losses))
    m = run(data, tmp_path / "run", early_stop_patience=2, eval_every=2, max_steps=12,
            schedule="wsd", warmup_steps=0)
    # the planned decay ends the run annealed at max_steps, but the loss never went flat
    assert m["steps"] == 12 and not m["stopped_early"] and not m["converged"]


def test_wsd_run_resumes_before_its_plateau_with_the_best_state(data, tmp_path):
    # patience 3: the best state is kept for three evaluations before the decay starts
    kw = dict(schedule="wsd", early_stop_patience=3, eval_every=2, max_steps=200, lr=3e-2,
              cooldown_fraction=0.5, checkpoint_every=2, warmup_steps=0)
    ref = run(data, tmp_path / "ref", **kw)
    assert ref["cooldown_start"] is not None and ref["steps"] < 200
    stop = ref["cooldown_start"] - 2  # a checkpoint that holds the best state, not yet used
    with pytest.raises(Interrupt):
        run(data, tmp_path / "run", step_callback=interrupt_at(stop + 1), **kw)
    m = run(data, tmp_path / "run", **kw)
    assert m["resumed_from"] == stop
    assert (m["steps"], m["cooldown_start"]) == (ref["steps"], ref["cooldown_start"])
    assert m["final_val_loss"] == pytest.approx(ref["final_val_loss"], abs=1e-5)


def test_wsd_run_resumes_inside_its_decay(data, tmp_path):
    kw = dict(schedule="wsd", early_stop_patience=1, eval_every=2, max_steps=40, tokens=256,
              cooldown_fraction=0.5, checkpoint_every=2, warmup_steps=0, cooldown_from="plateau")
    ref = run(data, tmp_path / "ref", **kw)
    assert ref["cooldown_start"] is not None and ref["steps"] < 40
    stop = ref["cooldown_start"] + 2  # after the checkpoint that records the decay
    with pytest.raises(Interrupt):
        run(data, tmp_path / "run", step_callback=interrupt_at(stop + 1), **kw)
    m = run(data, tmp_path / "run", **kw)
    assert m["resumed_from"] == stop
    assert (m["steps"], m["cooldown_start"]) == (ref["steps"], ref["cooldown_start"])
    assert m["best_val_loss"] == pytest.approx(ref["best_val_loss"], abs=1e-5)


def test_non_finite_loss_stops_without_metrics(data, tmp_path):
    def poison(step):
        if step == 3:
            torch.nn.init.constant_(poisoned[0], float("nan"))

    poisoned = []
    original = GPT.__init__

    def capture(self, cfg):
        original(self, cfg)
        poisoned.append(self.transformer.wpe.weight)

    GPT.__init__ = capture
    try:
        with pytest.raises(TrainingError, match="loss is nan at step 4"):
            run(data, tmp_path / "run", step_callback=poison)
    finally:
        GPT.__init__ = original
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_fp16_on_cpu_and_absent_cuda_are_refused(data, tmp_path):
    with pytest.raises(ConfigError, match="fp16"):
        run(data, tmp_path / "run", precision="fp16")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train_run(data / "train.bin", data / "val.bin", data / "meta.json", tmp_path / "run",
                      model=SHAPE, tokens=4000, seed=0, train=TRAIN, device="cuda")


def test_bf16_autocast_runs_on_cpu(data, tmp_path, reference):
    _, ref = reference
    m = run(data, tmp_path / "run", precision="bf16")
    assert m["precision"] == "bf16" and m["steps"] == 12
    # bf16 matmuls change the numbers a little, not the outcome
    assert m["final_val_loss"] != ref["final_val_loss"]
    assert m["final_val_loss"] == pytest.approx(ref["final_val_loss"], abs=0.2)


# --------------------------------------------------------------------------- DDP


@pytest.mark.slow
def test_two_process_gloo_run_with_torchrun(data, tmp_path):
    run_dir = tmp_path / "run"
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from idscaling.train import train_run
        d = Path({str(data)!r})
        train_run(d / "train.bin", d / "val.bin", d / "meta.json", Path({str(run_dir)!r}),
                  model={SHAPE!r}, tokens=4000, seed=0, train={TRAIN!r}, threads=2)
    """))
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(torchrun + [str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["steps"] == 12 and m["tokens_seen"] == 12 * 8 * 16
    assert m["final_val_loss"] < math.log(VOCAB) - 1.0
