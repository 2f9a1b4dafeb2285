"""Built-in data for NARA: text from the Python standard library's sources, and binarised shapes."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import torch
from torch import Tensor

from cuekit.errors import DataError

TEXT_VOCAB = 128  # 7-bit ASCII; byte 0 (never in source code) is the BOS token, other bytes >= 128 become '?'
TEXT_BOS = 0


def encode_text(data: bytes) -> Tensor:
    """Bytes -> tokens (N,) long in [1, 128): non-ASCII and NUL bytes become '?'."""
    t = torch.frombuffer(bytearray(data), dtype=torch.uint8).long()
    t[(t >= TEXT_VOCAB) | (t == TEXT_BOS)] = ord("?")
    return t


def decode_text(tokens: Tensor) -> str:
    """Tokens (N,) -> text (BOS dropped)."""
    return bytes(int(x) for x in tokens.tolist() if x != TEXT_BOS).decode("ascii", errors="replace")


def stdlib_text(max_bytes: int = 1_000_000, root: str | os.PathLike | None = None) -> Tensor:
    """The first max_bytes of the standard library's .py files (sorted paths, tests skipped): (N,) long tokens."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    if not root.is_dir():
        raise DataError(f"standard library folder not found: {root}")
    chunks, total = [], 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).parts
        if any(p in ("test", "tests", "site-packages", "idle_test") for p in rel[:-1]):
            continue
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data[:max_bytes - total])
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    if total == 0:
        raise DataError(f"no .py files under {root}")
    return encode_text(b"".join(chunks))


def text_windows(tokens: Tensor, seq_len: int, n: int, generator: torch.Generator) -> Tensor:
    """n random windows of seq_len tokens, each preceded by BOS: (n, seq_len + 1) long."""
    starts = torch.randint(0, tokens.numel() - seq_len, (n,), generator=generator)
    rows = tokens[starts[:, None] + torch.arange(seq_len)]
    return torch.cat([torch.full((n, 1), TEXT_BOS, dtype=torch.long), rows], dim=1)


def binary_shapes(n: int, size: int = 12, seed: int = 0) -> Tensor:
    """n binary images of one or two filled rectangles / ellipses: (n, size, size) long in {0, 1}."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float() + 0.5, torch.arange(size).float() + 0.5, indexing="ij")
    imgs = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        for _ in range(int(torch.randint(1, 3, (1,), generator=g))):
            w, h = (torch.rand(2, generator=g) * 0.35 + 0.15) * size
            cx = float(torch.rand(1, generator=g)) * (size - w) + w / 2
            cy = float(torch.rand(1, generator=g)) * (size - h) + h / 2
            if float(torch.rand(1, generator=g)) < 0.5:
                m = ((xx - cx).abs() <= w / 2) & ((yy - cy).abs() <= h / 2)
            else:
                m = ((xx - cx) / (w / 2)) ** 2 + ((yy - cy) / (h / 2)) ** 2 <= 1
            imgs[i] |= m
    return imgs.long()
