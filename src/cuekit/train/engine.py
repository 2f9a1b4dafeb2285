"""The one training loop every area uses.

Hard or soft targets, label smoothing, optimizers by name, cosine schedule with warm-up,
gradient clipping and accumulation, AMP on CUDA, DDP under torchrun, EMA, DeiT hard distillation
from a teacher checkpoint, deterministic seeding and data order, evaluation each epoch, JSONL logs,
atomic checkpoints and resume.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from cuekit.augment.targets import soft_target_cross_entropy
from cuekit.data.registry import DataBundle, check_training_data, create_dataset
from cuekit.errors import CheckpointError, TrainingDiverged, UnknownChoiceError, UsageError
from cuekit.io import atomic_write_json, atomic_write_text
from cuekit.models.registry import create_model, list_models
from cuekit.optim.factory import create_optimizer, default_lr, list_optimizers
from cuekit.train import checkpoint as ckpt
from cuekit.train.config import TrainConfig, describe_resume_change, resume_changes
from cuekit.train.distributed import DistInfo, all_reduce_sum, barrier, init_distributed
from cuekit.train.ema import ModelEMA
from cuekit.train.schedule import lr_factor

BatchTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
LossFn = Callable[[Any, Tensor], Tensor]
StepCallback = Callable[[int, nn.Module, torch.optim.Optimizer, float], None]


@dataclasses.dataclass
class TrainResult:
    """What `train` returns: the trained model and its per-epoch history."""

    model: nn.Module
    history: list[dict]
    final: dict
    out_dir: Path | None
    ema: nn.Module | None = None
    status: str = "completed"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _loader(dataset: Dataset, batches: list[list[int]], workers: int, seed: int) -> DataLoader:
    """A loader over precomputed index batches: the data order is a pure function of (seed, epoch)."""
    return DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                      pin_memory=False, persistent_workers=False,
                      generator=torch.Generator().manual_seed(seed))


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, info: DistInfo,
                  accum_steps: int, repeats: int = 1) -> list[list[int]]:
    """This process's micro-batches for one epoch (drop_last: every step sees a full global batch).

    The global order is a seeded permutation; each global batch is split across processes and
    then into `accum_steps` micro-batches, so any world size sees the same samples per step.
    repeats > 1 is DeiT's repeated augmentation (RASampler): the permutation with every index repeated
    `repeats` times in a row, cut to n samples, and each global batch dealt to the processes in turn
    (process r takes its positions r, r + world, ...), so the copies of an image go to different processes.
    """
    per_rank = batch_size // info.world_size
    if per_rank * info.world_size != batch_size:
        raise UsageError(f"--batch-size {batch_size} is not divisible by the {info.world_size} processes")
    micro = per_rank // accum_steps
    if micro * accum_steps != per_rank:
        raise UsageError(f"per-process batch {per_rank} is not divisible by --accum-steps {accum_steps}")
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    if repeats > 1:
        from cuekit.train.recipes import repeated_order

        perm = repeated_order(n, repeats, generator)
    else:
        perm = torch.randperm(n, generator=generator).tolist()
    out = []
    for s in range(n // batch_size):
        g = perm[s * batch_size:(s + 1) * batch_size]
        mine = g[info.rank::info.world_size] if repeats > 1 else g[info.rank * per_rank:(info.rank + 1) * per_rank]
        out.extend(mine[i * micro:(i + 1) * micro] for i in range(accum_steps))
    return out


def _model_output_loss(out: Any, target: Tensor, loss_fn: LossFn, teacher_labels: Tensor | None = None) -> Tensor:
    """The training loss of a model's output; `teacher_labels` (N,): a teacher's hard labels (DeiT distillation)."""
    if teacher_labels is not None:
        # DeiT hard distillation: the class head learns the targets, the distillation head the teacher's argmax.
        cls_logits, dist_logits = out
        return 0.5 * loss_fn(cls_logits, target) + 0.5 * F.cross_entropy(dist_logits.float(), teacher_labels)
    # Models with two heads (distilled PiT) return a tuple in training mode: without a teacher, both
    # heads learn the targets and the loss is their average.
    if isinstance(out, (tuple, list)):
        return sum(loss_fn(o, target) for o in out) / len(out)
    return loss_fn(out, target)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(path: str | Path, student: nn.Module, data: DataBundle,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A frozen teacher for DeiT hard distillation of `student` on `data`: (teacher in eval mode, its record).

    The teacher is a classifier checkpoint with cuekit metadata (`model.safetensors` of `cuekit train`, or
    `cuekit models convert`); safetensors or a weights-only torch file, nothing is unpickled. Refused with
    a one-line error: a student without a distillation head, or a teacher for other classes or inputs.
    """
    from cuekit.models.registry import model_from_checkpoint

    name = getattr(student, "cuekit_name", None) or type(student).__name__
    if not getattr(student, "distilled", False):
        raise UsageError(f"--teacher needs a model with a distillation head (e.g. pit_ti_distilled); {name} has none")
    path = Path(path)
    teacher, meta = model_from_checkpoint(path)
    if int(meta["num_classes"]) != data.num_classes:
        raise UsageError(f"the teacher {path} predicts {meta['num_classes']} classes but the data has "
                         f"{data.num_classes}")
    if int(meta.get("in_chans", data.in_chans)) != data.in_chans:
        raise UsageError(f"the teacher {path} takes {meta['in_chans']} input channels but the data has "
                         f"{data.in_chans}")
    for key in ("mean", "std"):
        theirs, ours = meta.get(key), list(data.mean if key == "mean" else data.std)
        if theirs is not None and (len(theirs) != len(ours) or any(abs(a - b) > 1e-6 for a, b in zip(theirs, ours))):
            raise UsageError(f"the teacher {path} expects inputs normalised with {key} {theirs}, the data "
                             f"gives {ours}")
    teacher.requires_grad_(False)
    record = {"path": str(path), "sha256": _file_sha256(path), "model": meta["model"],
              "num_classes": int(meta["num_classes"]), "distillation": "hard"}
    return teacher.eval().to(device), record


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256, device: str | torch.device = "cpu",
             workers: int = 0, info: DistInfo | None = None, amp_dtype: torch.dtype | None = None,
             multi_view: bool = False) -> dict:
    """Cross-entropy loss, top-1 and top-5 accuracy on a dataset of (image, int label) pairs.

    multi_view: each sample is a stack of V views (V, *input) of one item (e.g. video clips x crops, see
    `cuekit.data.video_folders.with_test_views`); its prediction is the mean of the V softmaxes, the loss
    the negative log of that mean at the label, and `batch_size` counts views (at least one item a batch).
    Under DDP each process evaluates a strided shard and the sums are reduced.
    """
    info = info or DistInfo(device=torch.device(device))
    device = torch.device(device)
    was_training = model.training
    model.eval()
    indices = list(range(info.rank, len(dataset), info.world_size))
    if multi_view and indices:
        batch_size = max(1, batch_size // len(dataset[indices[0]][0]))  # items per batch
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    loss_sum = correct = correct5 = count = 0.0
    for x, y in _loader(dataset, batches, workers, 0):
        x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x.flatten(0, 1) if multi_view else x)
        logits = logits.float()
        if multi_view:  # (B * V, K) -> the mean softmax (B, K); ranking it ranks the classes
            logits = logits.softmax(-1).view(x.shape[0], x.shape[1], -1).mean(1)
            loss_sum += F.nll_loss(logits.clamp_min(1e-12).log(), y, reduction="sum").item()
        else:
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        topk = logits.topk(k, dim=1).indices
        correct += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
        count += len(y)
    loss_sum, correct, correct5, count = all_reduce_sum([loss_sum, correct, correct5, count], info)
    model.train(was_training)
    if count == 0:
        return {"loss": float("nan"), "acc": float("nan"), "top5": float("nan"), "n": 0}
    return {"loss": loss_sum / count, "acc": correct / count, "top5": correct5 / count, "n": int(count)}


def _with_recipe_augmentation(cfg: TrainConfig, data: DataBundle) -> DataBundle:
    """The bundle with --randaugment / --color-jitter / --lighting added to its training images (val untouched)."""
    from cuekit.train.recipes import AugmentedImages, augmentation_transforms

    transforms = augmentation_transforms(cfg.randaugment, cfg.color_jitter, cfg.lighting)
    if not transforms:
        return data
    if data.frames is not None or data.in_chans != 3:
        raise UsageError("--randaugment, --color-jitter and --lighting are for RGB image data; "
                         f"{data.name or 'the data'} has " +
                         (f"{data.frames}-frame clips" if data.frames is not None else f"{data.in_chans} channel(s)"))
    return dataclasses.replace(data, train=AugmentedImages(data.train, transforms, data.mean, data.std))


def _reg_off_from(cfg: TrainConfig, batch_transform: Any) -> int:
    """The first epoch (0-based) without the batch regularizer under --reg-off-epochs (cfg.epochs: never off).

    A transform with `set_regularization(on)` (ReLabel's targets: CutMix off, LabelPooling kept) is told;
    the mixers of --reg are skipped; another transform given to `train()` cannot be switched off.
    """
    if cfg.reg_off_epochs == 0:
        return cfg.epochs
    if batch_transform is None:
        raise UsageError("--reg-off-epochs turns a batch regularizer off for the last epochs; this run has none "
                         "(--reg mixup/cutmix/..., or --relabel-cutmix)")
    if not cfg.reg and not hasattr(batch_transform, "set_regularization"):
        raise UsageError(f"--reg-off-epochs: the batch transform {type(batch_transform).__name__} cannot be "
                         "switched off (it has no set_regularization)")
    return max(0, cfg.epochs - cfg.reg_off_epochs)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.amp == "off" or (cfg.amp == "auto" and device.type != "cuda"):
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


class _Run:
    """Files of one run directory: checkpoints, metrics.jsonl, results.json, config.json."""

    def __init__(self, out: str | None, info: DistInfo):
        self.dir = Path(out) if out else None
        self.write = self.dir is not None and info.is_main

    @property
    def state_path(self) -> Path:
        return self.dir / "checkpoints" / "last.safetensors"

    def write_history(self, history: list[dict]) -> None:
        if self.write:
            atomic_write_text(self.dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    def write_config(self, config: dict, resumed_with_changes: bool) -> None:
        """config.json; a resume with changed flags first keeps the run's original one as config.original.json."""
        if not self.write:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path, original = self.dir / "config.json", self.dir / "config.original.json"
        if resumed_with_changes and path.exists() and not original.exists():
            atomic_write_text(original, path.read_text())
        atomic_write_json(path, config)


def train(cfg: TrainConfig, model: nn.Module | None = None, data: DataBundle | None = None,
          batch_transform: BatchTransform | None = None, loss_fn: LossFn | None = None,
          step_callback: StepCallback | None = None) -> TrainResult:
    """Train `model` (default: `create_model(cfg.model)`) on `data` (default: `create_dataset(cfg.data)`).

    batch_transform(x, y) -> (x, soft_y) runs on the device before the forward pass (Mixup, ...);
    loss_fn(logits, target) replaces the soft-target cross-entropy; step_callback(step, model,
    optimizer, loss) runs after every optimizer step. Raises TrainingDiverged on a NaN/inf loss
    after keeping the last good checkpoint. cfg.lr None means the optimizer's default learning rate.
    A batch transform with `state_dict()` / `load_state_dict()` has its random state saved in every
    checkpoint and restored on resume, so a resumed run equals an uninterrupted one.
    """
    cfg.validate()
    if model is None and cfg.model not in list_models():
        raise UnknownChoiceError("model", cfg.model, list_models())
    if cfg.opt not in list_optimizers():
        raise UnknownChoiceError("optimizer", cfg.opt, list_optimizers())
    lr_source = "--lr" if cfg.lr is not None else f"the default for {cfg.opt}; --lr to change"
    info = init_distributed(cfg.device)
    device = info.device
    run = _Run(cfg.out, info)
    if run.dir is not None and run.state_path.exists() and not cfg.resume:
        raise UsageError(f"{run.dir} already holds a run: pass --resume to continue it, or choose another --out")
    if cfg.resume and (run.dir is None or not run.state_path.exists()):
        raise CheckpointError(f"--resume: no checkpoint at {run.state_path if run.dir else '(no --out given)'}")
    resume_record: dict | None = None
    if cfg.resume:
        # Before anything is built: a changed model or optimizer would otherwise fail deep inside loading.
        saved_meta, saved_state = ckpt.read_train_state_header(run.state_path)
        saved_lr = saved_meta.get("config", {}).get("lr")
        if cfg.lr is None and saved_lr is not None:  # not given: the run's own, whatever the default was then
            cfg, lr_source = dataclasses.replace(cfg, lr=saved_lr), "the run's"
        changes = resume_changes(saved_meta.get("config", {}), dataclasses.asdict(cfg), run.dir)
        completed = int(saved_state["epoch"]) + 1
        if cfg.epochs < completed:
            raise UsageError(f"--epochs {cfg.epochs}: the run in {run.dir} has already completed {completed} epochs")
        resume_record = {"after_epoch": completed, "changed": {k: list(v) for k, v in changes.items()}}
        if info.is_main:
            for field, (was, now) in changes.items():
                print(f"note: resuming {run.dir} with {describe_resume_change(field, was, now)}", file=sys.stderr)
    if cfg.lr is None:
        cfg = dataclasses.replace(cfg, lr=default_lr(cfg.opt))
    if cfg.progress and info.is_main:
        print(f"optimizer {cfg.opt}, peak learning rate {cfg.lr:g} ({lr_source})", file=sys.stderr)

    seed_everything(cfg.seed)
    if data is None:
        data = create_dataset(cfg.data, task=cfg.task, img_size=cfg.img_size, train_size=cfg.train_size,
                              val_size=cfg.val_size, seed=cfg.seed, val_split=cfg.val_split, frames=cfg.frames,
                              **cfg.data_options())
    check_training_data(data, cfg.model if model is None else getattr(model, "cuekit_name", None))
    if model is None:
        model = create_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans,
                             img_size=cfg.img_size or data.img_size, **cfg.model_kwargs)
    model.to(device)
    data = _with_recipe_augmentation(cfg, data)
    teacher, teacher_record = None, None
    if cfg.teacher:
        teacher, teacher_record = load_teacher(cfg.teacher, model, data, device)
    smoothing = cfg.label_smoothing
    if cfg.reg and batch_transform is not None:
        raise UsageError("--reg cannot be combined with another batch transform (e.g. --relabel)")
    if cfg.reg:
        from cuekit.augment.regularizers import build_batch_transform

        # The engine owns each collated batch, so mixers may paste into it without a copy.
        batch_transform, reg_smoothing = build_batch_transform(cfg.reg, data.num_classes, inplace=True)
        smoothing = smoothing or reg_smoothing
    if hasattr(batch_transform, "bind"):  # e.g. fgsm-at attacks the model being trained
        batch_transform.bind(model=model, data=data)
    reg_off_from = _reg_off_from(cfg, batch_transform)
    params: Any = model
    if cfg.lr_mult:
        from cuekit.train.recipes import lr_mult_param_groups

        params = lr_mult_param_groups(model, cfg.lr_mult, cfg.lr, cfg.weight_decay)
    optimizer = create_optimizer(cfg.opt, params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                 momentum=cfg.momentum, nesterov=cfg.nesterov, **cfg.opt_kwargs)
    for g in optimizer.param_groups:
        g["base_lr"] = g["lr"]
    ema = ModelEMA(model, cfg.ema_decay) if cfg.ema_decay else None

    n_train = len(data.train)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise UsageError(f"the training set has {n_train} samples, fewer than one batch of {cfg.batch_size}")
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    loss_fn = loss_fn or (lambda logits, t: soft_target_cross_entropy(logits, t, smoothing))
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    meta = {
        "model": cfg.model if getattr(model, "cuekit_name", None) is None else model.cuekit_name,
        "num_classes": data.num_classes, "class_names": list(data.class_names), "in_chans": data.in_chans,
        "img_size": cfg.img_size or data.img_size, "mean": list(data.mean), "std": list(data.std),
        "resize_ratio": data.resize_ratio, "frames": data.frames, "data": cfg.data if data.name == "" else data.name,
        "stride": getattr(data, "stride", None), "flip": getattr(data, "flip", None), "split": cfg.split,
        "task": cfg.task if cfg.task is not None else data.task, "config": dataclasses.asdict(cfg),
    }
    if teacher_record is not None:
        meta["teacher"] = teacher_record
    history: list[dict] = []
    resumes: list[dict] = []  # one record per --resume: after which epoch, which flags changed
    start_epoch = 0
    if cfg.resume:
        done_epoch, saved_meta, extra = ckpt.load_train_state(run.state_path, model=model, optimizer=optimizer, ema=ema,
                                                              batch_transform=batch_transform, scaler=scaler)
        saved_teacher = (saved_meta.get("teacher") or {}).get("sha256")
        if saved_teacher != (teacher_record or {}).get("sha256"):
            was = f"with the teacher {saved_meta['teacher']['path']}" if saved_teacher else "without a teacher"
            raise UsageError(f"{run.dir} was trained {was}: resume it with the same --teacher")
        history = extra.get("history", [])
        resumes = [*extra.get("resumes", []), resume_record]
        start_epoch = done_epoch + 1
        run.write_history(history)

    train_model: nn.Module = model
    if info.distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    run.write_config(dataclasses.asdict(cfg), resumed_with_changes=bool(resume_record and resume_record["changed"]))

    from tqdm.auto import tqdm

    t_run = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        train_model.train()
        batches = epoch_batches(n_train, cfg.batch_size, cfg.seed, epoch, info, cfg.accum_steps, cfg.repeated_aug)
        regularize = epoch < reg_off_from
        if hasattr(batch_transform, "set_regularization"):
            batch_transform.set_regularization(regularize)
        loader = _loader(data.train, batches, cfg.workers, cfg.seed * 7919 + epoch)
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="step",
                   disable=not (cfg.progress and info.is_main), leave=False, dynamic_ncols=True)
        loss_sum, t0, diverged_at = 0.0, time.perf_counter(), None
        step_losses: list[Tensor] = []
        for i, (x, y) in enumerate(loader):
            step = epoch * steps_per_epoch + i // cfg.accum_steps
            micro = i % cfg.accum_steps
            if micro == 0:
                f = lr_factor(step, total_steps, warmup_steps, cfg.schedule, cfg.min_lr / cfg.lr)
                for g in optimizer.param_groups:
                    g["lr"] = g["base_lr"] * f
            x = x.to(device, non_blocking=True)
            y = torch.as_tensor(y).to(device, non_blocking=True)
            if batch_transform is not None and (regularize or hasattr(batch_transform, "set_regularization")):
                x, y = batch_transform(x, y)
            last_micro = micro == cfg.accum_steps - 1
            sync = last_micro or not info.distributed
            ctx = train_model.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    out = train_model(x)
                    teacher_labels = None
                    if teacher is not None:
                        with torch.no_grad():
                            teacher_labels = teacher(x).argmax(dim=1)
                loss = _model_output_loss(out, y, loss_fn, teacher_labels)
                scaler.scale(loss / cfg.accum_steps).backward()
            step_losses.append(loss.detach())
            if not last_micro:
                continue
            if cfg.clip_grad is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update(model)
            step_loss = torch.stack(step_losses).mean()
            step_losses.clear()
            # One host sync per step: the loss is needed for the bar, the NaN check and callbacks.
            loss_val = step_loss.item()
            if not math.isfinite(loss_val):
                diverged_at = step
                break
            loss_sum += loss_val
            if step_callback is not None:
                step_callback(step, model, optimizer, loss_val)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.3g}", refresh=False)
        bar.close()
        if diverged_at is not None:
            good = run.state_path if (run.dir and run.state_path.exists()) else None
            where = f"the last good checkpoint is {good} (end of epoch {epoch})" if good else \
                "no checkpoint had been written yet"
            if run.write:
                atomic_write_json(run.dir / "results.json", {
                    "status": "diverged", "diverged_at_step": diverged_at, "epoch": epoch + 1,
                    "history": history, "config": dataclasses.asdict(cfg)})
            raise TrainingDiverged(f"the loss became NaN/inf at step {diverged_at} (epoch {epoch + 1}); "
                                   f"training stopped and {where}")
        train_time = time.perf_counter() - t0
        steps_done = len(batches) // cfg.accum_steps
        train_loss = all_reduce_sum([loss_sum], info)[0] / max(1, steps_done) / info.world_size
        ev = evaluate(model, data.val, cfg.eval_batch_size, device, cfg.workers, info, amp_dtype)
        record = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "train_loss": train_loss,
                  "val_loss": ev["loss"], "val_acc": ev["acc"], "val_top5": ev["top5"],
                  "lr": optimizer.param_groups[0]["lr"], "train_time_s": train_time,
                  "time_s": time.perf_counter() - t0}
        if ema is not None:
            ev_ema = evaluate(ema.module, data.val, cfg.eval_batch_size, device, cfg.workers, info, amp_dtype)
            record.update(ema_val_loss=ev_ema["loss"], ema_val_acc=ev_ema["acc"])
        history.append(record)
        if run.write:
            ckpt.save_train_state(run.state_path, model=model, optimizer=optimizer, ema=ema, epoch=epoch,
                                  metadata={**meta, "epoch": epoch + 1}, extra={"history": history, "resumes": resumes},
                                  batch_transform=batch_transform, scaler=scaler)
            run.write_history(history)
        if cfg.progress and info.is_main:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}: train_loss {train_loss:.4f}  "
                       f"val_loss {ev['loss']:.4f}  val_acc {ev['acc']:.4f}  ({record['time_s']:.1f}s)")
        barrier(info)

    final = history[-1] if history else {}
    if run.write:
        ckpt.save_weights(run.dir / "model.safetensors", model, {**meta, "epoch": cfg.epochs})
        if ema is not None:
            ckpt.save_weights(run.dir / "model_ema.safetensors", ema.module, {**meta, "epoch": cfg.epochs})
        from cuekit.io import environment

        atomic_write_json(run.dir / "results.json", {
            "status": "completed", "final": final, "history": history, "config": dataclasses.asdict(cfg),
            "num_classes": data.num_classes, "train_samples": n_train, "val_samples": len(data.val),
            "world_size": info.world_size, "time_s": time.perf_counter() - t_run, "resumes": resumes,
            "environment": environment()})
    barrier(info)
    return TrainResult(model=model, history=history, final=final, out_dir=run.dir,
                       ema=ema.module if ema else None)
