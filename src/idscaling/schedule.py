"""The train section's settings and the learning-rate schedule they define.

cosine: linear warmup, then a cosine to the floor at max_steps. wsd (warmup, stable,
decay): linear warmup, a constant lr, then a linear decay to the floor that starts when
the validation loss plateaus or at the planned end, whichever comes first, so that every
run ends annealed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Sequence

from idscaling.config import check_micro_batch, validate_section


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
        """The train section, checked against the schema and with its defaults."""
        train = validate_section("train", train)
        check_micro_batch(train["batch_size"], train["micro_batch_size"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in train.items() if k in known})


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
