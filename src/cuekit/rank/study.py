"""The ReXNet paper's feature-rank study of random networks (Sec. 3 of arXiv 2007.00992), with its settings exposed.

A random block maps an input X (d_in channels, N samples) to f(BN(W X)) with d_out channels; the
paper reports rank(output) / d_out against the dimension ratio DR = d_in / d_out, averaged over
random networks of random width d_out. The paper does not state the input distribution, N, the
rank tolerance or how deep its random networks are, and with Gaussian inputs a single layer is
numerically full-rank for every nonlinearity. So the study runs a declared grid of those
settings and reports every cell:

- input: "gaussian" (i.i.d. N(0, 1)), "uniform" (i.i.d. U[0, 1]), "smooth" (Gaussian noise blurred
  over space with sigma 1.5 px, so neighbouring pixels, i.e. samples, correlate).
- samples: N = factor * d_out feature vectors. With spatial = 1 (the paper's X in R^{d_in x N}, N the
  batch size) each sample is one vector and the blocks run as matrix products (a zero-padded 3x3 conv
  on a 1x1 map is its centre tap, a depthwise one a per-channel scale). With spatial > 1 every block
  runs on spatial x spatial images and each output pixel is one sample (the first N are kept).
- depth: the block under study is the last of `depth` random blocks of the same kind and
  nonlinearity; the first depth-1 keep d_in channels, so its input is the output of a random network.
- tolerance: numerical rank counts singular values above `tol * sigma_max`; "fp32" is
  torch.linalg.matrix_rank's default for float32 features, sigma_max * max(d_out, N) * 1.19e-7.

Block types (each block's output is measured after its last op):
- conv1x1: f(BN(conv1x1(X))), the paper's f(WX).
- conv3x3: f(BN(conv3x3(X))).
- ib_conv3x3 / ib_dw3x3: an inverted bottleneck: f(BN(1x1 to hidden)), f(BN(3x3 full / depthwise)),
  BN(1x1 to d_out), then the input added to the first d_in channels (the paper measures "the output
  after the addition operation of the shortcut"). hidden = d_out by default, so the first 1x1 is the
  expansion layer whose ratio is swept; with `expansion=t` it is t * d_in (MobileNetV2's rule), and the
  output rank can then never exceed (t + 1) * d_in, whatever the nonlinearity.

Two rank measures per output F (d_out, N), both divided by d_out: the numerical rank at each
tolerance, and the effective rank exp(H(p)) with p = sigma / sum(sigma) (Roy & Vetterli, 2007).
Singular values come from the eigenvalues of F F^T in float64 (F is float32, as in a network).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.io import save_figure

NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "linear": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "elu": F.elu,
    "softplus": F.softplus,
    "hardswish": F.hardswish,
    "silu": F.silu,
}
BLOCK_TYPES = ("conv1x1", "conv3x3", "ib_conv3x3", "ib_dw3x3")
INPUTS = ("gaussian", "uniform", "smooth")
TOLERANCES = ("fp32", "1e-3", "1e-2")
FP32_EPS = float(torch.finfo(torch.float32).eps)

# The paper's groups for its ordering claim (Sec. 3 rule 3: "a complicated nonlinearity such as ELU and SiLU"
# belongs after the expand convs, where ReXNet replaced ReLU6): ELU / SiLU against ReLU / ReLU6.
STRONG_EXPANDERS = ("elu", "silu")
WEAK_EXPANDERS = ("relu", "relu6")


@dataclasses.dataclass
class RankStudyConfig:
    """The grid of the study: every combination of inputs x sample_factors x depths is one setting."""

    blocks: Sequence[str] = BLOCK_TYPES
    nonlinearities: Sequence[str] = tuple(NONLINEARITIES)
    ratios: Sequence[float] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    networks: int = 1000              # random networks per (setting, block, ratio); shared by all nonlinearities
    networks_per_width: int = 10      # networks drawn per random d_out (run side by side)
    d_out_range: tuple[int, int] = (32, 128)  # d_out ~ uniform integers in this range (inclusive)
    inputs: Sequence[str] = INPUTS
    sample_factors: Sequence[float] = (1.25, 4.0)  # N = factor * d_out
    depths: Sequence[int] = (1, 2)
    tolerances: Sequence[str] = TOLERANCES
    expansion: int | None = None      # inverted bottleneck hidden width: expansion * d_in, or d_out when None
    spatial: int = 8                  # H = W of conv inputs
    bn_eps: float = 1e-5
    seed: int = 0
    device: str = "cpu"
    threads: int | None = 1           # torch CPU threads during the run (None: leave as is); small matrices run
                                      # fastest on one thread, and many threads thrash on a shared CPU

    def validate(self) -> None:
        """Reject unknown names and impossible values with a message naming the option."""
        for kind, values, choices in (("block type", self.blocks, BLOCK_TYPES),
                                      ("nonlinearity", self.nonlinearities, NONLINEARITIES),
                                      ("input distribution", self.inputs, INPUTS)):
            for v in values:
                if v not in choices:
                    raise UnknownChoiceError(kind, v, choices)
        for t in self.tolerances:
            tolerance_value(t, 2, 2)
        lo, hi = self.d_out_range
        if not (2 <= lo <= hi):
            raise UsageError(f"d_out range must satisfy 2 <= low <= high, got {self.d_out_range}")
        if any(not (0 < r <= 1) for r in self.ratios):
            raise UsageError(f"dimension ratios must lie in (0, 1], got {list(self.ratios)}")
        if any(f <= 1 for f in self.sample_factors):
            raise UsageError(f"sample factors must exceed 1 (N > d_out), got {list(self.sample_factors)}")
        if any(d < 1 for d in self.depths):
            raise UsageError(f"depths must be >= 1, got {list(self.depths)}")
        if self.networks_per_width < 1:
            raise UsageError("networks_per_width must be >= 1")
        if self.networks < 1 or (self.expansion is not None and self.expansion < 1) or self.spatial < 1:
            raise UsageError("networks, expansion and spatial must be >= 1")


def tolerance_value(name: str, d_out: int, n: int) -> float:
    """Relative singular-value threshold (a fraction of sigma_max) for a tolerance name."""
    if name == "fp32":
        return max(d_out, n) * FP32_EPS
    try:
        value = float(name)
    except ValueError:
        raise UsageError(f"tolerance must be 'fp32' or a number like 1e-3, got {name!r}") from None
    if not 0 < value < 1:
        raise UsageError(f"tolerance must lie in (0, 1), got {name!r}")
    return value


def singular_values(features: Tensor) -> Tensor:
    """Singular values (..., d) of features (..., d, N), largest first, from eig(F F^T) in float64."""
    f = features.double()
    gram = f @ f.transpose(-1, -2)
    eig = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    return eig.flip(-1)


def numerical_rank(sv: Tensor, rel_tol: float) -> Tensor:
    """Number of singular values above rel_tol * sigma_max: sv (..., d) -> (...) int."""
    return (sv > rel_tol * sv[..., :1]).sum(-1)


def effective_rank(sv: Tensor) -> Tensor:
    """exp(entropy of sv / sum(sv)): sv (..., d) -> (...) float; d for a flat spectrum, 1 for rank one."""
    total = sv.sum(-1, keepdim=True)
    p = sv / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(-1)  # 0 log 0 = 0
    return torch.exp(entropy)


def _bn(x: Tensor, eps: float) -> Tensor:
    """Training-mode BatchNorm without affine, per nonlinearity slice and channel: x (n, K, C, H, W)."""
    n, k, c = x.shape[:3]
    return F.batch_norm(x.flatten(1, 2), None, None, training=True, eps=eps).unflatten(1, (k, c))


def _apply(fns: Sequence[Callable], x: Tensor) -> Tensor:
    """Nonlinearity fns[k] on slice k of x (n, K, ...)."""
    return torch.stack([fn(x[:, k]) for k, fn in enumerate(fns)], dim=1)


def _conv(x: Tensor, weight: Tensor, groups: int) -> Tensor:
    """Shared-weight conv over every nonlinearity slice: x (n, K, C, H, W) -> (n, K, C', H, W)."""
    n, k = x.shape[:2]
    y = F.conv2d(x.flatten(0, 1), weight, padding=weight.shape[-1] // 2, groups=groups)
    return y.unflatten(0, (n, k))


def _weight(c_out: int, c_in_per_group: int, ksize: int, gen: torch.Generator, device) -> Tensor:
    fan_in = c_in_per_group * ksize * ksize
    return torch.randn(c_out, c_in_per_group, ksize, ksize, generator=gen, device=device) / math.sqrt(fan_in)


def random_block(block: str, x: Tensor, d_out: int, fns: Sequence[Callable], gen: torch.Generator,
                 expansion: int | None = None, bn_eps: float = 1e-5, networks: int = 1) -> Tensor:
    """`networks` independent random blocks, applied with nonlinearity fns[k] to slice k.

    x: (n, K, networks * d_in, H, W), network g's channels contiguous -> (n, K, networks * d_out, H, W).
    The networks run side by side as a grouped convolution.
    """
    g, dev = networks, x.device
    d_in = x.shape[2] // g
    if block in ("conv1x1", "conv3x3"):
        ksize = 1 if block == "conv1x1" else 3
        return _apply(fns, _bn(_conv(x, _weight(g * d_out, d_in, ksize, gen, dev), g), bn_eps))
    if block in ("ib_conv3x3", "ib_dw3x3"):
        hidden = d_out if expansion is None else expansion * d_in
        h = _apply(fns, _bn(_conv(x, _weight(g * hidden, d_in, 1, gen, dev), g), bn_eps))
        if block == "ib_conv3x3":
            h = _conv(h, _weight(g * hidden, hidden, 3, gen, dev), g)
        else:
            h = _conv(h, _weight(g * hidden, 1, 3, gen, dev), g * hidden)
        h = _apply(fns, _bn(h, bn_eps))
        out = _bn(_conv(h, _weight(g * d_out, hidden, 1, gen, dev), g), bn_eps)
        keep = min(d_in, d_out)
        out = out.unflatten(2, (g, d_out))
        out = torch.cat([out[:, :, :, :keep] + x.unflatten(2, (g, d_in))[:, :, :, :keep], out[:, :, :, keep:]], dim=3)
        return out.flatten(2, 3)
    raise UnknownChoiceError("block type", block, BLOCK_TYPES)


def _bn_vectors(x: Tensor, eps: float) -> Tensor:
    """Training-mode BatchNorm without affine over the samples: x (K, G, C, N)."""
    var, mean = torch.var_mean(x, -1, correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _apply_vectors(fns: Sequence[Callable], x: Tensor) -> Tensor:
    """Nonlinearity fns[k] on slice k of x (K, ...)."""
    out = torch.empty_like(x)
    for k, fn in enumerate(fns):
        out[k] = fn(x[k])
    return out


def _matrix(g: int, c_out: int, c_in: int, gen: torch.Generator, device) -> Tensor:
    return torch.randn(g, c_out, c_in, generator=gen, device=device) / math.sqrt(c_in)


def random_block_vectors(block: str, x: Tensor, d_out: int, fns: Sequence[Callable], gen: torch.Generator,
                         expansion: int | None = None, bn_eps: float = 1e-5) -> Tensor:
    """`random_block` on 1x1 maps, as matrix products: x (K, G, d_in, N) -> (K, G, d_out, N).

    A zero-padded 3x3 conv on a 1x1 map only uses its centre tap (a d_out x d_in matrix; its scale is
    removed by BatchNorm), and a depthwise 3x3 conv is a random scale per channel.
    """
    g, dev = x.shape[1], x.device
    d_in = x.shape[2]
    if block in ("conv1x1", "conv3x3"):
        return _apply_vectors(fns, _bn_vectors(_matrix(g, d_out, d_in, gen, dev) @ x, bn_eps))
    if block in ("ib_conv3x3", "ib_dw3x3"):
        hidden = d_out if expansion is None else expansion * d_in
        h = _apply_vectors(fns, _bn_vectors(_matrix(g, hidden, d_in, gen, dev) @ x, bn_eps))
        if block == "ib_conv3x3":
            h = _matrix(g, hidden, hidden, gen, dev) @ h
        else:
            h = torch.randn(g, hidden, 1, generator=gen, device=dev) * h
        h = _apply_vectors(fns, _bn_vectors(h, bn_eps))
        out = _bn_vectors(_matrix(g, d_out, hidden, gen, dev) @ h, bn_eps)
        keep = min(d_in, d_out)
        return torch.cat([out[:, :, :keep] + x[:, :, :keep], out[:, :, keep:]], dim=2)
    raise UnknownChoiceError("block type", block, BLOCK_TYPES)


def random_input(kind: str, n_images: int, channels: int, spatial: int, gen: torch.Generator, device) -> Tensor:
    """Input images (n_images, channels, spatial, spatial) from the named distribution."""
    if kind == "gaussian":
        return torch.randn(n_images, channels, spatial, spatial, generator=gen, device=device)
    if kind == "uniform":
        return torch.rand(n_images, channels, spatial, spatial, generator=gen, device=device)
    if kind == "smooth":
        pad = 3
        noise = torch.randn(n_images * channels, 1, spatial + 2 * pad, spatial + 2 * pad, generator=gen, device=device)
        t = torch.arange(-pad, pad + 1, dtype=torch.float32, device=device)
        g = torch.exp(-0.5 * (t / 1.5) ** 2)
        kernel = (g[:, None] * g[None, :]) / (g.sum() ** 2)
        blurred = F.conv2d(noise, kernel[None, None]).view(n_images, channels, spatial, spatial)
        return (blurred - blurred.mean()) / blurred.std()
    raise UnknownChoiceError("input distribution", kind, INPUTS)


def block_output_features(block: str, nonlinearities: Sequence[str], d_in: int, d_out: int, n_samples: int,
                          *, input_kind: str = "gaussian", depth: int = 1, expansion: int | None = None,
                          spatial: int = 8, bn_eps: float = 1e-5, networks: int = 1,
                          gen: torch.Generator | None = None, device: str | torch.device = "cpu") -> Tensor:
    """Output features (K, networks, d_out, N) of `networks` random networks, each run under every nonlinearity.

    A network keeps its weights and input across the K nonlinearities. Every block runs on
    (spatial x spatial) images, each pixel one sample; the first N of the images x spatial^2 output
    vectors are kept. With depth > 1 the block under study follows depth - 1 random blocks of width d_in.
    """
    gen = gen if gen is not None else torch.Generator(device=device).manual_seed(0)
    fns = [NONLINEARITIES[n] for n in nonlinearities]
    if spatial == 1:
        x0 = random_input(input_kind, n_samples, networks * d_in, 1, gen, device)  # (N, G * d_in, 1, 1)
        x0 = x0.flatten(1).T.unflatten(0, (networks, d_in))  # (G, d_in, N)
        x = x0.unsqueeze(0).expand(len(fns), *x0.shape).contiguous()
        for _ in range(depth - 1):
            x = random_block_vectors(block, x, d_in, fns, gen, expansion, bn_eps)
        return random_block_vectors(block, x, d_out, fns, gen, expansion, bn_eps)
    n_images = math.ceil(n_samples / (spatial * spatial))
    x0 = random_input(input_kind, n_images, networks * d_in, spatial, gen, device)
    x = x0.unsqueeze(1).expand(n_images, len(fns), *x0.shape[1:]).contiguous()
    for _ in range(depth - 1):
        x = random_block(block, x, d_in, fns, gen, expansion, bn_eps, networks)
    y = random_block(block, x, d_out, fns, gen, expansion, bn_eps, networks)  # (n, K, G * d_out, H, W)
    y = y.unflatten(2, (networks, d_out)).permute(1, 2, 3, 0, 4, 5).flatten(3)  # (K, G, d_out, n * H * W)
    return y[..., :n_samples]


@dataclasses.dataclass
class RankStudyResult:
    """Means and standard deviations over networks.

    rank: {tolerance: tensor (inputs, sample_factors, depths, blocks, nonlinearities, ratios)} of rank / d_out;
    eff_rank: the same shape, effective rank / d_out.
    """

    config: RankStudyConfig
    rank_mean: dict[str, Tensor]
    rank_std: dict[str, Tensor]
    eff_mean: Tensor
    eff_std: Tensor
    seconds: float

    def index(self, *, input: str, sample_factor: float, depth: int, block: str) -> tuple[int, int, int, int]:
        """Positions of one setting and block in the result tensors."""
        c = self.config
        return (list(c.inputs).index(input), list(c.sample_factors).index(sample_factor),
                list(c.depths).index(depth), list(c.blocks).index(block))

    def curves(self, *, input: str, sample_factor: float, depth: int, block: str,
               measure: str = "fp32") -> dict[str, list[float]]:
        """{nonlinearity: rank ratio per DR} for one cell; measure is a tolerance name or "effective"."""
        i = self.index(input=input, sample_factor=sample_factor, depth=depth, block=block)
        table = self.eff_mean if measure == "effective" else self.rank_mean[measure]
        return {nl: table[i][j].tolist() for j, nl in enumerate(self.config.nonlinearities)}


def run_rank_study(config: RankStudyConfig, progress: bool = False) -> RankStudyResult:
    """Run every cell of the grid; each random network is evaluated under all nonlinearities at once."""
    config.validate()
    from cuekit.parallel import torch_threads

    with torch_threads(config.threads):
        return _run(config, progress)


def _run(config: RankStudyConfig, progress: bool) -> RankStudyResult:
    c = config
    shape = (len(c.inputs), len(c.sample_factors), len(c.depths), len(c.blocks), len(c.nonlinearities), len(c.ratios))
    sums = {t: torch.zeros(shape, dtype=torch.float64) for t in c.tolerances}
    sq = {t: torch.zeros(shape, dtype=torch.float64) for t in c.tolerances}
    eff_sum = torch.zeros(shape, dtype=torch.float64)
    eff_sq = torch.zeros(shape, dtype=torch.float64)
    grid = list(itertools.product(range(len(c.inputs)), range(len(c.sample_factors)), range(len(c.depths)),
                                  range(len(c.blocks)), range(len(c.ratios))))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(grid) * c.networks, desc="rank-study", unit="net")
    start = time.perf_counter()
    for cell_id, (ii, si, di, bi, ri) in enumerate(grid):
        # One generator per cell, seeded from the cell: any subset of the grid reproduces the same numbers.
        gen = torch.Generator(device=c.device).manual_seed(c.seed * 1_000_003 + cell_id)
        d_gen = torch.Generator().manual_seed(c.seed * 1_000_003 + cell_id)
        ratio = c.ratios[ri]
        done = 0
        while done < c.networks:
            g = min(c.networks_per_width, c.networks - done)
            d_out = int(torch.randint(c.d_out_range[0], c.d_out_range[1] + 1, (1,), generator=d_gen))
            d_in = max(1, int(round(ratio * d_out)))
            n = math.ceil(c.sample_factors[si] * d_out)
            feats = block_output_features(c.blocks[bi], c.nonlinearities, d_in, d_out, n, input_kind=c.inputs[ii],
                                          depth=c.depths[di], expansion=c.expansion, spatial=c.spatial,
                                          bn_eps=c.bn_eps, networks=g, gen=gen, device=c.device)
            sv = singular_values(feats).cpu()  # (K, g, d_out)
            for t in c.tolerances:
                r = numerical_rank(sv, tolerance_value(t, d_out, n)).double() / d_out
                sums[t][ii, si, di, bi, :, ri] += r.sum(1)
                sq[t][ii, si, di, bi, :, ri] += (r * r).sum(1)
            e = effective_rank(sv) / d_out
            eff_sum[ii, si, di, bi, :, ri] += e.sum(1)
            eff_sq[ii, si, di, bi, :, ri] += (e * e).sum(1)
            done += g
            if bar is not None:
                bar.update(g)
    if bar is not None:
        bar.close()

    def finish(s: Tensor, s2: Tensor) -> tuple[Tensor, Tensor]:
        mean = s / c.networks
        var = (s2 / c.networks - mean * mean).clamp_min(0) * c.networks / max(c.networks - 1, 1)
        return mean.float(), var.sqrt().float()

    rank_mean, rank_std = {}, {}
    for t in c.tolerances:
        rank_mean[t], rank_std[t] = finish(sums[t], sq[t])
    eff_mean, eff_std = finish(eff_sum, eff_sq)
    return RankStudyResult(c, rank_mean, rank_std, eff_mean, eff_std, time.perf_counter() - start)


@dataclasses.dataclass
class OrderingCheck:
    """Which of the paper's three observations one cell (setting, block, measure) shows."""

    expansion_harms: bool     # rank at the smallest DR is below rank at DR = 1 (mean over nonlinear f) by > 0.05
    nonlinear_expands: bool   # every nonlinear f is above Linear by > 0.02 (mean over DR < 1)
    paper_ordering: bool      # mean of ELU/SiLU above mean of ReLU/ReLU6 by > 0.01 (DR < 1)
    strong_minus_weak: float  # that difference
    nonlinear_minus_linear: float  # the smallest per-f margin over Linear


def check_ordering(curves: dict[str, list[float]], ratios: Sequence[float]) -> OrderingCheck:
    """Test one cell's curves {nonlinearity: values per DR} against the paper's observations."""
    below = [j for j, r in enumerate(ratios) if r < 1.0] or list(range(len(ratios)))

    def avg(name: str) -> float:
        return sum(curves[name][j] for j in below) / len(below)

    nonlinear = [n for n in curves if n != "linear"]
    lo, hi = min(range(len(ratios)), key=lambda j: ratios[j]), max(range(len(ratios)), key=lambda j: ratios[j])
    harms = bool(nonlinear) and (
        sum(curves[n][hi] - curves[n][lo] for n in nonlinear) / len(nonlinear) > 0.05)
    margin = min((avg(n) - avg("linear") for n in nonlinear), default=float("nan")) if "linear" in curves \
        else float("nan")
    strong = [n for n in STRONG_EXPANDERS if n in curves]
    weak = [n for n in WEAK_EXPANDERS if n in curves]
    diff = (sum(avg(n) for n in strong) / len(strong) - sum(avg(n) for n in weak) / len(weak)) \
        if strong and weak else float("nan")
    return OrderingCheck(expansion_harms=bool(harms), nonlinear_expands=bool(margin > 0.02),
                         paper_ordering=bool(diff > 0.01), strong_minus_weak=float(diff),
                         nonlinear_minus_linear=float(margin))


def summary_rows(result: RankStudyResult) -> tuple[list[str], list[list]]:
    """One table row per (setting, block, measure): the paper's observations seen there, and key numbers."""
    c = result.config
    columns = ["input", "N/d_out", "depth", "block", "measure", "linear@0.1", "relu@0.1", "silu@0.1",
               "strong-weak", "nl-linear", "expansion harms", "nonlin expands", "paper order"]
    rows = []
    j01 = min(range(len(c.ratios)), key=lambda j: abs(c.ratios[j] - 0.1))
    measures = list(c.tolerances) + ["effective"]
    for inp, sf, depth, block in itertools.product(c.inputs, c.sample_factors, c.depths, c.blocks):
        for measure in measures:
            cur = result.curves(input=inp, sample_factor=sf, depth=depth, block=block, measure=measure)
            chk = check_ordering(cur, c.ratios)

            def at(name: str) -> float | str:
                return round(cur[name][j01], 3) if name in cur else "-"

            rows.append([inp, sf, depth, block, measure if measure == "effective" else f"rank tol={measure}",
                         at("linear"), at("relu"), at("silu"), round(chk.strong_minus_weak, 3),
                         round(chk.nonlinear_minus_linear, 3), "yes" if chk.expansion_harms else "no",
                         "yes" if chk.nonlinear_expands else "no", "yes" if chk.paper_ordering else "no"])
    return columns, rows


def plot_rank_curves(result: RankStudyResult, path, *, input: str, sample_factor: float, depth: int,
                     measure: str = "fp32", title: str | None = None) -> None:
    """PNG: rank ratio vs dimension ratio, one panel per block type, one line per nonlinearity (the paper's Fig. 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.config
    fig, axes = plt.subplots(1, len(c.blocks), figsize=(3.6 * len(c.blocks), 3.4), squeeze=False)
    for ax, block in zip(axes[0], c.blocks):
        cur = result.curves(input=input, sample_factor=sample_factor, depth=depth, block=block, measure=measure)
        for name, vals in cur.items():
            ax.plot(c.ratios, vals, marker="o", ms=3, lw=1.2, ls="--" if name == "linear" else "-", label=name)
        ax.set_title(block)
        ax.set_xlabel("dimension ratio d_in / d_out")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    label = "effective rank / d_out" if measure == "effective" else f"rank / d_out (tol {measure})"
    axes[0][0].set_ylabel(label)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(title or f"input={input}, N={sample_factor:g} d_out, depth={depth}, {c.networks} networks", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def result_to_json(result: RankStudyResult) -> dict:
    """JSON-able form: config, per-cell curves for every measure, and the ordering checks."""
    c = result.config
    cells = []
    for inp, sf, depth, block in itertools.product(c.inputs, c.sample_factors, c.depths, c.blocks):
        i = result.index(input=inp, sample_factor=sf, depth=depth, block=block)
        cell = {"input": inp, "sample_factor": sf, "depth": depth, "block": block, "rank": {}, "rank_std": {}}
        for t in c.tolerances:
            cell["rank"][t] = {nl: result.rank_mean[t][i][j].tolist() for j, nl in enumerate(c.nonlinearities)}
            cell["rank_std"][t] = {nl: result.rank_std[t][i][j].tolist() for j, nl in enumerate(c.nonlinearities)}
            cell.setdefault("checks", {})[t] = dataclasses.asdict(check_ordering(cell["rank"][t], c.ratios))
        cell["effective"] = {nl: result.eff_mean[i][j].tolist() for j, nl in enumerate(c.nonlinearities)}
        cell["effective_std"] = {nl: result.eff_std[i][j].tolist() for j, nl in enumerate(c.nonlinearities)}
        cell["checks"]["effective"] = dataclasses.asdict(check_ordering(cell["effective"], c.ratios))
        cells.append(cell)
    cfg = dataclasses.asdict(c)
    return {"config": cfg, "ratios": list(c.ratios), "seconds": result.seconds, "cells": cells,
            "tolerance_note": "rank counts singular values > tol * sigma_max; fp32 = max(d_out, N) * 1.19e-7 "
                              "(torch.linalg.matrix_rank's float32 default)"}


def plot_rank_grid(result: RankStudyResult, path, measure: str = "fp32") -> None:
    """PNG: every cell of the grid at once; rows are settings (input, N, depth), columns block types."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.config
    settings = list(itertools.product(c.inputs, c.sample_factors, c.depths))
    fig, axes = plt.subplots(len(settings), len(c.blocks), figsize=(2.6 * len(c.blocks), 1.9 * len(settings)),
                             squeeze=False, sharex=True, sharey=True)
    for r, (inp, sf, depth) in enumerate(settings):
        for col, block in enumerate(c.blocks):
            ax = axes[r][col]
            cur = result.curves(input=inp, sample_factor=sf, depth=depth, block=block, measure=measure)
            for name, vals in cur.items():
                ax.plot(c.ratios, vals, lw=1.0, ls="--" if name == "linear" else "-", label=name)
            ax.set_ylim(0, 1.05)
            ax.grid(alpha=0.3)
            if r == 0:
                ax.set_title(block, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{inp}\nN={sf:g}d, depth {depth}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0][-1].legend(fontsize=5, loc="lower right")
    what = "effective rank / d_out" if measure == "effective" else f"rank / d_out, tol {measure}"
    height = fig.get_figheight()
    fig.suptitle(f"{what} vs d_in/d_out; {c.networks} networks per point", fontsize=9, y=1 - 0.1 / height)
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.3 / height, top=1 - 0.6 / height, wspace=0.08, hspace=0.12)
    save_figure(fig, path, dpi=80)


def plot_ordering_grid(result: RankStudyResult, path) -> None:
    """PNG heatmap: mean rank of ELU/SiLU minus ReLU/ReLU6 (DR < 1) for every cell and measure.

    Positive (red) is the paper's ordering; blue is the opposite.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result.config
    measures = list(c.tolerances) + ["effective"]
    labels, values = [], []
    for inp, sf, depth, block in itertools.product(c.inputs, c.sample_factors, c.depths, c.blocks):
        labels.append(f"{inp} N={sf:g}d d{depth} {block}")
        values.append([check_ordering(result.curves(input=inp, sample_factor=sf, depth=depth, block=block,
                                                    measure=m), c.ratios).strong_minus_weak for m in measures])
    data = torch.tensor(values).nan_to_num(0.0)
    lim = max(float(data.abs().max()), 0.02)
    fig, ax = plt.subplots(figsize=(1.2 * len(measures) + 3.2, 0.2 * len(labels) + 1.2))
    im = ax.imshow(data.numpy(), cmap="coolwarm", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set_xticks(range(len(measures)), [m if m == "effective" else f"tol {m}" for m in measures], fontsize=7)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{float(data[i, j]):+.2f}", ha="center", va="center", fontsize=5)
    fig.colorbar(im, ax=ax, fraction=0.05, label="ELU/SiLU minus ReLU/ReLU6")
    ax.set_title("paper's ordering where > 0", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
