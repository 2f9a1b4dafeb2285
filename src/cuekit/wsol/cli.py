"""`cuekit wsol train` and `cuekit wsol eval`: weakly supervised object localization."""
from __future__ import annotations

import argparse

NORM_CHOICES = "minmax, max, pas, ivr or all"


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `wsol` command group (parsers only; the work is imported in the handlers)."""
    group = sub.add_parser(
        "wsol", help="weakly supervised object localization: CAMs, normalizations, MaxBoxAcc/PxAP",
        description="Train CAM models with WSOL methods (CAM, HaS, ADL, CutMix) and evaluate their "
        "localization with the wsolevaluation metrics (MaxBoxAcc, MaxBoxAccV2, PxAP, top-1 / GT-known loc) "
        "under each CAM normalization (minmax, max, PaS, IVR).")
    wsub = group.add_subparsers(dest="wsol_command", metavar="COMMAND")

    t = wsub.add_parser(
        "train", help="train a CAM model and evaluate its localization",
        description="Train a CAM model (cam_small, cam_resnet18/50, cam_vgg16, cam_resnet20) with a WSOL method "
        "through the shared engine, then evaluate every normalization on the validation split. Writes "
        "OUT/model.safetensors and the engine's OUT/results.json, then OUT/eval/results.json, results.txt and "
        "overlays.png. "
        "Runs on the built-in shapes-loc data by default.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--model", default="cam_small", help="a cam_* model")
    t.add_argument("--data", default="shapes-loc",
                   help="shapes-loc (built in); cub:PATH (CUB-200-2011 release files: images.txt, "
                   "bounding_boxes.txt, ...); openimages:ROOT (wsolevaluation layout, masks for PxAP); or "
                   "wsol:IMAGE_ROOT with --metadata (wsolevaluation metadata: CUB, ImageNet, OpenImages)")
    t.add_argument("--metadata", default=None, help="wsolevaluation metadata folder holding train/ and test/")
    t.add_argument("--mask-root", default=None, help="folder of OpenImages masks (for PxAP)")
    t.add_argument("--method", default="cam", choices=["cam", "has", "adl", "cutmix"])
    t.add_argument("--epochs", type=int, default=8)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--opt", default="sgd")
    t.add_argument("--weight-decay", "--wd", type=float, default=5e-4)
    t.add_argument("--lr-mult", action="append", default=None, metavar="PATTERN=K",
                   help="learning rate x K for parameters whose name matches the glob PATTERN, e.g. 'fc.*=10' (the "
                   "wsolevaluation recipe's classifier x10); repeatable, first match wins")
    t.add_argument("--img-size", type=int, default=None, help="default: the dataset's (shapes-loc 64, wsol 224)")
    t.add_argument("--train-size", type=int, default=None)
    t.add_argument("--val-size", type=int, default=None)
    t.add_argument("--backbone-weights", default=None, metavar="FILE",
                   help="start from these backbone weights (the papers fine-tune an ImageNet-pretrained network): "
                   "a CAM model's checkpoint or a torchvision ResNet's (convert a .pth with `cuekit models convert "
                   "FILE --model resnet50 --to W.safetensors`); the classifier starts fresh. Default: from scratch")
    t.add_argument("--large-feature-map", action="store_true", help="remove one more stride (28x28 maps at 224)")
    t.add_argument("--has-grid-size", type=int, default=4, help="HaS cell size in pixels")
    t.add_argument("--has-drop-rate", type=float, default=0.5)
    t.add_argument("--adl-drop-rate", type=float, default=0.75)
    t.add_argument("--adl-gamma", type=float, default=0.9)
    t.add_argument("--cutmix-beta", type=float, default=1.0)
    t.add_argument("--cutmix-prob", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/wsol")
    t.add_argument("--device", default="auto")
    t.add_argument("--no-eval", action="store_true", help="skip the localization evaluation")
    t.add_argument("--no-progress", action="store_true")
    _eval_options(t)
    t.set_defaults(func=_train)

    e = wsub.add_parser(
        "eval", help="localization metrics of a CAM checkpoint, or of saved score maps",
        description="Either evaluate a checkpoint from `cuekit wsol train` (--ckpt) on its data, or score maps "
        "made by any tool (--scoremaps DIR with DIR/<image_id>.npy, values in [0, 1]) against wsolevaluation "
        "metadata (--metadata SPLIT_FOLDER). Prints a table of every normalization x metric (percent).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--ckpt", default=None, help="model.safetensors from `cuekit wsol train`")
    e.add_argument("--data", default=None, help="default: the checkpoint's data")
    e.add_argument("--val-size", type=int, default=None)
    e.add_argument("--scoremaps", default=None, help="folder of <image_id>.npy score maps to evaluate as they are")
    e.add_argument("--metadata", default=None,
                   help="with --scoremaps: a metadata split folder (image_ids.txt, ...) or cub:PATH (CUB's test "
                   "split from its release files); with --data wsol:PATH: the metadata folder holding the test/ split")
    e.add_argument("--mask-root", default=None, help="folder of OpenImages masks (PxAP)")
    e.add_argument("--out", default="runs/wsol-eval")
    e.add_argument("--device", default="auto")
    e.add_argument("--no-progress", action="store_true")
    _eval_options(e)
    e.set_defaults(func=_eval)
    group.set_defaults(func=lambda args: (group.print_help(), 0)[1])


def _eval_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--norm", default="all", help=f"normalizations to compare: {NORM_CHOICES} (comma-separated)")
    p.add_argument("--percentile", type=float, default=0.45, help="IVR's percentile q")
    p.add_argument("--cam-curve-interval", type=float, default=0.001,
                   help="score-map threshold step (1,000 thresholds)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--save-maps", action="store_true", help="save score maps as OUT/scoremaps/<norm>/<image_id>.npy")
    p.add_argument("--overlays", type=int, default=8, help="images in OUT/overlays.png (0: none)")


def _norms(text: str) -> list[str]:
    from cuekit.errors import UnknownChoiceError
    from cuekit.wsol.normalize import NORMALIZATIONS

    if text == "all":
        return list(NORMALIZATIONS)
    norms = [n.strip() for n in text.split(",") if n.strip()]
    for n in norms:
        if n not in NORMALIZATIONS:
            raise UnknownChoiceError("normalization", n, NORMALIZATIONS)
    return norms


METRIC_COLUMNS = ["maxboxacc_v2", "maxboxacc_v2_iou30", "maxboxacc_v2_iou50", "maxboxacc_v2_iou70", "maxboxacc",
                  "top1_loc", "gt_known_loc", "pxap"]


def metrics_rows(metrics: dict[str, dict]) -> tuple[list[str], list[list]]:
    """Table columns and rows (one per normalization) from {norm: {metric: value}}."""
    present = [c for c in METRIC_COLUMNS if any(c in m for m in metrics.values())]
    return ["norm", *present], [[n, *[m.get(c, float("nan")) for c in present]] for n, m in metrics.items()]


def _evaluate_and_report(model, data, meta: dict, args, out, extra: dict) -> int:
    import torch

    from cuekit.io import write_results
    from cuekit.wsol.cams import evaluate_wsol
    from cuekit.wsol.plots import save_overlays

    norms = _norms(args.norm)
    res = evaluate_wsol(model, data.val, norms, batch_size=args.eval_batch_size,
                        device=next(model.parameters()).device, percentile=args.percentile,
                        cam_curve_interval=args.cam_curve_interval,
                        save_maps=(out / "scoremaps") if args.save_maps else None, keep=args.overlays,
                        progress=not args.no_progress)
    cols, rows = metrics_rows(res["metrics"])
    plots = []
    if args.overlays > 0:
        idx = res["example_indices"]
        images = [torch.as_tensor(data.val[i][0]) for i in idx]
        gts = [data.val.localization(i)["boxes"] for i in idx]
        if all(g is not None for g in gts):
            taus = _best_thresholds(model, data, norms, args, idx)
            plots.append(save_overlays(out / "overlays.png", images, res["examples"], gts, taus,
                                       mean=data.mean, std=data.std,
                                       title="CAM score maps; green GT, red largest-contour box at the best threshold"))
    result = {**extra, "norms": norms, "percentile": args.percentile, "accuracy": res["accuracy"],
              "count": res["count"], "metrics": res["metrics"], "plots": plots}
    print(write_results(out, result, cols, rows))
    print(f"classification top-1: {res['accuracy']:.2f}% on {res['count']} images; results in {out}")
    return 0


def _best_thresholds(model, data, norms, args, idx) -> dict[str, float]:
    """Per normalization, the threshold of best MaxBoxAcc over the shown images (for the red boxes)."""
    import numpy as np
    import torch

    from cuekit.wsol.cams import compute_score_maps
    from cuekit.wsol.metrics import BoxEvaluator

    images = torch.stack([torch.as_tensor(data.val[i][0]) for i in idx]).to(next(model.parameters()).device)
    labels = torch.as_tensor([int(data.val[i][1]) for i in idx], device=images.device)
    gts = [np.asarray(data.val.localization(i)["boxes"]) for i in idx]
    out = {}
    for n in norms:
        _, maps = compute_score_maps(model, images, labels, n, percentile=args.percentile)
        ev = BoxEvaluator((50,), multi_contour=False, cam_curve_interval=args.cam_curve_interval)
        ev.accumulate(maps, gts)
        out[n] = ev.compute()["best_threshold"][50]
    return out


def _train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cuekit.wsol.pipeline import WSOLTrainConfig, train_cam

    cfg = WSOLTrainConfig(
        model=args.model, data=args.data, metadata=args.metadata, mask_root=args.mask_root, method=args.method,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, opt=args.opt, weight_decay=args.weight_decay,
        seed=args.seed, img_size=args.img_size, train_size=args.train_size, val_size=args.val_size,
        large_feature_map=args.large_feature_map, has_grid_size=args.has_grid_size,
        has_drop_rate=args.has_drop_rate, adl_drop_rate=args.adl_drop_rate, adl_gamma=args.adl_gamma,
        cutmix_beta=args.cutmix_beta, cutmix_prob=args.cutmix_prob, out=args.out, device=args.device,
        lr_mult=args.lr_mult or [], backbone_weights=args.backbone_weights,
        progress=not args.no_progress)
    result, data = train_cam(cfg)
    print(f"trained {cfg.model} with {cfg.method}: val top-1 {100 * result.final.get('val_acc', float('nan')):.2f}%")
    if args.no_eval:
        return 0
    import dataclasses

    return _evaluate_and_report(result.model, data, {}, args, Path(args.out) / "eval",
                                {"mode": "train", "config": dataclasses.asdict(cfg), "history": result.history})


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cuekit.errors import UsageError

    out = Path(args.out)
    if args.scoremaps:
        if args.ckpt:
            raise UsageError("give either --ckpt or --scoremaps, not both")
        if not args.metadata:
            raise UsageError("--scoremaps needs --metadata (a wsolevaluation split folder)")
        from cuekit.io import write_results
        from cuekit.wsol.cams import evaluate_score_map_folder

        metrics = evaluate_score_map_folder(args.scoremaps, args.metadata, args.mask_root,
                                            args.cam_curve_interval, args.eval_batch_size,
                                            progress=not args.no_progress)
        count = metrics.pop("count")
        cols, rows = metrics_rows({"as saved": metrics})
        print(write_results(out, {"mode": "scoremaps", "scoremaps": args.scoremaps, "metadata": args.metadata,
                                  "count": count, "metrics": metrics}, cols, rows))
        return 0
    if not args.ckpt:
        raise UsageError("give --ckpt (a checkpoint from `cuekit wsol train`) or --scoremaps DIR")
    from cuekit.train.distributed import resolve_device
    from cuekit.wsol.pipeline import build_wsol_data, load_cam_checkpoint

    model, meta = load_cam_checkpoint(args.ckpt, resolve_device(args.device))
    cfg = meta.get("config", {})
    spec = args.data or meta.get("data") or "shapes-loc"
    data = build_wsol_data(spec, args.metadata, args.mask_root, meta.get("img_size"), train_size=1,
                           val_size=args.val_size or cfg.get("val_size"), seed=cfg.get("seed", 0))
    return _evaluate_and_report(model, data, meta, args, out, {"mode": "checkpoint", "ckpt": str(args.ckpt),
                                                                "data": spec})
