"""Training of the mother models and of NARA's prior and confidence predictors.

The language-model and PixelCNN losses (next-token cross-entropy over every position) and the prior's
K-step loss do not fit the shared engine's (image, label) contract, so they use the small AdamW loops
below. The confidence predictor is an ordinary two-class classifier on feature vectors and is trained
with the shared engine `cuekit.train`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.nara.data import text_windows
from cuekit.nara.mother import CausalTransformerLM, MotherModel, PixelCNN
from cuekit.nara.predictors import ConfidencePredictor, HiddenStatePrior, PriorPredictor, confidence_features
from cuekit.nara.sampler import gumbel_noise


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="step", disable=not progress, leave=False, dynamic_ncols=True)


def _fit(module: nn.Module, opt: torch.optim.Optimizer, steps: int, batch_loss, *, desc: str, progress: bool,
         warmup_decay: bool = False, clip_norm: float | None = None) -> list[float]:
    """The AdamW loop the mothers and priors share: batch_loss(step) -> loss; -> the loss per step.

    warmup_decay: the learning rate rises over 20 steps, then falls linearly to 10 % of its base value.
    """
    base = [grp["lr"] for grp in opt.param_groups]
    losses = []
    module.train()
    with _bar(steps, desc, progress) as bar:
        for step in range(steps):
            if warmup_decay:
                for grp, lr in zip(opt.param_groups, base):
                    grp["lr"] = lr * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * (1 - step / steps))
            loss = batch_loss(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_norm is not None:
                nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
            opt.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    module.eval()
    return losses


def train_text_mother(tokens: Tensor, *, dim: int = 64, depth: int = 2, heads: int = 4, seq_len: int = 64,
                      steps: int = 300, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                      progress: bool = False) -> tuple[CausalTransformerLM, list[float]]:
    """Train a causal transformer LM on random windows of tokens (N,) -> (model, losses per step)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = CausalTransformerLM(vocab_size=128, dim=dim, depth=depth, heads=heads, max_len=max(seq_len + 1, 256))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)

    def batch_loss(step: int) -> Tensor:
        rows = text_windows(tokens, seq_len, batch_size, g)
        logits, _ = model(rows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))

    losses = _fit(model, opt, steps, batch_loss, desc="mother (text)", progress=progress, warmup_decay=True,
                  clip_norm=1.0)
    return model, losses


def train_image_mother(images: Tensor, *, channels: int = 32, layers: int = 4, steps: int = 300,
                       batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                       progress: bool = False) -> tuple[PixelCNN, list[float]]:
    """Train a PixelCNN on binary images (N, S, S) long -> (model, losses per step)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = PixelCNN(size=images.shape[-1], channels=channels, layers=layers)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def batch_loss(step: int) -> Tensor:
        x = images[torch.randint(0, images.shape[0], (batch_size,), generator=g)]
        return F.cross_entropy(model(x[:, None].float()), x)

    return model, _fit(model, opt, steps, batch_loss, desc="mother (image)", progress=progress)


def _prior_batch(prior: PriorPredictor, seqs: Tensor, offset: int, n: int, generator: torch.Generator
                 ) -> tuple[Tensor, Tensor, Tensor, int, Tensor]:
    """One batch at a shared cut c: windows (n, W), positions (n,), targets (n, K), c, rows (n,).

    seqs (N, L): rows of known tokens (text rows start with BOS: offset 1; images: offset 0).
    """
    k = prior.horizon
    c = int(torch.randint(offset, seqs.shape[1] - k + 1, (1,), generator=generator))
    rows = torch.randint(0, seqs.shape[0], (n,), generator=generator)
    ctx = seqs[rows, max(0, c - prior.window):c]
    if ctx.shape[1] < prior.window:
        pad = torch.full((n, prior.window - ctx.shape[1]), prior.vocab_size, dtype=torch.long)
        ctx = torch.cat([pad, ctx], dim=1)
    positions = torch.full((n,), c - offset, dtype=torch.long)
    return ctx, positions, seqs[rows, c:c + k], c, rows


def train_prior(prior: PriorPredictor, seqs: Tensor, *, offset: int, steps: int = 300, batch_size: int = 64,
                lr: float = 3e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Fit the prior to predict seqs[c:c+K] from the window before c, every position independently."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr, weight_decay=0.01)

    def batch_loss(step: int) -> Tensor:
        win, pos, tgt, _, _ = _prior_batch(prior, seqs, offset, batch_size, g)
        return F.cross_entropy(prior(win, pos).reshape(-1, prior.vocab_size), tgt.reshape(-1))

    return _fit(prior, opt, steps, batch_loss, desc="prior", progress=progress)


@torch.inference_mode()
def sample_text_mother(model: CausalTransformerLM, n: int, length: int, *, bos: int = 0, batch_size: int = 256,
                       generator: torch.Generator | None = None) -> Tensor:
    """n samples of the mother (temperature 1, batched KV-cached decoding): (n, length + 1) long, BOS first."""
    rows = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        cache = model.new_cache(b)
        seq = torch.full((b, length + 1), bos, dtype=torch.long)
        for t in range(length):
            logits, _ = model(seq[:, t:t + 1], cache, start=t)
            seq[:, t + 1] = torch.argmax(logits[:, 0] + gumbel_noise(b, model.vocab_size, generator), dim=-1)
        rows.append(seq)
    return torch.cat(rows)


@torch.inference_mode()
def mother_outputs(model: CausalTransformerLM, rows: Tensor, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """Teacher-forced final states (N, L, D) float and next-token probabilities (N, L, V) of rows (N, L).

    Output i (fed rows[:, :i+1]) predicts rows[:, i+1]. The probabilities are stored in bfloat16 (they are
    soft training targets; this halves the memory of the largest tensor).
    """
    n, length = rows.shape
    states = torch.empty(n, length, model.dim)
    probs = torch.empty(n, length, model.vocab_size, dtype=torch.bfloat16)
    for i in range(0, n, batch_size):
        logits, hidden = model(rows[i:i + batch_size])
        states[i:i + batch_size] = hidden
        probs[i:i + batch_size] = logits.softmax(-1)
    return states, probs


def hidden_prior_examples(states: Tensor, probs: Tensor, rows: Tensor, horizon: int, r: Tensor, c: Tensor
                          ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Training examples for `HiddenStatePrior` at rows r (n,) and cuts c (n,) long (0 <= c < L - 1).

    states (N, L, D), probs (N, L, V), rows (N, L) from `mother_outputs`. At cut c the last known token is
    rows[c] and the state is states[c - 1] (zeros at c = 0: only BOS known), as `last_hidden` gives when
    sampling. Returns state (n, D), last (n,) long, soft targets (n, K, V): head j (0-based) gets the mother's
    distribution of rows[c + j + 1] given rows[:c + j + 1]; the token before each target (n, K) long
    (rows[c + j]); and a validity mask (n, K) bool (target inside the row).
    """
    length, dim = states.shape[1], states.shape[2]
    state = torch.where((c > 0)[:, None], states[r, (c - 1).clamp_min(0)], torch.zeros(dim))
    pos = c[:, None] + torch.arange(horizon)  # output index predicting rows[c + j + 1]
    valid = pos < length - 1
    target = probs[r[:, None], pos.clamp_max(length - 2)].float()
    previous = rows[r[:, None], pos.clamp_max(length - 1)]
    return state, rows[r, c], target, previous, valid


def hidden_prior_batch(states: Tensor, probs: Tensor, rows: Tensor, horizon: int, n: int,
                       generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """`hidden_prior_examples` at n random (row, cut) pairs."""
    r = torch.randint(0, states.shape[0], (n,), generator=generator)
    c = torch.randint(0, states.shape[1] - 1, (n,), generator=generator)
    return hidden_prior_examples(states, probs, rows, horizon, r, c)


def train_hidden_prior(prior: HiddenStatePrior, model: CausalTransformerLM, rows: Tensor, *, steps: int = 600,
                       batch_size: int = 256, lr: float = 3e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Distil the frozen mother into the Medusa-style prior: head j matches the mother's distribution of x_{t+j}.

    rows (N, L) long, BOS first: ideally the mother's own samples (`sample_text_mother`), so that the soft
    target of head j averages, over the mother's continuations, into its marginal of x_{t+j} given the past
    (a chained prior also sees the true x_{t+j-1}: teacher forcing). Returns the loss (cross-entropy to the
    soft targets, nats) per step.
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 3)
    states, probs = mother_outputs(model, rows)
    decay = [p for name, p in prior.named_parameters() if name != "chain"]
    groups = [{"params": decay, "weight_decay": 0.01}]
    if prior.chain is not None:  # a table of logits: no decay
        groups.append({"params": [prior.chain], "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, lr=lr)

    def batch_loss(step: int) -> Tensor:
        state, last, target, previous, valid = hidden_prior_batch(states, probs, rows, prior.horizon, batch_size, g)
        logp = prior(state, last, previous if prior.chain is not None else None).log_softmax(-1)
        return -((target * logp).sum(-1) * valid).sum() / valid.sum()

    return _fit(prior, opt, steps, batch_loss, desc="prior (hidden state)", progress=progress, warmup_decay=True)


@torch.inference_mode()
def batch_prior_drafts(prior, mother: MotherModel, prefix: Tensor, offset: int, noise: Tensor
                       ) -> tuple[Tensor, Tensor]:
    """The prior's Gumbel-max proposals after each prefix (B, c) of known tokens, noise (B, K, V) ->
    drafts (B, K) long and their logits (B, K, V).

    A `HiddenStatePrior` reads the mother's state at the prefix (`TransformerMother.prefix_states`); a window
    `PriorPredictor` reads the last `window` tokens and the position c - offset.
    """
    if getattr(prior, "reads_mother_state", False):
        return prior.batch_draft(mother.prefix_states(prefix), prefix[:, -1], noise)
    n, c = prefix.shape
    ctx = prefix[:, max(0, c - prior.window):]
    if ctx.shape[1] < prior.window:
        ctx = torch.cat([torch.full((n, prior.window - ctx.shape[1]), prior.vocab_size, dtype=torch.long), ctx], 1)
    logits = prior(ctx, torch.full((n,), c - offset, dtype=torch.long))
    return torch.argmax(logits + noise, dim=-1), logits


@torch.inference_mode()
def confidence_dataset(mother: MotherModel, prior, seqs: Tensor, *, offset: int,
                       batches: int = 20, batch_size: int = 64, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Features (M, 6) and keep labels (M,) long: does the mother's own sample equal the prior's proposal?

    Contexts are rows of seqs (N, L) cut at random places; proposals are the prior's Gumbel-max samples,
    checked by one batched teacher-forced mother pass. The label uses the sampler's shared-noise scheme
    (`sampler._approx_loop`): the mother's own sample is drawn with the SAME Gumbel noise as the proposal at
    that position, so the predictor learns P(own == proposal | features) as the gate meets it when sampling.
    prior: a window `PriorPredictor` or a `HiddenStatePrior`.
    """
    g = torch.Generator().manual_seed(seed + 2)
    feats, labels = [], []
    k, v = prior.horizon, prior.vocab_size
    for _ in range(batches):
        c = int(torch.randint(offset, seqs.shape[1] - k + 1, (1,), generator=g))
        rows = torch.randint(0, seqs.shape[0], (batch_size,), generator=g)
        b = batch_size
        noise = gumbel_noise(b * k, v, g).view(b, k, v)
        drafts, prior_logits = batch_prior_drafts(prior, mother, seqs[rows, :c], offset, noise)
        mother_logits = mother.block_logits(seqs[rows, :c], drafts[:, :k - 1]).float()
        own = torch.argmax(mother_logits + noise, dim=-1)
        feats.append(confidence_features(mother_logits, prior_logits, drafts).reshape(-1, 6))
        labels.append((own == drafts).long().reshape(-1))
    return torch.cat(feats), torch.cat(labels)


def train_confidence(mother: MotherModel, prior, seqs: Tensor, *, offset: int,
                     batches: int = 20, epochs: int = 4, seed: int = 0, progress: bool = False
                     ) -> tuple[ConfidencePredictor, dict]:
    """Train the confidence predictor with the shared engine; returns (predictor, final epoch metrics plus the
    held-out AUROC of its score ("val_auroc") and the held-out rate of label "keep" ("val_keep_rate"))."""
    from torch.utils.data import TensorDataset

    from cuekit.data.registry import DataBundle
    from cuekit.train import TrainConfig, train

    feats, labels = confidence_dataset(mother, prior, seqs, offset=offset, batches=batches, seed=seed)
    n_val = max(len(labels) // 5, 1)
    bundle = DataBundle(train=TensorDataset(feats[n_val:], labels[n_val:]),
                        val=TensorDataset(feats[:n_val], labels[:n_val]),
                        num_classes=2, class_names=["resample", "keep"], in_chans=1, img_size=1, name="nara-confidence")
    torch.manual_seed(seed)
    model = ConfidencePredictor()
    cfg = TrainConfig(model="nara_confidence", epochs=epochs, batch_size=min(128, len(labels) - n_val), lr=3e-3,
                      opt="adamw", weight_decay=0.0, seed=seed, out=None, device="cpu", progress=progress, amp="off")
    res = train(cfg, model=model, data=bundle)
    model = res.model.eval()
    with torch.no_grad():
        val_score = model(feats[:n_val]).softmax(-1)[:, 1]
    metrics = dict(res.final)
    metrics["val_keep_rate"] = float(labels[:n_val].float().mean())
    metrics["val_auroc"] = binary_auroc(val_score, labels[:n_val])
    return model, metrics


def binary_auroc(scores: Tensor, labels: Tensor) -> float:
    """AUROC of scores (N,) for binary labels (N,) (1 = positive); NaN when a class is absent."""
    from cuekit.robustness.ood import roc_curve

    pos, neg = scores[labels == 1], scores[labels == 0]
    if pos.numel() == 0 or neg.numel() == 0:
        return float("nan")
    fpr, tpr, _ = roc_curve(pos, neg)
    return float(torch.trapezoid(tpr, fpr))


def bigram_nll(train_tokens: Tensor, rows: Tensor, vocab_size: int = 128, alphas: tuple = (0.01, 0.1, 1.0)) -> float:
    """The text mother's baseline: an add-alpha bigram model counted on train_tokens (N,), scored on the tokens
    rows[:, 2:] given rows[:, 1:-1] of rows (n, L + 1) (BOS first; the first token, which a bigram cannot
    condition, is left out), in nats per token; the best alpha of `alphas` (the strongest baseline)."""
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.float64)
    counts.index_put_((train_tokens[:-1], train_tokens[1:]), torch.ones(train_tokens.numel() - 1,
                                                                        dtype=torch.float64), accumulate=True)
    prev, nxt = rows[:, 1:-1].reshape(-1), rows[:, 2:].reshape(-1)
    best = float("inf")
    for a in alphas:
        logp = ((counts + a) / (counts + a).sum(1, keepdim=True)).log()
        best = min(best, float(-logp[prev, nxt].mean()))
    return best


@torch.inference_mode()
def text_mother_nll(model: CausalTransformerLM, rows: Tensor) -> float:
    """The text mother's NLL (nats per token) on the same tokens as `bigram_nll`: rows (n, L + 1), BOS first."""
    logits, _ = model(rows[:, :-1])
    logp = logits[:, 1:].float().log_softmax(-1)
    return float(-logp.gather(-1, rows[:, 2:, None]).mean())


def independent_pixel_nll(train_images: Tensor, images: Tensor) -> float:
    """The image mother's baseline: independent per-pixel Bernoulli (add-one counts on train_images (N, S, S)),
    NLL of images (M, S, S) in nats per pixel."""
    p = (train_images.flatten(1).double().sum(0) + 1) / (train_images.shape[0] + 2)
    x = images.flatten(1).double()
    return float(-(x * p.log() + (1 - x) * (1 - p).log()).mean())


def neighbour_context_nll(train_images: Tensor, images: Tensor, alpha: float = 0.1) -> float:
    """The image mother's local baseline, the image analogue of a bigram model: each pixel given its 4 causal
    neighbours (left, up-left, up, up-right; outside the image counts as 0), add-alpha counts on train_images
    (N, S, S); NLL of images (M, S, S) in nats per pixel."""
    def contexts(x: Tensor) -> Tensor:
        p = F.pad(x, (1, 1, 1, 0))
        return p[:, 1:, :-2] + 2 * p[:, :-1, :-2] + 4 * p[:, :-1, 1:-1] + 8 * p[:, :-1, 2:]
    counts = torch.zeros(16, 2, dtype=torch.float64)
    counts.index_put_((contexts(train_images).reshape(-1), train_images.reshape(-1)),
                      torch.ones(train_images.numel(), dtype=torch.float64), accumulate=True)
    logp = ((counts + alpha) / (counts + alpha).sum(1, keepdim=True)).log()
    return float(-logp[contexts(images).reshape(-1), images.reshape(-1)].mean())


@torch.inference_mode()
def mean_nll(mother: MotherModel, seqs: Tensor) -> float:
    """Mean negative log-likelihood per token of sequences (B, T) under the mother (nats)."""
    return float(-mother.token_logprobs(seqs).mean())
