"""GPU device locks: fake device counts, contending processes, crashes."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from idscaling import gpu
from idscaling.errors import ConfigError
from idscaling.gpu import GPUUnavailableError, acquire_gpus, torchrun_command, visible_devices

# Forked children inherit the monkeypatched device count; spawned ones would not.
FORK = multiprocessing.get_context("fork")


@contextlib.contextmanager
def another_job(cuda_visible_devices: str | None = None):
    """This process, seen as an unrelated job: the environment of an enclosing
    acquire_gpus (narrowed devices, the held marker) is hidden inside the block."""
    keys = ["CUDA_VISIBLE_DEVICES", gpu.HELD_ENV]
    saved = {key: os.environ.pop(key, None) for key in keys}
    if cuda_visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@pytest.fixture
def fake_gpus(monkeypatch):
    """Pretend the driver reports `count` GPUs and no CUDA_VISIBLE_DEVICES is set."""

    def install(count: int) -> None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setattr(gpu, "device_count", lambda: count)

    return install


def test_visible_devices_follow_cuda_visible_devices(fake_gpus, monkeypatch):
    fake_gpus(3)
    assert visible_devices() == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    assert visible_devices() == ["3", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aa,GPU-bb")
    assert visible_devices() == ["GPU-aa", "GPU-bb"]
    for hidden in ["", "-1", "-1,0"]:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert visible_devices() == []


def test_takes_distinct_free_devices_and_restores_environment(fake_gpus, tmp_path):
    fake_gpus(4)
    with acquire_gpus(2, lock_dir=tmp_path) as first:
        assert len(first) == 2
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, first))
        with another_job(), acquire_gpus(2, lock_dir=tmp_path, timeout=0) as second:
            assert sorted(first + second) == [0, 1, 2, 3]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, second))
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, first))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert gpu.HELD_ENV not in os.environ
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"gpu-{i}.lock" for i in range(4)]


def test_ids_are_positions_within_existing_visible_devices(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7,9")
    with acquire_gpus(1, lock_dir=tmp_path) as held:
        assert held == [0]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7,9")
    # Another job that sees device 5 first must skip it while it is held.
    with acquire_gpus(1, lock_dir=tmp_path):
        with another_job("5,7,9"), acquire_gpus(2, lock_dir=tmp_path, timeout=0) as ids:
            assert ids == [1, 2]
            assert os.environ["CUDA_VISIBLE_DEVICES"] == "7,9"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5,7,9"
    assert (tmp_path / "gpu-9.lock").exists()


def test_busy_devices_time_out_naming_the_holder(fake_gpus, tmp_path):
    fake_gpus(2)
    with acquire_gpus(2, lock_dir=tmp_path):
        started = time.monotonic()
        with pytest.raises(GPUUnavailableError, match=f"pid {os.getpid()}"):
            with another_job(), acquire_gpus(1, lock_dir=tmp_path, timeout=0.3, poll=0.05):
                pass
        assert time.monotonic() - started >= 0.3
    # Released on exit: the same request now succeeds at once.
    with acquire_gpus(2, lock_dir=tmp_path, timeout=0) as ids:
        assert ids == [0, 1]


def _nested_take(lock_dir: Path, results) -> None:
    with acquire_gpus(1, lock_dir=lock_dir, timeout=1) as ids:
        results.put((ids, os.environ["CUDA_VISIBLE_DEVICES"]))


def test_children_of_a_holder_use_its_devices_without_waiting(fake_gpus, tmp_path):
    fake_gpus(3)
    with acquire_gpus(1, lock_dir=tmp_path):  # device 0 goes to someone else
        with another_job(), acquire_gpus(2, lock_dir=tmp_path) as outer:
            assert outer == [1, 2]
            # The same process again, and a child (a torchrun worker): no deadlock on
            # the locks that the caller holds, and only the caller's devices.
            with acquire_gpus(1, lock_dir=tmp_path, timeout=0) as inner:
                assert inner == [0]
                assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
            results = FORK.Queue()
            child = FORK.Process(target=_nested_take, args=(tmp_path, results))
            child.start()
            assert results.get(timeout=30) == ([0], "1")
            child.join(timeout=10)
            assert child.exitcode == 0
            with pytest.raises(ConfigError, match="asked for 3 GPUs but only 2"):
                with acquire_gpus(3, lock_dir=tmp_path):
                    pass


def test_bad_requests_fail_at_once(fake_gpus, tmp_path):
    fake_gpus(2)
    with pytest.raises(ConfigError, match="asked for 3 GPUs but only 2"):
        with acquire_gpus(3, lock_dir=tmp_path):
            pass
    for bad in [-1, 1.5, True]:
        with pytest.raises(ConfigError, match="non-negative integer"):
            with acquire_gpus(bad, lock_dir=tmp_path):
                pass
    with pytest.raises(ConfigError, match="nproc"):
        torchrun_command(0, ["train"])


def test_no_gpus_yields_nothing_and_says_so(fake_gpus, tmp_path, caplog):
    fake_gpus(0)
    with caplog.at_level(logging.WARNING, logger="idscaling.gpu"):
        with acquire_gpus(1, lock_dir=tmp_path) as ids:
            assert ids == []
            assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "none is visible" in caplog.text
    assert not tmp_path.joinpath("gpu-0.lock").exists()


def test_zero_gpus_hides_every_device(fake_gpus, tmp_path):
    fake_gpus(2)
    with acquire_gpus(0, lock_dir=tmp_path) as ids:
        assert ids == []
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_lock_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv(gpu.LOCK_DIR_ENV, str(tmp_path))
    assert gpu.default_lock_dir() == tmp_path
    monkeypatch.delenv(gpu.LOCK_DIR_ENV)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert gpu.default_lock_dir() == gpu.DEFAULT_LOCK_DIR
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert gpu.default_lock_dir() == gpu.DEFAULT_LOCK_DIR / "slurm-42"


def test_torchrun_command_runs_this_package():
    argv = torchrun_command(2, ["train", "--gpus", "2"])
    assert argv[1:3] == ["-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in argv
    assert argv[-4:] == ["idscaling", "train", "--gpus", "2"]


def _hold_and_mark(lock_dir: Path, marks: Path, n: int, results) -> None:
    """Child: take n devices, and while holding them claim a marker file per device
    with O_EXCL: a second simultaneous holder of a device could not create it."""
    try:
        with acquire_gpus(n, lock_dir=lock_dir, timeout=60, poll=0.02) as ids:
            names = os.environ["CUDA_VISIBLE_DEVICES"].split(",")
            clashes = []
            for i in ids:
                try:
                    os.close(os.open(marks / f"held-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    clashes.append(i)
            time.sleep(0.1)
            for i in ids:
                if i not in clashes:
                    os.unlink(marks / f"held-{i}")
            results.put((os.getpid(), ids, names, clashes))
    except Exception as error:  # reported to the parent, which fails the test
        results.put((os.getpid(), None, repr(error), []))


def test_contending_processes_never_share_a_device(fake_gpus, tmp_path):
    fake_gpus(4)
    lock_dir, marks = tmp_path / "locks", tmp_path / "marks"
    marks.mkdir()
    results = FORK.Queue()
    workers = [FORK.Process(target=_hold_and_mark, args=(lock_dir, marks, 1 + k % 2, results))
               for k in range(8)]
    for w in workers:
        w.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=10)
        assert w.exitcode == 0
    for pid, ids, names, clashes in outcomes:
        assert ids is not None, f"worker {pid} failed: {names}"
        assert clashes == [], f"worker {pid} shared devices {clashes}"
        assert names == [str(i) for i in ids]
        assert len(set(ids)) == len(ids)
    assert sorted(len(o[1]) for o in outcomes) == [1] * 4 + [2] * 4
    assert list(marks.iterdir()) == []


def _hold_until_killed(lock_dir: Path, taken) -> None:
    with acquire_gpus(2, lock_dir=lock_dir):
        taken.set()
        time.sleep(60)


def test_a_killed_holder_releases_its_devices(fake_gpus, tmp_path):
    fake_gpus(2)
    taken = FORK.Event()
    holder = FORK.Process(target=_hold_until_killed, args=(tmp_path, taken))
    holder.start()
    try:
        assert taken.wait(timeout=30)
        with pytest.raises(GPUUnavailableError, match=f"pid {holder.pid}"):
            with acquire_gpus(1, lock_dir=tmp_path, timeout=0.2, poll=0.05):
                pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(timeout=10)
    # The kernel dropped its locks; the files still name it, which must not matter.
    assert f"pid {holder.pid}" in (tmp_path / "gpu-0.lock").read_text()
    with acquire_gpus(2, lock_dir=tmp_path, timeout=0) as ids:
        assert ids == [0, 1]
