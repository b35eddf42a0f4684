"""Token embeddings of held-out documents from a reference model (the embed stage).

The protocol is Havrilla & Liao's: documents sampled from the validation split, each
truncated to the model's context, end-of-text, special and padding positions dropped, at
most `tokens_per_doc` positions kept per document after a seeded shuffle, and a cap on
the total. Any hidden layer, or all of them from one forward pass.

Two kinds of reference model, both loaded with `transformers` (never remote code):

* a model trained by this workflow: a directory with config.json and model.safetensors
  in `GPT2LMHeadModel` layout, with its tokenizer given separately as a `tokenizers`
  JSON file whose end-of-text token is "<|endoftext|>";
* any Hugging Face model, by hub id or local directory, with its own tokenizer
  (AutoModel / AutoTokenizer; HF_HUB_OFFLINE=1 keeps it off the network).

Layer L is the index into the model's `hidden_states` (0 = the input embeddings, the last
= the final layer), with negative indices resolved: layer=-1 on a 4-layer GPT-2 writes
layer4.npy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from idscaling.errors import ConfigError, DataError
from idscaling.files import atomic_path, write_json
from idscaling.devices import resolve_device, torch_threads

log = logging.getLogger(__name__)

EOT = "<|endoftext|>"
DTYPES = ("float32", "float16")


@dataclass
class _Reference:
    """A loaded reference model with the tokenizer that goes with it."""

    model: torch.nn.Module
    encode: Callable[[list[str], int], list[tuple[list[int], list[bool]]]]  # -> ids, drop
    pad_id: int
    n_positions: int | None
    n_layers: int  # transformer blocks; hidden_states has n_layers + 1 entries
    kind: str


def embed_corpus(model: str, val_docs: Path, out_dir: Path, *, tokenizer: Path | None,
                 layer: int | str | Sequence[int] = -1, docs: int = 4000,
                 tokens_per_doc: int = 32, min_position: int = 0,
                 max_points: int | None = None,
                 context: int | None = None, batch_size: int = 32, seed: int = 0,
                 dtype: str = "float32", device: str | None = None,
                 threads: int | None = None, model_dtype: str = "float32",
                 fill_docs: Path | None = None, fill_skip: int = 0, min_docs: int = 200,
                 min_points: int = 4000, final_norm: bool = True, progress: bool = True) -> dict:
    """Embed tokens of sampled validation documents with a reference model.

    model: a directory written by the training engine (then `tokenizer` is its
    tokenizers JSON file), or any Hugging Face model id or local directory (then
    tokenizer=None and the model's own tokenizer is used).
    val_docs: parquet with columns id, text (one row a document).
    layer: an index into hidden_states (negative counts from the end), a list of them,
    or "all". docs: documents sampled (seeded, without replacement; all if fewer).
    tokens_per_doc: positions kept per document after a seeded shuffle.
    min_position: positions before this index of a (truncated) document are never
    picked, for protocols that want each state to have seen at least this much context.
    max_points: cap on the total (a seeded subsample of the kept positions).
    context: truncation length in tokens (default: the model's maximum).
    dtype: storage dtype of the .npy files, "float32" or "float16"; model_dtype: the
    dtype the model runs in ("float32", "bfloat16", "float16").
    fill_docs: a second parquet (the train split) that tops the sample up to `docs` when
    val_docs holds fewer; its first `fill_skip` documents are never taken (the ones a
    trained model saw). The ID is a property of the text, so unseen train documents
    measure it as well as val ones. min_docs, min_points: below either, a warning (and
    meta `enough: false`).
    final_norm: the last hidden state as transformers returns it, after the model's final
    LayerNorm (True), or the last block's output before it (False), as a nanoGPT-style
    forward hook on the final norm sees it.

    Writes out_dir/layer{L}.npy, (points, hidden) for each chosen layer, rows in the same
    order in every layer (document order, then position), out_dir/positions.npy (each
    row's position in its document) and out_dir/meta.json. Every
    file is written atomically; stale layer files of an earlier run are removed.
    Returns the meta dict.
    """
    t0 = time.perf_counter()
    val_docs, out_dir = Path(val_docs), Path(out_dir)
    _check_positive(docs=docs, tokens_per_doc=tokens_per_doc, batch_size=batch_size)
    if isinstance(min_position, bool) or not isinstance(min_position, int) or min_position < 0:
        raise ConfigError(f"min_position must be a non-negative integer, got {min_position!r}")
    if max_points is not None:
        _check_positive(max_points=max_points)
    if context is not None:
        _check_positive(context=context)
    if dtype not in DTYPES:
        raise ConfigError(f"embedding dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    if model_dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model_dtype {model_dtype!r} is not float32, bfloat16 or float16")
    if isinstance(fill_skip, bool) or not isinstance(fill_skip, int) or fill_skip < 0:
        raise ConfigError(f"fill_skip must be a non-negative integer, got {fill_skip!r}")
    dev = resolve_device(device)
    texts_all, n_val = _available_docs(val_docs, fill_docs, fill_skip, docs, seed)

    with torch_threads(threads), torch.no_grad():
        ref = _load_reference(model, tokenizer, dev, getattr(torch, model_dtype))
        layers = _resolve_layers(layer, ref.n_layers)
        norm = None if final_norm else _final_norm(ref.model, model)
        if context is None:
            context = ref.n_positions
            if context is None:
                raise ConfigError(f"model {model} declares no maximum length: set "
                                  "embedding.context")
        elif ref.n_positions is not None and context > ref.n_positions:
            raise ConfigError(f"context {context} exceeds the {ref.n_positions} positions "
                              f"of model {model}")

        rng = np.random.default_rng(seed)
        n_avail = len(texts_all)
        chosen = (np.sort(rng.choice(n_avail, docs, replace=False)) if n_avail > docs
                  else np.arange(n_avail))
        if n_avail < docs:
            log.info("only %d documents, fewer than the %d asked for: using all",
                     n_avail, docs)
        texts = [texts_all[i] for i in chosen]
        encoded = ref.encode(texts, context)
        picks = _pick_positions(encoded, tokens_per_doc, max_points, seed, min_position)
        n_points = sum(len(p) for p in picks)
        n_used = sum(1 for p in picks if len(p))
        if n_points == 0:
            raise DataError(f"no token positions to embed in {val_docs}: the sampled "
                            "documents are empty after dropping special tokens"
                            + (f" and the first {min_position} positions" if min_position
                               else ""))
        log.info("embedding %d token positions from %d of %d sampled documents "
                 "(layers %s, context %d, model %s)", n_points, n_used, len(texts),
                 layers, context, model)
        enough = n_points >= min_points and n_used >= min_docs
        if not enough:
            log.warning("the ID will rest on %d points from %d documents, below the minimum "
                        "of %d points from %d documents: its estimate is weak (more "
                        "documents, tokens_per_doc, or fill_from_train would help)",
                        n_points, n_used, min_points, min_docs)

        dim = _write_layers(ref, encoded, picks, layers, out_dir, dtype, batch_size, dev, norm,
                            progress)
        _remove_stale(out_dir, layers)

    meta = {
        "model": str(model), "model_kind": ref.kind,
        "tokenizer": str(tokenizer) if tokenizer is not None else None,
        "layers": layers, "n_hidden_states": ref.n_layers + 1,
        "n_docs_available": n_avail, "n_docs": len(texts), "n_docs_used": n_used,
        "n_docs_val_available": n_val, "n_docs_fill": int(sum(chosen >= n_val)),
        "fill_docs": str(fill_docs) if fill_docs is not None else None,
        "fill_skip": fill_skip, "min_docs": min_docs, "min_points": min_points,
        "enough": enough,
        "n_points": n_points, "dim": dim, "tokens_per_doc": tokens_per_doc,
        "min_position": min_position,
        "max_points": max_points, "context": context, "seed": seed, "dtype": dtype,
        "model_dtype": model_dtype, "device": str(dev), "val_docs": str(val_docs),
        "final_norm": final_norm,
        "elapsed_s": time.perf_counter() - t0,
    }
    write_json(out_dir / "meta.json", meta)
    return meta




def _write_layers(ref: _Reference, encoded, picks, layers: list[int], out_dir: Path, dtype: str,
                  batch_size: int, dev: torch.device, norm, progress: bool) -> int:
    """Run the picked documents through the model in batches of similar lengths and write
    each layer's states at the picked positions (rows in document order) and
    positions.npy, each atomically. Returns the hidden size."""
    n_points = sum(len(p) for p in picks)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in picks])])
    order = sorted((i for i in range(len(picks)) if len(picks[i])),
                   key=lambda i: -len(encoded[i][0]))  # similar lengths pad less
    with contextlib.ExitStack() as stack:
        tmp = {L: stack.enter_context(atomic_path(out_dir / f"layer{L}.npy"))
               for L in layers}
        out: dict[int, np.ndarray] = {}
        bar = tqdm(range(0, len(order), batch_size), desc="embed", unit="batch",
                   disable=not progress)
        for b0 in bar:
            batch = order[b0:b0 + batch_size]
            hidden = _forward(ref, [encoded[i][0] for i in batch], dev, norm)
            bi = np.concatenate([np.full(len(picks[i]), j) for j, i in enumerate(batch)])
            pi = np.concatenate([picks[i] for i in batch])
            dest = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in batch])
            bi_t, pi_t = torch.from_numpy(bi).to(dev), torch.from_numpy(pi).to(dev)
            for L in layers:
                vecs = hidden[L][bi_t, pi_t].float().cpu().numpy()
                if L not in out:
                    out[L] = np.lib.format.open_memmap(
                        tmp[L], mode="w+", dtype=dtype, shape=(n_points, vecs.shape[1]))
                    _reserve(tmp[L])
                out[L][dest] = vecs
            del hidden
        bar.close()
        dim = next(iter(out.values())).shape[1]
        for arr in out.values():
            arr.flush()
        out.clear()
    # the context position of every row, for the ID against position
    with atomic_path(out_dir / "positions.npy") as tmp_pos, open(tmp_pos, "wb") as f:
        np.save(f, np.concatenate(picks).astype(np.int32))
    return dim


def _available_docs(val_docs: Path, fill_docs: Path | None, fill_skip: int, docs: int,
                    seed: int) -> tuple[list[str], int]:
    """The val documents, topped up to `docs` with a seeded sample of the train documents
    past the first `fill_skip` (those no run trained on); and how many are val."""
    texts = _read_docs(val_docs)
    n_val = len(texts)
    if fill_docs is not None and n_val < docs:
        unseen = _read_docs(Path(fill_docs))[fill_skip:]
        take = min(docs - n_val, len(unseen))
        picked = np.sort(np.random.default_rng([seed, 1]).choice(len(unseen), take,
                                                                 replace=False))
        texts += [unseen[i] for i in picked]
        log.info("%s holds %d documents, fewer than the %d asked for: adding %d of the %d "
                 "documents of %s that no run trained on (after its first %d)", val_docs,
                 n_val, docs, take, len(unseen), fill_docs, fill_skip)
    return texts, n_val


# ---------------------------------------------------------------------------------------
# loading


def _read_docs(path: Path) -> list[str]:
    import pandas as pd

    if not path.exists():
        raise DataError(f"validation documents {path} do not exist")
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"cannot read validation documents {path}: {exc}") from None
    missing = [c for c in ("id", "text") if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks column(s) {missing}; it has {list(df.columns)}")
    if len(df) == 0:
        raise DataError(f"{path} holds no documents")
    return ["" if t is None else str(t) for t in df["text"].tolist()]


def _load_reference(model: str, tokenizer: Path | None, dev: torch.device,
                    dtype: torch.dtype) -> _Reference:
    from transformers import AutoModel

    model = str(model)
    local = Path(model)
    if tokenizer is not None and not local.is_dir():
        raise ConfigError(f"trained reference model directory {model} does not exist")
    if tokenizer is None and not local.is_dir() and (local.is_absolute() or
                                                     model.startswith(".")):
        raise ConfigError(f"reference model directory {model} does not exist")
    try:
        net = AutoModel.from_pretrained(model, trust_remote_code=False, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load reference model {model!r} with transformers "
                          f"(trust_remote_code=False; with HF_HUB_OFFLINE=1 it must be "
                          f"cached or local): {exc}") from None
    if getattr(net.config, "is_encoder_decoder", False):
        net = net.get_encoder()  # token representations of the input live in the encoder
    net.to(dev).eval()
    cfg = net.config
    n_layers = getattr(cfg, "num_hidden_layers", None)
    if n_layers is None:
        raise ConfigError(f"model {model} config has no num_hidden_layers")
    n_pos = next((getattr(cfg, a) for a in ("n_positions", "max_position_embeddings")
                  if isinstance(getattr(cfg, a, None), int)), None)

    if tokenizer is not None:
        encode, pad_id = _trained_tokenizer(Path(tokenizer))
        kind = "trained"
    else:
        encode, pad_id, tok_max = _hf_tokenizer(model)
        kind = "huggingface"
        if tok_max is not None:
            n_pos = tok_max if n_pos is None else min(n_pos, tok_max)
    return _Reference(net, encode, pad_id, n_pos, int(n_layers), kind)


def _trained_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if not path.is_file():
        raise ConfigError(f"tokenizer file {path} does not exist")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise DataError(f"cannot read tokenizer {path}: {exc}") from None
    eot = tok.token_to_id(EOT)
    if eot is None:
        raise ConfigError(f"tokenizer {path} has no end-of-text token {EOT!r}")

    def encode(texts: list[str], context: int):
        out = []
        for enc in tok.encode_batch(texts):
            ids = enc.ids[:context]
            drop = [bool(s) or i == eot for i, s in zip(ids, enc.special_tokens_mask)]
            out.append((ids, drop))
        return out

    return encode, eot


def _hf_tokenizer(model: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot load the tokenizer of reference model {model!r}: "
                          f"{exc}") from None
    special = set(tok.all_special_ids)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (
        tok.eos_token_id if tok.eos_token_id is not None else 0)
    tok_max = tok.model_max_length if 0 < tok.model_max_length < 10**7 else None

    def encode(texts: list[str], context: int):
        enc = tok(texts, truncation=True, max_length=context, add_special_tokens=True)
        return [(ids, [i in special for i in ids]) for ids in enc["input_ids"]]

    return encode, pad_id, tok_max


# ---------------------------------------------------------------------------------------
# the protocol


def _resolve_layers(layer: int | str | Sequence[int], n_layers: int) -> list[int]:
    n_states = n_layers + 1
    if isinstance(layer, str):
        if layer == "all":
            return list(range(n_states))
        try:
            layer = int(layer)
        except ValueError:
            raise ConfigError(f"embedding.layer {layer!r} is not an integer or 'all'") from None
    wanted = [layer] if isinstance(layer, (int, np.integer)) else list(layer)
    out = []
    for L in wanted:
        if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or \
                not -n_states <= L < n_states:
            raise ConfigError(f"embedding.layer {L!r} is out of range for a model with "
                              f"{n_states} hidden states (-{n_states}..{n_states - 1})")
        out.append(int(L) % n_states)
    return sorted(set(out))


def _pick_positions(encoded: list[tuple[list[int], list[bool]]], tokens_per_doc: int,
                    max_points: int | None, seed: int,
                    min_position: int = 0) -> list[np.ndarray]:
    """Positions to embed in each document: a seeded shuffle of the positions that are
    not special tokens and not before min_position, the first tokens_per_doc of it, then
    a seeded cap on the total. Each document's positions are returned in ascending order."""
    rng = np.random.default_rng([seed, 1])
    picks = []
    for ids, drop in encoded:
        valid = np.flatnonzero(~np.asarray(drop, dtype=bool)) if ids else np.zeros(0, int)
        valid = valid[valid >= min_position]
        picks.append(np.sort(rng.permutation(valid)[:tokens_per_doc]))
    total = sum(len(p) for p in picks)
    if max_points is not None and total > max_points:
        keep = np.zeros(total, dtype=bool)
        keep[rng.choice(total, max_points, replace=False)] = True
        bounds = np.cumsum([0] + [len(p) for p in picks])
        picks = [p[keep[a:b]] for p, a, b in zip(picks, bounds[:-1], bounds[1:])]
        log.info("capped %d token positions at max_points=%d", total, max_points)
    return picks


def _final_norm(net: torch.nn.Module, model: str) -> torch.nn.Module:
    """The LayerNorm applied after the last block (GPT-2 `ln_f`, Llama `norm`, ...)."""
    for name in ("ln_f", "norm", "final_layer_norm", "final_layernorm"):
        module = getattr(net, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    raise ConfigError(f"embedding.final_norm: false needs a final norm module (ln_f, norm, "
                      f"final_layer_norm) and model {model} has none")


def _forward(ref: _Reference, seqs: list[list[int]], dev: torch.device,
             norm: torch.nn.Module | None = None):
    """hidden_states of a right-padded batch (padding is masked out and never picked);
    with `norm`, the last one is that module's input (the last block's output)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), ref.pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        ids[j, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[j, :len(s)] = 1
    seen = []
    hook = norm.register_forward_pre_hook(lambda m, args: seen.append(args[0])) if norm else None
    try:
        out = ref.model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                        output_hidden_states=True, return_dict=True)
    finally:
        if hook is not None:
            hook.remove()
    if norm is None:
        return out.hidden_states
    if len(seen) != 1:
        raise ConfigError(f"the final norm ran {len(seen)} times in one forward pass")
    return out.hidden_states[:-1] + (seen[0],)


def _reserve(path: Path) -> None:
    """Give a fresh memory-mapped file its blocks now: writing through the map to a full
    file system later would kill the process with SIGBUS instead of raising."""
    with open(path, "r+b") as f:
        os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)


def _remove_stale(out_dir: Path, layers: list[int]) -> None:
    current = {f"layer{L}.npy" for L in layers}
    for p in out_dir.glob("layer*.npy"):
        if p.name not in current:
            log.info("removing %s, left by an earlier run with other layers", p)
            p.unlink()


def _check_positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"embedding.{name} must be a positive integer, got {v!r}")
