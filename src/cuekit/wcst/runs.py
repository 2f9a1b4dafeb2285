"""Training runs of the audit (through cuekit.train) and a process pool for independent runs."""
from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from cuekit.errors import DataError, UsageError
from cuekit.wcst.datasets import DIAGONAL, CueConflictData
from cuekit.wcst.models import build_model, check_model_name


@dataclasses.dataclass
class FitSettings:
    """How every model of an audit is trained. Defaults follow the public code (Adam, lr 1e-3,
    constant rate, no weight decay); the epoch count and batch are smaller."""

    model: str = "resnet20"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    opt: str = "adam"
    weight_decay: float = 0.0
    schedule: str = "constant"
    device: str = "cpu"
    eval_batch_size: int = 256
    model_kwargs: dict = dataclasses.field(default_factory=dict)   # passed to the model's factory, e.g. width
    bn_samples: int | None = None   # training images BatchNorm statistics are re-estimated on (None: all)

    def validate(self) -> None:
        """Reject impossible settings with a message that names the setting."""
        check_model_name(self.model)
        if self.epochs < 1:
            raise UsageError(f"--epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise UsageError(f"--lr must be positive, got {self.lr}")


def new_model(data: CueConflictData, settings: FitSettings, seed: int) -> nn.Module:
    """The model of `settings` with the initial weights of `seed` (what `fit` starts from)."""
    from cuekit.train import seed_everything

    seed_everything(seed)
    return build_model(settings.model, data.num_levels, data.source.in_chans, data.img_size, **settings.model_kwargs)


def fit(data: CueConflictData, settings: FitSettings, seed: int, *, train_set: Dataset | None = None,
        eval_sets: dict[str, Dataset] | None = None, init_state: dict | None = None,
        progress: bool = False, record: str = "epochs") -> tuple[nn.Module, dict[str, list[float]]]:
    """Train on `train_set` (default: the diagonal train split) and record accuracy curves.

    Returns the model and curves {name: [accuracy after epoch 0 (initial weights), 1, ..., E]} for
    "diagonal" (diagonal valid split) and every set in `eval_sets`; with record="final" each curve
    holds only the accuracy after the last epoch (much cheaper). `init_state` replaces the seeded
    initial weights (a state dict, e.g. a perturbed solution).
    """
    if record not in ("epochs", "final"):
        raise ValueError(f"record must be 'epochs' or 'final', got {record!r}")
    from cuekit.train import TrainConfig, evaluate, train

    settings.validate()
    data.materialize()
    train_set = train_set if train_set is not None else data.dataset(DIAGONAL, "train")
    if len(train_set) < settings.batch_size:
        raise DataError(f"the training set has {len(train_set)} samples, fewer than one batch of "
                        f"{settings.batch_size}: raise the per-class caps or lower --batch-size")
    # record="final" measures the diagonal valid split itself at the end: the engine's per-epoch
    # evaluation then gets a single image instead of the whole split.
    val_set = None if record == "epochs" else data.dataset(DIAGONAL, "valid").subset(1)
    bundle = data.bundle(train_set=train_set, val_set=val_set)
    diagonal_valid = data.dataset(DIAGONAL, "valid")
    model = new_model(data, settings, seed)
    if init_state is not None:
        model.load_state_dict(init_state)
    device = torch.device("cuda" if settings.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if settings.device == "auto" else settings.device))
    model.to(device)
    eval_sets = dict(eval_sets or {})
    curves: dict[str, list[float]] = {DIAGONAL: [], **{k: [] for k in eval_sets}}

    def measure(m: nn.Module, with_diagonal: bool) -> None:
        recalibrate_batchnorm(m, train_set, settings.eval_batch_size, device, max_samples=settings.bn_samples,
                              seed=seed)
        if with_diagonal:
            curves[DIAGONAL].append(evaluate(m, diagonal_valid, settings.eval_batch_size, device)["acc"])
        for name, ds in eval_sets.items():
            curves[name].append(evaluate(m, ds, settings.eval_batch_size, device)["acc"])

    steps_per_epoch = len(train_set) // settings.batch_size
    on_step = None
    if record == "epochs":
        measure(model, True)

        def on_step(step: int, m: nn.Module, _opt, _loss: float) -> None:
            if (step + 1) % steps_per_epoch == 0:
                measure(m, False)   # the engine evaluates the diagonal valid split itself

    cfg = TrainConfig(model=settings.model, data=bundle.name, epochs=settings.epochs, batch_size=settings.batch_size,
                      lr=settings.lr, opt=settings.opt, weight_decay=settings.weight_decay, momentum=0.9,
                      schedule=settings.schedule, seed=seed, out=None, device=str(device), progress=progress,
                      eval_batch_size=settings.eval_batch_size)
    result = train(cfg, model=model, data=bundle, step_callback=on_step)
    if record == "epochs":
        curves[DIAGONAL].extend(h["val_acc"] for h in result.history)
    else:
        measure(result.model, True)
    return result.model, curves


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers of a model that track running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, dataset: Dataset, batch_size: int = 256,
                          device: str | torch.device = "cpu", max_samples: int | None = None, seed: int = 0) -> None:
    """Re-estimate BatchNorm running statistics as exact averages over `dataset` at the current weights
    (over a seeded random subset of `max_samples` images when the set is larger).

    With few training steps the exponential running averages lag far behind the weights, and
    eval-mode accuracy can sit at chance while train-mode accuracy is 100% (the public code
    side-stepped this by evaluating in train mode). A no-op for models without BatchNorm.
    """
    layers = batchnorm_layers(model)
    if not layers:
        return
    was_training = model.training
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over the batches below
    model.train()
    items = list(range(len(dataset)))
    if max_samples is not None and len(items) > max_samples:
        items = sorted(torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:max_samples].tolist())
    try:
        for i in range(0, len(items), batch_size):
            x, _ = _batch(dataset, items[i:i + batch_size])
            model(x.to(device))
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        model.train(was_training)


def _batch(dataset: Dataset, items: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(dataset, "__getitems__"):
        pairs = dataset.__getitems__(list(items))
    else:
        pairs = [dataset[i] for i in items]
    return torch.stack([p[0] for p in pairs]), torch.as_tensor([int(p[1]) for p in pairs])


def adopted_cue(final_acc: dict[str, float], chance: float) -> str | None:
    """The cue whose off-diagonal accuracy is highest, or None when no single cue leads above chance
    (a tie at the top, or nothing learnt)."""
    best = max(final_acc.values())
    leaders = [c for c, a in final_acc.items() if a == best]
    return leaders[0] if len(leaders) == 1 and best > chance else None


