"""Mother autoregressive (AR) models behind one interface that the NARA sampler drives.

The interface (`MotherModel`) is what any AR model needs to offer to be accelerated:
`start()` opens a sampling state, `verify(state, drafts)` runs ONE parallel, teacher-forced pass
that returns the conditional distribution of the next k positions (position j conditioned on the
true past plus drafts[:j]), and `commit(state, tokens)` keeps the first tokens and drops the rest
(a KV cache is truncated, a canvas is written). Sequential sampling is `verify` with no drafts.

A mother that also offers `last_hidden(state)` (its final hidden state at the position that predicted
the last known token) and `prefix_states(prefix)` (the same for a batch of prefixes, for training) can be
driven by the Medusa-style `HiddenStatePrior`.

Three mothers are provided:
- `TransformerMother`: a small causal transformer language model with a preallocated KV cache (text);
  it exposes its hidden state;
- `PixelCNNMother`: a small PixelCNN (masked convolutions) over binary images in raster order;
- `MarkovMother`: an order-2 Markov chain with closed-form probabilities (a reference for tests).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MotherModel:
    """The interface of a mother AR model; `calls` counts parallel passes (sequential steps included)."""

    vocab_size: int
    max_len: int

    def __init__(self) -> None:
        self.calls = 0

    def start(self) -> object:
        """A fresh sampling state at the beginning of a sequence."""
        raise NotImplementedError

    def context(self, state: object) -> Tensor:
        """The tokens known so far (what a prior predictor conditions on): (t,) long."""
        raise NotImplementedError

    def position(self, state: object) -> int:
        """How many tokens have been generated in `state` (the index of the next position)."""
        raise NotImplementedError

    def last_token(self, state: object) -> Tensor:
        """The last known token: (1,) long (BOS for a text mother at the start)."""
        return self.context(state)[-1:]

    def verify(self, state: object, drafts: Tensor) -> Tensor:
        """One parallel pass: drafts (k-1,) long -> logits (k, V) of the next k positions."""
        raise NotImplementedError

    def commit(self, state: object, tokens: Tensor) -> None:
        """Keep n tokens (n <= k of the last verify; tokens[:n-1] must equal those drafts): tokens (n,) long."""
        raise NotImplementedError

    def block_logits(self, prefix: Tensor, drafts: Tensor) -> Tensor:
        """Batched teacher-forced pass for training: prefix (B, t), drafts (B, k-1) long -> logits (B, k, V).

        For text mothers the prefix starts with the BOS token; for images it may be empty (t = 0).
        """
        raise NotImplementedError

    def token_logprobs(self, seqs: Tensor) -> Tensor:
        """Log-probability of every generated token: seqs (B, T) long (no BOS) -> (B, T) float."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- transformer
class _Block(nn.Module):
    """Pre-norm transformer block whose attention can write to and read from a preallocated key/value cache.

    The forward calls functional ops on the parameters directly (no submodule calls): at the sizes used here
    one decoding step is dominated by per-call overhead, and sequential and NARA sampling share this code.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: Tensor, cache: Tensor | None = None, start: int = 0, mask: Tensor | None = None) -> Tensor:
        """x (B, T, D) at positions start..start+T-1 -> (B, T, D).

        cache: key/value buffer (2, B, H, L, D/H); this call writes positions start..start+T-1 and attends to
        0..start+T-1 with mask (T, start+T) float, additive (None: T == 1). Without a cache: causal attention.
        """
        b, t, d = x.shape
        ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b = self.weights()
        h = F.layer_norm(x, (d,), ln1_w, ln1_b, 1e-5)
        qkv = F.linear(h, qkv_w, qkv_b).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is None:
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=t > 1)
        else:
            end = start + t
            cache[:, :, :, start:end] = qkv[1:]
            a = F.scaled_dot_product_attention(qkv[0], cache[0, :, :, :end], cache[1, :, :, :end], attn_mask=mask)
        x = x + F.linear(a.transpose(1, 2).reshape(b, t, d), proj_w, proj_b)
        h = F.gelu(F.linear(F.layer_norm(x, (d,), ln2_w, ln2_b, 1e-5), fc1_w, fc1_b), approximate="tanh")
        return x + F.linear(h, fc2_w, fc2_b)

    def weights(self) -> tuple[Tensor, ...]:
        """The block's parameters in forward order, gathered once (the parameter objects never change:
        loading a state dict or moving the module copies into them)."""
        cached = self.__dict__.get("_weights")
        if cached is None:
            fc1, fc2 = self.mlp[0], self.mlp[2]
            cached = (self.ln1.weight, self.ln1.bias, self.qkv.weight, self.qkv.bias, self.proj.weight,
                      self.proj.bias, self.ln2.weight, self.ln2.bias, fc1.weight, fc1.bias, fc2.weight, fc2.bias)
            self.__dict__["_weights"] = cached
        return cached


class CausalTransformerLM(nn.Module):
    """A small GPT-style causal language model; decoding writes a preallocated KV cache (`new_cache`)."""

    def __init__(self, vocab_size: int = 128, dim: int = 128, depth: int = 4, heads: int = 4, max_len: int = 512):
        super().__init__()
        self.vocab_size, self.max_len, self.dim = vocab_size, max_len, dim
        self.config = dict(vocab_size=vocab_size, dim=dim, depth=depth, heads=heads, max_len=max_len)
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Parameter(torch.zeros(max_len, dim))
        nn.init.normal_(self.pos_emb, std=0.02)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)
        # causal[i, j] = 0 where position i may attend to position j, else -inf (an additive attention mask;
        # a view of it masks a block decoded after a cache)
        causal = torch.full((max_len, max_len), float("-inf")).triu(1)
        self.register_buffer("causal", causal, persistent=False)

    def new_cache(self, batch: int = 1) -> list[Tensor]:
        """Empty key/value buffers for `batch` sequences: one (2, B, H, max_len, D/H) per block."""
        heads = self.blocks[0].heads
        return [torch.empty(2, batch, heads, self.max_len, self.dim // heads, dtype=self.pos_emb.dtype)
                for _ in self.blocks]

    def hidden_states(self, tokens: Tensor, cache: list | None = None, start: int = 0) -> Tensor:
        """tokens (B, T) long at positions start..start+T-1 -> final layer-normed states (B, T, D).

        With a cache (from `new_cache`, positions < start already written) the call extends it in place.
        """
        t = tokens.shape[1]
        end = start + t
        if end > self.max_len:
            raise ValueError(f"sequence of {end} tokens exceeds max_len {self.max_len}")
        x = F.embedding(tokens, self.tok_emb.weight) + self.pos_emb[start:end]
        mask = None if cache is None or t == 1 else self.causal[start:end, :end]
        for i, blk in enumerate(self.blocks):
            x = blk(x, None if cache is None else cache[i], start, mask)
        return F.layer_norm(x, (self.dim,), self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)

    def forward(self, tokens: Tensor, cache: list | None = None, start: int = 0) -> tuple[Tensor, Tensor]:
        """tokens (B, T) long at positions start..start+T-1 -> logits (B, T, V), final states (B, T, D)."""
        hidden = self.hidden_states(tokens, cache, start)
        return F.linear(hidden, self.head.weight, self.head.bias), hidden


@dataclass
class _LMState:
    tokens: Tensor            # (max_len + 1,) long buffer: BOS then generated tokens
    cache: list               # preallocated KV buffers; entries [0, fed) hold tokens[:fed]
    length: int = 1           # valid entries in `tokens` (BOS included)
    fed: int = 0              # valid cache entries (= length - 1 after a commit)
    hidden: Tensor | None = None  # final states (k, D) of the last verify pass
    hidden_row: int = 0       # the row of `hidden` that predicted the last known token


class TransformerMother(MotherModel):
    """A `CausalTransformerLM` as a mother model; sequences start with token `bos` (not generated)."""

    def __init__(self, model: CausalTransformerLM, bos: int = 0):
        super().__init__()
        self.model = model.eval()
        self.vocab_size, self.max_len, self.bos = model.vocab_size, model.max_len - 1, bos
        self.hidden_size = model.dim

    def start(self) -> _LMState:
        """A state holding only the BOS token (nothing cached yet)."""
        buf = torch.empty(self.model.max_len + 1, dtype=torch.long)
        buf[0] = self.bos
        return _LMState(tokens=buf, cache=self.model.new_cache(1))

    def context(self, state: _LMState) -> Tensor:
        """BOS and the generated tokens: (t + 1,) long."""
        return state.tokens[:state.length]

    def position(self, state: _LMState) -> int:
        """Generated tokens so far."""
        return state.length - 1

    def last_token(self, state: _LMState) -> Tensor:
        """The last known token: (1,) long."""
        return state.tokens[state.length - 1:state.length]

    def last_hidden(self, state: _LMState) -> Tensor | None:
        """The mother's final state (D,) that predicted the last known token (None before the first pass).

        Together with that token it summarises the whole past: what a Medusa-style prior reads.
        """
        return None if state.hidden is None else state.hidden[state.hidden_row]

    @torch.inference_mode()
    def prefix_states(self, prefix: Tensor) -> Tensor:
        """What `last_hidden` would give after each prefix (B, t >= 1) starting with BOS: (B, D), zeros if t == 1."""
        if prefix.shape[1] == 1:
            return torch.zeros(prefix.shape[0], self.hidden_size)
        return self.model(prefix[:, :-1])[1][:, -1]

    @torch.inference_mode()
    def verify(self, state: _LMState, drafts: Tensor) -> Tensor:
        """Feed the last known token and drafts (k-1,) after the cache -> logits (k, V)."""
        self.calls += 1
        last = state.tokens[state.length - 1:state.length]
        inp = (last if drafts.numel() == 0 else torch.cat([last, drafts.view(-1)])).view(1, -1)
        logits, hidden = self.model(inp, state.cache, start=state.fed)
        state.hidden = hidden[0]
        return logits[0]

    def commit(self, state: _LMState, tokens: Tensor) -> None:
        """Keep n new tokens: the first n fed entries of the cache stay valid (later ones get overwritten)."""
        n = tokens.shape[0]
        state.tokens[state.length:state.length + n] = tokens
        state.length += n
        state.fed += n
        state.hidden_row = n - 1

    @torch.inference_mode()
    def block_logits(self, prefix: Tensor, drafts: Tensor) -> Tensor:
        """prefix (B, t >= 1) starting with BOS, drafts (B, k-1) -> logits (B, k, V)."""
        t, k = prefix.shape[1], drafts.shape[1] + 1
        logits, _ = self.model(torch.cat([prefix, drafts], dim=1))
        return logits[:, t - 1:t - 1 + k]

    @torch.inference_mode()
    def token_logprobs(self, seqs: Tensor) -> Tensor:
        """seqs (B, T) generated tokens -> log p(x_t | BOS, x_<t): (B, T)."""
        inp = torch.cat([torch.full_like(seqs[:, :1], self.bos), seqs[:, :-1]], dim=1)
        logits, _ = self.model(inp)
        return logits.log_softmax(-1).gather(-1, seqs[..., None])[..., 0]


# ----------------------------------------------------------------------------- PixelCNN
class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order (type A) or up to it (B)."""

    def __init__(self, mask_type: str, in_ch: int, out_ch: int, kernel: int):
        super().__init__(in_ch, out_ch, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        c = kernel // 2
        mask[:, :, c, c + (mask_type == "B"):] = 0
        mask[:, :, c + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, H, W) -> (B, out_ch, H, W)."""
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """A small PixelCNN for binary images: x (B, 1, H, W) in {0, 1} -> logits (B, 2, H, W)."""

    def __init__(self, size: int = 12, channels: int = 32, layers: int = 4):
        super().__init__()
        self.size = size
        self.config = dict(size=size, channels=channels, layers=layers)
        self.inp = MaskedConv2d("A", 1, channels, 5)
        self.res = nn.ModuleList(MaskedConv2d("B", channels, channels, 3) for _ in range(layers))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 2, 1))

    def forward(self, x: Tensor) -> Tensor:
        """x (B, 1, H, W) float -> logits (B, 2, H, W)."""
        h = self.inp(x * 2.0 - 1.0)
        for conv in self.res:
            h = h + conv(F.relu(h))
        return self.out(h)


@dataclass
class _CanvasState:
    canvas: Tensor   # (1, 1, H, W) float
    flat: Tensor     # (H*W,) long view of the known pixels
    t: int = 0


class PixelCNNMother(MotherModel):
    """A `PixelCNN` as a mother model over H*W binary tokens in raster order (no cache: one full pass per call)."""

    def __init__(self, model: PixelCNN):
        super().__init__()
        self.model = model.eval()
        self.size = model.size
        self.vocab_size, self.max_len = 2, model.size * model.size

    def start(self) -> _CanvasState:
        """An empty canvas."""
        s = self.size
        return _CanvasState(torch.zeros(1, 1, s, s), torch.zeros(s * s, dtype=torch.long))

    def context(self, state: _CanvasState) -> Tensor:
        """Known pixels in raster order: (t,) long."""
        return state.flat[:state.t]

    def position(self, state: _CanvasState) -> int:
        """Known pixels so far."""
        return state.t

    @torch.inference_mode()
    def verify(self, state: _CanvasState, drafts: Tensor) -> Tensor:
        """Write drafts (k-1,) at pixels t.., one full pass -> logits (k, 2) of pixels t..t+k-1."""
        self.calls += 1
        k = drafts.numel() + 1
        flat = state.canvas.view(-1)
        flat[state.t:state.t + k - 1] = drafts.float()
        logits = self.model(state.canvas)[0].view(2, -1)
        return logits[:, state.t:state.t + k].T

    def commit(self, state: _CanvasState, tokens: Tensor) -> None:
        """Write n pixels at t.. and advance."""
        n = tokens.numel()
        state.canvas.view(-1)[state.t:state.t + n] = tokens.float()
        state.flat[state.t:state.t + n] = tokens
        state.t += n

    @torch.inference_mode()
    def block_logits(self, prefix: Tensor, drafts: Tensor) -> Tensor:
        """prefix (B, t) pixels, drafts (B, k-1) -> logits (B, k, 2)."""
        b, t = prefix.shape
        k = drafts.shape[1] + 1
        canvas = torch.zeros(b, self.size * self.size)
        canvas[:, :t] = prefix.float()
        canvas[:, t:t + k - 1] = drafts.float()
        logits = self.model(canvas.view(b, 1, self.size, self.size)).view(b, 2, -1)
        return logits[:, :, t:t + k].transpose(1, 2)

    @torch.inference_mode()
    def token_logprobs(self, seqs: Tensor) -> Tensor:
        """seqs (B, H*W) pixels -> log p(x_t | x_<t): (B, H*W)."""
        b = seqs.shape[0]
        logits = self.model(seqs.float().view(b, 1, self.size, self.size)).view(b, 2, -1).transpose(1, 2)
        return logits.log_softmax(-1).gather(-1, seqs[..., None])[..., 0]


# ----------------------------------------------------------------------------- Markov reference
@dataclass
class _MarkovState:
    tokens: list = field(default_factory=list)


class MarkovMother(MotherModel):
    """An order-2 Markov chain with a random logit table; exact probabilities make it a test reference.

    table: (V+1, V+1, V) logits indexed by the two previous tokens (V stands for "before the start").
    """

    def __init__(self, vocab_size: int = 3, seed: int = 0, sharpness: float = 1.5, max_len: int = 4096):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.vocab_size, self.max_len = vocab_size, max_len
        self.table = torch.randn(vocab_size + 1, vocab_size + 1, vocab_size, generator=g) * sharpness

    def _logits(self, tokens: list) -> Tensor:
        v = self.vocab_size
        a = tokens[-2] if len(tokens) >= 2 else v
        b = tokens[-1] if len(tokens) >= 1 else v
        return self.table[a, b]

    def start(self) -> _MarkovState:
        """An empty sequence."""
        return _MarkovState()

    def context(self, state: _MarkovState) -> Tensor:
        """Generated tokens: (t,) long."""
        return torch.tensor(state.tokens, dtype=torch.long)

    def position(self, state: _MarkovState) -> int:
        """Generated tokens so far."""
        return len(state.tokens)

    def verify(self, state: _MarkovState, drafts: Tensor) -> Tensor:
        """Logits (k, V) of the next k positions given the past and drafts (k-1,)."""
        self.calls += 1
        seq = list(state.tokens)
        out = [self._logits(seq)]
        for d in drafts.tolist():
            seq.append(d)
            out.append(self._logits(seq))
        return torch.stack(out)

    def commit(self, state: _MarkovState, tokens: Tensor) -> None:
        """Append tokens (n,)."""
        state.tokens.extend(tokens.tolist())

    def block_logits(self, prefix: Tensor, drafts: Tensor) -> Tensor:
        """prefix (B, t), drafts (B, k-1) -> logits (B, k, V)."""
        return torch.stack([self.verify(_MarkovState(p.tolist()), d) for p, d in zip(prefix, drafts)])

    def token_logprobs(self, seqs: Tensor) -> Tensor:
        """seqs (B, T) -> (B, T) exact log-probabilities."""
        rows = []
        for s in seqs.tolist():
            rows.append(torch.stack([self._logits(s[:i]).log_softmax(-1)[x] for i, x in enumerate(s)]))
        return torch.stack(rows)

    def sequence_probability(self, seq: list) -> float:
        """Exact probability of one whole sequence."""
        return math.exp(float(self.token_logprobs(torch.tensor([seq])).sum()))
