"""The results folder: the one owner of its layout.

The workflow builds every path of a run, an ID file or a robustness file with these
patterns; the collectors read corpus, model, D and seed back from them with the same
patterns, into tables, so that no later stage parses a path.
"""

from __future__ import annotations

import re
from pathlib import Path

from idscaling.errors import DataError

# str.format patterns, with Snakemake's wildcard names
RUN_DIR = "results/{corpus}/runs/{model}/D{tokens}/s{seed}"
ID_FILE = "results/{corpus}/intrinsic_dim/{embedder}.json"
ROBUSTNESS_FILE = "results/{corpus}/id_robustness.json"
# one run of the known-dimension sweep; its per-point excess is the .npy beside it
KNOWN_D_RECORD = "results/known_d/{arm}/n{docs}/s{seed}/{estimator}.json"

_FIELDS = {"corpus": r"[^/]+", "model": r"[^/]+", "tokens": r"\d+", "seed": r"\d+",
           "embedder": r"[^/]+"}
_INTEGERS = ("tokens", "seed")


def run_dir(corpus: str, model: str, tokens: int, seed: int) -> str:
    return RUN_DIR.format(corpus=corpus, model=model, tokens=tokens, seed=seed)


def _regex(pattern: str, file_in_dir: bool) -> re.Pattern:
    body = re.escape(pattern.removeprefix("results/"))
    for name, sub in _FIELDS.items():
        body = body.replace(re.escape("{" + name + "}"), f"(?P<{name}>{sub})")
    return re.compile("(?:^|/)" + body + ("/[^/]+$" if file_in_dir else "$"))


_PATTERNS = {"run": _regex(RUN_DIR, True), "id": _regex(ID_FILE, False),
             "robustness": _regex(ROBUSTNESS_FILE, False)}


def parse(path: str | Path, kind: str) -> dict:
    """The fields of a results path: kind "run" (a file in a run folder), "id" (an ID
    file) or "robustness". Raises DataError naming the path when it is not one."""
    m = _PATTERNS[kind].search(Path(path).as_posix())
    if not m:
        what = {"run": "run", "id": "intrinsic-dimension", "robustness": "ID robustness"}[kind]
        raise DataError(f"{path}: not a {what} path of the results layout")
    return {k: int(v) if k in _INTEGERS else v for k, v in m.groupdict().items()}
