"""Atomic file output: a reader never sees a half-written file.

Every stage writes through these helpers, so a job killed at any moment leaves either
the old file or the new one, never a truncated one that Snakemake would take as done.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from idscaling.errors import OutputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        if tmp.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as error:
        # Checked before the partial file goes: a full file system is why writes fail
        # with messages that do not say so (numpy: "requested and 0 written", torch:
        # "unexpected pos").
        full = _out_of_space(error, path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise OutputError(f"cannot write {path}: {full}; free space and run again") from error
        raise


FULL_BELOW = 1 << 20  # bytes free under which a failed write is taken as a full disk


def _out_of_space(error: BaseException, folder: Path) -> str:
    if not isinstance(error, (OSError, RuntimeError)):
        return ""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{error.strerror} on the file system of {folder}"
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f"the file system of {folder} is full ({free:,} bytes free)" if free < FULL_BELOW else ""


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_to_builtin) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _to_builtin(obj: Any) -> Any:
    # numpy scalars and arrays appear in metrics; json cannot encode them natively.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
