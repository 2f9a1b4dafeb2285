"""TrainConfig: the settings of one training run (no heavy imports, so the CLI can read defaults)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from cuekit.errors import UsageError

# `--resume` and changed flags. A resumed run continues the saved one: the flags below only change how it
# runs, not what it trains, and may differ from the saved run's (a note is printed for each). Every other
# flag (model, data, task, sizes, seed, optimizer and its settings, schedule, regularizers, ...) must
# match, or the resumed run would be a different run under the same name: those changes are refused.
RESUME_SAFE_CHANGES: dict[str, str] = {
    "epochs": "the learning-rate schedule is recomputed for the new number of epochs from the next epoch on",
    "accum_steps": "the same global batch in other micro-batches (BatchNorm sees smaller batches)",
    "amp": "mixed precision changes the rounding of the epochs still to run",
    "device": "the epochs still to run are computed on the new device",
    "workers": "data loading only",
    "eval_batch_size": "evaluation only",
    "progress": "display only",
}
# Not compared: `resume` itself, `out` (the run directory), `teacher` (its file is checked by its SHA-256).
RESUME_UNCHECKED: tuple[str, ...] = ("resume", "out", "teacher")


def _flag(field: str) -> str:
    if field == "progress":
        return "progress display"  # set by --no-progress
    if field in ("opt_kwargs", "model_kwargs"):
        return f"TrainConfig.{field}"
    return "--" + field.replace("_", "-")


def _show(value: Any) -> str:
    return "unset" if value is None else json.dumps(value)


def resume_changes(saved: dict, current: dict, run_dir: Any = None) -> dict[str, tuple[Any, Any]]:
    """Compare a run's saved config with the config it is resumed with: -> the safe changes {field: (was, now)}.

    Raises UsageError naming every refused change with both values. Fields the saved config lacks
    (written by an older version) are not compared.
    """
    current = json.loads(json.dumps(current, default=str))  # tuples -> lists, as in the saved JSON
    changed = {k: (saved[k], v) for k, v in current.items()
               if k in saved and k not in RESUME_UNCHECKED and saved[k] != v}
    refused = {k: wn for k, wn in changed.items() if k not in RESUME_SAFE_CHANGES}
    if refused:
        where = f" {run_dir}" if run_dir is not None else ""
        listed = "; ".join(f"{_flag(k)} {_show(now)} (the run's: {_show(was)})" for k, (was, now) in refused.items())
        raise UsageError(f"cannot resume{where} with changed settings: {listed}. A resumed run keeps its model, data "
                         "and hyper-parameters; give the run's values, or start a new run with another --out")
    return changed


def describe_resume_change(field: str, was: Any, now: Any) -> str:
    """One line for a safe change: the flag, both values and what it changes."""
    show = (lambda v: "on" if v else "off") if field == "progress" else _show
    return f"{_flag(field)} {show(now)} (the run's: {show(was)}): {RESUME_SAFE_CHANGES[field]}"


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; `cuekit train` flags map one to one onto these fields."""

    model: str = "resnet20"
    data: str = "dsprites"
    task: str | None = None
    epochs: int = 2
    batch_size: int = 128            # global batch (over all processes and accumulation steps)
    lr: float | None = None          # None: the optimizer's default (cuekit.optim.factory.default_lr)
    opt: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    nesterov: bool = False
    warmup_epochs: float = 0.0
    schedule: str = "cosine"         # cosine | constant
    min_lr: float = 0.0
    label_smoothing: float = 0.0
    reg: str | None = None           # regularizers, e.g. "mixup,ls" (cuekit.augment.regularizers)
    clip_grad: float | None = None   # max gradient norm
    amp: str = "auto"                # auto (on for CUDA) | on | off
    accum_steps: int = 1
    ema_decay: float | None = None
    teacher: str | None = None       # DeiT hard distillation: a classifier checkpoint for a *_distilled model
    seed: int = 0
    out: str | None = None           # None: keep everything in memory, write no files
    resume: bool = False
    train_size: int | None = None    # None: the dataset's default
    val_size: int | None = None
    val_split: float = 0.1
    img_size: int | None = None
    frames: int | None = None        # video data: frames per clip (None: the dataset's default)
    stride: int | None = None        # video files: frame sampling stride (None: the dataset's default, 2)
    flip: bool | None = None         # video files: training flip (None: the dataset's default; off for ssv2)
    split: int | None = None         # ucf101 / hmdb51: the official train/test split 1-3 (None: 1)
    workers: int = 0
    device: str = "auto"
    progress: bool = True
    eval_batch_size: int = 256
    opt_kwargs: dict = dataclasses.field(default_factory=dict)
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    # Recipes (cuekit.train.recipes; all off by default):
    lr_mult: list = dataclasses.field(default_factory=list)  # ["PATTERN=K", ...]: glob over parameter names
    randaugment: str | None = None   # "N,M": torchvision RandAugment(num_ops=N, magnitude=M) on training images
    color_jitter: float | None = None  # ColorJitter(brightness=S, contrast=S, saturation=S)
    lighting: float | None = None    # AlexNet PCA lighting noise, alpha ~ N(0, ALPHA)
    repeated_aug: int = 1            # DeiT repeated augmentation: each sampled index K times per epoch
    reg_off_epochs: int = 0          # the batch regularizer (--reg, ReLabel's CutMix) off for the last N epochs

    def __post_init__(self) -> None:
        self.lr_mult = list(self.lr_mult or [])  # None (argparse's append default) -> []

    def data_options(self) -> dict:
        """The dataset options only some datasets take (`create_dataset(**options)`; None: unset)."""
        return {"stride": self.stride, "flip": self.flip, "split": self.split}

    def validate(self) -> None:
        """Reject impossible settings with a message that names the flag."""
        checks = [
            (self.epochs >= 1, f"--epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.accum_steps >= 1, f"--accum-steps must be >= 1, got {self.accum_steps}"),
            (self.batch_size % self.accum_steps == 0,
             f"--batch-size {self.batch_size} is not divisible by --accum-steps {self.accum_steps}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.amp in ("auto", "on", "off"), f"--amp must be auto, on or off, got {self.amp!r}"),
            (self.schedule in ("cosine", "constant"), f"--schedule must be cosine or constant, got {self.schedule!r}"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, f"--ema-decay must be in (0, 1), got {self.ema_decay}"),
            (self.clip_grad is None or self.clip_grad > 0, f"--clip-grad must be positive, got {self.clip_grad}"),
            (self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0, got {self.warmup_epochs}"),
            (self.repeated_aug >= 1, f"--repeated-aug must be >= 1, got {self.repeated_aug}"),
            (self.reg_off_epochs >= 0, f"--reg-off-epochs must be >= 0, got {self.reg_off_epochs}"),
            (self.color_jitter is None or self.color_jitter >= 0,
             f"--color-jitter must be >= 0, got {self.color_jitter}"),
            (self.lighting is None or self.lighting >= 0, f"--lighting must be >= 0, got {self.lighting}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise UsageError(msg)
        if self.reg:
            from cuekit.augment.regularizers import parse_regularizers

            parse_regularizers(self.reg)  # unknown names -> UnknownChoiceError
        from cuekit.train.recipes import parse_lr_mult, parse_randaugment

        parse_lr_mult(self.lr_mult)
        parse_randaugment(self.randaugment)
