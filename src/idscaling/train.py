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

import contextlib
import copy
import csv
import io
import logging
import math
import numbers
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from tqdm import tqdm

from idscaling.config import NON_RESULT_TRAIN_KEYS
from idscaling.errors import ConfigError, DataError, TrainingError
from idscaling.io import atomic_path, read_json, write_json, write_text
from idscaling.model import GPT, GPTConfig, export_hf

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
OUTPUTS = ("model.safetensors", "config.json", "history.csv", "metrics.json")
HISTORY_COLUMNS = ("step", "tokens", "lr", "train_loss", "val_loss", "elapsed_s")
TIMING_WARMUP_STEPS = 5  # the first steps of a process compile and warm caches: not timed

# Dense peak FLOP/s of one device by name (first match wins): (bf16/fp16 tensor cores,
# fp32 matmuls, which means TF32 from Ampere on, since the engine turns TF32 on).
PEAK_FLOPS = (
    ("H100 PCIe", 756e12, 378e12),
    ("H100 NVL", 835e12, 418e12),
    ("H100", 989.4e12, 494.7e12),
    ("H200", 989.4e12, 494.7e12),
    ("B200", 2250e12, 1100e12),
    ("A100", 312e12, 156e12),
    ("L40S", 362e12, 183e12),
    ("L4", 121e12, 60e12),
    ("A10G", 70e12, 35e12),
    ("A10", 125e12, 62.5e12),
    ("4090", 165e12, 82.6e12),
    ("V100", 125e12, 15.7e12),
)


# ------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class TrainSettings:
    """The config's `train:` section with its schema defaults."""

    context: int = 128
    batch_size: int = 32  # sequences per optimiser step, over all ranks
    micro_batch_size: int | None = None  # sequences per forward; None = the whole batch
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # floor of the decay as a fraction of lr
    schedule: str = "cosine"  # cosine | wsd (warmup, stable, decay)
    cooldown_fraction: float = 0.2  # wsd: decay steps as a fraction of the steps before it
    cooldown_from: str = "best"  # wsd: a plateau's decay starts from the best state | the plateau
    warmup_steps: int = 50
    max_steps: int = 2000
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    dropout: float = 0.0
    eval_every: int = 100
    eval_tokens: int = 65536
    early_stop_patience: int = 5  # evals without improvement; 0 = off
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    compile: bool = False
    checkpoint_every: int = 500
    val_seed: int = 1234
    log_every: int = 10  # a history.csv row every this many steps
    peak_flops: float | None = None  # accelerator peak FLOP/s for MFU; None = from the table

    @classmethod
    def from_dict(cls, train: dict | None) -> "TrainSettings":
        train = dict(train or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(train) - known)
        if unknown:
            log.debug("train: ignoring keys the engine does not use: %s", unknown)
        # a key given as null takes its default (micro_batch_size and peak_flops default to None)
        s = cls(**{k: v for k, v in train.items() if k in known and v is not None})
        s._validate()
        return s

    def _validate(self) -> None:
        positive = ("context", "batch_size", "max_steps", "eval_every", "eval_tokens",
                    "checkpoint_every", "log_every")
        for key in positive:
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"train.{key} must be a positive integer, got {v!r}")
        for key in ("warmup_steps", "early_stop_patience", "val_seed"):
            v = getattr(self, key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"train.{key} must be a non-negative integer, got {v!r}")
        if self.micro_batch_size is not None:
            mb = self.micro_batch_size
            if not isinstance(mb, int) or isinstance(mb, bool) or mb < 1:
                raise ConfigError(f"train.micro_batch_size must be a positive integer or null, got {mb!r}")
            if self.batch_size % mb:
                raise ConfigError(
                    f"train.micro_batch_size ({mb}) must divide train.batch_size ({self.batch_size})"
                )
        for key in ("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip", "dropout"):
            v = getattr(self, key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ConfigError(f"train.{key} must be a number, got {v!r}")
        if self.peak_flops is not None and not (isinstance(self.peak_flops, (int, float)) and self.peak_flops > 0):
            raise ConfigError(f"train.peak_flops must be a positive number or null, got {self.peak_flops!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"train.compile must be true or false, got {self.compile!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"train.dropout must be in [0, 1), got {self.dropout!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {self.lr!r}")
        if self.schedule not in ("cosine", "wsd"):
            raise ConfigError(f"train.schedule must be cosine or wsd, got {self.schedule!r}")
        if self.cooldown_from not in ("best", "plateau"):
            raise ConfigError(
                f"train.cooldown_from must be best or plateau, got {self.cooldown_from!r}")
        if not (isinstance(self.cooldown_fraction, (int, float))
                and not isinstance(self.cooldown_fraction, bool)
                and 0.0 < self.cooldown_fraction < 1.0):
            raise ConfigError(
                f"train.cooldown_fraction must be in (0, 1), got {self.cooldown_fraction!r}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"train.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio!r}")
        for key in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"train.{key} must be in [0, 1), got {getattr(self, key)!r}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ConfigError(
                f"train.precision must be one of auto, fp32, bf16, fp16; got {self.precision!r}"
            )


def lr_at(step: int, s: TrainSettings, cooldown: Sequence[int] | None = None) -> float:
    """Learning rate of optimiser step `step` (0-based).

    cosine: linear warmup, then cosine to the floor at max_steps.
    wsd: linear warmup, then constant, then a linear decay to the floor over the steps
    [start, start + length) of `cooldown` (default: the planned one, `planned_cooldown`).
    """
    min_lr = s.lr * s.min_lr_ratio
    if step < s.warmup_steps:
        return s.lr * (step + 1) / s.warmup_steps
    if s.schedule == "wsd":
        start, length = cooldown or planned_cooldown(s)
        if step < start:
            return s.lr
        return max(min_lr, s.lr - (s.lr - min_lr) * (step - start + 1) / length)
    if step >= s.max_steps:
        return min_lr
    progress = (step - s.warmup_steps) / max(1, s.max_steps - s.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (s.lr - min_lr)


def cooldown_after(step: int, s: TrainSettings) -> tuple[int, int]:
    """(start, length) of a wsd decay that begins after `step` steps: cooldown_fraction of
    them, at least one."""
    return step, max(1, math.ceil(round(s.cooldown_fraction * step, 9)))  # 0.2 * 40 is not 8


def planned_cooldown(s: TrainSettings) -> tuple[int, int]:
    """The wsd decay that ends at max_steps when no plateau starts one sooner."""
    length = max(1, math.ceil(round(s.cooldown_fraction / (1 + s.cooldown_fraction)
                                    * s.max_steps, 9)))
    return s.max_steps - length, length


# ----------------------------------------------------------------------------- data


def read_tokens_meta(path: Path) -> dict:
    """Load and check tokens/meta.json."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token metadata {path} does not exist")
    meta = read_json(path)
    for key in ("vocab_size", "eot_id", "dtype", "train_tokens", "val_tokens"):
        if key not in meta:
            raise DataError(f"token metadata {path} lacks the key {key!r}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"token metadata {path}: dtype must be uint16 or uint32, got {meta['dtype']!r}")
    if not isinstance(meta["vocab_size"], int) or meta["vocab_size"] < 1:
        raise DataError(f"token metadata {path}: vocab_size must be a positive integer")
    return meta


def open_tokens(path: Path, dtype: str, expected: int, vocab_size: int, check_upto: int) -> np.memmap:
    """Memory-map a flat token file and check its length and the ids it holds."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"token file {path} does not exist")
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if size != expected * itemsize:
        raise DataError(
            f"token file {path} has {size} bytes; meta.json says {expected} {dtype} ids "
            f"({expected * itemsize} bytes)"
        )
    data = np.memmap(path, dtype=dtype, mode="r")
    # an id outside the vocabulary would crash an embedding lookup (a device assert on GPU)
    chunk = 1 << 24
    for i in range(0, check_upto, chunk):
        top = int(data[i : min(i + chunk, check_upto)].max())
        if top >= vocab_size:
            raise DataError(f"token file {path} holds id {top}, outside the vocabulary of {vocab_size}")
    return data


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


# --------------------------------------------------------------- device and precision


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = False
    if not torch_dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local)
        torch_dist.init_process_group(backend=backend)
        here = True
    return Dist(rank, local, world, here)


def choose_device(device: str | None) -> tuple[str, str]:
    """(device type, why)."""
    if device is not None:
        kind = torch.device(device).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} was asked for but CUDA is not available")
        return kind, f"asked for {device!r}"
    if torch.cuda.is_available():
        return "cuda", f"CUDA is available ({torch.cuda.device_count()} device(s))"
    return "cpu", "no CUDA device is available"


def choose_precision(precision: str, device_type: str) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, why)."""
    if precision == "auto":
        if device_type != "cuda":
            return "fp32", "precision auto on CPU means fp32"
        # bf16 tensor cores arrived with Ampere (compute capability 8); older GPUs emulate it slowly
        if torch.cuda.get_device_capability()[0] >= 8:
            return "bf16", "precision auto on a GPU with bf16 tensor cores: bf16 autocast"
        return "fp16", "precision auto on a GPU without bf16 tensor cores: fp16 autocast with loss scaling"
    if precision == "fp16" and device_type != "cuda":
        raise ConfigError("train.precision fp16 needs a CUDA device (loss scaling); use fp32 or bf16 on CPU")
    return precision, f"train.precision is {precision}"


def autocast(precision: str, device_type: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device_type, dtype=dtype)


def peak_flops(device_name: str, precision: str, override: float | None) -> float | None:
    """Peak FLOP/s of one accelerator at the run's precision, or None if unknown."""
    if override:
        return float(override)
    for key, low_precision, fp32 in PEAK_FLOPS:
        if key in device_name:
            return fp32 if precision == "fp32" else low_precision
    return None


# ---------------------------------------------------------------------- run state


@dataclass
class RunState:
    """Everything besides weights and optimiser that a resumed run needs; plain types only."""

    step: int = 0
    step_losses: list = field(default_factory=list)  # train loss of every optimiser step
    history: dict = field(default_factory=lambda: {c: [] for c in HISTORY_COLUMNS})
    last_row_step: int = 0
    best_val_loss: float | None = None
    best_step: int | None = None
    final_val_loss: float | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    plateaued: bool = False  # the val loss went `early_stop_patience` evaluations without improving
    cooldown: list | None = None  # wsd: [start, length] of a decay that a plateau began
    done: bool = False
    elapsed_s: float = 0.0  # wall time of the run so far, over all sessions
    timed_tokens: int = 0  # tokens and seconds of the steady part, for tokens/s
    timed_s: float = 0.0

    def record_eval(self, step: int, val_loss: float, patience: int) -> bool:
        """Note an evaluation; True if it exhausts the early-stopping patience."""
        self.final_val_loss = val_loss
        if self.best_val_loss is None or val_loss < self.best_val_loss:
            self.best_val_loss, self.best_step, self.bad_evals = val_loss, step, 0
            return False
        self.bad_evals += 1
        self.plateaued = self.plateaued or (bool(patience) and self.bad_evals >= patience)
        return bool(patience) and self.bad_evals >= patience

    def add_row(self, step: int, tokens: int, lr: float, val_loss: float | None) -> None:
        losses = self.step_losses[self.last_row_step : step]
        row = (step, tokens, lr, float(np.mean(losses)) if losses else None, val_loss, self.elapsed_s)
        for col, value in zip(HISTORY_COLUMNS, row):
            self.history[col].append(value)
        self.last_row_step = step


def run_signature(model_cfg: GPTConfig, tokens: int, seed: int, s: TrainSettings, meta: dict) -> dict:
    """What makes two runs the same run; a checkpoint with another signature is stale."""
    result_keys = asdict(s)
    for key in NON_RESULT_TRAIN_KEYS:
        result_keys.pop(key)
    return {
        "model": asdict(model_cfg),
        "tokens": tokens,
        "seed": seed,
        "train": result_keys,
        "train_tokens": meta["train_tokens"],
        "val_tokens": meta["val_tokens"],
    }


def save_checkpoint(path: Path, *, model: GPT, optimizer, scaler, state: RunState,
                    signature: dict, world_size: int, best: dict | None = None) -> None:
    """Write the checkpoint atomically; a finished run's drops the optimiser state.
    `best`: the model and optimiser state of the best evaluation so far, which a wsd
    decay starts from (kept until the decay begins)."""
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "signature": signature,
        "world_size": world_size,
        "model": model.state_dict(),
        "optimizer": None if state.done else optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and not state.done else None,
        "scheduler": {"step": state.step},  # the schedule is a pure function of the step
        "data": {"step": state.step},  # windows are keyed by step: this is the data position
        # randomness is keyed by step; these are kept for inspection and restored anyway
        "rng": {"torch": torch.get_rng_state()},
        "state": asdict(state),
        "best": best,
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: Path, device: torch.device) -> dict:
    try:
        # weights_only: tensors, dicts, lists and numbers; nothing arbitrary is unpickled
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise TrainingError(f"checkpoint {path} cannot be read ({e}); delete it to start the run afresh") from e


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
    if tokens < s.context + 1 or tokens > meta["train_tokens"]:
        raise DataError(
            f"tokens (D) = {tokens} must lie between context + 1 = {s.context + 1} and the "
            f"{meta['train_tokens']} tokens of {train_bin}"
        )
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
        return _train(
            Path(train_bin), Path(val_bin), meta, run_dir, ckpt_dir, model_cfg, tokens, seed, s,
            threads, device, device_type, device_why, dist, step_callback, snapshots,
        )
    finally:
        if dist.initialized_here:
            torch_dist.destroy_process_group()


def _train(train_bin, val_bin, meta, run_dir, ckpt_dir, model_cfg, tokens, seed, s,
           threads, device_arg, device_type, device_why, dist, step_callback, snapshots) -> dict:
    session_start = time.perf_counter()
    dev, device_name = _setup_device(device_type, device_arg, dist, threads)
    precision, precision_why = choose_precision(s.precision, device_type)
    use_compile = s.compile and device_type == "cuda"
    if dist.is_main:
        log.info("device: %s (%s), because %s", dev, device_name, device_why)
        log.info("precision: %s, because %s", precision, precision_why)
        log.info("threads: %d; world size: %d", torch.get_num_threads(), dist.world_size)
        if s.compile and not use_compile:
            log.warning("train.compile is true but the device is CPU: torch.compile is used on CUDA only")
    rank_batch, micro, accum = _batch_geometry(s, dist.world_size)
    batch_tokens = s.batch_size * s.context

    dtype = meta["dtype"]
    train_data = open_tokens(train_bin, dtype, meta["train_tokens"], meta["vocab_size"], tokens)
    val_data = open_tokens(val_bin, dtype, meta["val_tokens"], meta["vocab_size"], meta["val_tokens"])
    val_starts = val_window_starts(len(val_data), s.context, s.eval_tokens, s.val_seed)

    torch.manual_seed(seed)  # the same initial weights on every rank
    raw_model = GPT(model_cfg).to(dev)
    # fused AdamW: one kernel for all parameters, on CUDA and (torch >= 2.4) on CPU, where it
    # takes ~1 ms a step against ~10 ms for the per-parameter loop at d=64
    fused = device_type == "cuda" or _torch_version() >= (2, 4)
    optimizer = make_optimizer(raw_model, s, fused=fused)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    signature = run_signature(model_cfg, tokens, seed, s, meta)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    if dist.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(run_dir, ckpt_dir)
    state, best = _resume(ckpt_path, signature, raw_model, optimizer, scaler, dev, dist)
    resumed_from = state.step or None  # a fresh state is at step 0
    snapshot_dir = ckpt_dir / "snapshots"
    if dist.is_main and resumed_from is None and snapshot_dir.exists():
        shutil.rmtree(snapshot_dir)  # another configuration's, or an unfinished start's
    if snapshots and dist.is_main and resumed_from is None:
        export_hf(raw_model, snapshot_dir / "step0", eot_id=meta["eot_id"])

    params, params_nonembed = raw_model.num_params(), raw_model.num_params(non_embedding=True)
    if dist.is_main and resumed_from is None:
        log.info("model: %d layers, d=%d, %d heads, context %d: %d parameters, %d without embeddings (N)",
                 model_cfg.n_layer, model_cfg.n_embd, model_cfg.n_head, s.context, params, params_nonembed)
        if model_cfg.padded_vocab_size != model_cfg.vocab_size:
            log.info("vocabulary %d padded to %d rows for speed; the padding is cut from the logits",
                     model_cfg.vocab_size, model_cfg.padded_vocab_size)
        log.info("batch: %d sequences x %d tokens = %d tokens per step (%d ranks x %d micro-steps x %d); "
                 "D = %d tokens, so max_steps = %d is %.2f epochs", s.batch_size, s.context, batch_tokens,
                 dist.world_size, accum, micro, tokens, s.max_steps, s.max_steps * batch_tokens / tokens)
        log.info("optimiser: AdamW%s, betas (%g, %g), weight decay %g on matrices, lr %g, warmup %d, "
                 "%s to %g at step %d", " (fused)" if fused else "", s.beta1, s.beta2, s.weight_decay,
                 s.lr, s.warmup_steps, s.schedule, s.lr * s.min_lr_ratio, s.max_steps)
        if s.schedule == "wsd":
            log.info("wsd: constant lr, then a linear decay over %g of the steps before it, at "
                     "step %d or when the val loss plateaus (%d evaluations without "
                     "improvement), whichever comes first", s.cooldown_fraction,
                     planned_cooldown(s)[0], s.early_stop_patience)
        log.info("validation: %d fixed windows of %d tokens from %s (val_seed %d)",
                 len(val_starts), s.context, val_bin, s.val_seed)

    model = raw_model
    if use_compile:
        if dist.is_main:
            log.info("compiling the model with torch.compile")
        model = torch.compile(model)
    eval_model = model  # evaluation needs no gradient all-reduce
    if dist.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[dev.index] if device_type == "cuda" else None)

    session_steps = 0
    elapsed_base = state.elapsed_s
    bar = tqdm(total=s.max_steps, initial=state.step, disable=not dist.is_main or state.done,
               file=sys.stderr, desc="/".join(run_dir.parts[-3:]), unit="step", mininterval=1.0,
               dynamic_ncols=True)
    model.train()
    while not state.done:
        step = state.step  # 0-based index of the step about to run
        t0 = time.perf_counter()
        lr = lr_at(step, s, state.cooldown)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # dropout masks keyed by (seed, rank, step), like the windows
        torch.manual_seed(int(np.random.SeedSequence([seed, dist.rank, step, 1]).generate_state(1)[0]))
        starts = train_window_starts(seed, dist.rank, step, rank_batch, tokens, s.context)
        train_loss = _forward_backward(model, train_data, starts, micro, s.context, dev, precision,
                                       scaler, dist)
        if not math.isfinite(train_loss):
            raise TrainingError(
                f"run {run_dir}: the training loss is {train_loss} at step {step + 1}; stopping "
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
            state.timed_tokens += batch_tokens
            state.timed_s += step_s

        val_loss = None
        last = step >= s.max_steps or (state.cooldown is not None
                                       and step >= sum(state.cooldown))
        if step % s.eval_every == 0 or last:
            val_loss = _evaluate(eval_model, val_data, val_starts, s.context, micro, dev, precision, dist)
            if not math.isfinite(val_loss):
                raise TrainingError(f"run {run_dir}: the validation loss is {val_loss} at step {step}; "
                                    f"stopping without writing metrics")
            # A plateau before the run has seen its data once is noise or an early loss
            # bump at a high lr, not the data running out: it does not count yet.
            patience = s.early_stop_patience if step * batch_tokens >= tokens else 0
            plateau = state.record_eval(step, val_loss, patience) and not last
            keep_best = (s.schedule == "wsd" and s.cooldown_from == "best"
                         and state.cooldown is None)
            if keep_best and state.best_step == step:
                best = _snapshot(raw_model, optimizer)
            if plateau and s.schedule == "wsd":
                # A plateau ends the stable phase, not the run: decay, since the best loss
                # of a run at constant lr is not the loss it can reach. Decaying from the
                # plateau would anneal a model that has begun to overfit (small D), so the
                # decay starts from the best state, as long as the steps before it.
                if state.cooldown is None and step < planned_cooldown(s)[0]:
                    origin = step
                    if keep_best and best is not None:
                        raw_model.load_state_dict(best["model"])
                        optimizer.load_state_dict(best["optimizer"])
                        origin = state.best_step
                    best = None
                    state.cooldown = [step, cooldown_after(origin, s)[1]]
                    state.stopped_early = True
                    if dist.is_main:
                        log.info("plateau at step %d (%d evaluations without improvement on "
                                 "%.4f): decaying the lr over %d steps from the state of step "
                                 "%d", step, state.bad_evals, state.best_val_loss,
                                 state.cooldown[1], origin)
            elif plateau:
                state.stopped_early = True
                if dist.is_main:
                    log.info("early stop at step %d: %d evaluations without improvement on the best "
                             "val loss %.4f (step %d)", step, state.bad_evals, state.best_val_loss,
                             state.best_step)
        state.done = last or (state.stopped_early and s.schedule != "wsd")
        state.elapsed_s = elapsed_base + time.perf_counter() - session_start
        if step % s.log_every == 0 or val_loss is not None or state.done:
            state.add_row(step, step * batch_tokens, lr, val_loss)
        if snapshots and dist.is_main and (state.done or is_snapshot_step(step, s.eval_every)):
            # before the checkpoint: a run killed between the two redoes this step
            export_hf(raw_model, snapshot_dir / f"step{step}", eot_id=meta["eot_id"])
        if (step % s.checkpoint_every == 0 or state.done) and dist.is_main:
            save_checkpoint(ckpt_path, model=raw_model, optimizer=optimizer, scaler=scaler,
                            state=state, signature=signature, world_size=dist.world_size,
                            best=None if state.done else best)
        if dist.is_main:
            tok_s = state.timed_tokens / state.timed_s if state.timed_s else batch_tokens / step_s
            postfix = {"loss": f"{train_loss:.3f}", "tok/s": f"{tok_s:,.0f}"}
            if state.final_val_loss is not None:
                postfix["val"] = f"{state.final_val_loss:.3f}"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        if step_callback is not None:
            step_callback(step)
    bar.close()

    metrics = _metrics(state, s, model_cfg, tokens, seed, batch_tokens, params, params_nonembed,
                       device_type, device_name, precision, dist, raw_model.flops_per_token(),
                       resumed_from)
    if dist.is_main:
        export_hf(raw_model, run_dir, eot_id=meta["eot_id"])
        _publish_snapshots(snapshot_dir if snapshots else None, run_dir / "snapshots")
        write_text(run_dir / "history.csv", _history_csv(state.history))
        write_json(run_dir / "metrics.json", metrics)  # last: its presence means the run is complete
        log.info("done: %d steps, best val loss %.4f (step %d), final %.4f, %.0f tokens/s",
                 state.step, state.best_val_loss, state.best_step, state.final_val_loss,
                 metrics["tokens_per_s"] or float("nan"))
    if dist.world_size > 1:
        torch_dist.barrier()
    return metrics


def is_snapshot_step(step: int, eval_every: int) -> bool:
    """Steps eval_every x 2^j: log-spaced, and ones where the val loss is known."""
    q, r = divmod(step, eval_every)
    return r == 0 and q > 0 and q & (q - 1) == 0


def _publish_snapshots(source: Path | None, dest: Path) -> None:
    """Copy the snapshots kept in the checkpoint directory to the run's output folder, and
    write steps.json (the steps, ascending; none when the run kept none)."""
    steps = []
    if source is not None and source.is_dir():
        steps = sorted(int(p.name[4:]) for p in source.glob("step*")
                       if p.name[4:].isdigit() and (p / "config.json").is_file())
    for step in steps:
        out = dest / f"step{step}"
        out.mkdir(parents=True, exist_ok=True)
        for name in ("model.safetensors", "config.json"):
            with atomic_path(out / name) as tmp:
                shutil.copyfile(source / f"step{step}" / name, tmp)
    write_json(dest / "steps.json", {"steps": steps})


def _setup_device(device_type: str, device_arg: str | None, dist: Dist, threads: int | None):
    """(torch.device, its name); TF32 on for CUDA, the thread count set."""
    if device_type == "cuda":
        if dist.world_size > 1:
            dev = torch.device("cuda", dist.local_rank)  # torchrun: one GPU per local rank
        else:
            dev = torch.device("cuda", torch.device(device_arg or "cuda").index or 0)
        torch.cuda.set_device(dev)
        torch.set_float32_matmul_precision("high")  # TF32 matmuls for whatever runs in fp32
        name = torch.cuda.get_device_name(dev)
    else:
        dev, name = torch.device("cpu"), "cpu"
    if threads:
        # CPU ranks of one job share its cores; a GPU rank's threads only feed its device
        torch.set_num_threads(max(1, threads // dist.world_size) if device_type == "cpu" else threads)
    return dev, name


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


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def _snapshot(model: GPT, optimizer) -> dict:
    """A copy of the model's and optimiser's state that later steps do not change."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict())}


def make_optimizer(model: GPT, s: TrainSettings, fused: bool) -> torch.optim.AdamW:
    # decay matrices and embeddings; biases and LayerNorm gains are left alone
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr, betas=(s.beta1, s.beta2), fused=fused,
    )


def _resume(ckpt_path: Path, signature: dict, model: GPT, optimizer, scaler, dev,
            dist: Dist) -> tuple[RunState, dict | None]:
    """Load the last checkpoint into model and optimiser if it belongs to this run;
    return its run state and the best state it kept (or None)."""
    if not ckpt_path.is_file():
        return RunState(), None
    ckpt = load_checkpoint(ckpt_path, dev)
    if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt.get("signature") != signature:
        if dist.is_main:
            log.warning("checkpoint %s belongs to another configuration of this run; starting afresh "
                        "(it will be overwritten)", ckpt_path)
        return RunState(), None
    if ckpt.get("world_size") != dist.world_size and dist.is_main:
        log.warning("checkpoint %s was written with %s ranks, this run has %d: the rest of the run "
                    "draws other windows than an uninterrupted one would", ckpt_path,
                    ckpt.get("world_size"), dist.world_size)
    model.load_state_dict(ckpt["model"])
    state = RunState(**ckpt["state"])
    if not state.done:
        optimizer.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler") is not None:
            scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    if dist.is_main:
        log.info("resuming from checkpoint %s at step %d%s", ckpt_path, state.step,
                 " (the run had finished: rewriting its outputs)" if state.done else "")
    return state, ckpt.get("best")


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
