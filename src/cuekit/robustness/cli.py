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
    from cuekit.robustness.ood import ENERGY_TEMPERATURE, FOLDER_FITS, ODIN_EPSILON, ODIN_TEMPERATURE, OOD_SCORES

    g = p.add_argument_group("evaluation")
    g.add_argument("--corrupted-data", default=None, metavar="SPEC",
                   help="precomputed corrupted test sets to evaluate instead of generating corruptions: "
                   "cifar10-c:PATH, cifar100-c:PATH (<corruption>.npy + labels.npy) or imagenet-c:PATH "
                   "(<corruption>/<severity>/<wnid>/*.JPEG); --data is then the matching clean data")
    g.add_argument("--corruptions", default="common",
                   help="common (the 15 of the benchmark), all (+ speckle_noise, gaussian_blur, spatter, saturate), "
                   "available (every corruption in --corrupted-data), or a comma-separated list")
    g.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities 1..5")
    g.add_argument("--preset", default="auto", choices=["auto", "cifar", "imagenet"],
                   help="generated corruptions' parameters: CIFAR-C (32 px) or ImageNet-C (224 px); auto picks by "
                   "image size")
    g.add_argument("--corruption-images", type=int, default=None, metavar="N",
                   help="measure the corruptions on the first N images of each set (default: all)")
    g.add_argument("--data-workers", type=int, default=0,
                   help="processes decoding ImageNet-C images (0: in the main process)")
    g.add_argument("--ood", default="blobs,gaussian,uniform,shapes-loc",
                   help="OOD sets: blobs, gaussian, uniform, a dataset spec (shapes-loc, dsprites, ...) or folder:PATH")
    g.add_argument("--ood-fit", default="resize-crop", choices=list(FOLDER_FITS),
                   help="how folder:PATH OOD images are fitted to the in-distribution size: resize-crop (shorter "
                   "side resized, centre crop), resize (whole image to the square: ODIN's '(resize)' sets) or crop "
                   "(centre crop at the image's own size: ODIN's '(crop)' sets)")
    g.add_argument("--ood-scores", default=",".join(OOD_SCORES),
                   help=f"OOD scores, comma-separated: {', '.join(OOD_SCORES)} (max softmax; ODIN's temperature "
                   "scaling without and with its input perturbation; energy)")
    g.add_argument("--odin-temperature", type=float, default=ODIN_TEMPERATURE, help="ODIN's temperature T")
    g.add_argument("--odin-epsilon", type=float, default=ODIN_EPSILON,
                   help="ODIN's input perturbation in [0, 1] pixel units")
    g.add_argument("--energy-temperature", type=float, default=ENERGY_TEMPERATURE,
                   help="the energy score's temperature T")
    g.add_argument("--baseline-errors", default=None, metavar="alexnet|FILE.json",
                   help="CE / mCE relative to a table of a baseline's corruption errors instead of a baseline model: "
                   "alexnet (AlexNet's ImageNet-C errors, the usual normaliser) or a JSON file {\"errors\": "
                   "{corruption: mean error or [5 errors]}, \"clean\": error}")
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
        description="Measure classifiers on the common corruptions (generated, or the precomputed CIFAR-10-C, "
        "CIFAR-100-C and ImageNet-C sets), calibration (ECE, NLL, Brier), out-of-distribution detection (max "
        "softmax, ODIN, energy), FGSM and occlusion; train one model per regularizer.")
    gsub = group.add_subparsers(dest="robustness_command", metavar="COMMAND")
    group.set_defaults(func=lambda args: (group.print_help(), 0)[1])

    b = gsub.add_parser(
        "bench", help="train one model per regularizer and evaluate all",
        description="Trains the same model once per regularizer entry (a '+' combines regularizers, e.g. "
        "mixup+ls) on the same data and seed, evaluates every metric on the validation images, and writes "
        "OUT/results.json, OUT/results.txt and plots (reliability diagrams, accuracy vs severity and epsilon). "
        "mCE is relative to the first entry (or to --baseline-errors). With --corrupted-data the corruption "
        "measures use those precomputed sets (CIFAR-10-C, CIFAR-100-C, ImageNet-C) instead of generated ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--regularizers", default="none,ls,mixup,cutmix,cutout",
                   help="comma-separated entries from none, ls, mixup, cutmix, cutout, fgsm-at (joined with +)")
    b.add_argument("--data", default="dsprites",
                   help="dataset spec (dsprites, shapes-loc, folder:PATH, cifar100:PATH); with --corrupted-data, the "
                   "clean data of those corrupted sets")
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
        "dataset (or --data). With --baseline-ckpt, mCE is computed relative to that model; with --baseline-errors, "
        "relative to a table of errors (alexnet for ImageNet-C). With --corrupted-data the corruption measures "
        "use those precomputed sets (CIFAR-10-C, CIFAR-100-C, ImageNet-C) instead of generated ones.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--ckpt", required=True, help="model.safetensors written by `cuekit train`")
    e.add_argument("--baseline-ckpt", default=None, help="a second checkpoint: the mCE reference")
    e.add_argument("--data", default=None, help="dataset spec (default: the checkpoint's); with --corrupted-data, "
                   "the clean data of those corrupted sets (e.g. cifar100:PATH for cifar100-c:PATH)")
    e.add_argument("--task", default=None, help="default: the checkpoint's")
    e.add_argument("--val-size", type=int, default=None, help="validation images to use (default: all)")
    e.add_argument("--device", default="auto")
    e.add_argument("--out", default=None, help="output folder (default: print only)")
    e.add_argument("--no-progress", action="store_true")
    _add_eval_args(e)
    e.set_defaults(func=_eval)


def _settings(args: argparse.Namespace):
    """The evaluation settings from the flags, every input checked (corruptions, severities, OOD specs and
    scores, the precomputed corrupted sets' files, the baseline errors) before any model or data work."""
    from cuekit.data.corrupted_sets import is_corrupted_spec, open_corrupted_sets
    from cuekit.errors import UnknownChoiceError, UsageError
    from cuekit.robustness.benchmark import SuiteSettings, _check_settings
    from cuekit.robustness.corruptions import COMMON_CORRUPTIONS, CORRUPTIONS

    if is_corrupted_spec(args.data):
        raise UsageError(f"--data {args.data} is a set of corrupted copies: give it as --corrupted-data {args.data} "
                         "and the clean data as --data (e.g. cifar100:PATH for cifar100-c:PATH, folder:PATH of the "
                         "ImageNet validation images for imagenet-c:PATH)")
    source = None
    if args.corrupted_data:
        if not is_corrupted_spec(args.corrupted_data):
            raise UnknownChoiceError("corrupted data set", args.corrupted_data.partition(":")[0],
                                     ["cifar10-c", "cifar100-c", "imagenet-c"])
        source = open_corrupted_sets(args.corrupted_data)
    if args.corruptions == "available":
        if source is None:
            raise UsageError("--corruptions available names the corruptions of --corrupted-data; give that too")
        corr = list(source.available)
    elif args.corruptions == "common":
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
    if args.corruption_images is not None and args.corruption_images < 1:
        raise UsageError(f"--corruption-images must be >= 1, got {args.corruption_images}")
    if args.data_workers < 0:
        raise UsageError(f"--data-workers must be >= 0, got {args.data_workers}")
    from cuekit.robustness.ood import check_ood_specs

    check_ood_specs(_csv(args.ood))  # a missing OOD folder fails here, before any model or data work
    settings = SuiteSettings(corruptions=corr, severities=sev, preset=args.preset, n_bins=args.bins,
                             ood=_csv(args.ood), epsilons=eps or [0.0], occlusion=occl,
                             batch_size=args.eval_batch_size, seed=args.eval_seed,
                             corruption_images=args.corruption_images, ood_scores=_csv(args.ood_scores),
                             odin_temperature=args.odin_temperature, odin_epsilon=args.odin_epsilon,
                             energy_temperature=args.energy_temperature, ood_fit=args.ood_fit,
                             corrupted_data=args.corrupted_data, data_workers=args.data_workers)
    _check_settings(settings)
    if source is not None:
        source.check(corr, sev)  # every file of every set a run reads (ImageNet-C: every set's folder)
    return settings


def _baseline_errors(args: argparse.Namespace, settings) -> dict | None:
    """The --baseline-errors table, checked against the evaluated corruptions and severities (or None)."""
    if not args.baseline_errors:
        return None
    from cuekit.robustness.benchmark import corruption_errors_from_table, load_baseline_errors

    table = load_baseline_errors(args.baseline_errors)
    fake = {"clean": {"acc": 1.0}, "corruption": {"severities": list(settings.severities),
                                                   "acc": {c: [1.0] * len(settings.severities)
                                                           for c in settings.corruptions}}}
    corruption_errors_from_table({"check": fake}, table)  # a missing corruption or severity fails here
    return table


def _tables(results: dict[str, dict], mce: dict, columns: list[str], rows: list[list]) -> str:
    """The summary table, the corruption table (error per corruption and severity, CE) and the OOD table."""
    from cuekit.io import format_table
    from cuekit.robustness.benchmark import corruption_table, ood_table

    first = next(iter(results.values()))
    source = first["corruption"].get("source", "generated")
    parts = [format_table(columns, rows)]
    if first["corruption"]["acc"]:
        parts.append(f"Corruption error per severity ({source}):\n" + format_table(*corruption_table(results, mce)))
    if first["ood"]:
        parts.append("OOD detection (in-distribution: the clean validation images):\n"
                     + format_table(*ood_table(results)))
    return "\n\n".join(parts)


def _write(args, results: dict, text: str) -> None:
    from pathlib import Path

    from cuekit.io import atomic_write_text, write_results

    print(text)
    if args.out:
        write_results(args.out, results)
        atomic_write_text(Path(args.out) / "results.txt", text + "\n")
        print(f"results written to {args.out}")


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cuekit.robustness.benchmark import BenchConfig, run_benchmark
    from cuekit.train.distributed import resolve_device

    settings = _settings(args)
    table = _baseline_errors(args, settings)
    cfg = BenchConfig(regularizers=_csv(args.regularizers), data=args.data, task=args.task, model=args.model,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, opt=args.opt,
                      weight_decay=args.weight_decay, train_size=args.train_size, val_size=args.val_size,
                      img_size=args.img_size, seed=args.seed, device=str(resolve_device(args.device)),
                      progress=not args.no_progress, label_smoothing=args.label_smoothing,
                      fgsm_epsilon=args.fgsm_train_epsilon / 255)
    res = run_benchmark(cfg, settings, out_dir=Path(args.out) if args.out else None, baseline_errors=table)
    _write(args, res, _tables(res["models"], res["mce"], res["columns"], res["rows"]))
    return 0


def _load(ckpt: str, device):
    from cuekit.models.registry import model_from_checkpoint

    model, meta = model_from_checkpoint(ckpt)
    return model.to(device), meta


def _eval(args: argparse.Namespace) -> int:
    from cuekit.data.registry import check_model_fits_data, create_dataset
    from cuekit.errors import DataError, UsageError
    from cuekit.robustness.benchmark import (
        SUMMARY_COLUMNS,
        RobustnessSuite,
        _val_tensors,
        corruption_errors,
        corruption_errors_from_table,
        summary_row,
        write_plots,
    )
    from cuekit.train.distributed import resolve_device

    device = resolve_device(args.device)
    settings = _settings(args)
    if args.baseline_errors and args.baseline_ckpt:
        raise UsageError("give one mCE reference: --baseline-ckpt (a model) or --baseline-errors (a table)")
    table = _baseline_errors(args, settings)
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
                            progress=not args.no_progress, class_names=data.class_names,
                            num_classes=meta["num_classes"])
    results = {"model": suite.evaluate(model)}
    if base is not None:
        results["baseline"] = suite.evaluate(base)
    if table is not None:
        mce = corruption_errors_from_table(results, table)
    else:
        mce = corruption_errors(results, "baseline") if "baseline" in results else {}
    rows = [summary_row(k, v, mce.get(k)) for k, v in results.items()]
    if not mce:  # mCE is relative to a baseline model: say so rather than print nan
        column = SUMMARY_COLUMNS.index("mCE")
        for row in rows:
            row[column] = MCE_NEEDS_BASELINE
    out = {"ckpt": str(args.ckpt), "baseline_ckpt": args.baseline_ckpt, "baseline_errors": args.baseline_errors,
           "data": spec, "corrupted_data": args.corrupted_data, "models": results,
           "mce": mce, "settings": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in vars(settings).items()}}
    if args.out:
        from pathlib import Path

        out["plots"] = write_plots(results, Path(args.out), prefix="robustness_eval")
    _write(args, out, _tables(results, mce, SUMMARY_COLUMNS, rows))
    return 0
