"""Devices, threads, precision and process groups: one place for what the training
engine, the embedder and the neighbour search each need to know about the hardware."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as torch_dist

from idscaling.errors import ConfigError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`None` picks CUDA when there is one, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {device!r} is not a torch device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} asked for, but torch sees no CUDA GPU")
    return device


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Turn TF32 off for the duration: a TF32 product is not an fp32 product."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` intra-op threads (None leaves torch's setting alone)."""
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ConfigError(f"threads must be a positive integer, got {threads!r}")
    saved = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


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


def setup_device(device_type: str, device_arg: str | None, dist: Dist, threads: int | None):
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


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)
