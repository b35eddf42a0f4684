"""The known-dimension experiment: regression on S^d in the theorem's own setting.

Each document shows a latent point z, uniform on S^d, through coordinate tokens, then R
symbols drawn i.i.d. from p_z = (1 - ε) softmax(τ f(z)) + ε/V, where f is a lacunary
field of Hölder smoothness s (`idscaling.synthetic`). Learning z -> p_z from n documents is a
nonparametric regression whose minimax rate is n^(-2s/(2s+d)), the exponent the theory
predicts. Because the generator is known, every estimate q is scored exactly:

    floor  = E_z H(p_z)                    (the Bayes loss: nothing to fit)
    excess = E_z KL(p_z || q)              (over held-out z; no symbol-sampling noise)

Three estimators learn from the same n documents:

* the network: a GPT (`idscaling.model`) that reads the coordinate tokens and, after the
  last of them, predicts every symbol of the document (the loss is on the symbols only),
  trained plateau-then-anneal. The symbols are i.i.d. given z, so an earlier symbol tells
  the Bayes predictor nothing; a network that read them could infer p_z in context, and
  its excess would mix that with the regression z -> p_z that the theory is about. Read
  from z alone, it is an estimator of the same kind as the other two;
* the reference: k-nearest-neighbour frequencies on the observed z, k chosen by the exact
  excess on held-out points. It is rate-optimal for s <= 1 and shows what rate the data
  allow at the sizes of the sweep;
* the MLP control: the same training loop on the coordinates the tokens encode, given as
  a vector. It separates learning the map z -> p_z from learning to read digit tokens.

Encoding: each of the d + 1 coordinates of z (in [-1, 1]) is written as `digits` base-
`base` digits of its bin among base^digits equal bins, most significant first; a token
is a digit (ids 0..base-1) or a symbol (ids base..base+V-1). `quantisation_excess`
measures what the rounding costs the Bayes predictor, so a sweep can show it is far
below every excess it resolves.

Randomness: the field depends on `field_seed` only; the held-out points on `field_seed`
only (so every run of an arm is scored on the same points, which the bootstrap pairs);
training documents on (seed, block), so the n documents of a smaller run are the first
n of a larger one, and the tuning documents on the seed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field as dc_field

import numpy as np
import torch
from scipy.spatial import cKDTree

from idscaling.config import KNOWN_D_TASK_KEYS
from idscaling.devices import resolve_device
from idscaling.errors import ConfigError
from idscaling.synthetic import make_field, uniform_sphere
from idscaling.model import GPT, GPTConfig
from idscaling.schedule import TrainSettings, cooldown_after, lr_at
from idscaling.train import make_optimizer, optimizer_step

log = logging.getLogger(__name__)

BLOCK = 1024  # documents per random stream: part of the corpus definition
ESTIMATORS = ("base", "wide", "mlp", "mlp_wide", "reference")  # wide: twice the width
_TRAIN, _TUNE, _EVAL = 1, 2, 3


@dataclass(frozen=True)
class Task:
    """One arm's generator: the field, the symbol law and the document encoding."""

    d: int
    s: float
    field_seed: int = 0
    vocab: int = 16
    symbols: int = 16  # R: symbols per document
    temperature: float = 2.0
    noise: float = 0.0
    levels: int = 10
    max_modes: int | None = None  # None: the same few waves at every level (see make_field)
    level_ratio: float = 2.0
    base: int = 16
    digits: int = 3
    _field: object = dc_field(default=None, compare=False, repr=False)

    def __post_init__(self):
        for key in ("symbols", "base", "digits"):
            v = getattr(self, key)
            if not isinstance(v, int) or v < (2 if key == "base" else 1):
                raise ConfigError(f"known_d.{key} must be an integer >= {2 if key == 'base' else 1}, got {v!r}")
        if not 0.0 <= self.noise < 1.0:
            raise ConfigError(f"known_d.noise must be in [0, 1), got {self.noise!r}")
        if not self.temperature > 0:
            raise ConfigError(f"known_d.temperature must be positive, got {self.temperature!r}")
        object.__setattr__(self, "_field", make_field(self.d, self.s, self.field_seed,
                                                      vocab=self.vocab, levels=self.levels,
                                                      max_modes=self.max_modes, level_ratio=self.level_ratio))

    @property
    def field(self):
        return self._field

    @property
    def coord_tokens(self) -> int:
        return (self.d + 1) * self.digits

    @property
    def doc_len(self) -> int:
        return self.coord_tokens + self.symbols

    @property
    def n_tokens(self) -> int:
        return self.base + self.vocab

    def probs(self, z: np.ndarray, field=None) -> np.ndarray:
        """p_z, the symbol law at each point; under `field` in place of the task's own if given."""
        logits = self.temperature * (self.field if field is None else field)(z)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return (1.0 - self.noise) * p + self.noise / self.vocab

    def sample_symbols(self, rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
        cdf = np.cumsum(p, axis=1)
        u = rng.random((len(p), self.symbols))
        return np.minimum((u[:, :, None] > cdf[:, None, :]).sum(axis=2), self.vocab - 1)

    def quantise(self, z: np.ndarray) -> np.ndarray:
        """Bin index of each coordinate, shape (n, d+1), in [0, base^digits)."""
        bins = self.base ** self.digits
        return np.clip(np.floor((z + 1.0) / 2.0 * bins), 0, bins - 1).astype(np.int64)

    def dequantise(self, q: np.ndarray) -> np.ndarray:
        """The bin centres, projected back onto the sphere: what the tokens say z is."""
        z = (q + 0.5) / self.base ** self.digits * 2.0 - 1.0
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    def coordinates(self, z: np.ndarray) -> np.ndarray:
        """The coordinate tokens of each point, (n, coord_tokens): what the network reads."""
        q = self.quantise(z)
        powers = self.base ** np.arange(self.digits - 1, -1, -1)
        coord = (q[:, :, None] // powers) % self.base  # (n, d+1, digits), most significant first
        return coord.reshape(len(z), -1)

    def encode(self, z: np.ndarray, symbols: np.ndarray) -> np.ndarray:
        """Whole documents: the coordinate tokens, then the symbols."""
        return np.concatenate([self.coordinates(z), symbols + self.base], axis=1)

    def documents(self, seed: int, n: int, stream: int = _TRAIN) -> tuple[np.ndarray, np.ndarray]:
        """(z, symbols) of the first n documents of a seed's stream; nested in n."""
        zs, syms = [], []
        for block in range(math.ceil(n / BLOCK)):
            rng = np.random.default_rng([seed, stream, block, self.d])
            z = uniform_sphere(rng, BLOCK, self.d)
            zs.append(z)
            syms.append(self.sample_symbols(rng, self.probs(z)))
        return np.concatenate(zs)[:n], np.concatenate(syms)[:n]

    def eval_points(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The arm's held-out points (z, symbols), the same for every run of the arm."""
        return self.documents(self.field_seed + 10_000, n, _EVAL)

    def quantisation_excess(self, z: np.ndarray) -> float:
        """E KL(p_z || p_ẑ): what the Bayes predictor loses by seeing z only through tokens."""
        return float(kl(self.probs(z), self.probs(self.dequantise(self.quantise(z)))).mean())


def level_ladder(task: Task, z: np.ndarray, depth: int = 5) -> np.ndarray:
    """E KL(p_z || p_z under the field's coarsest J levels) at `z`, for J = 0..depth: the
    excess of a learner that knows exactly the first J levels of the field and nothing finer.

    A learner whose excess lies between rungs J and J+1 is learning level J. The theory's
    rate is an envelope over many levels; a fit whose excess stays between two rungs
    measures how one level is learned.
    """
    p = task.probs(z)
    return np.array([kl(p, task.probs(z, task.field.coarse(j))).mean() for j in range(depth + 1)])


def entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(p * np.log(p, where=p > 0, out=np.zeros_like(p)), axis=1)


def kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_i || q_i) per row, exact (0 log 0 = 0)."""
    return kl_from_log(p, np.log(q))


def kl_from_log(p: np.ndarray, logq: np.ndarray) -> np.ndarray:
    """KL(p || q) over the last axis from log q (a model's log-softmax), broadcasting."""
    logp = np.log(p, where=p > 0, out=np.zeros_like(p))
    return np.sum(p * (logp - logq), axis=-1)


# ------------------------------------------------------------------------ reference


@dataclass(frozen=True)
class ReferenceResult:
    k: int
    excess: np.ndarray  # per held-out point
    tune_excess: float


def knn_reference(task: Task, z: np.ndarray, symbols: np.ndarray, tune_z: np.ndarray,
                  eval_z: np.ndarray, *, k_max: int = 2048, alpha: float = 0.5) -> ReferenceResult:
    """k-NN symbol frequencies (add-`alpha` smoothed) with the k that does best on `tune_z`.

    k is chosen by the exact excess on held-out points (the generator is known), so the
    reference is the best of its family at each n: the rate the data allow, not the
    noise of a tuning set. It is then scored on `eval_z`, which tuning never saw.
    """
    counts = np.zeros((len(z), task.vocab))
    np.add.at(counts, (np.repeat(np.arange(len(z)), task.symbols), symbols.ravel()), 1.0)
    tree = cKDTree(z)
    k_max = min(k_max, len(z))
    ks = np.unique(np.geomspace(1, k_max, 40).astype(int))
    losses = np.zeros(len(ks))
    for lo in range(0, len(tune_z), 256):
        part = tune_z[lo:lo + 256]
        _, idx = tree.query(part, k=k_max)
        cum = np.cumsum(counts[idx.reshape(len(part), -1)], axis=1)[:, ks - 1, :]
        q = (cum + alpha) / (cum.sum(axis=2, keepdims=True) + task.vocab * alpha)
        p = task.probs(part)[:, None, :]
        logp = np.log(p, where=p > 0, out=np.zeros_like(p))
        losses += np.sum(p * (logp - np.log(q)), axis=2).sum(axis=0)
    best = int(np.argmin(losses))
    k = int(ks[best])
    _, idx = tree.query(eval_z, k=k)
    c = counts[np.asarray(idx).reshape(len(eval_z), -1)].sum(axis=1)
    q = (c + alpha) / (c.sum(axis=1, keepdims=True) + task.vocab * alpha)
    return ReferenceResult(k=k, excess=kl(task.probs(eval_z), q), tune_excess=float(losses[best] / len(tune_z)))


@dataclass(frozen=True)
class OracleResult:
    excess: np.ndarray  # per held-out point
    iterations: int
    converged: bool


def feature_oracle(task: Task, z: np.ndarray, symbols: np.ndarray, eval_z: np.ndarray, *,
                   max_iter: int = 3000, tol: float = 1e-6) -> OracleResult:
    """The posterior mode of the field's weights under the field's own prior, given every
    wave's direction, frequency and phase: the best a learner can do that knows how the
    field was drawn but not the draw.

    The field is linear in its weights, which are Gaussian a priori, so this is a
    penalised multinomial logistic regression on the waves cos(ω⟨u, z⟩ + φ) with the
    penalty the prior sets. Its rate is the rate this field allows (up to the
    posterior-mode approximation of the Bayes predictor): if the field has a fixed number
    of waves per level, a learner that finds them can learn at nearly the parametric
    rate, faster than 2s/(2s+d), and no learner's steeper slope is then evidence against
    the theory; where the waves are as many as the cells of each scale, it is 2s/(2s+d).
    """
    f = task.field
    scale = task.temperature * f.weight_std  # the prior std of each wave's logit weights

    def design(points: np.ndarray) -> torch.Tensor:
        # whitened: a weight of N(0, 1) per wave, so the penalty is |A|^2 / 2 and the
        # levels' very different scales do not slow the solver
        return torch.from_numpy(f.waves(points) * scale)

    phi = design(z)
    counts = torch.zeros(len(z), task.vocab, dtype=torch.float64)
    counts.scatter_add_(1, torch.from_numpy(symbols.astype(np.int64)),
                        torch.ones(symbols.shape, dtype=torch.float64))
    weights = torch.zeros(phi.shape[1], task.vocab, dtype=torch.float64, requires_grad=True)

    def log_q(features: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(features @ weights, dim=1)
        if task.noise == 0.0:
            return logp
        return torch.logaddexp(logp + math.log1p(-task.noise), torch.full_like(logp, math.log(task.noise / task.vocab)))

    solver = torch.optim.LBFGS([weights], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                               tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def objective():
        solver.zero_grad()
        # per document, so that `tol` means the same at every n
        loss = (-(counts * log_q(phi)).sum() + 0.5 * (weights ** 2).sum()) / len(z)
        loss.backward()
        return loss

    solver.step(objective)
    iterations = solver.state[weights]["n_iter"]
    with torch.no_grad():
        logq = np.concatenate([log_q(design(eval_z[i:i + 4096])).numpy() for i in range(0, len(eval_z), 4096)])
    return OracleResult(excess=kl_from_log(task.probs(eval_z), logq), iterations=int(iterations),
                        converged=int(iterations) < max_iter)


# -------------------------------------------------------------------------- network


@dataclass(frozen=True)
class NetworkResult:
    excess: np.ndarray  # per held-out point, mean over the R symbol positions
    steps: int
    best_step: int  # the state returned: the best validation loss
    best_val_loss: float
    converged: bool
    wall_s: float
    params_nonembed: int
    history: list
    ids: dict  # state name -> k -> MLE intrinsic dimension


def _symbol_logits(model: GPT, coords: torch.Tensor, task: Task) -> torch.Tensor:
    """The network's logits over the V symbols once it has read z: (n, V)."""
    logits, _ = model(coords)
    return logits[:, -1, task.base:task.base + task.vocab]


def _document_loss(logits: torch.Tensor, symbols: torch.Tensor) -> torch.Tensor:
    """Mean −log q(symbol) over the documents' R symbols, q = softmax(logits) per document."""
    return -torch.log_softmax(logits, dim=-1).gather(1, symbols).mean()


@torch.no_grad()
def network_excess(model: GPT, task: Task, eval_z: np.ndarray) -> np.ndarray:
    """KL(p_z || q_z) per held-out point, q_z the network's law after reading z."""
    model.eval()
    coords = torch.from_numpy(task.coordinates(eval_z)).to(_device_of(model))
    logq = np.concatenate([torch.log_softmax(_symbol_logits(model, coords[i:i + 1024], task).double(), -1).cpu().numpy()
                           for i in range(0, len(coords), 1024)])
    model.train()
    return kl_from_log(task.probs(eval_z), logq)


ID_KS = (10, 20, 40, 80)


@torch.no_grad()
def model_states(model: GPT, task: Task, z: np.ndarray) -> dict[str, np.ndarray]:
    """What the network holds where it has read all of z and predicts the symbols: the
    output of each block, and its centred log-probabilities over the symbols."""
    model.eval()
    tokens = torch.from_numpy(task.coordinates(z)).to(_device_of(model))
    tr = model.transformer
    x = tr.wte(tokens) + tr.wpe(torch.arange(tokens.shape[1], device=tokens.device))
    states = {}
    for i, block in enumerate(tr.h):
        x = block(x)
        states[f"block{i + 1}"] = x[:, -1].double().cpu().numpy()
    logp = torch.log_softmax(model.lm_head(tr.ln_f(x[:, -1]))[:, task.base:task.base + task.vocab].double(), -1)
    states["logprobs"] = (logp - logp.mean(dim=1, keepdim=True)).cpu().numpy()
    model.train()
    return states


def id_profile(states: dict[str, np.ndarray], ks=ID_KS) -> dict[str, dict[str, float]]:
    """MLE intrinsic dimension of each set of states at each k (euclidean, all points)."""
    from idscaling.intrinsic_dim import estimate_ids

    return {name: {str(k): e.id for k, e in zip(ks, estimate_ids(x, methods=("mle",), ks=ks,
                                                                  progress=False))}
            for name, x in states.items()}


def true_logprobs(task: Task, z: np.ndarray) -> np.ndarray:
    """Centred log p_z: the Bayes predictor's outputs, whose ID is the task's own."""
    logp = np.log(task.probs(z))
    return logp - logp.mean(axis=1, keepdims=True)


def _device_of(model: torch.nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


@dataclass
class _Fit:
    steps: int
    best_step: int
    best_val_loss: float
    converged: bool
    history: list


def _fit(model: torch.nn.Module, batch_loss, val_loss, n: int, s: TrainSettings, seed: int) -> _Fit:
    """Train `model` on n documents until the validation loss plateaus, then anneal; leave
    it in the state with the best validation loss (early stopping).

    `batch_loss(idx)` is the training loss on the documents `idx`; `val_loss()` the loss on
    the held-out documents. Evaluation comes every `eval_every` steps, or every two epochs
    when that is sooner (at least every 10 steps), so that a run on few documents stops
    before it overfits.
    """
    # Weights and Adam moments decay into subnormal floats, which x86 CPUs compute on
    # many times slower, so a run would slow step by step (bench/known_d_denormals.py).
    torch.set_flush_denormal(True)
    optimizer = make_optimizer(model, s, fused=True)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(n, generator=gen), 0
    batch = min(s.batch_size, n)
    every = min(s.eval_every, max(10, math.ceil(2 * n / batch)))
    best, best_state, best_step, bad, cooldown, history = math.inf, None, 0, 0, None, []
    step, device = 0, _device_of(model)
    while step < s.max_steps and (cooldown is None or step < sum(cooldown)):
        lr = lr_at(step, s, cooldown)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if pos + batch > n:
            order, pos = torch.randperm(n, generator=gen), 0
        loss = batch_loss(order[pos:pos + batch].to(device))
        pos += batch
        loss.backward()
        optimizer_step(model, optimizer, None, s.grad_clip)
        step += 1
        if step % every == 0 or step == s.max_steps or (cooldown and step == sum(cooldown)):
            model.eval()
            with torch.no_grad():
                val = val_loss()
            model.train()
            history.append({"step": step, "lr": lr, "train_loss": loss.item(), "val_loss": val})
            log.info("step %d  lr %.2e  train %.4f  val %.4f", step, lr, loss.item(), val)
            bad = 0 if val < best - 1e-4 else bad + 1
            if val < best:
                best, best_step = val, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if cooldown is None and s.early_stop_patience and bad >= s.early_stop_patience:
                cooldown = cooldown_after(step, s)
                log.info("validation loss flat for %d evaluations: annealing over %d steps",
                         bad, cooldown[1])
    if best_state is not None:
        model.load_state_dict(best_state)
    log.info("best validation loss %.4f at step %d of %d", best, best_step, step)
    # converged: the decay began at a plateau (not at the step cap) and ran to its end
    converged = cooldown is not None and step >= sum(cooldown)
    return _Fit(steps=step, best_step=best_step, best_val_loss=best, converged=converged,
                history=history)


def train_network(task: Task, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                  eval_z: np.ndarray, shape: dict, s: TrainSettings, seed: int,
                  *, threads: int | None = None, device: torch.device | str = "cpu") -> NetworkResult:
    """Train a GPT on the documents (`_fit`): it reads the coordinate tokens and is scored
    on the symbols; score it on `eval_z`."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=task.n_tokens, context=task.coord_tokens, dropout=s.dropout, **shape))
    model.to(device)
    coords, symbols = (torch.from_numpy(a).to(device) for a in (task.coordinates(train[0]), train[1]))
    val_coords, val_symbols = (torch.from_numpy(a).to(device) for a in (task.coordinates(val[0]), val[1]))
    fit = _fit(model, lambda idx: _document_loss(_symbol_logits(model, coords[idx], task), symbols[idx]),
               lambda: _document_loss(_symbol_logits(model, val_coords, task), val_symbols).item(),
               len(coords), s, seed)
    excess = network_excess(model, task, eval_z)
    ids = id_profile(model_states(model, task, eval_z))
    return NetworkResult(excess=excess, steps=fit.steps, best_step=fit.best_step,
                         best_val_loss=fit.best_val_loss, converged=fit.converged,
                         wall_s=time.perf_counter() - start,
                         params_nonembed=model.num_params(non_embedding=True), history=fit.history,
                         ids=ids)


class CoordinateMLP(torch.nn.Module):
    """The control network: an MLP from the coordinates the tokens encode (the bin centres,
    a vector of R^(d+1)) to the symbol logits. It sees what the GPT sees, as numbers."""

    def __init__(self, d: int, vocab: int, width: int, layers: int):
        super().__init__()
        sizes = [d + 1] + [width] * layers
        mods = []
        for a, b in zip(sizes, sizes[1:]):
            mods += [torch.nn.Linear(a, b), torch.nn.GELU()]
        self.net = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], vocab))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _seen_coordinates(task: Task, z: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(task.dequantise(task.quantise(z))).float()


def train_mlp(task: Task, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
              eval_z: np.ndarray, shape: dict, s: TrainSettings, seed: int,
              *, threads: int | None = None, device: torch.device | str = "cpu") -> NetworkResult:
    """Train a CoordinateMLP on the same documents with the same loop (`_fit`); score it."""
    if threads:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = CoordinateMLP(task.d, task.vocab, **shape).to(device)
    z, symbols = _seen_coordinates(task, train[0]).to(device), torch.from_numpy(train[1]).to(device)
    val_z, val_symbols = _seen_coordinates(task, val[0]).to(device), torch.from_numpy(val[1]).to(device)
    fit = _fit(model, lambda idx: _document_loss(model(z[idx]), symbols[idx]),
               lambda: _document_loss(model(val_z), val_symbols).item(), len(z), s, seed)
    model.eval()
    with torch.no_grad():
        logq = torch.log_softmax(model(_seen_coordinates(task, eval_z).to(device)).double(), dim=-1).cpu().numpy()
    excess = kl_from_log(task.probs(eval_z), logq)
    return NetworkResult(excess=excess, steps=fit.steps, best_step=fit.best_step,
                         best_val_loss=fit.best_val_loss, converged=fit.converged,
                         wall_s=time.perf_counter() - start,
                         params_nonembed=sum(p.numel() for p in model.parameters()),
                         history=fit.history, ids={})


# ----------------------------------------------------------------------- one job


def arm_name(d: int, s: float) -> str:
    return f"d{d}-s{s:g}"


def sweep_jobs(known_d: dict) -> list[dict]:
    """Every run of a validated known_d section: arm, d, s, docs, seed, estimator."""
    reference_docs = sorted(set(known_d["docs"]) | set(known_d["reference_docs"] or []))
    width_docs = known_d["width_docs"] or [max(known_d["docs"])]
    width_seeds = known_d["width_seeds"] or known_d["seeds"]
    learners = ["base"] + (["mlp"] if known_d["mlp_control"] else [])
    wide = ["wide"] + (["mlp_wide"] if known_d["mlp_control"] else [])
    jobs = []
    for a in known_d["arms"]:
        arm = {"arm": arm_name(a["d"], a["s"]), "d": a["d"], "s": float(a["s"])}
        for seed in known_d["seeds"]:
            jobs += [{**arm, "docs": n, "seed": seed, "estimator": e} for n in known_d["docs"] for e in learners]
            if known_d["width_control"] and seed in width_seeds:
                jobs += [{**arm, "docs": n, "seed": seed, "estimator": e} for n in width_docs for e in wide]
            jobs += [{**arm, "docs": n, "seed": seed, "estimator": "reference"} for n in reference_docs]
    return jobs


def task_from_config(known_d: dict, d: int, s: float) -> Task:
    return Task(d=d, s=float(s), **{k: known_d[k] for k in KNOWN_D_TASK_KEYS if k in known_d})


def run_one(known_d: dict, d: int, s: float, n: int, seed: int, estimator: str, out_json, out_npy,
            *, threads: int | None = None, device: str | None = "auto") -> dict:
    """Train one estimator (`ESTIMATORS`) of an arm on n documents, the learners on
    `device` ("auto" or None: CUDA when there is one, else the CPU; the digits differ
    between them).

    Writes the per-point excess to `out_npy` and a record to `out_json`, both atomically.
    """
    from idscaling.files import atomic_path, write_json

    if estimator not in ESTIMATORS:
        raise ConfigError(f"known_d: unknown estimator {estimator!r}: {', '.join(ESTIMATORS)}")
    device = resolve_device(None if device == "auto" else device)
    task = task_from_config(known_d, d, s)
    eval_z, _ = task.eval_points(known_d["eval_points"])
    tune = task.documents(seed, known_d["tune_docs"], _TUNE)
    train = task.documents(seed, n)
    record = {"arm": arm_name(d, s), "d": d, "s": float(s), "docs": n, "seed": seed,
              "estimator": estimator, "floor": float(entropy(task.probs(eval_z)).mean()),
              "quantisation_excess": task.quantisation_excess(eval_z), "eval_points": len(eval_z)}
    log.info("arm %s, n = %d documents, seed %d, estimator %s: floor %.4f nats, quantisation "
             "costs the Bayes predictor %.2e nats", record["arm"], n, seed, estimator,
             record["floor"], record["quantisation_excess"])
    if estimator == "reference":
        ref = knn_reference(task, *train, tune[0], eval_z, **known_d.get("reference", {}))
        excess = ref.excess
        record.update(k=ref.k, tune_excess=ref.tune_excess, converged=True,
                      ids=id_profile({"true_logprobs": true_logprobs(task, eval_z)}))
    else:
        train_keys = {**known_d["train"], "schedule": "wsd"}
        if estimator in ("wide", "mlp_wide"):
            train_keys["lr"] *= known_d["width_lr_scale"]
        settings = TrainSettings.from_dict(train_keys)
        if estimator in ("mlp", "mlp_wide"):
            shape = dict(known_d["mlp"])
            if estimator == "mlp_wide":
                shape["width"] *= 2
            net = train_mlp(task, train, tune, eval_z, shape, settings, seed, threads=threads, device=device)
            shape = {"n_embd": shape["width"], "n_layer": shape["layers"]}
        else:
            shape = dict(known_d["model"])
            if estimator == "wide":
                shape["n_embd"] *= 2
            net = train_network(task, train, tune, eval_z, shape, settings, seed, threads=threads, device=device)
        excess = net.excess
        record.update(device=str(device), n_embd=shape["n_embd"], n_layer=shape["n_layer"], lr=settings.lr,
                      steps=net.steps, best_step=net.best_step,
                      best_val_loss=net.best_val_loss, converged=net.converged, wall_s=net.wall_s,
                      params_nonembed=net.params_nonembed, ids=net.ids, history=net.history)
    record["excess"] = float(excess.mean())
    log.info("excess %.5f nats (floor %.4f)", record["excess"], record["floor"])
    with atomic_path(out_npy) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, excess.astype(np.float64))
    write_json(out_json, record)
    return record
