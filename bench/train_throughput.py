"""Training throughput: the idscaling engine against a plain PyTorch loop.

Both train the same GPT-2 shape on the same random tokens, in one process, with the
same batch, context, threads and precision (fp32, eager). The baseline is what one
writes by hand: a minimal GPT-2 (nn.Linear, scaled_dot_product_attention,
F.cross_entropy), torch.optim.AdamW with its defaults, gradient clipping, and random
windows of an in-memory tensor. The engine runs `train_run` end to end (memory-mapped
data, schedule, evaluation and checkpoint at the end); its tokens/s is the steady-state
figure it reports in metrics.json. The two loops take turns step by step, so that both
see the same load on a shared machine. Both skip their first 5 steps.

    python bench/train_throughput.py                       # d=64, 2 layers
    python bench/train_throughput.py --n-embd 128 --n-layer 4 --n-head 4

On CUDA it also trains in the engine's default precision and prints its MFU.
Goal: ratio (engine / baseline) >= 1.0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from idscaling.train import train_run

WARMUP = 5  # steps not timed, in both loops


# ------------------------------------------------------------ the plain baseline


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab: int, context: int, d: int, n_layer: int, n_head: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(context, d)
        self.blocks = nn.Sequential(*(PlainBlock(d, n_head) for _ in range(n_layer)))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        logits = self.head(self.ln_f(self.blocks(x)))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class PlainLoop:
    """The hand-written loop, one step at a time, timing each step."""

    def __init__(self, data: torch.Tensor, a):
        torch.manual_seed(0)
        self.data, self.a = data, a
        self.model = PlainGPT(a.vocab, a.context, a.n_embd, a.n_layer, a.n_head)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        self.times: list[float] = []

    def step(self) -> None:
        a, data = self.a, self.data
        t0 = time.perf_counter()
        ix = torch.randint(len(data) - a.context - 1, (a.batch,))
        x = torch.stack([data[i : i + a.context] for i in ix])
        y = torch.stack([data[i + 1 : i + 1 + a.context] for i in ix])
        loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()
        self.times.append(time.perf_counter() - t0)

    def tokens_per_s(self) -> float:
        timed = self.times[WARMUP:]
        return len(timed) * self.a.batch * self.a.context / sum(timed)


# -------------------------------------------------------------------- the engine


def engine(files: Path, run: int, a, device: str, precision: str, step_callback=None) -> dict:
    train = dict(context=a.context, batch_size=a.batch, max_steps=a.steps, warmup_steps=WARMUP,
                 eval_every=a.steps, eval_tokens=8 * a.context, checkpoint_every=a.steps,
                 precision=precision, compile=a.compile)
    return train_run(files / "train.bin", files / "val.bin", files / "meta.json", files / f"run{run}",
                     model=dict(n_layer=a.n_layer, n_embd=a.n_embd, n_head=a.n_head),
                     tokens=a.tokens, seed=0, train=train, threads=a.threads, device=device,
                     step_callback=step_callback)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokens", type=int, default=500_000)
    p.add_argument("--compile", action="store_true", help="engine: torch.compile (CUDA only)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available()

    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        rng = np.random.default_rng(0)
        dtype = np.uint16 if a.vocab <= 65536 else np.uint32
        train_ids = rng.integers(0, a.vocab, a.tokens).astype(dtype)
        val_ids = rng.integers(0, a.vocab, 64 * a.context).astype(dtype)
        train_ids.tofile(files / "train.bin")
        val_ids.tofile(files / "val.bin")
        (files / "meta.json").write_text(json.dumps(dict(
            vocab_size=a.vocab, eot_id=0, dtype=np.dtype(dtype).name,
            train_tokens=len(train_ids), val_tokens=len(val_ids))))
        data = torch.from_numpy(train_ids.astype(np.int64))

        shape = f"GPT n_layer={a.n_layer} n_embd={a.n_embd} n_head={a.n_head} vocab={a.vocab}"
        print(f"{shape}, batch {a.batch} x {a.context}, threads {a.threads}, {a.steps} steps "
              f"({WARMUP} untimed), {a.repeats} repeats, CPU fp32 eager")
        base, eng = [], []
        for r in range(a.repeats):
            # one baseline step after each engine step (the engine's step_callback runs outside
            # its timed region): both loops see the same machine load, which on a shared
            # machine drifts more from minute to minute than the two loops differ
            plain = PlainLoop(data, a)
            m = engine(files, r, a, "cpu", "fp32", step_callback=lambda step: plain.step())
            base.append(plain.tokens_per_s())
            eng.append(m["tokens_per_s"])
            print(f"  repeat {r}: baseline (plain loop) {base[-1]:,.0f} tok/s, engine {eng[-1]:,.0f} tok/s, "
                  f"ratio {eng[-1] / base[-1]:.2f}")
        b, e = statistics.median(base), statistics.median(eng)
        ratio = statistics.median(x / y for x, y in zip(eng, base))
        print(f"median tokens/s: baseline (plain PyTorch loop) {b:,.0f}, engine {e:,.0f}; "
              f"ratio engine/baseline {ratio:.2f} (median of the per-repeat ratios)")

        if cuda:
            for r in range(a.repeats):
                m = engine(files, 100 + r, a, "cuda", "auto")
                print(f"  CUDA engine ({m['precision']}, compile={m['compile']}): "
                      f"{m['tokens_per_s']:,.0f} tok/s, MFU {m['mfu']}")


if __name__ == "__main__":
    main()
