"""The training engine: one GPT run on a prefix of a corpus's tokens, resumable.

`train_run` trains a GPT of the configured shape on the first D tokens of train.bin,
evaluates on fixed windows of val.bin, and leaves metrics.json, history.csv and a
transformers-compatible model in the run directory. Its state is checkpointed outside
those outputs, so a run killed at any moment (SIGKILL included) picks up where its last
checkpoint left off and ends at the same step with the same loss.

Randomness is keyed by step: the windows drawn and the dropout masks of step s depend on
(seed, rank, s) only. A resumed run therefore replays exactly what the uninterrupted run
would have done, without restoring generator states across processes or ranks.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import numbers
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from idscaling.checkpoint import (CHECKPOINT_NAME, HISTORY_COLUMNS, RunState, is_snapshot_step,
                                  publish_snapshots,
                                  resume, run_signature, save_checkpoint, snapshot_state)
from idscaling.config import data_size_problem
from idscaling.devices import (Dist, autocast, choose_device, choose_precision, init_distributed,
                               peak_flops, setup_device, torch_version)
from idscaling.errors import ConfigError, DataError, TrainingError
from idscaling.files import write_json, write_text
from idscaling.model import GPT, GPTConfig, export_hf
from idscaling.schedule import TrainSettings, cooldown_after, lr_at, planned_cooldown
from idscaling.tokenization import open_tokens, read_tokens_meta

log = logging.getLogger(__name__)

OUTPUTS = ("model.safetensors", "config.json", "history.csv", "metrics.json")
TIMING_WARMUP_STEPS = 5  # the first steps of a process compile and warm caches: not timed


# ----------------------------------------------------------------------------- data


def val_window_starts(n_val: int, context: int, eval_tokens: int, val_seed: int) -> np.ndarray:
    """Start offsets of the validation windows: a function of val.bin and the settings only.

    Every run of a corpus sees the same windows, so their losses compare. The windows do
    not overlap; if val.bin holds fewer than eval_tokens, all of it is used.
    """
    n_avail = (n_val - 1) // context  # each window needs context + 1 ids for its targets
    if n_avail < 1:
        raise DataError(f"val.bin holds {n_val} tokens, fewer than one window of context {context} + 1")
    n_want = max(1, eval_tokens // context)
    if n_want >= n_avail:
        chosen = np.arange(n_avail)
    else:
        chosen = np.sort(np.random.default_rng(val_seed).choice(n_avail, size=n_want, replace=False))
    return chosen * context


def train_window_starts(seed: int, rank: int, step: int, n: int, tokens: int, context: int) -> np.ndarray:
    """Random window starts in the first `tokens` ids for optimiser step `step` of `rank`."""
    rng = np.random.default_rng([seed, rank, step, 0])
    return rng.integers(0, tokens - context, size=n)


def get_windows(data: np.ndarray, starts: np.ndarray, context: int, device: torch.device):
    """Inputs and next-token targets, each (len(starts), context) int64 on `device`."""
    rows = np.asarray(data[starts[:, None] + np.arange(context + 1)], dtype=np.int64)
    t = torch.from_numpy(rows)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


def _remove_stale_temps(run_dir: Path, ckpt_dir: Path) -> None:
    # a process killed inside atomic_path leaves its temp file; the rename never happened
    for folder, name in [(ckpt_dir, CHECKPOINT_NAME)] + [(run_dir, name) for name in OUTPUTS]:
        for tmp in folder.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------------ the run


def train_run(
    train_bin: Path,
    val_bin: Path,
    tokens_meta: Path,
    run_dir: Path,
    *,
    model: dict,
    tokens: int,
    seed: int,
    train: dict,
    threads: int | None = None,
    ckpt_dir: Path | None = None,
    device: str | None = None,
    snapshots: bool = False,
    step_callback: Callable[[int], None] | None = None,
) -> dict:
    """Train one GPT on train.bin[:tokens]; write metrics.json, history.csv,
    model.safetensors and config.json into `run_dir`; return the metrics.

    `model` holds n_layer, n_embd, n_head (and optionally bias); `train` is the config's
    train: section. Checkpoints go to `ckpt_dir` (default run_dir/ckpt) every
    train.checkpoint_every steps and at the end; a call finds the last one and resumes
    from it. When launched by torchrun the run trains with DDP and rank 0 writes.
    `step_callback(step)` is called after each optimiser step and its checkpoint (tests
    use it to interrupt a run).

    snapshots: also keep the weights at step 0 and at eval_every x 1, 2, 4, 8, ... steps
    (log-spaced, so early learning is as visible as late) and at the end, in
    run_dir/snapshots/step{N}/ (the layout of the final model), listed in
    run_dir/snapshots/steps.json. They collect in the checkpoint directory while the run
    trains, so a resumed run keeps the ones written before it was killed. Without it,
    steps.json lists none: every run has the same outputs.
    """
    run_dir = Path(run_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir is not None else run_dir / "ckpt"
    s = TrainSettings.from_dict(train)
    meta = read_tokens_meta(tokens_meta)
    for key in ("n_layer", "n_embd", "n_head"):
        if key not in model:
            raise ConfigError(f"models: the model shape lacks {key!r} (got {sorted(model)})")
    if not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(tokens, numbers.Integral):
        raise ConfigError(f"tokens (D) must be an integer, got {tokens!r}")
    tokens, seed = int(tokens), int(seed)
    problem = data_size_problem(tokens, s.context, meta["train_tokens"], str(train_bin))
    if problem:
        raise DataError(problem)
    model_cfg = GPTConfig(
        vocab_size=meta["vocab_size"],
        n_layer=model["n_layer"],
        n_embd=model["n_embd"],
        n_head=model["n_head"],
        context=s.context,
        dropout=s.dropout,
        bias=model.get("bias", True),
    )
    device_type, device_why = choose_device(device)
    dist = init_distributed(device_type)
    try:
        run = _prepare(Path(train_bin), Path(val_bin), meta, run_dir, ckpt_dir, model_cfg,
                       tokens, seed, s, threads, device, device_type, device_why, dist, snapshots)
        return _train(run, step_callback)
    finally:
        if dist.initialized_here:
            torch_dist.destroy_process_group()


@dataclass
class _Run:
    """What stays fixed over one run: its settings, data, devices and folders."""

    s: TrainSettings
    cfg: GPTConfig
    tokens: int
    seed: int
    meta: dict
    run_dir: Path
    ckpt_dir: Path
    dist: Dist
    dev: torch.device
    device_name: str
    precision: str
    train_data: np.ndarray
    val_data: np.ndarray
    val_starts: np.ndarray
    rank_batch: int  # sequences per rank per step
    micro: int       # sequences per forward pass
    snapshots: bool

    @property
    def batch_tokens(self) -> int:
        return self.s.batch_size * self.s.context

    @property
    def snapshot_dir(self) -> Path:
        return self.ckpt_dir / "snapshots"

    def log(self, *args) -> None:
        if self.dist.is_main:
            log.info(*args)


def _prepare(train_bin, val_bin, meta, run_dir, ckpt_dir, model_cfg, tokens, seed, s, threads,
             device_arg, device_type, device_why, dist, snapshots) -> _Run:
    dev, device_name = setup_device(device_type, device_arg, dist, threads)
    precision, precision_why = choose_precision(s.precision, device_type)
    if dist.is_main:
        log.info("device: %s (%s), because %s", dev, device_name, device_why)
        log.info("precision: %s, because %s", precision, precision_why)
        log.info("threads: %d; world size: %d", torch.get_num_threads(), dist.world_size)
        if s.compile and device_type != "cuda":
            log.warning("train.compile is true but the device is CPU: torch.compile is used on CUDA only")
    rank_batch, micro, _ = _batch_geometry(s, dist.world_size)
    dtype = meta["dtype"]
    train_data = open_tokens(train_bin, dtype, meta["train_tokens"], meta["vocab_size"], tokens)
    val_data = open_tokens(val_bin, dtype, meta["val_tokens"], meta["vocab_size"], meta["val_tokens"])
    val_starts = val_window_starts(len(val_data), s.context, s.eval_tokens, s.val_seed)
    run = _Run(s, model_cfg, tokens, seed, meta, run_dir, ckpt_dir, dist, dev, device_name,
               precision, train_data, val_data, val_starts, rank_batch, micro, snapshots)
    run.log("validation: %d fixed windows of %d tokens from %s (val_seed %d)",
            len(val_starts), s.context, val_bin, s.val_seed)
    return run


def _train(run: _Run, step_callback) -> dict:
    s, dist = run.s, run.dist
    session_start = time.perf_counter()
    torch.manual_seed(run.seed)  # the same initial weights on every rank
    raw_model = GPT(run.cfg).to(run.dev)
    # fused AdamW: one kernel for all parameters, on CUDA and (torch >= 2.4) on CPU, where it
    # takes ~1 ms a step against ~10 ms for the per-parameter loop at d=64
    fused = run.dev.type == "cuda" or torch_version() >= (2, 4)
    optimizer = make_optimizer(raw_model, s, fused=fused)
    scaler = torch.amp.GradScaler("cuda") if run.precision == "fp16" else None
    signature = run_signature(run.cfg, run.tokens, run.seed, s, run.meta)
    ckpt_path = run.ckpt_dir / CHECKPOINT_NAME
    state, best = _start(run, raw_model, optimizer, scaler, signature, ckpt_path, fused)
    resumed_from = state.step or None  # a fresh state is at step 0
    model, eval_model = _wrap(run, raw_model)

    session_steps, elapsed_base = 0, state.elapsed_s
    bar = tqdm(total=s.max_steps, initial=state.step, disable=not dist.is_main or state.done,
               file=sys.stderr, desc="/".join(run.run_dir.parts[-3:]), unit="step",
               mininterval=1.0, dynamic_ncols=True)
    model.train()
    while not state.done:
        step = state.step  # 0-based index of the step about to run
        t0 = time.perf_counter()
        lr = lr_at(step, s, state.cooldown)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # dropout masks keyed by (seed, rank, step), like the windows
        torch.manual_seed(int(np.random.SeedSequence([run.seed, dist.rank, step, 1]).generate_state(1)[0]))
        starts = train_window_starts(run.seed, dist.rank, step, run.rank_batch, run.tokens, s.context)
        train_loss = _forward_backward(model, run.train_data, starts, run.micro, s.context, run.dev,
                                       run.precision, scaler, dist)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"run {run.run_dir}: the training loss is {train_loss} at step {step + 1}; stopping "
                f"without writing metrics (lower train.lr or raise train.warmup_steps)"
            )
        optimizer_step(raw_model, optimizer, scaler, s.grad_clip)
        # no sync here: the next step's loss.item() waits for this optimiser step, so the
        # steady-state sum of step times is still the wall time, and the GPU stays busy
        step_s = time.perf_counter() - t0

        state.step = step = step + 1
        state.step_losses.append(train_loss)
        session_steps += 1
        if session_steps > TIMING_WARMUP_STEPS:
            state.timed_tokens += run.batch_tokens
            state.timed_s += step_s

        val_loss = None
        last = step >= s.max_steps or (state.cooldown is not None and step >= sum(state.cooldown))
        if step % s.eval_every == 0 or last:
            val_loss = _evaluate(eval_model, run.val_data, run.val_starts, s.context, run.micro,
                                 run.dev, run.precision, dist)
            if not math.isfinite(val_loss):
                raise TrainingError(f"run {run.run_dir}: the validation loss is {val_loss} at step "
                                    f"{step}; stopping without writing metrics")
            best = _after_eval(run, state, step, val_loss, last, best, raw_model, optimizer)
        state.done = last or (state.stopped_early and s.schedule != "wsd")
        state.elapsed_s = elapsed_base + time.perf_counter() - session_start
        if step % s.log_every == 0 or val_loss is not None or state.done:
            state.add_row(step, step * run.batch_tokens, lr, val_loss)
        if run.snapshots and dist.is_main and (state.done or is_snapshot_step(step, s.eval_every)):
            # before the checkpoint: a run killed between the two redoes this step
            export_hf(raw_model, run.snapshot_dir / f"step{step}", eot_id=run.meta["eot_id"])
        if (step % s.checkpoint_every == 0 or state.done) and dist.is_main:
            save_checkpoint(ckpt_path, model=raw_model, optimizer=optimizer, scaler=scaler,
                            state=state, signature=signature, world_size=dist.world_size,
                            best=None if state.done else best)
        if dist.is_main:
            tok_s = state.timed_tokens / state.timed_s if state.timed_s else run.batch_tokens / step_s
            postfix = {"loss": f"{train_loss:.3f}", "tok/s": f"{tok_s:,.0f}"}
            if state.final_val_loss is not None:
                postfix["val"] = f"{state.final_val_loss:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        if step_callback is not None:
            step_callback(step)
    bar.close()
    return _finish(run, raw_model, state, resumed_from)


def _start(run: _Run, model: GPT, optimizer, scaler, signature: dict, ckpt_path: Path,
           fused: bool):
    """Resume from the checkpoint, or start afresh (clearing stale snapshots and keeping
    step 0's); log the plan. Returns (run state, best state or None)."""
    s, dist = run.s, run.dist
    if dist.is_main:
        run.ckpt_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(run.run_dir, run.ckpt_dir)
    state, best = resume(ckpt_path, signature, model, optimizer, scaler, run.dev, dist)
    if state.step or not dist.is_main:
        return state, best
    if run.snapshot_dir.exists():
        shutil.rmtree(run.snapshot_dir)  # another configuration's, or an unfinished start's
    if run.snapshots:
        export_hf(model, run.snapshot_dir / "step0", eot_id=run.meta["eot_id"])
    cfg, n = run.cfg, model.num_params(non_embedding=True)
    log.info("model: %d layers, d=%d, %d heads, context %d: %d parameters, %d without embeddings (N)",
             cfg.n_layer, cfg.n_embd, cfg.n_head, s.context, model.num_params(), n)
    if cfg.padded_vocab_size != cfg.vocab_size:
        log.info("vocabulary %d padded to %d rows for speed; the padding is cut from the logits",
                 cfg.vocab_size, cfg.padded_vocab_size)
    log.info("batch: %d sequences x %d tokens = %d tokens per step (%d ranks x %d micro-steps x %d); "
             "D = %d tokens, so max_steps = %d is %.2f epochs", s.batch_size, s.context,
             run.batch_tokens, dist.world_size, run.rank_batch // run.micro, run.micro, run.tokens,
             s.max_steps, s.max_steps * run.batch_tokens / run.tokens)
    log.info("optimiser: AdamW%s, betas (%g, %g), weight decay %g on matrices, lr %g, warmup %d, "
             "%s to %g at step %d", " (fused)" if fused else "", s.beta1, s.beta2, s.weight_decay,
             s.lr, s.warmup_steps, s.schedule, s.lr * s.min_lr_ratio, s.max_steps)
    if s.schedule == "wsd":
        log.info("wsd: constant lr, then a linear decay over %g of the steps before it, at "
                 "step %d or when the val loss plateaus (%d evaluations without "
                 "improvement), whichever comes first", s.cooldown_fraction,
                 planned_cooldown(s)[0], s.early_stop_patience)
    return state, best


def _wrap(run: _Run, model: GPT):
    """(the model that trains, the one that evaluates): compiled on CUDA when asked, and
    under DDP with several ranks (evaluation needs no gradient all-reduce)."""
    if run.s.compile and run.dev.type == "cuda":
        run.log("compiling the model with torch.compile")
        model = torch.compile(model)
    if run.dist.world_size == 1:
        return model, model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[run.dev.index] if run.dev.type == "cuda" else None), model


def _after_eval(run: _Run, state: RunState, step: int, val_loss: float, last: bool,
                best: dict | None, model: GPT, optimizer) -> dict | None:
    """Record an evaluation; on a plateau start the wsd decay (from the best state) or stop
    early. Returns the best state to keep (None once a decay has begun)."""
    s = run.s
    # A plateau before the run has seen its data once is noise or an early loss bump at a
    # high lr, not the data running out: it does not count yet.
    patience = s.early_stop_patience if step * run.batch_tokens >= run.tokens else 0
    plateau = state.record_eval(step, val_loss, patience) and not last
    keep_best = s.schedule == "wsd" and s.cooldown_from == "best" and state.cooldown is None
    if keep_best and state.best_step == step:
        best = snapshot_state(model, optimizer)
    if plateau and s.schedule != "wsd":
        state.stopped_early = True
        run.log("early stop at step %d: %d evaluations without improvement on the best val "
                "loss %.4f (step %d)", step, state.bad_evals, state.best_val_loss, state.best_step)
    elif plateau and state.cooldown is None and step < planned_cooldown(s)[0]:
        # A plateau ends the stable phase, not the run: decay, since the best loss of a run
        # at constant lr is not the loss it can reach. Decaying from the plateau would
        # anneal a model that has begun to overfit (small D), so the decay starts from the
        # best state, as long as the steps before it.
        origin = step
        if keep_best and best is not None:
            model.load_state_dict(best["model"])
            optimizer.load_state_dict(best["optimizer"])
            origin = state.best_step
        best = None
        state.cooldown = [step, cooldown_after(origin, s)[1]]
        state.stopped_early = True
        run.log("plateau at step %d (%d evaluations without improvement on %.4f): decaying "
                "the lr over %d steps from the state of step %d", step, state.bad_evals,
                state.best_val_loss, state.cooldown[1], origin)
    return best


def _finish(run: _Run, model: GPT, state: RunState, resumed_from: int | None) -> dict:
    """Write the model, snapshots, history and metrics (metrics last); return the metrics."""
    metrics = _metrics(state, run.s, run.cfg, run.tokens, run.seed, run.batch_tokens,
                       model.num_params(), model.num_params(non_embedding=True), run.dev.type,
                       run.device_name, run.precision, run.dist, model.flops_per_token(),
                       resumed_from)
    if run.dist.is_main:
        export_hf(model, run.run_dir, eot_id=run.meta["eot_id"])
        publish_snapshots(run.snapshot_dir if run.snapshots else None, run.run_dir / "snapshots")
        write_text(run.run_dir / "history.csv", _history_csv(state.history))
        write_json(run.run_dir / "metrics.json", metrics)  # its presence means the run is complete
        log.info("done: %d steps, best val loss %.4f (step %d), final %.4f, %.0f tokens/s",
                 state.step, state.best_val_loss, state.best_step, state.final_val_loss,
                 metrics["tokens_per_s"] or float("nan"))
    if run.dist.world_size > 1:
        torch_dist.barrier()
    return metrics


def _batch_geometry(s: TrainSettings, world_size: int) -> tuple[int, int, int]:
    """(sequences per rank per step, sequences per forward, accumulation steps)."""
    if s.batch_size % world_size:
        raise ConfigError(f"train.batch_size ({s.batch_size}) must divide over {world_size} ranks")
    rank_batch = s.batch_size // world_size
    micro = min(s.micro_batch_size or rank_batch, rank_batch)
    if rank_batch % micro:
        raise ConfigError(
            f"train.micro_batch_size ({micro}) must divide the per-rank batch ({rank_batch} = "
            f"batch_size {s.batch_size} / {world_size} ranks)"
        )
    return rank_batch, micro, rank_batch // micro


def make_optimizer(model: GPT, s: TrainSettings, fused: bool) -> torch.optim.AdamW:
    # decay matrices and embeddings; biases and LayerNorm gains are left alone
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr, betas=(s.beta1, s.beta2), fused=fused,
    )


def _forward_backward(model, data, starts, micro, context, dev, precision, scaler, dist: Dist) -> float:
    """Accumulate gradients over the step's micro-batches; return the mean loss (all ranks)."""
    accum = len(starts) // micro
    loss_sum = torch.zeros((), device=dev)
    for m in range(accum):
        x, y = get_windows(data, starts[m * micro : (m + 1) * micro], context, dev)
        if dist.world_size > 1:
            model.require_backward_grad_sync = m == accum - 1  # all-reduce once per step
        with autocast(precision, dev.type):
            _, loss = model(x, y)
        loss_sum += loss.detach()
        loss = loss / accum
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if dist.world_size > 1:
        torch_dist.all_reduce(loss_sum, op=torch_dist.ReduceOp.AVG)
    return loss_sum.item() / accum  # a sync point: keeps step times honest


def optimizer_step(model: GPT, optimizer, scaler, grad_clip: float) -> None:
    if grad_clip > 0:
        if scaler is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def _evaluate(model, data, starts, context, micro, dev, precision, dist: Dist) -> float:
    """Mean token loss over the fixed validation windows (split over ranks)."""
    model.eval()
    mine = starts[dist.rank :: dist.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=dev)  # summed loss, token count
    for i in range(0, len(mine), micro):
        x, y = get_windows(data, mine[i : i + micro], context, dev)
        with autocast(precision, dev.type):
            _, loss = model(x, y)
        total[0] += loss.double() * y.numel()
        total[1] += y.numel()
    if dist.world_size > 1:
        torch_dist.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


def converged(state: RunState, s: TrainSettings) -> bool:
    """Plateaued, then annealed: the run stopped improving for `early_stop_patience`
    evaluations and its learning rate then reached the schedule's floor. wsd gets there by
    decaying from the plateau; a cosine run that stops at its plateau stops at a high lr,
    so it counts only when it plateaus at the very end of its schedule."""
    ended_annealed = not (state.stopped_early and s.schedule != "wsd")
    return bool(state.plateaued and ended_annealed)


def _metrics(state: RunState, s: TrainSettings, cfg: GPTConfig, tokens, seed, batch_tokens, params,
             params_nonembed, device_type, device_name, precision, dist, flops_per_token,
             resumed_from) -> dict[str, Any]:
    if state.timed_s > 0:
        tokens_per_s = state.timed_tokens / state.timed_s
    else:  # too short a run to skip the warmup steps: time all of it
        tokens_per_s = state.step * batch_tokens / state.elapsed_s if state.elapsed_s else None
    tail = state.step_losses[-s.eval_every :]
    tokens_seen = state.step * batch_tokens
    metrics: dict[str, Any] = {
        "best_val_loss": state.best_val_loss,
        "final_val_loss": state.final_val_loss,
        "train_loss": float(np.mean(tail)),  # mean over the last eval interval: one batch is noisy
        "steps": state.step,
        "tokens_seen": tokens_seen,
        "epochs": tokens_seen / tokens,
        "tokens_per_s": tokens_per_s,
        "wall_s": state.elapsed_s,
        "device": device_type,
        "device_name": device_name,
        "world_size": dist.world_size,
        "params": params,
        "params_nonembed": params_nonembed,
        "seed": seed,
        "tokens": tokens,
        "n_layer": cfg.n_layer,
        "n_embd": cfg.n_embd,
        "n_head": cfg.n_head,
        "context": cfg.context,
        "vocab_size": cfg.vocab_size,
        "vocab_size_padded": cfg.padded_vocab_size,
        "batch_tokens": batch_tokens,
        "precision": precision,
        "compile": bool(s.compile and device_type == "cuda"),
        "best_step": state.best_step,
        "stopped_early": state.stopped_early,
        "converged": converged(state, s),
        "schedule": s.schedule,
        "cooldown_start": state.cooldown[0] if state.cooldown else None,
        "resumed_from": resumed_from,
    }
    if device_type == "cuda":
        peak = peak_flops(device_name, precision, s.peak_flops)
        if peak is None:
            log.warning("no peak FLOP/s known for %r: mfu is null (set train.peak_flops)", device_name)
        metrics["mfu"] = (flops_per_token * tokens_per_s / (peak * dist.world_size)
                          if peak and tokens_per_s else None)
        metrics["flops_per_token"] = flops_per_token
    return metrics


def _history_csv(history: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(HISTORY_COLUMNS)
    for row in zip(*(history[c] for c in HISTORY_COLUMNS)):
        writer.writerow("" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row)
    return buf.getvalue()
