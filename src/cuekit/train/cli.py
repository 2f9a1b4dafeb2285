"""`cuekit train`, `cuekit eval`, `cuekit predict`."""
from __future__ import annotations

import argparse
import dataclasses


def _optional_float(s: str) -> float | None:
    return None if s.lower() in ("none", "off", "0") else float(s)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the train / eval / predict commands."""
    from cuekit.train.config import TrainConfig

    d = TrainConfig()
    p = sub.add_parser(
        "train", help="train a model (built-in data by default)",
        description="Train a registered model on built-in or local data with the shared engine. "
        "Writes OUT/checkpoints/last.safetensors (resumable), OUT/model.safetensors (+ .json metadata), "
        "OUT/metrics.jsonl and OUT/results.json. Multi-GPU / multi-node: run the same command under torchrun.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=d.model, help="registered model name (see `cuekit models list`)")
    p.add_argument("--data", default=d.data,
                   help="dataset spec (`cuekit data list`): built in dsprites, multi-shapes, shapes-loc, moving-shapes "
                   "(video); local folder:PATH (images resized to 224 px unless --img-size), video-folder:PATH "
                   "(16-frame clips at 112 px unless --frames / --img-size), kinetics:PATH, mini-kinetics:PATH, "
                   "ssv2:PATH, ucf101:PATH, hmdb51:PATH (docs/video.md), cifar10:PATH, cifar100:PATH, "
                   "cub:PATH (CUB-200-2011 release files), openimages:ROOT (wsolevaluation layout) (docs/wsol.md) "
                   "(default: %(default)s)")
    p.add_argument("--task", default=None, help="label to learn, for datasets with several (dsprites: "
                   "color, shape, scale, orientation, posx, posy; default shape)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: the optimizer's own: sgd, sgdp 0.1; adam, adamw, adamp 1e-3)")
    p.add_argument("--opt", default=d.opt, help="optimizer: sgd, adam, adamw, adamp, sgdp")
    p.add_argument("--weight-decay", "--wd", type=float, default=d.weight_decay,
                   help="weight decay (never applied to 1-D tensors or position embeddings / class tokens)")
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs)
    p.add_argument("--schedule", default=d.schedule, choices=["cosine", "constant"])
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument("--reg", default=None, metavar="NAME[,NAME]",
                   help="regularizers: ls, mixup, cutmix, cutout, fgsm-at; for video: videomix-s, videomix-t, "
                   "videomix-st, video-mixup, frame-cutmix (ls means --label-smoothing 0.1 unless that is given)")
    p.add_argument("--reg-off-epochs", type=int, default=d.reg_off_epochs, metavar="N",
                   help="turn the batch regularizer (--reg mixers, --relabel-cutmix) off for the last N epochs "
                   "(ReLabel's recipe: 5); label smoothing stays")
    p.add_argument("--lr-mult", action="append", default=None, metavar="PATTERN=K",
                   help="learning rate x K for the parameters whose name matches the glob PATTERN (fnmatch over "
                   "the whole name, e.g. 'fc.*=10' for a WSOL classifier); repeatable, the first match wins")
    p.add_argument("--randaugment", default=None, metavar="N,M",
                   help="torchvision RandAugment with N operations of magnitude M (0..30) on training images")
    p.add_argument("--color-jitter", type=float, default=None, metavar="S",
                   help="torchvision ColorJitter(brightness=S, contrast=S, saturation=S) on training images")
    p.add_argument("--lighting", type=float, default=None, metavar="ALPHA",
                   help="AlexNet-style PCA lighting noise with standard deviation ALPHA (ImageNet recipes: 0.1)")
    p.add_argument("--repeated-aug", type=int, default=d.repeated_aug, metavar="K",
                   help="DeiT repeated augmentation: each epoch samples n/K images K times each, differently "
                   "augmented, the copies dealt to different processes (DeiT: 3)")
    p.add_argument("--relabel", default=None, metavar="DIR", help="train on ReLabel soft targets: label maps from "
                   "`cuekit relabel generate` (or the original release's folder), random crops + LabelPooling")
    p.add_argument("--relabel-mode", default="original", choices=["original", "topk"],
                   help="the paper's softmax over all classes (unstored ones filled with 0), or over the stored "
                   "top-k classes only")
    p.add_argument("--relabel-cutmix", type=float, default=None, metavar="ALPHA",
                   help="CutMix with ReLabel: targets mixed by the pasted area")
    p.add_argument("--relabel-transpose", action="store_true",
                   help="read the label maps transposed (rows = x): for maps that `cuekit relabel check` finds "
                   "stored in the other (x, y) order")
    p.add_argument("--relabel-cutmix-target", default="crop", choices=["crop", "box"],
                   help="the pasted part's target: the partner's whole-crop target (the paper's recipe) or the "
                   "partner's map pooled over the pasted box")
    p.add_argument("--clip-grad", type=_optional_float, default=d.clip_grad, help="max gradient norm")
    p.add_argument("--amp", default=d.amp, choices=["auto", "on", "off"], help="mixed precision (auto: on for CUDA)")
    p.add_argument("--accum-steps", type=int, default=d.accum_steps, help="gradient accumulation steps")
    p.add_argument("--ema-decay", type=_optional_float, default=d.ema_decay, help="EMA of weights, e.g. 0.999")
    p.add_argument("--teacher", default=None, metavar="CKPT",
                   help="DeiT hard distillation for a model with a distillation head (pit_*_distilled): a trained "
                   "classifier checkpoint (model.safetensors of `cuekit train` or `cuekit models convert`) whose "
                   "argmax trains the distillation head; the class head learns the labels (loss 0.5 + 0.5). "
                   "Without it both heads learn the labels")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint, exactly (random states included); "
                   "only --epochs, --accum-steps, --amp, --device, --workers and --no-progress may differ from the "
                   "run's (docs/training.md)")
    p.add_argument("--train-size", type=int, default=None,
                   help="seeded training subset (dsprites default 20000; real data: all)")
    p.add_argument("--val-size", type=int, default=None)
    p.add_argument("--val-split", type=float, default=d.val_split,
                   help="fraction held out for validation when the data has no val split")
    p.add_argument("--img-size", type=int, default=None,
                   help="input resolution (default: the dataset's own; 224 px for folder: data)")
    p.add_argument("--frames", type=int, default=None,
                   help="video data: frames per clip (default: the dataset's)")
    _video_file_flags(p)
    p.add_argument("--workers", type=int, default=d.workers, help="DataLoader worker processes")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--check-data", action="store_true",
                   help="before training, open every file of the data once (in parallel) and stop with the list of "
                   "unreadable ones (`cuekit data check` runs the same check alone)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="check the files first (as --check-data) and train without the unreadable ones, with their "
                   "count at the end")
    p.set_defaults(func=_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint on a dataset",
                       description="Loss, top-1 and top-5 accuracy of a checkpoint on the validation split "
                       "of a dataset (the one it was trained on by default).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--ckpt", required=True, help="model.safetensors written by `cuekit train`")
    e.add_argument("--data", default=None, help="dataset spec (default: the checkpoint's)")
    e.add_argument("--task", default=None, help="default: the checkpoint's")
    e.add_argument("--val-size", type=int, default=None, help="validation images (default: the training run's)")
    e.add_argument("--seed", type=int, default=None, help="data seed (default: the training run's)")
    e.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    e.add_argument("--split", type=int, default=None, metavar="N",
                   help="ucf101 / hmdb51: the official split 1-3 whose test list is evaluated (default: the "
                   "checkpoint's)")
    e.add_argument("--clips", type=int, default=None, metavar="N",
                   help="video models: multi-clip testing, N clips uniformly spaced over each video (e.g. 10); the "
                   "softmax is averaged over clips x crops, and --batch-size counts views (default 1: the centre "
                   "clip, as validation in training)")
    e.add_argument("--crops", type=int, default=None, metavar="N",
                   help="video models: N crops of each clip along the long side, at the shorter side resized to the "
                   "crop size (3: SlowFast's testing; default 1: the centre crop of validation)")
    e.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    e.add_argument("--out", default=None, help="folder for results.json (default: print only)")
    e.set_defaults(func=_eval)

    r = sub.add_parser("predict", help="top-k predictions for image (or video) files",
                       description="Classify image files with a checkpoint; prints the top-k class names. A video "
                       "model's checkpoint takes video files or folders of frame images (its centre clip).",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("--ckpt", required=True, help="model.safetensors written by `cuekit train`")
    r.add_argument("images", nargs="+", metavar="INPUT", help="image files; for a video model, videos or frame folders")
    r.add_argument("--topk", type=int, default=5)
    r.add_argument("--device", default="auto")
    r.add_argument("--out", default=None, help="folder for results.json")
    r.set_defaults(func=_predict)


def _video_file_flags(p: argparse.ArgumentParser) -> None:
    """--stride, --flip / --no-flip, --split: options of the datasets read from video files."""
    p.add_argument("--stride", type=int, default=None, metavar="K",
                   help="video files: frames sampled K frames apart (default: the dataset's, 2); kept in the "
                   "checkpoint and reused by `cuekit eval` and `cuekit predict`")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_const", const=True, default=None,
                      help="video files: flip training clips horizontally at random (the default, except for ssv2)")
    flip.add_argument("--no-flip", dest="flip", action="store_const", const=False,
                      help="video files: never flip training clips (the default for ssv2, whose labels say 'left "
                      "to right')")
    p.add_argument("--split", type=int, default=None, metavar="N",
                   help="ucf101 / hmdb51: which of the three official train/test splits (1-3, default 1)")


def _train(args: argparse.Namespace) -> int:
    from cuekit.io import format_table
    from cuekit.train.config import TrainConfig
    from cuekit.train.engine import train

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    kw = {k: v for k, v in vars(args).items() if k in fields}
    cfg = TrainConfig(**kw, progress=not args.no_progress)
    data = batch_transform = None
    if args.relabel:
        from cuekit.relabel.training import relabel_training

        data, batch_transform = relabel_training(cfg, args.relabel, mode=args.relabel_mode,
                                                 cutmix_alpha=args.relabel_cutmix,
                                                 partner_target=args.relabel_cutmix_target,
                                                 transpose=args.relabel_transpose)
    skipped: list[tuple[str, str]] = []
    if args.check_data or args.skip_bad_images:
        from cuekit.data.check import check_before_training
        from cuekit.data.registry import create_dataset

        if data is None:  # the data the engine would build, built here so that its files are checked first
            data = create_dataset(cfg.data, task=cfg.task, img_size=cfg.img_size, train_size=cfg.train_size,
                                  val_size=cfg.val_size, seed=cfg.seed, val_split=cfg.val_split, frames=cfg.frames,
                                  **cfg.data_options())
        data, skipped = check_before_training(data, skip_bad=args.skip_bad_images, progress=not args.no_progress)
    res = train(cfg, data=data, batch_transform=batch_transform)
    if res.history:
        cols = ["epoch", "train_loss", "val_loss", "val_acc"]
        print(format_table(cols, [[h[c] for c in cols] for h in res.history]))
    if skipped:
        print(f"skipped {len(skipped)} unreadable file(s) of {data.name} (listed before training)")
    print(f"run written to {res.out_dir}")
    return 0


def _load(ckpt: str, device: str):
    from cuekit.models.registry import model_from_checkpoint
    from cuekit.train.distributed import resolve_device

    model, meta = model_from_checkpoint(ckpt)
    dev = resolve_device(device)
    return model.to(dev), meta, dev


def _eval(args: argparse.Namespace) -> int:
    from cuekit.data.registry import check_model_fits_data, create_dataset
    from cuekit.io import format_table, write_results
    from cuekit.train.engine import evaluate

    model, meta, dev = _load(args.ckpt, args.device)
    cfg = meta.get("config", {})
    spec = args.data or meta.get("data")
    check_model_fits_data(meta.get("model"), spec)  # before any data is built
    same_data = spec.partition(":")[0] == str(meta.get("data") or "").partition(":")[0]
    # the checkpoint's clip stride and split, for data of the same kind; --split overrides the split
    options = {"stride": meta.get("stride"), "split": meta.get("split")} if same_data else {}
    if args.split is not None:
        options["split"] = args.split
    data = create_dataset(spec, task=args.task or meta.get("task"), img_size=meta.get("img_size"),
                          train_size=cfg.get("train_size"), val_size=args.val_size or cfg.get("val_size"),
                          seed=cfg.get("seed", 0) if args.seed is None else args.seed,
                          val_split=cfg.get("val_split", 0.1), frames=meta.get("frames"), **options)
    if data.num_classes != meta["num_classes"]:
        from cuekit.errors import DataError

        raise DataError(f"{spec} has {data.num_classes} classes but the checkpoint predicts {meta['num_classes']}")
    val, views = data.val, {}
    if args.clips is not None or args.crops is not None:
        from cuekit.errors import UsageError

        if data.frames is None:
            raise UsageError(f"--clips / --crops are multi-view testing of video models; {spec} is image data")
        from cuekit.data.video_folders import with_test_views

        views = {"clips": 1 if args.clips is None else args.clips, "crops": 1 if args.crops is None else args.crops}
        val = with_test_views(val, views["clips"], views["crops"])
    ev = evaluate(model, val, args.batch_size, dev, args.workers, multi_view=bool(views))
    cols, rows = ["data", "n", "loss", "top1", "top5"], [[spec, ev["n"], ev["loss"], ev["acc"], ev["top5"]]]
    if views:
        cols.insert(2, "views")
        rows[0].insert(2, f"{views['clips']} clips x {views['crops']} crops")
    result = {"ckpt": str(args.ckpt), "data": spec, **views, "stride": getattr(data, "stride", None), **ev}
    if args.out:
        print(write_results(args.out, result, cols, rows))
    else:
        print(format_table(cols, rows))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import torch

    from cuekit.data.preprocess import load_clip_tensor, load_image_tensor
    from cuekit.io import format_table, write_results

    model, meta, dev = _load(args.ckpt, args.device)
    load_input = load_clip_tensor if meta.get("frames") else load_image_tensor  # a video model takes clips
    names = meta.get("class_names") or [str(i) for i in range(meta["num_classes"])]
    k = max(1, min(args.topk, meta["num_classes"]))
    rows, results = [], []
    for path in args.images:
        with torch.no_grad():
            probs = model(load_input(path, meta).to(dev)).softmax(-1)[0].cpu()
        p, idx = probs.topk(k)
        preds = [{"class": names[i], "index": int(i), "prob": float(q)} for q, i in zip(p, idx)]
        results.append({"image": str(path), "top": preds})
        rows += [[str(path) if j == 0 else "", j + 1, pr["class"], pr["prob"]] for j, pr in enumerate(preds)]
    cols = ["image", "rank", "class", "prob"]
    if args.out:
        print(write_results(args.out, {"ckpt": str(args.ckpt), "predictions": results}, cols, rows))
    else:
        print(format_table(cols, rows))
    return 0
