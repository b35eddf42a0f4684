"""Does the ID of a trained model's embeddings rise with the synthetic corpus's d?

A check, not a unit test: for each latent dimension d it generates a synthetic corpus,
trains a small GPT-2 (`idscaling.model.GPT`, the pipeline's model) on it, and estimates
the intrinsic dimension of the final hidden states (after ln_f, what transformers calls
the last hidden state) of held-out documents with the Levina-Bickel MLE (k=20) and
TwoNN. Symbols are fed as token ids directly: the unit tests check that a byte-level BPE
maps each symbol to one token, so this is the sequence the pipeline's model sees.

Baselines, measured in the same run:
- the loss of a model that knows z (the mean entropy of the true next-symbol law) and
  of one that knows only the previous symbol: how much of z the model has learned;
- the ID of the true log-probabilities log p(. | z, s) at the same points: the
  dimension that an ideal predictor's outputs have (it reads above d at small d,
  because the points fall on V + 1 copies of the manifold, one per previous symbol,
  and with a few thousand points the neighbourhoods straddle copies);
- the same model untrained: its states already mix the input symbols, whose counts
  carry z, so what training adds is the rise beyond that.

Measured (1200 steps of batch 32 x 128, 8000 documents, 2-layer d=64 GPT, 2 loaded CPU
cores, 27 min in all): MLE of the embed stage's protocol d=2: 3.5, d=8: 6.3 (ratio
1.78; untrained 1.31); one late position a document d=2: 3.0, d=8: 7.0 (ratio 2.30).

The pipeline's sweep (configs/synthetic.yaml, a Matern field on the sphere) is measured
in the README; to probe that generator here:
  python bench/synthetic_check.py --markov 0 --vocab 64 --set manifold=sphere \
      --set modes=256 --set bandwidth=0.5

Usage: python bench/synthetic_check.py [--dims 2 8] [--steps 1500] [--docs 8000]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy.spatial import cKDTree

from idscaling.model import GPT, GPTConfig
from idscaling.synthetic import LatentMarkovSource


def mle_id(X: np.ndarray, k: int = 20) -> float:
    """Levina-Bickel, points combined by MacKay-Ghahramani (mean of inverses)."""
    X = np.unique(X, axis=0)
    dist, _ = cKDTree(X).query(X, k + 1)
    dist = dist[:, 1:]
    inv = np.log(dist[:, -1:] / dist[:, :-1]).sum(axis=1) / (k - 1)
    return float(1.0 / inv.mean())


def twonn_id(X: np.ndarray) -> float:
    X = np.unique(X, axis=0)
    dist, _ = cKDTree(X).query(X, 3)
    return float(len(X) / np.log(dist[:, 2] / dist[:, 1]).sum())


def batched_mle(X: np.ndarray, batch: int = 3600, k: int = 20, seed: int = 0,
                max_batches: int = 10) -> float:
    """The paper's protocol: the mean of per-batch MLE estimates over random batches."""
    idx = np.random.default_rng(seed).permutation(len(X))
    parts = [idx[i:i + batch] for i in range(0, len(idx) - batch + 1, batch)] or [idx]
    parts = parts[:max_batches]  # enough for a stable mean, and fast
    return float(np.mean([mle_id(X[p], k) for p in parts]))


def new_model(source: LatentMarkovSource, args) -> GPT:
    cfg = GPTConfig(vocab_size=source.vocab + 1, n_layer=args.n_layer, n_embd=args.n_embd,
                    n_head=args.n_head, context=args.context)
    torch.manual_seed(0)
    return GPT(cfg)


def train(model: GPT, source: LatentMarkovSource, n_docs: int, steps: int, args) -> float:
    """Train in place on the first n_docs documents; return the seconds it took."""
    sample = source.sample(n_docs, progress=False)
    eot = source.vocab
    # Documents joined by an end-of-text id, as the tokenize stage writes train.bin.
    stream = np.concatenate([np.append(row, eot) for row in sample.symbols])
    data = torch.from_numpy(stream.astype(np.int64))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1,
                            betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for step in range(steps):
        # warmup then cosine decay to a tenth, as the training engine does
        warm = min(1.0, (step + 1) / 50)
        cos = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * cos
        start = torch.randint(0, len(data) - args.context - 1, (args.batch,), generator=gen)
        x = torch.stack([data[s:s + args.context] for s in start])
        y = torch.stack([data[s + 1:s + 1 + args.context] for s in start])
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"    step {step:5d} loss {loss.item():.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return time.perf_counter() - t0


@torch.no_grad()
def evaluate(model: GPT, source: LatentMarkovSource, first_doc: int, n_docs: int):
    """Val loss by position, final hidden states and true log-probs of held-out docs."""
    sample = source.sample(first_doc + n_docs, progress=False)
    symbols = sample.symbols[first_doc:].astype(np.int64)
    latents = sample.latents[first_doc:]
    eot = source.vocab
    x = torch.from_numpy(np.concatenate([np.full((n_docs, 1), eot), symbols[:, :-1]], axis=1))
    hidden, nll = [], []
    hook = model.transformer.ln_f.register_forward_hook(lambda m, i, o: hidden.append(o))
    model.eval()
    for chunk in range(0, n_docs, 500):  # bounded attention memory
        logits, _ = model(x[chunk:chunk + 500])
        targets = torch.from_numpy(symbols[chunk:chunk + 500])
        nll.append(F.cross_entropy(logits.transpose(1, 2), targets, reduction="none"))
    hook.remove()
    nll = torch.cat(nll).numpy()
    H = torch.cat(hidden).numpy()  # (docs, T, n_embd): the state at t predicts symbol t

    # Bayes bounds: knowing z (true entropy), and knowing only the previous symbol.
    T = symbols.shape[1]
    prev = np.concatenate([np.full((n_docs, 1), -1), symbols[:, :-1]], axis=1)
    true_logp = np.empty((n_docs, T, source.vocab))
    for t in range(T):
        true_logp[:, t] = np.log(source.probs(latents, None if t == 0 else prev[:, t]))
    knows_z = -(np.exp(true_logp) * true_logp).sum(-1).mean()
    rng = np.random.default_rng(1)
    z_other = source.sample_latents(rng, 4000)
    mix = np.stack([source.probs(z_other, s).mean(0) for s in range(source.vocab)])
    knows_prev = -np.log(mix[prev[:, 1:], symbols[:, 1:]]).mean()
    return nll, H, true_logp, symbols, knows_z, knows_prev


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dims", type=int, nargs="+", default=[2, 8])
    p.add_argument("--docs", type=int, default=8000, help="training documents")
    p.add_argument("--val-docs", type=int, default=4000)
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--context", type=int, default=128)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-head", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vocab", type=int, default=32)
    p.add_argument("--doc-tokens", type=int, default=128)
    p.add_argument("--signal", type=float, default=None, help="default: the generator's")
    p.add_argument("--markov", type=float, default=None, help="default: the generator's")
    p.add_argument("--noise", type=float, default=None, help="default: the generator's")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other generator option, e.g. --set manifold=sphere --set modes=256")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t_all = time.perf_counter()
    rows = []
    for d in args.dims:
        options = {k: getattr(args, k) for k in ("signal", "markov", "noise")
                   if getattr(args, k) is not None}
        for item in args.set:
            key, _, value = item.partition("=")
            options[key] = yaml.safe_load(value)  # numbers as numbers, words as words
        source = LatentMarkovSource(d, vocab=args.vocab, doc_tokens=args.doc_tokens, **options)
        model = new_model(source, args)
        # Baseline: the same model untrained. Its states already mix the input symbols,
        # whose counts carry z, so the rise with d must come out larger after training.
        rows.append(measure(model, source, args, d=d, state="untrained", train_s=0.0))
        print(f"d={d}: training {args.steps} steps on {args.docs} docs "
              f"({args.docs * (args.doc_tokens + 1)} tokens)", flush=True)
        train_s = train(model, source, args.docs, args.steps, args)
        rows.append(measure(model, source, args, d=d, state="trained", train_s=train_s))

    print("\n                     loss                 | ID of final hidden states "
          "(MLE k=20 unless TwoNN)          | ID of true log p")
    print("d   state      model  knows_z  knows_prev | embed-protocol  first 32  late  "
          "late(cos)  late TwoNN | MLE   TwoNN | train s")
    for r in rows:
        print(f"{r['d']:<3d} {r['state']:9s} {r['val_loss']:5.3f} {r['knows_z']:8.3f} "
              f"{r['knows_prev']:11.3f} | {r['mle_embed']:14.2f} {r['mle_first32']:9.2f} "
              f"{r['mle_late']:5.2f} {r['mle_late_cos']:10.2f} {r['twonn_late']:11.2f} | "
              f"{r['mle_true_logp']:5.2f} {r['twonn_true_logp']:6.2f} | {r['train_s']:7.0f}")
    lo, hi = min(args.dims), max(args.dims)
    for kind in ("untrained", "trained"):
        by_d = {r["d"]: r for r in rows if r["state"] == kind}
        for key in ("mle_embed", "mle_late"):
            print(f"ratio {key} d={hi} / d={lo}, {kind}: "
                  f"{by_d[hi][key] / by_d[lo][key]:.2f} (baseline: d={lo})")
    print(f"total {time.perf_counter() - t_all:.0f} s")


def measure(model: GPT, source: LatentMarkovSource, args, **labels) -> dict:
    """Losses and ID estimates of the model's final hidden states on held-out docs."""
    nll, H, true_logp, symbols, knows_z, knows_prev = evaluate(
        model, source, args.docs, args.val_docs)
    T = H.shape[1]
    rng = np.random.default_rng(0)
    n = args.val_docs
    # (a) the embed stage's protocol: 32 positions a document after a seeded shuffle,
    #     MLE averaged over batches of 3600 points; (b) the first 32 positions only,
    #     where the posterior over z is still wide; (c) one late position a document
    #     (t >= T/2), where it has concentrated; (d) the true log-probs there.
    picks = np.stack([np.sort(rng.permutation(T)[:32]) for _ in range(n)])
    embed = H[np.arange(n)[:, None], picks].reshape(-1, H.shape[-1])
    early = H[:, :32].reshape(-1, H.shape[-1])
    late_t = rng.integers(T // 2, T, size=n)
    late = H[np.arange(n), late_t]
    unit = late / np.linalg.norm(late, axis=1, keepdims=True)  # cosine geometry
    lp = true_logp[np.arange(n), late_t]
    lp = lp - lp.mean(axis=1, keepdims=True)
    row = dict(
        **labels, val_loss=nll.mean(), val_loss_late=nll[:, T // 2:].mean(),
        knows_z=knows_z, knows_prev=knows_prev,
        mle_embed=batched_mle(embed), mle_first32=batched_mle(early),
        mle_late=mle_id(late), mle_late_cos=mle_id(unit), twonn_late=twonn_id(late),
        mle_true_logp=mle_id(lp), twonn_true_logp=twonn_id(lp))
    print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, (float, np.floating)) else f"{k}={v}"
                           for k, v in row.items()), flush=True)
    return row


if __name__ == "__main__":
    main()
