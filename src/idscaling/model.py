"""A GPT-2 language model in one readable file, in the spirit of nanoGPT's model.py.

The architecture is GPT-2's: learned position embeddings, pre-LayerNorm blocks, GELU
MLPs, causal self-attention through `scaled_dot_product_attention` (flash kernels on
GPUs), and an output head tied to the token embedding. Module names follow
transformers' `GPT2LMHeadModel`, so `export_hf` can write a checkpoint that
`GPT2LMHeadModel.from_pretrained` loads and that gives the same logits.

The token embedding is padded to a multiple of 64 rows because matmuls with round
shapes run faster on GPUs. The padded rows are dead weight: logits are cut back to the
real vocabulary before the loss, so the model is exactly a `vocab_size` model and the
exported checkpoint drops them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from idscaling.errors import ConfigError
from idscaling.files import atomic_path, write_json

VOCAB_PAD_MULTIPLE = 64


@dataclass
class GPTConfig:
    vocab_size: int
    n_layer: int
    n_embd: int
    n_head: int
    context: int  # block size: the longest sequence the position table covers
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2

    def __post_init__(self):
        for key in ("vocab_size", "n_layer", "n_embd", "n_head", "context"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model: {key} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model: dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)  # q, k, v at once
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()  # exact (erf) GELU: transformers calls it "gelu"
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """GPT-2. `forward(idx, targets=None)` returns (logits, loss or None)."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.context, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd, bias=cfg.bias),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

        self.apply(self._init_weights)
        # GPT-2's scheme: residual projections shrink with depth so that the residual
        # stream's variance does not grow with the number of layers.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters of the model, padded vocabulary rows excluded.

        non_embedding=True gives Kaplan et al.'s N: without the token and position
        embeddings (the output head is tied to the token embedding, so it goes too).
        """
        cfg = self.config
        n = sum(p.numel() for p in self.parameters())  # a tied tensor is counted once
        n -= (cfg.padded_vocab_size - cfg.vocab_size) * cfg.n_embd
        if non_embedding:
            n -= cfg.vocab_size * cfg.n_embd + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token as nanoGPT counts them: 6N plus the attention term.

        N here holds every matmul weight, the output head included (position embeddings
        are a lookup, not a matmul); the attention term 12 * L * d * T counts QK^T and
        AV, forward and backward.
        """
        cfg = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * cfg.n_layer * cfg.n_embd * cfg.context

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        T = idx.shape[1]
        if T > self.config.context:
            raise ValueError(f"sequence of length {T} exceeds the context {self.config.context}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # padded rows never compete
        loss = None
        if targets is not None:
            loss = cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy; on CPU through `_SoftmaxCrossEntropy`, which is faster."""
    if logits.device.type == "cpu":
        return _SoftmaxCrossEntropy.apply(logits.float(), targets)
    return F.cross_entropy(logits, targets)  # fused well by CUDA kernels and torch.compile


class _SoftmaxCrossEntropy(torch.autograd.Function):
    """Cross-entropy that keeps the softmax from the forward pass for the backward one.

    With a large vocabulary the (tokens x vocab) logits dominate a small model's step on
    CPU. F.cross_entropy passes over them about six times (log-softmax, a zero-filled
    gradient, log-softmax backward with a second exp); this does one exp and turns the
    saved probabilities into the gradient in place: half the time, the same numbers.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        m = logits.amax(dim=-1, keepdim=True)
        p = torch.sub(logits, m).exp_()
        s = p.sum(dim=-1, keepdim=True)
        # log-sum-exp minus the target logit: exact even where p underflows
        loss = (m + s.log() - logits.gather(-1, targets[:, None])).mean()
        if ctx.needs_input_grad[0]:  # evaluation needs no probabilities
            ctx.save_for_backward(p.div_(s), targets)
        ctx.backward_done = False
        return loss

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if ctx.backward_done:  # p was overwritten by the first backward
            raise RuntimeError("cross_entropy on CPU does not support retain_graph=True")
        ctx.backward_done = True
        p, targets = ctx.saved_tensors
        p[torch.arange(len(targets)), targets] -= 1.0  # softmax minus one-hot
        return p.mul_(grad / len(targets)), None


# ---------------------------------------------------------------- transformers layout

# nn.Linear stores (out, in); transformers' GPT-2 uses Conv1D, which stores (in, out).
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights under `GPT2LMHeadModel`'s names and layouts (fp32, CPU).

    The tied head is left out (transformers re-ties it on load), the padded vocabulary
    rows are cut, and a model built with bias=False gets zero biases, which is the
    same function.
    """
    cfg = model.config
    out: dict[str, torch.Tensor] = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight":
            continue
        t = p.detach().to("cpu", torch.float32)
        if name == "transformer.wte.weight":
            t = t[: cfg.vocab_size]
        elif name.endswith(_CONV1D_SUFFIXES):
            t = t.t()
        out[name] = t.contiguous()
    if not cfg.bias:
        for name in [n for n in out if n.endswith(".weight") and "wte" not in n and "wpe" not in n]:
            # LayerNorm weight (d,) and Conv1D weight (in, out) both have bias of the last dim
            out[name[: -len("weight")] + "bias"] = torch.zeros(out[name].shape[-1])
    return out


def hf_config(cfg: GPTConfig, *, eot_id: int | None = None) -> dict:
    """A `GPT2Config` dict that describes `cfg` exactly."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context,
        "n_ctx": cfg.context,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu",  # exact GELU, as in MLP (tanh approx would be gelu_new)
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": eot_id,
        "eos_token_id": eot_id,
        "dtype": "float32",
        "idscaling": {"gpt_config": asdict(cfg), "padded_vocab_size": cfg.padded_vocab_size},
    }


def export_hf(model: GPT, out_dir: str | Path, *, eot_id: int | None = None) -> None:
    """Write `model.safetensors` and `config.json` into `out_dir`, each atomically.

    `GPT2LMHeadModel.from_pretrained(out_dir)` then loads the model.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(hf_state_dict(model), str(tmp), metadata={"format": "pt"})
    write_json(out_dir / "config.json", hf_config(model.config, eot_id=eot_id))
