"""Vision Transformer baselines at DeiT's dimensions (the ViT the PiT paper compares against).

`vit_ti` / `vit_s` equal timm's `vit_tiny_patch16_224` / `vit_small_patch16_224` (same keys,
same outputs for the same weights). The transformer block here (pre-LN, multi-head attention
through `scaled_dot_product_attention`, 4x GELU MLP, drop-path) is shared with PiT.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cuekit.errors import UsageError
from cuekit.models.registry import register_model


class DropPath(nn.Module):
    """Stochastic depth: zero a sample's residual branch with probability `drop_prob` (training only)."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Attention(nn.Module):
    """Multi-head self-attention: x (N, L, C) -> (N, L, C), through `scaled_dot_product_attention`."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        qkv = self.qkv(x).reshape(n, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (N, heads, L, head_dim)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(n, length, dim)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Two linear layers with GELU between: (N, L, C) -> (N, L, C)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.drop1 = nn.Dropout(drop)
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), then x + mlp(LN(x)); (N, L, C) -> (N, L, C)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


@torch.no_grad()
def init_trunc_normal_(tensor: Tensor, std: float = 0.02) -> Tensor:
    """Normal(0, std) truncated to [-2, 2], the ViT/DeiT/PiT init; fast: at std 0.02 the bounds are
    100 standard deviations away, so resampling (torch's slow inverse-CDF method) is never needed."""
    return tensor.normal_(0.0, std).clamp_(-2.0, 2.0)


def resize_pos_embed_2d(pos_embed: Tensor, grid: tuple[int, int]) -> Tensor:
    """Bicubic resize of a (1, C, H0, W0) position embedding to (1, C, *grid); the same tensor at (H0, W0).

    Antialiased and in float32, as timm's `resample_abs_pos_embed` does, so that resized ViTs
    equal timm's `dynamic_img_size` models.
    """
    if tuple(pos_embed.shape[-2:]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.float(), size=tuple(grid), mode="bicubic", align_corners=False, antialias=True)
    return resized.to(pos_embed.dtype)


def _to_2tuple(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class PatchEmbed(nn.Module):
    """Image (N, C_in, H, W) -> patch tokens (N, L, D) through a conv of kernel `patch_size`, stride `stride`."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int | None = None):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride or patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        x = self.proj(x)
        grid = (x.shape[-2], x.shape[-1])
        return x.flatten(2).transpose(1, 2), grid


class VisionTransformer(nn.Module):
    """ViT with a class token: x (N, in_chans, H, W) -> logits (N, num_classes).

    Keys match timm's `VisionTransformer` (and DeiT's checkpoints): `patch_embed.proj`,
    `cls_token`, `pos_embed` (1, 1 + H0*W0, D), `blocks.i`, `norm`, `head`. Inputs of another
    size than `img_size` get the patch part of the position embedding resized bicubically.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        stride: int | None = None,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        super().__init__()
        h, w = _to_2tuple(img_size)
        stride = stride or patch_size
        self.img_size = (h, w)
        self.grid_size = ((h - patch_size) // stride + 1, (w - patch_size) // stride + 1)
        if min(self.grid_size) < 1:
            raise UsageError(f"img_size {img_size} is smaller than the patch size {patch_size}")
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear 0 .. rate, as timm
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[i]) for i in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        init_trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                init_trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay."""
        return {"pos_embed", "cls_token"}

    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        """Position embedding (1, 1 + H*W, D) for a token grid; resized bicubically if not the native one."""
        if grid == self.grid_size:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, *self.grid_size, -1).permute(0, 3, 1, 2)
        patch_pos = resize_pos_embed_2d(patch_pos, grid).flatten(2).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """Normalised tokens (N, 1 + H*W, D), class token first."""
        x, grid = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.pos_drop(x + self._pos_embed_for(grid))
        return self.norm(self.blocks(x))

    def forward_head(self, tokens: Tensor) -> Tensor:
        """Logits (N, num_classes) from the class token of (N, L, D) tokens."""
        return self.head(self.head_drop(tokens[:, 0]))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# name: (patch, stride, embed_dim, depth, heads, default img_size, description)
VIT_CONFIGS: dict[str, dict] = {
    "vit_ti": dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, img_size=224),
    "vit_s": dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, img_size=224),
    "vit_b": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, img_size=224),
    # CPU-sized baselines for the tiny PiTs (pit_nano at 32 px, pit_micro at 64 px): 8x8 tokens.
    "vit_nano": dict(patch_size=4, embed_dim=96, depth=4, num_heads=2, img_size=32),
    "vit_micro": dict(patch_size=8, embed_dim=96, depth=4, num_heads=2, img_size=64),
}

_DESCRIPTIONS = {
    "vit_ti": "DeiT-Ti / timm vit_tiny_patch16_224 (5.7M params, 1.3 GMACs)",
    "vit_s": "DeiT-S / timm vit_small_patch16_224 (22.1M params, 4.6 GMACs)",
    "vit_b": "DeiT-B / timm vit_base_patch16_224 (86.6M params, 17.6 GMACs)",
    "vit_nano": "tiny ViT for 32 px CPU work, the baseline of pit_nano",
    "vit_micro": "tiny ViT for 64 px CPU work, the baseline of pit_micro",
}


def _make_vit(name: str):
    cfg = dict(VIT_CONFIGS[name])
    default_img_size = cfg.pop("img_size")

    def factory(num_classes: int = 1000, in_chans: int = 3, img_size: int | None = None, **kw) -> VisionTransformer:
        return VisionTransformer(img_size=img_size or default_img_size, in_chans=in_chans, num_classes=num_classes,
                                 **{**cfg, **kw})

    factory.__doc__ = f"ViT {name}: {_DESCRIPTIONS[name]}."
    return factory, default_img_size


for _name in VIT_CONFIGS:
    _factory, _size = _make_vit(_name)
    register_model(_name, kwargs_to=VisionTransformer, family="vit", default_img_size=_size,
                   description=_DESCRIPTIONS[_name])(_factory)
