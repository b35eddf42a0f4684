"""Give each job GPUs that no other running job holds.

Snakemake's `--resources gpu=K` caps how many GPUs the running jobs ask for in total,
but it does not say *which* devices a job may use, so two jobs would both start on
device 0. `acquire_gpus` closes that gap: one lock file per device, held with
`flock` for as long as the job runs. The kernel drops the lock when its holder exits,
so a crashed or killed job never leaves a device taken.

    with acquire_gpus(2) as ids:        # e.g. [1, 3]; CUDA_VISIBLE_DEVICES="1,3"
        subprocess.run(torchrun_command(len(ids), ["train", ...]), check=True)

Devices are those this process may see: the entries of `CUDA_VISIBLE_DEVICES` when it
is set (ids are positions in it), else every device the driver reports. Lock files are
named after the device's identifier (an index or a UUID), so jobs that see the same
device under different positions still exclude each other.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Sequence

from idscaling.errors import ConfigError, IDScalingError

log = logging.getLogger(__name__)

LOCK_DIR_ENV = "IDSCALING_GPU_LOCK_DIR"
# Set while devices are held: the names of the held devices. A child (a torchrun worker,
# a nested call) that sees the same CUDA_VISIBLE_DEVICES uses them without locking;
# taking the locks again would wait for ever on its own parent.
HELD_ENV = "IDSCALING_GPUS_HELD"
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "idscaling-gpu-locks"


class GPUUnavailableError(IDScalingError):
    """No set of free devices could be taken before the timeout."""


def device_count() -> int:
    """Number of GPUs the driver reports, ignoring CUDA_VISIBLE_DEVICES; 0 without any."""
    # nvidia-smi answers without creating a CUDA context (and without importing torch).
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
            return sum(1 for line in out.splitlines() if line.startswith("GPU "))
        except (subprocess.SubprocessError, OSError) as error:
            log.warning("nvidia-smi --list-gpus failed (%s); asking torch instead", error)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def visible_devices() -> list[str]:
    """Identifiers of the devices this process may use, in CUDA's order.

    The entries of CUDA_VISIBLE_DEVICES when it is set ("" or "-1" hide every device),
    else "0" .. "n-1" for the n devices that `device_count` reports.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return [str(i) for i in range(device_count())]
    entries = [entry.strip() for entry in env.split(",") if entry.strip()]
    # CUDA stops at the first invalid entry; "-1" is the conventional "none".
    if "-1" in entries:
        entries = entries[: entries.index("-1")]
    return entries


def default_lock_dir() -> Path:
    """$IDSCALING_GPU_LOCK_DIR, else a per-machine directory under the system tmp.

    Inside a SLURM allocation the directory is per job: SLURM already keeps allocations
    apart, and with device cgroups every allocation sees its GPUs as 0, 1, ... so locks
    shared across allocations would make unrelated jobs wait on each other.
    """
    if os.environ.get(LOCK_DIR_ENV):
        return Path(os.environ[LOCK_DIR_ENV])
    if os.environ.get("SLURM_JOB_ID"):
        return DEFAULT_LOCK_DIR / f"slurm-{os.environ['SLURM_JOB_ID']}"
    return DEFAULT_LOCK_DIR


@contextlib.contextmanager
def acquire_gpus(n: int, lock_dir: Path | None = None, timeout: float | None = None,
                 poll: float = 0.5) -> Iterator[list[int]]:
    """Hold `n` devices that no other running job holds; yield their ids.

    The ids are positions among the visible devices (see `visible_devices`). While the
    context is open, CUDA_VISIBLE_DEVICES names exactly these devices, so this process
    and its children (torchrun and its workers) see them as cuda:0 .. cuda:n-1. On exit
    the variable is restored and the locks are released; if the process dies, the
    kernel releases them.

    Inside an enclosing `acquire_gpus` (in this process or a parent, e.g. a torchrun
    worker), the devices it holds are used without taking their locks again.

    n == 0 hides every GPU (CUDA_VISIBLE_DEVICES="") so that a CPU job cannot land on a
    device another job holds. With no GPUs at all it yields [] and logs a warning: the
    job runs on CPU. Waits until enough devices are free, polling every `poll` seconds;
    `timeout` (seconds, None = wait for ever) raises GPUUnavailableError naming the
    holders. Asking for more devices than exist raises ConfigError at once.

    Set CUDA_VISIBLE_DEVICES before anything initialises CUDA in this process: a CUDA
    context created earlier keeps the devices it saw.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"GPU count must be a non-negative integer, got {n!r}")
    devices = visible_devices()
    if not devices:
        if n > 0:
            log.warning("asked for %d GPU(s) but none is visible (CUDA_VISIBLE_DEVICES=%r); "
                        "running on CPU", n, os.environ.get("CUDA_VISIBLE_DEVICES"))
        yield []
        return
    if n > len(devices):
        raise ConfigError(
            f"asked for {n} GPUs but only {len(devices)} are visible "
            f"({', '.join(devices)}); lower the job's `gpu` resource "
            f"(compute.train_gpus / compute.embed_gpus)"
        )
    if n == 0:
        log.info("no GPU asked for: hiding all %d devices from this job", len(devices))
        with _visible_as(""):
            yield []
        return
    held_by_caller = os.environ.get(HELD_ENV)
    if held_by_caller and held_by_caller == os.environ.get("CUDA_VISIBLE_DEVICES"):
        names = ",".join(devices[:n])
        log.info("using GPU(s) %s already held for this process by its caller", names)
        with _visible_as(names):
            yield list(range(n))
        return

    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _make_lock_dir(lock_dir)
    started = time.monotonic()
    next_note = started
    while True:
        held = _try_take(devices, n, lock_dir)
        if held is not None:
            break
        waited = time.monotonic() - started
        if timeout is not None and waited >= timeout:
            raise GPUUnavailableError(
                f"could not take {n} of {len(devices)} GPUs within {timeout:g} s; "
                f"held: {_describe_holders(devices, lock_dir)} (locks in {lock_dir})"
            )
        if time.monotonic() >= next_note:
            log.info("waiting for %d free GPU(s) of %d; held: %s", n, len(devices),
                     _describe_holders(devices, lock_dir))
            next_note = time.monotonic() + 60
        # Jitter keeps contending jobs from retrying in lockstep.
        time.sleep(poll * random.uniform(0.5, 1.5))

    ids = [position for position, _ in held]
    names = ",".join(devices[position] for position in ids)
    log.info("took GPU(s) %s (CUDA_VISIBLE_DEVICES=%s) after %.1f s; locks in %s",
             ids, names, time.monotonic() - started, lock_dir)
    try:
        with _visible_as(names):
            yield ids
    finally:
        for _, fd in held:
            os.ftruncate(fd, 0)  # no stale holder for the messages of later jobs
            os.close(fd)  # closing the only descriptor drops the flock
        log.info("released GPU(s) %s", ids)


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """Argv that runs `python -m idscaling <args>` as `nproc` DDP workers on this node.

    Uses this interpreter's torch.distributed.run (what `torchrun` is), so it works
    without the venv's bin on PATH. Run it inside `acquire_gpus(nproc)`.
    """
    if nproc < 1:
        raise ConfigError(f"torchrun needs at least one process, got nproc={nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "idscaling", *args]


def _try_take(devices: list[str], n: int, lock_dir: Path) -> list[tuple[int, int]] | None:
    """Lock n free devices without blocking: [(position, fd)], or None (nothing held)."""
    held: list[tuple[int, int]] = []
    for position, name in enumerate(devices):
        fd = _open_lock(_lock_file(lock_dir, name))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                continue
            raise
        _write_holder(fd)
        held.append((position, fd))
        if len(held) == n:
            return held
    # Taking some now and waiting for the rest could deadlock two jobs that each hold
    # half of what the other needs: give everything back and try again later.
    for _, fd in held:
        os.close(fd)
    return None


def _lock_file(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def _make_lock_dir(lock_dir: Path) -> None:
    if lock_dir.is_dir():
        return
    try:
        lock_dir.mkdir(parents=True, exist_ok=True)
        # Shared by every user's jobs on this machine, like /tmp itself.
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        if not lock_dir.is_dir():
            raise IDScalingError(f"cannot create the GPU lock directory {lock_dir}; "
                                 f"set {LOCK_DIR_ENV} to a writable directory") from None


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        raise IDScalingError(f"cannot open the GPU lock file {path}; set {LOCK_DIR_ENV} "
                             f"to a directory every job's user can write") from None
    with contextlib.suppress(PermissionError):
        os.fchmod(fd, 0o666)  # only its creator may; others' jobs must open it too
    return fd


def _write_holder(fd: int) -> None:
    # Who holds the device, for the messages of jobs that wait for it.
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: "
                  f"{' '.join(sys.argv)[:200]}\n".encode(), 0)


def _describe_holders(devices: list[str], lock_dir: Path) -> str:
    parts = []
    for name in devices:
        path = _lock_file(lock_dir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            parts.append(f"GPU {name}: free")
            continue
        try:
            # A file left by a crashed holder still names it: trust only a held lock.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            holder = "free"
        except OSError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "held"
        finally:
            os.close(fd)
        parts.append(f"GPU {name}: {holder}")
    return "; ".join(parts)


@contextlib.contextmanager
def _visible_as(names: str) -> Iterator[None]:
    """Show only `names` to CUDA (and mark them held) inside the context."""
    keys = ["CUDA_VISIBLE_DEVICES", HELD_ENV]
    before = {key: os.environ.get(key) for key in keys}
    os.environ["CUDA_VISIBLE_DEVICES"] = names
    if names:
        os.environ[HELD_ENV] = names
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
