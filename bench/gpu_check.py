"""What the first GPU visit must measure, in one command (issue: ready for the first GPU).

    python bench/gpu_check.py --out gpu_check/          # on the GPU, at most ~8 minutes
    python bench/gpu_check.py --out /tmp/dry --dry      # tiny shapes on CPU, seconds

Four checks; each prints one line per figure and all of them go to OUT/gpu_check.json
(with the device, the torch version and the date), so a visit that runs out of time
still leaves what it measured. A check that fails is recorded with its error and the
others go on.

1. throughput: the engine (`train_run`) against a plain PyTorch loop of the same shape
   on the same device (bf16 autocast, fused AdamW), with and without torch.compile, for
   GPT-2 small (12 x 768, context 1024) and paper.yaml's L4-d256; tokens/s and MFU.
2. knn_id: the exact kNN MLE (k = 20, full protocol) on 1M x 768 points that lie on a
   uniform S^8 rotated into R^768: time, peak GPU memory, the estimate against 8.
3. workflow: a tiny grid (two models, two data sizes) through
   `snakemake --profile profiles/local-gpu`: every run wrote `device: cuda`, and every
   training log says which GPU it took (the lock files). --dry plans it (`-n`) only.
4. resume: one training run killed with SIGKILL after its first checkpoint, run again:
   it resumes and ends at the same step count as the configuration says.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from train_throughput import PlainGPT  # noqa: E402  (the same hand-written baseline)

from idscaling.intrinsic_dim import estimate_id  # noqa: E402
from idscaling.model import GPT, GPTConfig  # noqa: E402
from idscaling.devices import peak_flops  # noqa: E402
from idscaling.train import train_run  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FULL = {
    "shapes": {"gpt2-small": (12, 768, 12, 1024, 16), "paper-L4-d256": (4, 256, 4, 1024, 32)},
    "vocab": 50304, "steps": 30, "warmup": 10, "knn": (1_000_000, 768, 8),
    "device": "cuda", "precision": "bf16",
}
DRY = {
    "shapes": {"tiny": (2, 32, 2, 64, 8)},
    "vocab": 512, "steps": 8, "warmup": 3, "knn": (2_000, 16, 3),
    "device": "cpu", "precision": "fp32",
}


def write_tokens(d: Path, vocab: int, n: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    dtype = np.uint16 if vocab <= 65536 else np.uint32
    rng.integers(0, vocab, n).astype(dtype).tofile(d / "train.bin")
    rng.integers(0, vocab, max(n // 20, 4096)).astype(dtype).tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps(dict(
        vocab_size=vocab, eot_id=0, dtype=np.dtype(dtype).name, train_tokens=n,
        val_tokens=max(n // 20, 4096))))
    return d


# ---------------------------------------------------------------------------- checks


def plain_tokens_per_s(shape, vocab, steps, warmup, device, precision, compile_) -> float:
    """The hand-written loop on `device`: bf16 autocast and fused AdamW on CUDA."""
    n_layer, n_embd, n_head, context, batch = shape
    torch.manual_seed(0)
    model = PlainGPT(vocab, context, n_embd, n_layer, n_head).to(device)
    model.forward = _on_device(model, device)
    step_model = torch.compile(model) if compile_ else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device == "cuda")
    data = torch.randint(0, vocab, (batch, context + 1), device=device)
    cast = (torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16"
            else torch.autocast("cpu", enabled=False))
    times = []
    for _ in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with cast:
            loss = step_model(data[:, :-1], data[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return steps * batch * context / sum(times[warmup:])


def _on_device(model, device):
    """PlainGPT's forward builds its position index on the CPU; put it on `device`."""
    def forward(idx, targets):
        x = model.wte(idx) + model.wpe(torch.arange(idx.shape[1], device=device))
        logits = model.head(model.ln_f(model.blocks(x)))
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))
    return forward


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def check_throughput(p, work: Path, record) -> None:
    files = write_tokens(work / "tokens", p["vocab"], 4_000_000 if p["device"] == "cuda" else 50_000)
    name = torch.cuda.get_device_name() if p["device"] == "cuda" else "cpu"
    for label, shape in p["shapes"].items():
        n_layer, n_embd, n_head, context, batch = shape
        flops = GPT(GPTConfig(vocab_size=p["vocab"], n_layer=n_layer, n_embd=n_embd,
                              n_head=n_head, context=context)).flops_per_token()
        peak = peak_flops(name, p["precision"], None)
        for compile_ in ([False, True] if p["device"] == "cuda" else [False]):
            train = dict(context=context, batch_size=batch, max_steps=p["warmup"] + p["steps"],
                         warmup_steps=p["warmup"], eval_every=10_000, eval_tokens=context * 8,
                         checkpoint_every=10_000, precision="auto" if p["device"] == "cuda" else "fp32",
                         compile=compile_, early_stop_patience=0)
            m = train_run(files / "train.bin", files / "val.bin", files / "meta.json",
                          work / f"run-{label}-{compile_}", model=dict(n_layer=n_layer,
                          n_embd=n_embd, n_head=n_head), tokens=2_000_000 if p["device"] == "cuda" else 40_000,
                          seed=0, train=train, device=p["device"])
            base = plain_tokens_per_s(shape, p["vocab"], p["steps"], p["warmup"], p["device"],
                                      p["precision"], compile_)
            mfu = (lambda tps: flops * tps / peak if peak else None)
            record(f"throughput/{label}/compile={compile_}", {
                "engine_tokens_per_s": m["tokens_per_s"], "engine_mfu": m.get("mfu"),
                "plain_tokens_per_s": base, "plain_mfu": mfu(base),
                "ratio_engine_to_plain": m["tokens_per_s"] / base,
                "engine_precision": m["precision"], "engine_compile": m["compile"],
                "flops_per_token": flops},
                f"{label} compile={compile_}: engine {m['tokens_per_s']:,.0f} tok/s "
                f"(MFU {_pct(m.get('mfu'))}), plain loop {base:,.0f} tok/s (MFU {_pct(mfu(base))}), "
                f"ratio {m['tokens_per_s'] / base:.2f}")


def check_knn_id(p, work: Path, record) -> None:
    n, dim, d = p["knn"]
    g = torch.Generator().manual_seed(0)
    sphere = torch.randn(n, d + 1, generator=g)
    sphere /= sphere.norm(dim=1, keepdim=True)
    rotation, _ = torch.linalg.qr(torch.randn(dim, d + 1, generator=g))
    X = (sphere @ rotation.T).to(torch.float32)
    if p["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    est = estimate_id(X, "mle", k=20, metric="euclidean", device=p["device"])
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**30 if p["device"] == "cuda" else None
    record("knn_id", {"n": n, "dim": dim, "true_d": d, "id": est.id, "seconds": seconds,
                      "peak_gpu_gib": peak},
           f"kNN MLE k=20 on {n:,} x {dim} points of S^{d}: id {est.id:.2f} (true {d}), "
           f"{seconds:.1f} s, peak GPU memory {peak if peak is None else f'{peak:.1f} GiB'}")


def check_workflow(p, work: Path, record) -> None:
    import yaml

    workdir = work / "workflow"
    workdir.mkdir(parents=True)
    for item in ("Snakefile", "workflow", "profiles", "config.yaml"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, workdir / item)
    config = yaml.safe_load((REPO / "configs" / "test.yaml").read_text())
    config["corpora"] = {"code": config["corpora"]["code"]}
    config["models"] = {k: config["models"][k] for k in ("tiny", "mid")}
    config["data_tokens"] = config["data_tokens"][:2]
    config["compute"] = {"train_gpus": 1, "embed_gpus": 1, "threads": 2}
    (workdir / "gpu.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/local-gpu",
           "--configfile", "gpu.yaml"] + (["-n"] if p["device"] != "cuda" else [])
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               IDSCALING_GPU_LOCK_DIR=str(work / "locks"))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=400)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"snakemake failed ({proc.returncode}): {proc.stderr[-2000:]}")
    if p["device"] != "cuda":
        planned = proc.stdout.count("rule train:") + proc.stderr.count("rule train:")
        record("workflow", {"planned_train_jobs": planned, "seconds": seconds},
               f"workflow through profiles/local-gpu: {planned} training jobs planned (dry)")
        return
    metrics = [json.loads(f.read_text()) for f in workdir.glob("results/code/runs/*/*/*/metrics.json")]
    took = [line for f in workdir.glob("logs/code/train/*.log")
            for line in f.read_text().splitlines() if "took GPU(s)" in line]
    devices = sorted({m["device"] for m in metrics})
    record("workflow", {"runs": len(metrics), "devices": devices, "lock_lines": took,
                        "seconds": seconds},
           f"workflow through profiles/local-gpu: {len(metrics)} runs on {devices}, "
           f"{len(took)} logs name the GPU they locked, {seconds:.0f} s")


def check_resume(p, work: Path, record) -> None:
    files = write_tokens(work / "resume-tokens", 512, 200_000)
    shape = next(iter(p["shapes"].values()))
    n_layer, n_embd, n_head, context, batch = shape
    options = dict(model=dict(n_layer=n_layer, n_embd=n_embd, n_head=n_head), tokens=100_000,
                   seed=0, train=dict(context=min(context, 256), batch_size=batch,
                                      max_steps=200, warmup_steps=5, eval_every=50,
                                      eval_tokens=4 * context, checkpoint_every=20,
                                      early_stop_patience=0),
                   device=p["device"])
    run_dir = work / "resume-run"
    script = ("import json, sys; from pathlib import Path; from idscaling.train import train_run; "
              "o = json.loads(sys.argv[1]); f = Path(sys.argv[2]); "
              "train_run(f / 'train.bin', f / 'val.bin', f / 'meta.json', Path(sys.argv[3]), "
              "**o)")
    args = [sys.executable, "-c", script, json.dumps(options), str(files), str(run_dir)]
    proc = subprocess.Popen(args, start_new_session=True)
    deadline = time.monotonic() + 300
    while not ((run_dir / "ckpt").exists() and any((run_dir / "ckpt").glob("*.pt"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the run ended or stalled before its first checkpoint")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if (run_dir / "metrics.json").exists():
        raise RuntimeError("the run finished before it was killed: make it longer")
    subprocess.run(args, check=True)
    m = json.loads((run_dir / "metrics.json").read_text())
    record("resume", {"resumed_from": m["resumed_from"], "steps": m["steps"],
                      "max_steps": 200, "device": m["device"]},
           f"SIGKILL after a checkpoint, run again: resumed from step {m['resumed_from']}, "
           f"ended at {m['steps']} of 200 steps on {m['device']}")


def _pct(x):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


# ------------------------------------------------------------------------------ main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json")
    ap.add_argument("--dry", action="store_true", help="tiny shapes on CPU, seconds")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run these checks only: throughput knn_id workflow resume")
    a = ap.parse_args(argv)
    p = DRY if a.dry else FULL
    if not a.dry and not torch.cuda.is_available():
        ap.error("no CUDA device: run on a GPU, or pass --dry")
    a.out.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() and not a.dry else "cpu",
              "torch": torch.__version__, "dry": a.dry, "results": {}, "errors": {}}

    def save():
        tmp = a.out / ".gpu_check.json.tmp"
        tmp.write_text(json.dumps(report, indent=2, default=float))
        tmp.replace(a.out / "gpu_check.json")

    def record(key, values, line):
        report["results"][key] = values
        print(line, flush=True)
        save()

    checks = {"throughput": check_throughput, "knn_id": check_knn_id,
              "workflow": check_workflow, "resume": check_resume}
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in checks.items():
            if a.only is not None and name not in a.only:
                continue
            t0 = time.perf_counter()
            try:
                check(p, Path(tmp) / name, record)
            except Exception as error:  # noqa: BLE001 - one failed check must not cost the rest
                report["errors"][name] = f"{type(error).__name__}: {error}"
                print(f"{name}: FAILED: {type(error).__name__}: {error}", flush=True)
                traceback.print_exc()
            print(f"  ({name}: {time.perf_counter() - t0:.1f} s)", flush=True)
            save()
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
