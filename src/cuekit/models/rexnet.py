"""ReXNet, the Rank eXpansion Network (Han et al., "Rethinking Channel Dimensions for Efficient
Model Design", CVPR 2021, arXiv 2007.00992), and its lite family (no SE, ReLU6 only).

ReXNet is MobileNetV2 with the output channels of its 16 inverted bottlenecks growing linearly
with the block index (`c_i = 16 + i * 180 / 16` times the width), so that every block expands
its input; SiLU follows the stem, each expansion 1x1 conv and the penultimate 1x1 conv; ReLU6
follows the depthwise conv (and the SE, blocks 3-15); the last 1x1 of a block is linear. A block
with stride 1 whose output is at least as wide as its input adds its input to the first
channels of its output (`out[:, :c_in] += x`, no projection).

State-dict keys are those of the official checkpoints (`clovaai/rexnet`): `features.0/1` stem
conv/BN, blocks `features.{3..18}.out.{k}`, `features.19/20` penultimate conv/BN, classifier
`output.1` (a 1x1 conv); lite adds `output.{0,1}` (1x1 conv to 1024 + BN) and the classifier is
`output.4`. timm's names (`stem.conv`, `features.{i}.conv_exp.conv`, `head.fc`, ...) are mapped
on load by `rexnet_key_remap`. SiLU is plain `nn.SiLU` (exportable), not the official jit-scripted
autograd function; the numbers are the same.

Beyond the original: `drop_path_rate` (stochastic depth on the shortcut blocks, linear in the
block index, as in timm and the paper's larger models), any stem stride (tiny variants for
32-64 px inputs use stride 1), and an explicit per-block channel list, so that the same blocks
can be built with MobileNetV2's stage-wise channels for the paper's channel-configuration claim.
"""
from __future__ import annotations

import functools
import math
import operator
import re
from typing import Sequence

import torch
from torch import Tensor, nn

from cuekit.models.registry import register_model
from cuekit.models.vit import DropPath

STAGE_LAYERS = (1, 2, 2, 3, 3, 5)      # blocks per stage
STAGE_STRIDES = (1, 2, 2, 2, 1, 2)     # stride of each stage's first block
STAGE_SE = (False, False, True, True, True, True)


def _act(name: str) -> nn.Module:
    """Activation module by name (silu / relu6 / relu)."""
    if name == "silu":
        return nn.SiLU()
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}")


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round `value` to a multiple of `divisor`, never more than 10% below it (the TF MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class SqueezeExcite(nn.Module):
    """SE with BatchNorm: x (N, C, H, W) -> x * sigmoid(conv(relu(bn(conv(mean_hw(x)))))), hidden C // reduction."""

    def __init__(self, channels: int, reduction: int = 12):
        super().__init__()
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1), nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.fc(x.mean((2, 3), keepdim=True))


class LinearBottleneck(nn.Module):
    """Inverted bottleneck with a linear output: (N, c_in, H, W) -> (N, c_out, H/s, W/s).

    `out` holds, in the official order: [1x1 expand, BN, act] (when expansion != 1), 3x3 depthwise
    conv, BN, [SE], dw_act, 1x1 project, BN. With stride 1 and c_in <= c_out the input is added to
    the first c_in output channels.
    """

    def __init__(self, in_channels: int, out_channels: int, expansion: int = 6, stride: int = 1, use_se: bool = False,
                 se_reduction: int = 12, act: str = "silu", dw_act: str = "relu6", drop_path: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.use_shortcut = stride == 1 and in_channels <= out_channels
        layers: list[nn.Module] = []
        hidden = in_channels * expansion
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), _act(act)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden)]
        if use_se:
            layers.append(SqueezeExcite(hidden, se_reduction))
        layers += [_act(dw_act), nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.out = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.use_shortcut else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.out(x)
        if self.use_shortcut:
            if self.drop_path is not None:
                out = self.drop_path(out)
            out[:, : self.in_channels] += x
        return out


class ReXNet(nn.Module):
    """ReXNet / ReXNet-lite / any per-block channel list: x (N, in_chans, H, W) -> logits (N, num_classes).

    `block_channels[i]`, `strides[i]`, `expansions[i]`, `se[i]` describe block i; block i's input is
    block i-1's output (the stem's for block 0). `head_channels` adds the lite head's hidden 1x1 conv.
    """

    def __init__(
        self,
        stem_channels: int,
        block_channels: Sequence[int],
        pen_channels: int,
        *,
        strides: Sequence[int],
        expansions: Sequence[int],
        se: Sequence[bool],
        num_classes: int = 1000,
        in_chans: int = 3,
        se_reduction: int = 12,
        act: str = "silu",
        dw_act: str = "relu6",
        stem_stride: int = 2,
        dropout: float = 0.2,
        head_channels: int | None = None,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        n = len(block_channels)
        if not (len(strides) == len(expansions) == len(se) == n):
            raise ValueError("block_channels, strides, expansions and se must have one entry per block")
        self.num_classes, self.num_features = num_classes, pen_channels
        self.block_channels = list(block_channels)
        features: list[nn.Module] = [
            nn.Conv2d(in_chans, stem_channels, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem_channels), _act(act),
        ]
        prev = stem_channels
        for i, c in enumerate(block_channels):
            features.append(LinearBottleneck(
                prev, c, expansions[i], strides[i], se[i], se_reduction, act, dw_act,
                drop_path=drop_path_rate * i / max(n - 1, 1),
            ))
            prev = c
        features += [nn.Conv2d(prev, pen_channels, 1, bias=False), nn.BatchNorm2d(pen_channels), _act(act)]
        self.features = nn.Sequential(*features)
        if head_channels is None:
            self.output = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(pen_channels, num_classes, 1))
        else:
            self.output = nn.Sequential(
                nn.Conv2d(pen_channels, head_channels, 1), nn.BatchNorm2d(head_channels), nn.ReLU6(inplace=True),
                nn.Dropout(dropout), nn.Conv2d(head_channels, num_classes, 1),
            )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        classifier = self.output[-1]
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)

    def get_classifier(self) -> nn.Conv2d:
        """The final 1x1 conv (pen or head channels -> classes)."""
        return self.output[-1]

    def forward_features(self, x: Tensor) -> Tensor:
        """Penultimate feature map (N, pen_channels, H/32, W/32) (H/16 with a stride-1 stem)."""
        program = self._inference_program(x)
        if program is not None:
            return _run_steps(program[0], x.contiguous(memory_format=program[2]), owned=False).contiguous()
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes) from a feature map (N, pen_channels, h, w): average pool, head."""
        program = self._inference_program(x)
        if program is not None:
            return _run_steps(program[1], x.mean((2, 3), keepdim=True), owned=True).flatten(1)
        return self.output(x.mean((2, 3), keepdim=True)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        program = self._inference_program(x)
        if program is not None:
            features = _run_steps(program[0], x.contiguous(memory_format=program[2]), owned=False)
            return _run_steps(program[1], features.mean((2, 3), keepdim=True), owned=True).flatten(1)
        return self.forward_head(self.forward_features(x))

    def _inference_program(self, x: Tensor) -> tuple[list, list, torch.memory_format] | None:
        """The folded inference program (see `_InferenceProgram`) when this call may use it, else None.

        It may in eval mode without autograd (no_grad / inference_mode), outside tracing, scripting,
        compiling and exporting, and with no forward hooks anywhere (they would be skipped). It is
        rebuilt whenever a submodule, parameter or buffer was replaced or changed (version counter,
        storage) and on every `train()` / `eval()`; an in-place change made through `.data` (which
        bypasses the version counter) is seen at the next `eval()`.
        """
        if self.training or torch.is_grad_enabled() or torch.jit.is_scripting() or torch.jit.is_tracing():
            return None
        if torch.compiler.is_compiling():
            return None
        cached = self.__dict__.get("_inference_cache")
        if cached is None or not cached.is_current():
            cached = self.__dict__["_inference_cache"] = _InferenceProgram(self)
        if cached.program is None or cached.has_hooks():
            return None
        return cached.program

    def train(self, mode: bool = True) -> "ReXNet":
        """Set training mode; also drops the inference program (so `eval()` always rebuilds it)."""
        self.__dict__.pop("_inference_cache", None)
        return super().train(mode)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_inference_cache", None)  # derived from the weights; never copied or pickled
        return state


# ---- the eval-mode inference program ------------------------------------------------------------
# In eval mode a BatchNorm after a conv is an affine map per channel, so it folds into the conv's
# weight and bias; the activations then run in place, as does SE's gating. The modules (and so the
# state-dict keys) stay as they are: the program is derived from them and rebuilt when they change.


_FORWARD_HOOKS, _FORWARD_PRE_HOOKS = operator.attrgetter("_forward_hooks"), operator.attrgetter("_forward_pre_hooks")
_VERSION = operator.attrgetter("_version")


class _InferenceProgram:
    """A ReXNet's eval-mode program: (feature steps, head steps, memory format) or None (a module
    it does not know), and what it was built from, to tell when it is out of date."""

    def __init__(self, model: "ReXNet"):
        self.modules = list(model.modules())
        # every (owner dict, key, value) of submodules, parameters and buffers: a replacement shows
        self.dicts = [d for m in self.modules for d in (m._modules, m._parameters, m._buffers)]
        self.lengths = list(map(len, self.dicts))
        self.owners, self.keys, self.values = [], [], []
        for d in self.dicts:
            for key, value in d.items():
                self.owners.append(d)
                self.keys.append(key)
                self.values.append(value)
        self.tensors = [v for v in self.values if isinstance(v, Tensor)]
        self.pointers = list(map(Tensor.data_ptr, self.tensors))
        self.versions = self._versions()
        floats = [t for t in self.tensors if t.is_floating_point()]
        # channels_last: oneDNN's depthwise and 1x1 convolutions are much faster in it on the CPU
        fmt = torch.channels_last if not floats or floats[0].device.type == "cpu" else torch.contiguous_format
        with torch.no_grad():
            features, output = _compile_steps(list(model.features), fmt), _compile_steps(list(model.output), fmt)
        self.program = None if features is None or output is None else (features, output, fmt)

    def _versions(self) -> list[int] | None:
        """The tensors' version counters; None when some tensor has none (made under inference_mode)."""
        try:
            return list(map(_VERSION, self.tensors))
        except RuntimeError:
            return None

    def is_current(self) -> bool:
        """Whether nothing the program was built from was replaced or changed in place since."""
        return (self.versions is not None and list(map(len, self.dicts)) == self.lengths
                and all(map(operator.is_, map(dict.get, self.owners, self.keys), self.values))
                and list(map(Tensor.data_ptr, self.tensors)) == self.pointers and self._versions() == self.versions)

    def has_hooks(self) -> bool:
        """Whether any forward hook (global or on a submodule) would see the modules run."""
        from torch.nn.modules import module as module_state

        return bool(module_state._global_forward_hooks or module_state._global_forward_pre_hooks
                    or any(map(_FORWARD_HOOKS, self.modules)) or any(map(_FORWARD_PRE_HOOKS, self.modules)))


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, fmt: torch.memory_format) -> tuple[Tensor, Tensor | None]:
    """conv's weight and bias with the eval-mode BatchNorm after it folded in (weight in `fmt`)."""
    weight, bias = conv.weight, conv.bias
    if bn is not None:
        scale = torch.rsqrt(bn.running_var + bn.eps)  # (C,)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale if bias is None else (bias - bn.running_mean) * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        weight, bias = weight * scale.view(-1, 1, 1, 1), shift
    return weight.contiguous(memory_format=fmt), bias


def _foldable(bn: nn.Module) -> bool:
    """A BatchNorm2d that uses its running statistics in eval mode."""
    return isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None and bn.running_var is not None


def _compile_steps(modules: Sequence[nn.Module], fmt: torch.memory_format) -> list[tuple] | None:
    """The modules of a ReXNet Sequential as inference steps: ("conv", weight, bias, stride, padding,
    dilation, groups) with any BatchNorm after it folded in, ("act", in-place function), ("se", w1,
    b1, w2, b2) and ("block", steps, in_channels or 0 without shortcut); None for a module it does not know."""
    steps: list[tuple] = []
    i = 0
    while i < len(modules):
        m = modules[i]
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                return None
            bn = modules[i + 1] if i + 1 < len(modules) and _foldable(modules[i + 1]) else None
            if bn is None and i + 1 < len(modules) and isinstance(modules[i + 1], nn.modules.batchnorm._BatchNorm):
                return None  # a BatchNorm without running statistics normalizes with the batch's
            steps.append(("conv", *_folded(m, bn, fmt), m.stride, m.padding, m.dilation, m.groups))
            i += 2 if bn is not None else 1
            continue
        if isinstance(m, nn.SiLU):
            steps.append(("act", _silu_))
        elif isinstance(m, nn.ReLU6):
            steps.append(("act", _relu6_))
        elif isinstance(m, nn.ReLU):
            steps.append(("act", torch.relu_))
        elif isinstance(m, SqueezeExcite):
            fc = list(m.fc)
            if not (len(fc) == 5 and _foldable(fc[1]) and isinstance(fc[2], nn.ReLU) and isinstance(fc[4], nn.Sigmoid)):
                return None
            (w1, b1), (w2, b2) = _folded(fc[0], fc[1], torch.contiguous_format), _folded(fc[3], None,
                                                                                           torch.contiguous_format)
            steps.append(("se", w1.flatten(1), b1, w2.flatten(1), b2))
        elif isinstance(m, LinearBottleneck):
            inner = _compile_steps(list(m.out), fmt)
            if inner is None:
                return None
            steps.append(("block", inner, m.in_channels if m.use_shortcut else 0))
        elif not isinstance(m, (nn.Dropout, nn.Identity)):  # dropout is the identity in eval mode
            return None
        i += 1
    return steps


def _silu_(x: Tensor) -> Tensor:
    return nn.functional.silu(x, inplace=True)


def _relu6_(x: Tensor) -> Tensor:
    return nn.functional.hardtanh_(x, 0.0, 6.0)


def _run_steps(steps: list[tuple], x: Tensor, owned: bool) -> Tensor:
    """Run inference steps on x (N, C, H, W); `owned`: x may be overwritten (it is not the caller's)."""
    for step in steps:
        kind = step[0]
        if kind == "conv":
            x = nn.functional.conv2d(x, *step[1:])
            owned = True
        elif kind == "act":
            x = step[1](x if owned else x.clone())
            owned = True
        elif kind == "se":
            _, w1, b1, w2, b2 = step
            gate = torch.sigmoid_(torch.addmm(b2, torch.relu_(torch.addmm(b1, x.mean((2, 3)), w1.t())), w2.t()))
            x = x.mul_(gate[:, :, None, None]) if owned else x * gate[:, :, None, None]
            owned = True
        else:  # a block, with its partial shortcut
            out = _run_steps(step[1], x, owned=False)
            if step[2]:
                out[:, :step[2]] += x
            x, owned = out, True
    return x


def _per_block(stage_values: Sequence, layers: Sequence[int]) -> list:
    return [v for v, n in zip(stage_values, layers) for _ in range(n)]


def _block_strides(layers: Sequence[int], stage_strides: Sequence[int]) -> list[int]:
    return [s if j == 0 else 1 for s, n in zip(stage_strides, layers) for j in range(n)]


def rexnet_config(width_mult: float = 1.0, depth_mult: float = 1.0, initial_channels: int = 16,
                  final_channels: int = 180, use_se: bool = True) -> dict:
    """ReXNet-v1 layout: stem, 16 (x depth) linearly growing block widths, penultimate width, per-block settings.

    c_i = round((16 + i * 180 / n_blocks) * w); below width 1 only the slope scales (stem 32, c_0 16).
    Python's `round` (half to even), as in the official code, so the widths are the checkpoints'.
    """
    layers = [math.ceil(n * depth_mult) for n in STAGE_LAYERS]
    n_blocks = sum(layers)
    base = initial_channels / width_mult if width_mult < 1.0 else initial_channels
    stem = 32 / width_mult if width_mult < 1.0 else 32
    channels = []
    for i in range(n_blocks):
        channels.append(int(round(base * width_mult)))
        base += final_channels / n_blocks
    return dict(
        stem_channels=int(round(stem * width_mult)), block_channels=channels, pen_channels=int(1280 * width_mult),
        strides=_block_strides(layers, STAGE_STRIDES), expansions=[1] * layers[0] + [6] * sum(layers[1:]),
        se=_per_block(STAGE_SE, layers) if use_se else [False] * n_blocks,
    )


def rexnet_lite_config(multiplier: float = 1.0, initial_channels: int = 16, final_channels: int = 164,
                       divisor: int = 8) -> dict:
    """ReXNet-lite layout: widths rounded to multiples of 8, slope final/15, penultimate 1280 (x m above 1)."""
    layers = list(STAGE_LAYERS)
    n_blocks = sum(layers)
    base = initial_channels / multiplier if multiplier < 1.0 else initial_channels
    stem = 32 / multiplier if multiplier < 1.0 else 32
    channels = [make_divisible(int(round(base * multiplier)), divisor)]
    for _ in range(1, n_blocks):
        base += final_channels / (n_blocks - 1)
        channels.append(make_divisible(int(round(base * multiplier)), divisor))
    return dict(
        stem_channels=make_divisible(int(round(stem * multiplier)), divisor), block_channels=channels,
        pen_channels=int(1280 * multiplier) if multiplier > 1 else 1280,
        strides=_block_strides(layers, STAGE_STRIDES), expansions=[1] * layers[0] + [6] * sum(layers[1:]),
        se=[False] * n_blocks, act="relu6", head_channels=1024,
    )


# MobileNetV2's stage widths (its first six stages; stage 7's 320 is folded into the last stage).
MOBILENETV2_STAGE_CHANNELS = (16, 24, 32, 64, 96, 160)


def stagewise_config(scale: float, stem_channels: int, pen_channels: int,
                     stage_channels: Sequence[int] = MOBILENETV2_STAGE_CHANNELS, layers: Sequence[int] = STAGE_LAYERS,
                     use_se: bool = True) -> dict:
    """ReXNet's blocks with stage-wise constant widths (MobileNetV2's convention) times `scale`."""
    channels = _per_block([max(1, int(round(c * scale))) for c in stage_channels], layers)
    return dict(
        stem_channels=stem_channels, block_channels=channels, pen_channels=pen_channels,
        strides=_block_strides(layers, STAGE_STRIDES), expansions=[1] * layers[0] + [6] * sum(layers[1:]),
        se=_per_block(STAGE_SE, layers) if use_se else [False] * sum(layers),
    )


# Tiny CPU variants for 32-64 px inputs (not in the paper): a stride-1 stem and a narrow linear schedule
# (widths 16..82, penultimate 320), so the final map is 2x2 at 32 px.
TINY_CONFIG = dict(rexnet_config(width_mult=0.5, final_channels=140), pen_channels=320, stem_channels=16, stem_stride=1)
TINY_LITE_CONFIG = dict(rexnet_lite_config(multiplier=0.5), pen_channels=320, stem_channels=16, stem_stride=1,
                        head_channels=256)


@functools.lru_cache(maxsize=1)
def _tiny_stagewise_config() -> dict:
    """Stage-wise (MobileNetV2-style) widths scaled so that the parameter count equals rexnet_tiny's (1000 classes)."""
    target = config_params(TINY_CONFIG)
    cfg = stagewise_scale_to_params(target, TINY_CONFIG["stem_channels"], TINY_CONFIG["pen_channels"])
    return dict(cfg, stem_stride=1)


def config_params(cfg: dict, num_classes: int = 1000, in_chans: int = 3) -> int:
    """Parameter count of `ReXNet(**cfg)` computed from the config alone (no model is built)."""
    stem = cfg["stem_channels"]
    total = in_chans * stem * 9 + 2 * stem
    prev = stem
    reduction = cfg.get("se_reduction", 12)
    for c, t, se in zip(cfg["block_channels"], cfg["expansions"], cfg["se"]):
        hidden = prev * t
        if t != 1:
            total += prev * hidden + 2 * hidden
        total += 9 * hidden + 2 * hidden
        if se:
            r = hidden // reduction
            total += hidden * r + r + 2 * r + r * hidden + hidden
        total += hidden * c + 2 * c
        prev = c
    pen = cfg["pen_channels"]
    total += prev * pen + 2 * pen
    head = cfg.get("head_channels")
    if head is None:
        total += pen * num_classes + num_classes
    else:
        total += pen * head + head + 2 * head + head * num_classes + num_classes
    return total


def stagewise_scale_to_params(target_params: int, stem_channels: int, pen_channels: int, num_classes: int = 1000,
                              **kw) -> dict:
    """The stage-wise config whose parameter count is closest to `target_params` (bisection on the width scale)."""
    def params(scale: float) -> int:
        return config_params(stagewise_config(scale, stem_channels, pen_channels, **kw), num_classes)

    lo, hi = 0.05, 8.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if params(mid) < target_params:
            lo = mid
        else:
            hi = mid
    best = min((lo, hi), key=lambda s: abs(params(s) - target_params))
    return dict(stagewise_config(best, stem_channels, pen_channels, **kw), scale=best)


def _conv_out(size: int, stride: int) -> int:
    """Output side of a 3x3 conv with padding 1."""
    return (size + 2 - 3) // stride + 1


def config_macs(cfg: dict, img_size: int, num_classes: int = 1000, in_chans: int = 3) -> int:
    """Multiply-accumulates of `ReXNet(**cfg)` on one (in_chans, img_size, img_size) image, from the config alone.

    Counts what `cuekit.models.complexity.count_macs` counts: convolutions (SE's included) and the classifier;
    BatchNorm, activations, pooling and the residual additions are not counted.
    """
    stem = cfg["stem_channels"]
    side = _conv_out(img_size, cfg.get("stem_stride", 2))
    total = side * side * stem * in_chans * 9
    prev = stem
    reduction = cfg.get("se_reduction", 12)
    for c, t, se, stride in zip(cfg["block_channels"], cfg["expansions"], cfg["se"], cfg["strides"]):
        hidden = prev * t
        if t != 1:
            total += side * side * prev * hidden
        side = _conv_out(side, stride)
        total += side * side * hidden * 9
        if se:
            total += 2 * hidden * (hidden // reduction)
        total += side * side * hidden * c
        prev = c
    pen = cfg["pen_channels"]
    total += side * side * prev * pen
    head = cfg.get("head_channels")
    total += pen * num_classes if head is None else pen * head + head * num_classes
    return total


def linear_config(intercept: float, slope: float, stem_channels: int, pen_channels: int,
                  layers: Sequence[int] = STAGE_LAYERS, use_se: bool = True) -> dict:
    """ReXNet's blocks with widths c_i = round(intercept + slope * i) (the paper's c_i = a f(i) + b, f(i) = i)."""
    n_blocks = sum(layers)
    channels = [max(1, int(round(intercept + slope * i))) for i in range(n_blocks)]
    return dict(
        stem_channels=stem_channels, block_channels=channels, pen_channels=pen_channels,
        strides=_block_strides(layers, STAGE_STRIDES), expansions=[1] * layers[0] + [6] * sum(layers[1:]),
        se=_per_block(STAGE_SE, layers) if use_se else [False] * n_blocks,
    )


def linear_match_cost(target_params: int, target_macs: int, img_size: int, stem_channels: int, pen_channels: int,
                      num_classes: int = 1000, layers: Sequence[int] = STAGE_LAYERS, stem_stride: int = 2,
                      use_se: bool = True) -> dict:
    """The linear-width config whose parameters AND MACs are closest to the targets (two knobs: intercept, slope).

    For a given intercept the slope is bisected to the parameter target; the intercept is bisected so that
    the MACs on that equal-parameter curve meet the MAC target (a larger intercept moves width into the early,
    high-resolution blocks, which cost more MACs per parameter). The widths are integers, so a last search
    over nearby (intercept, slope) pairs keeps the one with the smallest max(|params error|, |MACs error|).
    Returns the config plus `intercept`, `slope`, `params`, `macs`, `params_error`, `macs_error` (relative).
    """
    def build(b: float, a: float) -> dict:
        return dict(linear_config(b, a, stem_channels, pen_channels, layers, use_se), stem_stride=stem_stride)

    def cost(b: float, a: float) -> tuple[int, int]:
        cfg = build(b, a)
        return config_params(cfg, num_classes), config_macs(cfg, img_size, num_classes)

    def slope_for_params(b: float) -> float:
        lo, hi = 0.0, 1.0
        while cost(b, hi)[0] < target_params and hi < 1e4:
            hi *= 2
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if cost(b, mid)[0] < target_params else (lo, mid)
        return (lo + hi) / 2

    b_lo, b_hi = 1.0, 2.0
    while cost(b_hi, slope_for_params(b_hi))[1] < target_macs and cost(b_hi, 0.0)[0] < target_params:
        b_hi *= 2
    for _ in range(30):
        mid = (b_lo + b_hi) / 2
        if cost(mid, slope_for_params(mid))[1] < target_macs:
            b_lo = mid
        else:
            b_hi = mid
    b0 = (b_lo + b_hi) / 2
    a0 = slope_for_params(b0)

    def error(b: float, a: float) -> float:
        p, m = cost(b, a)
        return max(abs(p / target_params - 1), abs(m / target_macs - 1))

    candidates = [(b0 + db / 8, a0 + da / 100) for db in range(-8, 9) for da in range(-50, 51)]
    best_b, best_a = min(((b, a) for b, a in candidates if b >= 1 and a >= 0), key=lambda ba: error(*ba))
    params, macs = cost(best_b, best_a)
    return dict(build(best_b, best_a), intercept=best_b, slope=best_a, params=params, macs=macs,
                params_error=params / target_params - 1, macs_error=macs / target_macs - 1)


# ---- timm <-> official key names ----------------------------------------------------------------

_TIMM_BLOCK = re.compile(r"^features\.(\d+)\.(conv_exp|conv_dw|conv_pwl|se)\.(\w+)\.(.+)$")
_TIMM_PEN = re.compile(r"^features\.(\d+)\.(conv|bn)\.(.+)$")


def rexnet_key_remap(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map timm's ReXNet state-dict names onto the official ones; official names pass through unchanged.

    Block j of timm is official `features.{j+3}`; inside it the index of each layer depends on
    whether the block expands (conv_exp) and has SE, which is read off the keys themselves.
    """
    if "stem.conv.weight" not in state:
        return dict(state)
    blocks = {int(m.group(1)) for k in state if (m := _TIMM_BLOCK.match(k))}
    n_blocks = len(blocks)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("stem."):
            key = key.replace("stem.conv.", "features.0.").replace("stem.bn.", "features.1.")
        elif key.startswith("head.fc."):
            if key.endswith("weight") and value.ndim == 2:
                value = value[:, :, None, None]
            key = "output.1." + key[len("head.fc."):]
        elif m := _TIMM_BLOCK.match(key):
            j, part, sub, rest = int(m.group(1)), m.group(2), m.group(3), m.group(4)
            expands = f"features.{j}.conv_exp.conv.weight" in state
            has_se = f"features.{j}.se.fc1.weight" in state
            base = 3 if expands else 0  # index of the depthwise conv inside `out`
            if part == "conv_exp":
                idx = {"conv": 0, "bn": 1}[sub]
            elif part == "conv_dw":
                idx = base + {"conv": 0, "bn": 1}[sub]
            elif part == "se":
                key = f"features.{j + 3}.out.{base + 2}.fc.{ {'fc1': 0, 'bn': 1, 'fc2': 3}[sub] }.{rest}"
                out[key] = value
                continue
            else:  # conv_pwl: after dw conv, BN, [SE], ReLU6
                idx = base + (4 if has_se else 3) + {"conv": 0, "bn": 1}[sub]
            key = f"features.{j + 3}.out.{idx}.{rest}"
        elif (m := _TIMM_PEN.match(key)) and int(m.group(1)) == n_blocks:
            key = f"features.{n_blocks + 3 + (0 if m.group(2) == 'conv' else 1)}.{m.group(3)}"
        out[key] = value
    return out


# ---- registered models --------------------------------------------------------------------------

# name -> (config builder, paper / README facts for `models list`)
_REXNET_WIDTHS = {"rexnet_100": 1.0, "rexnet_130": 1.3, "rexnet_150": 1.5, "rexnet_200": 2.0, "rexnet_300": 3.0}
_REXNET_FACTS = {
    "rexnet_100": "4.8M params, 0.40 GMACs, 77.9% ImageNet",
    "rexnet_130": "7.6M params, 0.66 GMACs, 79.5% ImageNet",
    "rexnet_150": "9.7M params, 0.88 GMACs, 80.3% ImageNet",
    "rexnet_200": "16.4M params, 1.5 GMACs, 81.6% ImageNet",
    "rexnet_300": "34.7M params, 3.4 GMACs, 82.8% ImageNet",
}
_LITE_WIDTHS = {"rexnet_lite_100": 1.0, "rexnet_lite_130": 1.3, "rexnet_lite_150": 1.5, "rexnet_lite_200": 2.0}
_LITE_FACTS = {
    "rexnet_lite_100": "4.7M params, 0.41 GMACs, 76.2% ImageNet",
    "rexnet_lite_130": "6.8M params, 0.65 GMACs, 77.8% ImageNet",
    "rexnet_lite_150": "8.3M params, 0.84 GMACs, 78.6% ImageNet",
    "rexnet_lite_200": "13.0M params, 1.5 GMACs, 80.2% ImageNet",
}


def _register(name: str, config_fn, description: str, default_img_size: int, key_remap=None) -> None:
    def factory(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, **kw) -> ReXNet:
        cfg = dict(config_fn())
        cfg.pop("scale", None)
        return ReXNet(**{**cfg, **kw}, num_classes=num_classes, in_chans=in_chans)

    factory.__doc__ = description
    register_model(name, key_remap=key_remap, kwargs_to=ReXNet, family="rexnet", default_img_size=default_img_size,
                   description=description)(factory)


for _name, _w in _REXNET_WIDTHS.items():
    _register(_name, lambda w=_w: rexnet_config(w), f"ReXNet-{_w:.1f}x: {_REXNET_FACTS[_name]}", 224,
              key_remap=rexnet_key_remap)
for _name, _m in _LITE_WIDTHS.items():
    _register(_name, lambda m=_m: rexnet_lite_config(m),
              f"ReXNet-lite-{_m:.1f}x (no SE/SiLU, ReLU6 only): {_LITE_FACTS[_name]}", 224)
_register("rexnet_tiny", lambda: TINY_CONFIG,
          f"tiny ReXNet for 32-64 px CPU work: linear widths {TINY_CONFIG['block_channels'][0]}.."
          f"{TINY_CONFIG['block_channels'][-1]}, stride-1 stem (not in the paper)", 32,
          key_remap=rexnet_key_remap)
_register("rexnet_lite_tiny", lambda: TINY_LITE_CONFIG,
          "tiny ReXNet-lite for 32-64 px CPU work, stride-1 stem (not in the paper)", 32)
_register("rexnet_stagewise_tiny", _tiny_stagewise_config,
          "rexnet_tiny's blocks with MobileNetV2-style stage-wise widths at equal parameters "
          "(the paper's channel-configuration baseline; not in the paper)", 32, key_remap=rexnet_key_remap)

__all__ = [
    "LinearBottleneck", "MOBILENETV2_STAGE_CHANNELS", "ReXNet", "SqueezeExcite", "config_macs", "config_params",
    "linear_config", "linear_match_cost", "make_divisible", "rexnet_config",
    "rexnet_key_remap", "rexnet_lite_config", "stagewise_config", "stagewise_scale_to_params",
]
