"""Fixtures shared by every test module. Keep this file small."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_gpu_locks(tmp_path_factory, monkeypatch):
    # GPU device locks (idscaling.gpu) go to a directory of the test session's own, never
    # the machine-wide one that real jobs on this machine contend for.
    monkeypatch.setenv("IDSCALING_GPU_LOCK_DIR", str(tmp_path_factory.getbasetemp() / "gpu-locks"))
