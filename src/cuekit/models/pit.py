"""PiT, the Pooling-based Vision Transformer (Heo et al., "Rethinking Spatial Dimensions of Vision
Transformers", ICCV 2021, arXiv 2103.16302).

Like a CNN, PiT shrinks the token grid and widens the channels as it goes deeper: three
transformer stages, separated by a pooling layer that is a depthwise 3x3 conv of stride 2 with
channel multiplier 2 on the spatial tokens and a Linear on the class token(s). The patches of
the stem overlap (kernel 16, stride 8 for Ti/XS/S). The final LayerNorm is applied to the class
tokens only, and the head reads class token 0 (token 1 feeds `head_dist` when distilled).

State-dict keys are those of the official checkpoints (`naver-ai/pit`): `patch_embed.conv`,
`pos_embed` (1, C, H0, W0), `cls_token`, `transformers.{s}.blocks.{j}`, `pools.{0,1}.{conv,fc}`,
`norm`, `head`, `head_dist`. timm's names (`transformers.{s+1}.pool.`) are mapped on load.

Beyond the original: inputs of another size than the native one get the position embedding
resized bicubically (at the native size nothing changes), and `pooling=False` keeps every
layer but makes the pooling convs stride 1, so the token grid never shrinks (the one-change
ablation of the paper's claim).
"""
from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from cuekit.errors import UsageError
from cuekit.models.registry import register_model
from cuekit.models.vit import Block, init_trunc_normal_, resize_pos_embed_2d


class ConvPatchEmbed(nn.Module):
    """Overlapping patch embedding: image (N, C_in, H, W) -> map (N, C, H', W'), H' = (H - k) // s + 1."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=0, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class TokenPooling(nn.Module):
    """PiT pooling: map (N, C, H, W) -> (N, 2C, ~H/s, ~W/s) by a depthwise 3x3 conv with channel
    multiplier 2 (stride s = 2; s = 1 keeps the grid), class tokens (N, T, C) -> (N, T, 2C) by a Linear."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2):
        super().__init__()
        if out_dim % in_dim != 0:
            raise ValueError(f"pooling widens channels by a whole multiple, got {in_dim} -> {out_dim}")
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=3, stride=stride, padding=1, groups=in_dim, bias=True)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor, cls_tokens: Tensor) -> tuple[Tensor, Tensor]:
        return self.conv(x), self.fc(cls_tokens)


class Stage(nn.Module):
    """A run of transformer blocks over [class tokens; flattened map] that returns them split again:
    (map (N, C, H, W), cls (N, T, C)) -> same shapes."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, drop_rate: float,
                 attn_drop_rate: float, drop_path_rates: list[float]):
        super().__init__()
        self.blocks = nn.Sequential(*[
            Block(dim, heads, mlp_ratio, qkv_bias=True, drop=drop_rate, attn_drop=attn_drop_rate,
                  drop_path=drop_path_rates[j])
            for j in range(depth)
        ])

    def forward(self, x: Tensor, cls_tokens: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        num_cls = cls_tokens.shape[1]
        tokens = torch.cat([cls_tokens, x.flatten(2).transpose(1, 2)], dim=1)
        tokens = self.blocks(tokens)
        cls_tokens, x = tokens[:, :num_cls], tokens[:, num_cls:]
        return x.transpose(1, 2).reshape(n, c, h, w), cls_tokens


class PoolingTransformer(nn.Module):
    """PiT: x (N, in_chans, H, W) -> logits (N, num_classes).

    distilled=True adds a distillation token and `head_dist`: in training mode the model returns
    the tuple (cls logits, dist logits), in eval mode their mean (as the official code does).
    Stage widths are base_dims[i] * heads[i]; head dim is base_dims[i].
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int = 8,
        base_dims: tuple[int, ...] = (48, 48, 48),
        depth: tuple[int, ...] = (2, 6, 4),
        heads: tuple[int, ...] = (2, 4, 8),
        mlp_ratio: float = 4.0,
        num_classes: int = 1000,
        in_chans: int = 3,
        distilled: bool = False,
        pooling: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        if not (len(base_dims) == len(depth) == len(heads)):
            raise ValueError("base_dims, depth and heads need one entry per stage")
        h, w = (img_size, img_size) if isinstance(img_size, int) else (int(img_size[0]), int(img_size[1]))
        self.img_size = (h, w)
        self.grid_size = ((h - patch_size) // stride + 1, (w - patch_size) // stride + 1)
        if min(self.grid_size) < 1:
            raise UsageError(f"img_size {img_size} is smaller than the patch size {patch_size}")
        self.base_dims, self.heads, self.depth = tuple(base_dims), tuple(heads), tuple(depth)
        self.num_classes = num_classes
        self.distilled = distilled
        self.pooling = pooling
        self.num_tokens = 2 if distilled else 1
        dims = [b * n for b, n in zip(base_dims, heads)]
        self.num_features = self.embed_dim = dims[-1]

        self.patch_embed = ConvPatchEmbed(in_chans, dims[0], patch_size, stride)
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *self.grid_size))
        self.cls_token = nn.Parameter(torch.zeros(1, self.num_tokens, dims[0]))
        self.pos_drop = nn.Dropout(drop_rate)

        # Official stochastic-depth rule: rate * i / total for block i = 0 .. total-1.
        total = sum(depth)
        rates = [drop_path_rate * i / total for i in range(total)]
        self.transformers = nn.ModuleList()
        self.pools = nn.ModuleList()
        start = 0
        for s in range(len(depth)):
            self.transformers.append(Stage(dims[s], depth[s], heads[s], mlp_ratio, drop_rate, attn_drop_rate,
                                           rates[start:start + depth[s]]))
            start += depth[s]
            if s < len(depth) - 1:
                self.pools.append(TokenPooling(dims[s], dims[s + 1], stride=2 if pooling else 1))

        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        if distilled:
            self.head_dist = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # As the official code: only the embeddings get truncated-normal(0.02); Linear and Conv
        # layers keep PyTorch's default init, LayerNorms start at weight 1, bias 0.
        init_trunc_normal_(self.pos_embed, std=0.02)
        init_trunc_normal_(self.cls_token, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay."""
        return {"pos_embed", "cls_token"}

    def pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """Position embedding (1, C, H, W) for a token grid: the learned one at the native grid,
        else resized bicubically."""
        return resize_pos_embed_2d(self.pos_embed, grid)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised class tokens (N, T, C_last); T = 2 when distilled."""
        x = self.patch_embed(x)
        x = self.pos_drop(x + self.pos_embed_for((x.shape[-2], x.shape[-1])))
        cls_tokens = self.cls_token.expand(x.shape[0], -1, -1)
        for s, stage in enumerate(self.transformers):
            if s > 0:
                x, cls_tokens = self.pools[s - 1](x, cls_tokens)
            x, cls_tokens = stage(x, cls_tokens)
        return self.norm(cls_tokens)

    def forward_head(self, cls_tokens: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Logits (N, num_classes) from class tokens (N, T, C); distilled: see the class docstring."""
        logits = self.head(self.head_drop(cls_tokens[:, 0]))
        if not self.distilled:
            return logits
        logits_dist = self.head_dist(self.head_drop(cls_tokens[:, 1]))
        if self.training:
            return logits, logits_dist
        return (logits + logits_dist) / 2

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return self.forward_head(self.forward_features(x))


_TIMM_POOL_KEY = re.compile(r"^transformers\.(\d+)\.pool\.")


def pit_key_remap(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map timm's PiT keys onto the official ones: `transformers.{i}.pool.` -> `pools.{i-1}.`.

    Official keys pass through unchanged (every other key is the same in both).
    """
    out = {}
    for key, value in state.items():
        m = _TIMM_POOL_KEY.match(key)
        if m:
            key = f"pools.{int(m.group(1)) - 1}." + key[m.end():]
        out[key] = value
    return out


def to_timm_keys(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of `pit_key_remap`: official `pools.{i}.` -> timm `transformers.{i+1}.pool.`."""
    out = {}
    for key, value in state.items():
        m = re.match(r"^pools\.(\d+)\.", key)
        if m:
            key = f"transformers.{int(m.group(1)) + 1}.pool." + key[m.end():]
        out[key] = value
    return out


# The paper's four models (Table 2 of the paper / naver-ai/pit), and two tiny ones for CPU work.
PIT_CONFIGS: dict[str, dict] = {
    "pit_ti": dict(patch_size=16, stride=8, base_dims=(32, 32, 32), depth=(2, 6, 4), heads=(2, 4, 8), img_size=224),
    "pit_xs": dict(patch_size=16, stride=8, base_dims=(48, 48, 48), depth=(2, 6, 4), heads=(2, 4, 8), img_size=224),
    "pit_s": dict(patch_size=16, stride=8, base_dims=(48, 48, 48), depth=(2, 6, 4), heads=(3, 6, 12), img_size=224),
    "pit_b": dict(patch_size=14, stride=7, base_dims=(64, 64, 64), depth=(3, 6, 4), heads=(4, 8, 16), img_size=224),
    # 32 px: 15x15 -> 8x8 -> 4x4 tokens of width 32/64/128 (vit_nano: 8x8 tokens of width 96).
    "pit_nano": dict(patch_size=4, stride=2, base_dims=(16, 16, 16), depth=(1, 2, 1), heads=(2, 4, 8), img_size=32),
    # 64 px: the same token grids with 8 px patches (vit_micro is its ViT baseline).
    "pit_micro": dict(patch_size=8, stride=4, base_dims=(16, 16, 16), depth=(1, 2, 1), heads=(2, 4, 8), img_size=64),
}

_DESCRIPTIONS = {  # from the paper / official README, for `models list` and the docs.
    "pit_ti": ("PiT-Ti", "4.9M params, 0.71 GMACs, 73.0% ImageNet (DeiT recipe)"),
    "pit_xs": ("PiT-XS", "10.6M params, 1.4 GMACs, 78.1% ImageNet (DeiT recipe)"),
    "pit_s": ("PiT-S", "23.5M params, 2.9 GMACs, 80.9% ImageNet (DeiT recipe)"),
    "pit_b": ("PiT-B", "73.8M params, 12.5 GMACs, 82.0% ImageNet (DeiT recipe)"),
    "pit_nano": ("tiny PiT", "for 32 px CPU work (not in the paper)"),
    "pit_micro": ("tiny PiT", "for 64 px CPU work (not in the paper)"),
}


def _make_pit(base: str, distilled: bool, pooling: bool):
    cfg = dict(PIT_CONFIGS[base])
    default_img_size = cfg.pop("img_size")

    def factory(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, **kw) -> PoolingTransformer:
        return PoolingTransformer(img_size=img_size or default_img_size, num_classes=num_classes, in_chans=in_chans,
                                  distilled=distilled, pooling=pooling, **{**cfg, **kw})

    title, facts = _DESCRIPTIONS[base]
    if distilled:
        what = f"{base} plus DeiT's distillation token and head_dist (train mode: two logits; eval: their mean)"
    elif not pooling:
        what = (f"{title} with pooling off (stride-1 pooling convs: same stem, layers and widths; the token grid "
                f"never shrinks), the ablation baseline of {base}")
    else:
        what = f"{title}: {facts}" if base in ("pit_ti", "pit_xs", "pit_s", "pit_b") else f"{title} {facts}"
    factory.__doc__ = what
    return factory, default_img_size, what


for _base in PIT_CONFIGS:
    for _distilled, _pooling, _suffix in ((False, True, ""), (True, True, "_distilled"), (False, False, "_nopool")):
        _factory, _size, _what = _make_pit(_base, _distilled, _pooling)
        register_model(f"{_base}{_suffix}", key_remap=pit_key_remap, kwargs_to=PoolingTransformer, family="pit",
                       default_img_size=_size,
                       distilled=_distilled, pooling=_pooling, description=_what)(_factory)
