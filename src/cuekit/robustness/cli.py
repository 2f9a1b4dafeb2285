"""`cuekit robustness bench|eval`: regularizers against corruptions, calibration, OOD and FGSM."""
from __future__ import annotations

import argparse

MCE_NEEDS_BASELINE = "n/a (needs --baseline-ckpt)"


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _ints(text: str, flag: str) -> list[int]:
    from cuekit.errors import UsageError

    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _floats(text: str, flag: str) -> list[float]:
    from cuekit.errors import UsageError

    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise UsageError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("evaluation")
    g.add_argument("--corruptions", default="common",
                   help="common (the 15 of the benchmark), all (+ speckle_noise, gaussian_blur, spatter, saturate), "
                   "or a comma-separated list")
    g.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1..5")
    g.add_argument("--preset", default="auto", choices=["auto", "cifar", "imagenet"],
                   help="corruption parameters: CIFAR-C (32 px) or ImageNet-C (224 px); auto picks by image size")
    g.add_argument("--ood", default="blobs,gaussian,uniform,shapes-loc",
                   help="OOD sets: blobs, gaussian, uniform, a dataset spec (shapes-loc, dsprites, ...) or folder:PATH")
    g.add_argument("--epsilons", default="0,1,2,4,8", help="FGSM epsilons in 1/255 pixel units")
    g.add_argument("--occlusion", default="0.25,0.5,0.75",
                   help="centre / boundary occlusion sizes as fractions of the image side (the region is filled "
                   "with the per-channel mean of the evaluation images)")
    g.add_argument("--bins", type=int, default=15, help="ECE bins")
    g.add_argument("--eval-batch-size", type=int, default=256)
    g.add_argument("--eval-seed", type=int, default=0, help="seed of the corruption and OOD randomness")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `robustness bench` and `robustness eval`."""
    group = sub.add_parser(
        "robustness", help="robustness and uncertainty of regularized classifiers",
        description="Measure classifiers on the common corruptions, calibration (ECE, NLL, Brier), "
        "out-of-distribution detection (max softmax), FGSM and occlusion; train one model per regularizer.")
    gsub = group.add_subparsers(dest="robustness_command", metavar="COMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 0)[1])

    b = gsub.add_parser(
        "bench", help="train one model per regularizer and evaluate all",
        description="Trains the same model once per regularizer entry (a '+' combines regularizers, e.g. "
        "mixup+ls) on the same data and seed, evaluates every metric on the validation images, and writes "
        "OUT/results.json, OUT/results.txt and plots (reliability diagrams, accuracy vs severity and epsilon). "
        "mCE is relative to the first entry.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--regularizers", default="none,ls,mixup,cutmix,cutout",
                   help="comma-separated entries from none, ls, mixup, cutmix, cutout, fgsm-at (joined with +)")
    b.add_argument("--data", default="dsprites", help="dataset spec (dsprites, shapes-loc, folder:PATH, cifar100:PATH)")
    b.add_argument("--task", default="scale", help="label to learn (dsprites: color, shape, scale, ...)")
    b.add_argument("--model", default="small-cnn", help="small-cnn (built in) or a registered model name")
    b.add_argument("--epochs", type=int, default=4)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--lr", type=float, default=0.05)
    b.add_argument("--opt", default="sgd")
    b.add_argument("--weight-decay", type=float, default=5e-4)
    b.add_argument("--train-size", type=int, default=4000)
    b.add_argument("--val-size", type=int, default=500)
    b.add_argument("--img-size", type=int, default=32)
    b.add_argument("--label-smoothing", type=float, default=0.1, help="smoothing used by the ls entry")
    b.add_argument("--fgsm-train-epsilon", type=float, default=2.0, help="fgsm-at epsilon in 1/255 units")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto")
    b.add_argument("--out", default="runs/robustness", help="output folder")
    b.add_argument("--no-progress", action="store_true")
    _add_eval_args(b)
    b.set_defaults(func=_bench)

    e = gsub.add_parser(
        "eval", help="evaluate a checkpoint written by `cuekit train`",
        description="Every robustness and uncertainty metric of one checkpoint on the validation split of its "
        "dataset (or --data). With --baseline-ckpt, mCE is computed relative to that model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--ckpt", required=True, help="model.safetensors written by `cuekit train`")
    e.add_argument("--baseline-ckpt", default=None, help="a second checkpoint: the mCE reference")
    e.add_argument("--data", default=None, help="dataset spec (default: the checkpoint's)")
    e.add_argument("--task", default=None, help="default: the checkpoint's")
    e.add_argument("--val-size", type=int, default=None, help="validation images to use (default: all)")
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default=None, help="output folder (default: print only)")
    e.add_argument("--no-progress", action="store_true")
    _add_eval_args(e)
    e.set_defaults(func=_eval)


def _settings(args: argparse.Namespace):
    from cuekit.errors import UnknownChoiceError, UsageError
    from cuekit.robustness.benchmark import SuiteSettings
    from cuekit.robustness.corruptions import COMMON_CORRUPTIONS, CORRUPTIONS

    if args.corruptions == "common":
        corr = list(COMMON_CORRUPTIONS)
    elif args.corruptions == "all":
        corr = list(CORRUPTIONS)
    else:
        corr = _csv(args.corruptions)
        for c in corr:
            if c not in CORRUPTIONS:
                raise UnknownChoiceError("corruption", c, CORRUPTIONS)
    sev = _ints(args.severities, "--severities")
    if not sev or any(s not in (1, 2, 3, 4, 5) for s in sev):
        raise UsageError(f"--severities must be values in 1..5, got {args.severities!r}")
    eps = [e / 255 for e in _floats(args.epsilons, "--epsilons")]
    if any(e < 0 for e in eps):
        raise UsageError("--epsilons must be >= 0")
    occl = _floats(args.occlusion, "--occlusion")
    if any(not 0 <= f <= 1 for f in occl):
        raise UsageError("--occlusion sizes must be in [0, 1]")
    if args.bins < 1:
        raise UsageError("--bins must be >= 1")
    from cuekit.robustness.ood import check_ood_specs

    check_ood_specs(_csv(args.ood))  # a missing OOD folder fails here, before any model or data work
    return SuiteSettings(corruptions=corr, severities=sev, preset=args.preset, n_bins=args.bins,
                         ood=_csv(args.ood), epsilons=eps or [0.0], occlusion=occl,
                         batch_size=args.eval_batch_size, seed=args.eval_seed)


def _write(args, results: dict, columns: list[str], rows: list[list]) -> None:
    from cuekit.io import format_table, write_results

    if args.out:
        print(write_results(args.out, results, columns, rows))
        print(f"results written to {args.out}")
    else:
        print(format_table(columns, rows))


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cuekit.robustness.benchmark import BenchConfig, run_benchmark
    from cuekit.train.distributed import resolve_device

    settings = _settings(args)
    cfg = BenchConfig(regularizers=_csv(args.regularizers), data=args.data, task=args.task, model=args.model,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, opt=args.opt,
                      weight_decay=args.weight_decay, train_size=args.train_size, val_size=args.val_size,
                      img_size=args.img_size, seed=args.seed, device=str(resolve_device(args.device)),
                      progress=not args.no_progress, label_smoothing=args.label_smoothing,
                      fgsm_epsilon=args.fgsm_train_epsilon / 255)
    res = run_benchmark(cfg, settings, out_dir=Path(args.out) if args.out else None)
    _write(args, res, res["columns"], res["rows"])
    return 0


def _load(ckpt: str, device):
    from cuekit.models.registry import model_from_checkpoint

    model, meta = model_from_checkpoint(ckpt)
    return model.to(device), meta


def _eval(args: argparse.Namespace) -> int:
    from cuekit.data.registry import check_model_fits_data, create_dataset
    from cuekit.errors import DataError
    from cuekit.robustness.benchmark import (
        SUMMARY_COLUMNS,
        RobustnessSuite,
        _val_tensors,
        corruption_errors,
        summary_row,
        write_plots,
    )
    from cuekit.train.distributed import resolve_device

    device = resolve_device(args.device)
    settings = _settings(args)
    model, meta = _load(args.ckpt, device)
    if meta.get("frames"):
        from cuekit.errors import UsageError

        raise UsageError(f"{args.ckpt} holds the video model {meta.get('model')}: robustness eval measures image "
                         "classifiers")
    base = None
    if args.baseline_ckpt:  # checked before any evaluation starts
        base, base_meta = _load(args.baseline_ckpt, device)
        if base_meta["num_classes"] != meta["num_classes"]:
            raise DataError("the baseline checkpoint predicts a different number of classes")
    cfg = meta.get("config", {})
    spec = args.data or meta.get("data")
    check_model_fits_data(meta.get("model"), spec)  # before any data is built
    data = create_dataset(spec, task=args.task or meta.get("task"), img_size=meta.get("img_size"),
                          train_size=cfg.get("train_size"), val_size=args.val_size or cfg.get("val_size"),
                          seed=cfg.get("seed", 0), val_split=cfg.get("val_split", 0.1))
    if data.num_classes != meta["num_classes"]:
        raise DataError(f"{spec} has {data.num_classes} classes but the checkpoint predicts {meta['num_classes']}")
    images, labels = _val_tensors(data)
    if args.val_size:
        images, labels = images[:args.val_size], labels[:args.val_size]
    suite = RobustnessSuite(images, labels, data.mean, data.std, settings, device=device,
                            progress=not args.no_progress)
    results = {"model": suite.evaluate(model)}
    if base is not None:
        results["baseline"] = suite.evaluate(base)
    mce = corruption_errors(results, "baseline") if "baseline" in results else {}
    rows = [summary_row(k, v, mce.get(k)) for k, v in results.items()]
    if not mce:  # mCE is relative to a baseline model: say so rather than print nan
        column = SUMMARY_COLUMNS.index("mCE")
        for row in rows:
            row[column] = MCE_NEEDS_BASELINE
    out = {"ckpt": str(args.ckpt), "baseline_ckpt": args.baseline_ckpt, "data": spec, "models": results,
           "mce": mce, "settings": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in vars(settings).items()}}
    if args.out:
        from pathlib import Path

        out["plots"] = write_plots(results, Path(args.out), prefix="robustness_eval")
    _write(args, out, SUMMARY_COLUMNS, rows)
    return 0
