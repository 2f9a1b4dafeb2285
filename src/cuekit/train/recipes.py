"""Training-recipe pieces of the shared engine: layer-wise learning rates (`--lr-mult`), image augmentation
added to any dataset's training split (`--randaugment`, `--color-jitter`, `--lighting`) and DeiT's repeated
augmentation (`--repeated-aug`). The engine (cuekit.train.engine) calls these; each is off by default.
"""
from __future__ import annotations

import fnmatch

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from cuekit.errors import UsageError

# AlexNet-style PCA lighting noise: the eigenvalues and eigenvectors (columns) of the RGB covariance of
# ImageNet pixels in [0, 1], as the ImageNet recipes use them (fb.resnet.torch, ReLabel's configs).
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))


# --- layer-wise learning rates ------------------------------------------------------------------------------------

def parse_lr_mult(specs: list[str] | None) -> list[tuple[str, float]]:
    """`["fc.*=10", ...]` -> [("fc.*", 10.0), ...]; UsageError on a malformed item (naming it)."""
    out = []
    for spec in specs or []:
        pattern, sep, value = str(spec).rpartition("=")
        try:
            mult = float(value)
        except ValueError:
            mult = float("nan")
        if not sep or not pattern or not mult >= 0 or mult == float("inf"):
            raise UsageError(f"--lr-mult {spec!r}: expected PATTERN=K, a glob over parameter names and a "
                             "multiplier >= 0, e.g. --lr-mult 'fc.*=10'")
        out.append((pattern, mult))
    return out


def lr_mult_param_groups(model: nn.Module, specs: list[str], lr: float, weight_decay: float) -> list[dict]:
    """The optimizer's parameter groups with per-pattern learning rates.

    Each parameter takes the multiplier of the first `PATTERN=K` whose glob (fnmatch, case-sensitive) matches
    its whole name in `model.named_parameters()`, else 1; the usual weight-decay split
    (`cuekit.optim.factory.param_groups`) is kept inside each multiplier. Every group carries `lr` = lr * K
    and `lr_mult` = K. A pattern that matches no parameter is refused (UsageError listing some names).
    """
    from cuekit.optim.factory import param_groups

    rules = parse_lr_mult(specs)
    names = {id(p): n for n, p in model.named_parameters()}
    used = [False] * len(rules)

    def mult_of(name: str) -> float:
        for i, (pattern, k) in enumerate(rules):
            if fnmatch.fnmatchcase(name, pattern):
                used[i] = True
                return k
        return 1.0

    groups: list[dict] = []
    for base in param_groups(model, weight_decay):
        by_mult: dict[float, list] = {}
        for p in base["params"]:
            by_mult.setdefault(mult_of(names[id(p)]), []).append(p)
        for k, params in by_mult.items():
            groups.append({**base, "params": params, "lr": lr * k, "lr_mult": k})
    unused = [rules[i][0] for i, u in enumerate(used) if not u]
    if unused:
        some = ", ".join(list(names.values())[:6])
        raise UsageError(f"--lr-mult: the pattern {unused[0]!r} matches no parameter of the model (names look like "
                         f"{some}; patterns are globs over the whole name, e.g. 'fc.*')")
    groups.sort(key=lambda g: g["lr_mult"] != 1.0)  # the plain learning rate first: it is the one logged
    return groups


# --- image augmentation on a training split --------------------------------------------------------------------------

class Lighting(nn.Module):
    """AlexNet-style PCA lighting noise on an RGB image (3, H, W) in [0, 1]: adds eigvec @ (alpha * eigval),
    alpha ~ N(0, alphastd) per image (torch's global generator)."""

    def __init__(self, alphastd: float, eigval=IMAGENET_PCA_EIGVAL, eigvec=IMAGENET_PCA_EIGVEC):
        super().__init__()
        self.alphastd = float(alphastd)
        self.register_buffer("eigval", torch.tensor(eigval, dtype=torch.float32), persistent=False)
        self.register_buffer("eigvec", torch.tensor(eigvec, dtype=torch.float32), persistent=False)

    def forward(self, img: Tensor) -> Tensor:
        """img (3, H, W) float -> the same image plus one RGB offset (3, 1, 1)."""
        if self.alphastd == 0:
            return img
        alpha = torch.randn(3) * self.alphastd
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.to(img.dtype)[:, None, None]

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd}"


def parse_randaugment(spec: str | None) -> tuple[int, int] | None:
    """"N,M" -> (num_ops N, magnitude M) of torchvision's RandAugment; None stays None."""
    if spec is None:
        return None
    try:
        n, m = (int(v) for v in str(spec).split(","))
    except ValueError:
        n = m = -1
    if n < 1 or not 0 <= m <= 30:
        raise UsageError(f"--randaugment {spec!r}: expected N,M with N >= 1 operations and magnitude M in 0..30, "
                         "e.g. 2,9")
    return n, m


def augmentation_transforms(randaugment: str | None = None, color_jitter: float | None = None,
                            lighting: float | None = None) -> list:
    """The transforms the flags add, in the order they run: RandAugment (uint8), ColorJitter, Lighting."""
    if randaugment is None and not color_jitter and not lighting:
        return []  # nothing asked: torchvision.transforms (seconds to import) is left unloaded
    from torchvision import transforms as T

    out: list = []
    ra = parse_randaugment(randaugment)
    if ra is not None:
        out.append(T.RandAugment(num_ops=ra[0], magnitude=ra[1]))
    if color_jitter:
        out.append(T.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
    if lighting:
        out.append(Lighting(lighting))
    return out


class AugmentedImages(Dataset):
    """A training split whose images (first item, (3, H, W) normalised with mean/std) pass through `transforms`.

    Each image is un-normalised to [0, 1], augmented (RandAugment on its exact uint8 values: the images come
    from 8-bit files, so round(255 x) is lossless; ColorJitter clamps to [0, 1]; Lighting's offset is kept
    unclamped, as in the ImageNet recipes) and normalised again; the rest of
    the item (label, ReLabel's packed map, ...) is kept. The transforms draw from torch's generator, which
    the engine seeds per run, per DataLoader worker and saves in every checkpoint.
    """

    def __init__(self, base: Dataset, transforms: list, mean, std):
        self.base, self.transforms = base, list(transforms)
        self.mean = torch.tensor(list(mean), dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(list(std), dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):
        if name == "base":  # not set yet (during unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.base, name)  # e.g. `samples` for `cuekit data check`

    def __getitem__(self, i: int):
        from torchvision.transforms import RandAugment

        item = self.base[i]
        x = torch.as_tensor(item[0])
        if x.dim() != 3 or x.shape[0] != 3:
            raise UsageError(f"--randaugment/--color-jitter/--lighting need RGB images (3, H, W); this data gives "
                             f"{tuple(x.shape)}")
        img = x.float() * self.std + self.mean
        for t in self.transforms:
            if isinstance(t, RandAugment):
                img = t((img.clamp(0, 1) * 255).round().to(torch.uint8)).float() / 255
            else:
                img = t(img)
        x = (img - self.mean) / self.std
        return (x, *item[1:])


# --- repeated augmentation ------------------------------------------------------------------------------------------

def repeated_order(n: int, repeats: int, generator: torch.Generator) -> list[int]:
    """One epoch of DeiT's repeated augmentation: a permutation of range(n) with every index repeated
    `repeats` times in a row, cut to n samples (so an epoch has its usual length: n / repeats distinct images,
    each `repeats` times, every copy augmented anew)."""
    perm = torch.randperm(n, generator=generator)
    return perm.repeat_interleave(repeats)[:n].tolist()
