"""Regularizers by name for `cuekit train --reg NAME[,NAME]` and the robustness benchmark.

`build_batch_transform(names, num_classes, model)` returns the batch transform the training
engine runs before each forward pass, and the label smoothing for its loss (label smoothing
is not a batch transform: the one soft-target loss applies it to hard and mixed targets alike).
Order inside a batch: Cutout, then Mixup/CutMix (both given: one or the other per batch, half
and half), then FGSM, which attacks the input that is actually trained on.
The video names (videomix-s/-t/-st, video-mixup, frame-cutmix) need (N, C, T, H, W) batches; they use
mixup_alpha (video-mixup) and cutmix_alpha (the others). At most two mixing names may be given.
"""
from __future__ import annotations

from typing import Callable, Sequence

from torch import Tensor, nn

from cuekit.augment.adversarial import FGSMTraining
from cuekit.augment.cutout import Cutout
from cuekit.augment.mix import CutMix, Mixup, MixupOrCutMix, as_rng, to_soft
from cuekit.augment.video import FrameCutMix, VideoMix, VideoMixup
from cuekit.errors import UnknownChoiceError, UsageError

__all__ = ["DEFAULT_SETTINGS", "REGULARIZER_NAMES", "VIDEO_REGULARIZER_NAMES", "BatchPipeline", "build_batch_transform",
           "parse_regularizers"]

# Image regularizers (any (N, C, H, W) data; the robustness benchmark runs each of these) and the video
# mixers, which need (N, C, T, H, W) batches. `--reg` accepts both.
REGULARIZER_NAMES: tuple[str, ...] = ("ls", "mixup", "cutmix", "cutout", "fgsm-at")
VIDEO_REGULARIZER_NAMES: tuple[str, ...] = ("videomix-s", "videomix-t", "videomix-st", "video-mixup", "frame-cutmix")
VIDEOMIX_NAMES: dict[str, str] = {"videomix-s": "spatial", "videomix-t": "temporal", "videomix-st": "spatiotemporal"}

# Defaults: label smoothing 0.1 (Szegedy et al.); Mixup alpha 1 (Zhang et al., CIFAR); CutMix beta 1
# (Yun et al.); Cutout 16 px at 32 px (DeVries & Taylor, CIFAR-10); FGSM eps 2/255, half of each batch.
DEFAULT_SETTINGS: dict[str, float] = {
    "label_smoothing": 0.1, "mixup_alpha": 1.0, "cutmix_alpha": 1.0, "cutout_size": 0.5,
    "fgsm_epsilon": 2 / 255, "fgsm_fraction": 0.5, "switch_prob": 0.5,
}


def parse_regularizers(spec: str | Sequence[str] | None) -> list[str]:
    """"mixup,ls" or ["mixup", "ls"] -> checked list of names; "", "none" and None give []."""
    if spec is None:
        return []
    parts = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for p in (s.strip().lower() for s in parts):
        if p in ("", "none"):
            continue
        if p not in REGULARIZER_NAMES and p not in VIDEO_REGULARIZER_NAMES:
            raise UnknownChoiceError("regularizer", p, (*REGULARIZER_NAMES, *VIDEO_REGULARIZER_NAMES, "none"))
        if p not in names:
            names.append(p)
    return names


class BatchPipeline:
    """Runs batch transforms in order; `bind(model, data)` reaches the ones that need the model."""

    def __init__(self, steps: Sequence[Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]], num_classes: int):
        self.steps, self.num_classes = list(steps), num_classes

    def bind(self, model: nn.Module | None = None, data=None) -> None:
        """Give every step that has `bind` the model being trained and the DataBundle."""
        for step in self.steps:
            if hasattr(step, "bind"):
                step.bind(model=model, data=data)

    def state_dict(self) -> dict:
        """Every step's random state (JSON-able), for an exact resume of a training run."""
        return {"steps": [{"type": type(step).__name__,
                           "state": step.state_dict() if hasattr(step, "state_dict") else None}
                          for step in self.steps]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the steps' random states from `state_dict`; the steps must be the same kinds, in order."""
        saved = [s["type"] for s in state["steps"]]
        ours = [type(step).__name__ for step in self.steps]
        if saved != ours:
            raise UsageError(f"the saved regularizer state is for {saved}, these regularizers are {ours}")
        for step, entry in zip(self.steps, state["steps"]):
            if entry["state"] is not None:
                step.load_state_dict(entry["state"])

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W), y: (N,) int -> transformed x, soft targets (N, C)."""
        for step in self.steps:
            x, y = step(x, y)
        return x, to_soft(y, self.num_classes)

    def __repr__(self) -> str:
        return f"BatchPipeline({[type(s).__name__ for s in self.steps]})"


def build_batch_transform(names: Sequence[str] | str | None, num_classes: int, model: nn.Module | None = None, *,
                          mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                          seed: int | None = None, inplace: bool = False,
                          **settings: float) -> tuple[BatchPipeline | None, float]:
    """-> (batch transform or None, label smoothing) for names from REGULARIZER_NAMES / VIDEO_REGULARIZER_NAMES.

    `model` is what fgsm-at attacks; it may also be attached later with `transform.bind(model, data)`
    (the engine does this once it has built the model). `settings` override DEFAULT_SETTINGS.
    seed=None draws the mixing randomness from NumPy's global state (seeded by the engine).
    inplace=True lets CutMix and VideoMix paste into the batch itself (for a caller that owns it).
    """
    names = parse_regularizers(names)
    unknown = set(settings) - set(DEFAULT_SETTINGS)
    if unknown:
        raise UsageError(f"unknown regularizer settings {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}")
    cfg = {**DEFAULT_SETTINGS, **settings}
    rng = as_rng(seed)
    steps: list = []
    if "cutout" in names:
        steps.append(Cutout(num_classes, size=cfg["cutout_size"], seed=rng))
    mixers = []
    if "mixup" in names:
        mixers.append(Mixup(num_classes, alpha=cfg["mixup_alpha"], seed=rng))
    if "cutmix" in names:
        mixers.append(CutMix(num_classes, alpha=cfg["cutmix_alpha"], seed=rng, inplace=inplace))
    for name, variant in VIDEOMIX_NAMES.items():
        if name in names:
            mixers.append(VideoMix(num_classes, variant=variant, alpha=cfg["cutmix_alpha"], seed=rng,
                                   inplace=inplace))
    if "video-mixup" in names:
        mixers.append(VideoMixup(num_classes, alpha=cfg["mixup_alpha"], seed=rng))
    if "frame-cutmix" in names:
        mixers.append(FrameCutMix(num_classes, alpha=cfg["cutmix_alpha"], seed=rng))
    if len(mixers) > 2:
        mixing = [n for n in names if n in ("mixup", "cutmix", *VIDEO_REGULARIZER_NAMES)]
        raise UsageError(f"give at most two mixing regularizers (one or the other per batch), got {mixing}")
    if len(mixers) == 2:
        steps.append(MixupOrCutMix(mixers[0], mixers[1], switch_prob=cfg["switch_prob"], seed=rng))
    else:
        steps.extend(mixers)
    if "fgsm-at" in names:
        steps.append(FGSMTraining(num_classes, epsilon=cfg["fgsm_epsilon"], fraction=cfg["fgsm_fraction"],
                                  model=model, mean=mean, std=std))
    smoothing = float(cfg["label_smoothing"]) if "ls" in names else 0.0
    return (BatchPipeline(steps, num_classes) if steps else None), smoothing
