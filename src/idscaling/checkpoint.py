"""A run's resumable state: the run state beside the weights and optimiser, the checkpoint
file that holds them, and the weight snapshots kept along the way.

A checkpoint carries a signature of everything that makes two runs the same run; one with
another signature is stale and the run starts afresh. Randomness and data windows are
keyed by the step, so the step is all a resumed run needs to continue where it stopped.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from idscaling.config import NON_RESULT_TRAIN_KEYS
from idscaling.devices import Dist
from idscaling.errors import TrainingError
from idscaling.files import atomic_path, write_json
from idscaling.model import GPT, GPTConfig

log = logging.getLogger(__name__)


CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = 1
HISTORY_COLUMNS = ("step", "tokens_seen", "lr", "train_loss", "val_loss", "elapsed_s")


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


def run_signature(model_cfg: GPTConfig, tokens: int, seed: int, s, meta: dict) -> dict:
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


def snapshot_state(model: GPT, optimizer) -> dict:
    """A copy of the model's and optimiser's state that later steps do not change."""
    return {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "optimizer": copy.deepcopy(optimizer.state_dict())}


def resume(ckpt_path: Path, signature: dict, model: GPT, optimizer, scaler, dev,
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


def is_snapshot_step(step: int, eval_every: int) -> bool:
    """Steps eval_every x 2^j: log-spaced, and ones where the val loss is known."""
    q, r = divmod(step, eval_every)
    return r == 0 and q > 0 and q & (q - 1) == 0


def publish_snapshots(source: Path | None, dest: Path) -> None:
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
