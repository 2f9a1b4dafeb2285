"""`cuekit wcst audit|flatness|abundance|complexity`: which shortcut cue a model chooses, and why."""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_CUES = "color,shape,scale,orientation"


def _csv_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def _float_list(text: str | None) -> list[float] | None:
    from cuekit.errors import UsageError

    if not text:
        return None
    try:
        return [float(t) for t in _csv_list(text)]
    except ValueError:
        raise UsageError(f"expected comma-separated numbers, got {text!r}") from None


def _add_data_args(p: argparse.ArgumentParser, offdiag_train: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default="dsprites",
                   help="dsprites (built in), utkface:FOLDER (files [age]_[gender]_[race]_[date].jpg) or "
                   "csv:ATTRS.csv (one row per image: a file column and one column per cue)")
    g.add_argument("--images", default=None, help="for csv data: folder the file column is relative to "
                   "(default: the CSV's folder)")
    g.add_argument("--ordinal", default="", help="for csv data: comma-separated cues to cut into equal-count bins")
    g.add_argument("--categorical", default="", help="for csv data: comma-separated cues whose values are classes")
    g.add_argument("--cues", default=DEFAULT_CUES,
                   help="comma-separated cues (>= 2): dsprites color,shape,scale,orientation,posx,posy; "
                   "utkface ethnicity,gender,age; csv: its column names")
    g.add_argument("--img-size", type=int, default=None, help="image side in pixels (default: 64)")
    g.add_argument("--train-per-class", type=int, default=500,
                   help="diagonal training images per class (level)")
    g.add_argument("--valid-per-class", type=int, default=100,
                   help="validation images per class, for the diagonal and every off-diagonal set")
    if offdiag_train:
        g.add_argument("--offdiag-train-per-class", type=int, default=None,
                       help="off-diagonal training images per class added for each cue's solution "
                       "(default: --train-per-class)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the sampling of the sets")


def _add_fit_args(p: argparse.ArgumentParser, model_help: str = "convnet (the audit's small CNN), a registry "
                  "model name or mlp") -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", default="resnet20", help=model_help)
    g.add_argument("--epochs", type=int, default=10)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=1e-3)
    g.add_argument("--opt", default="adam", help="optimizer name (adam, sgd, adamw, adamp, sgdp)")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")


def _add_run_args(p: argparse.ArgumentParser, command: str, seeds: int = 3) -> None:
    g = p.add_argument_group("runs")
    g.add_argument("--seeds", type=int, default=seeds, help="independent runs (seeds 0..N-1)")
    g.add_argument("--workers", type=int, default=1, help="worker processes running seeds / cues in parallel")
    g.add_argument("--out", default=f"runs/wcst/{command}", help="folder for results.json, results.txt, PNGs")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `wcst` command group."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("wcst", help="shortcut-cue audit (WCST-ML): which cue a model chooses, and why",
                       description="Cue-conflict audits after 'Which Shortcut Cues Will DNNs Choose?' (ICLR 2022). "
                       "The diagonal set holds images where every chosen cue is at the same level, so each cue "
                       "explains the labels equally; the off-diagonal set of cue k holds the others, labelled by "
                       "cue k. A model trained on the diagonal set reveals on the off-diagonal sets which cue it "
                       "adopted.")
    wsub = p.add_subparsers(dest="wcst_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    a = wsub.add_parser("audit", formatter_class=fmt, help="cue preference: train on the diagonal, test off it",
                        description="Train each model on the diagonal set (--seeds runs) and measure, after every "
                        "epoch, its accuracy on every cue's off-diagonal set. The cue with the highest accuracy is "
                        "the adopted one; the preference order is by mean accuracy over seeds. Writes "
                        "results.json, results.txt and preference_<model>.png.")
    _add_data_args(a, offdiag_train=False)
    _add_fit_args(a, "comma-separated models: convnet (the audit's small CNN), registry names (resnet20, "
                  "vit_nano, ...) or mlp")
    _add_run_args(a, "audit")
    a.set_defaults(func=_audit)

    f = wsub.add_parser("flatness", formatter_class=fmt, help="flatness of each cue's solution",
                        description="For every cue k train a cue-k solution (diagonal + cue k's off-diagonal "
                        "samples, so only cue k explains all of it), then move its weights along random directions "
                        "normalised filter by filter (Li et al. 2018; 1-D parameters fixed) to radii r > 0 "
                        "(--directions per radius) and record the loss increase on the diagonal set; also a "
                        "Hutchinson estimate of the Hessian trace. Lower = flatter. Writes flatness.png.")
    _add_data_args(f, offdiag_train=True)
    _add_fit_args(f)
    _add_run_args(f, "flatness", seeds=1)
    g = f.add_argument_group("probe")
    g.add_argument("--radii", default="0.1,0.25,0.5", help="comma-separated radii > 0, relative to each filter's "
                   "norm (filter-normalised directions)")
    g.add_argument("--directions", type=int, default=5, help="random directions (each measured at every radius)")
    g.add_argument("--probes", type=int, default=8, help="Hutchinson probe vectors")
    g.add_argument("--eval-samples", type=int, default=512, help="diagonal training images the loss is measured on")
    f.set_defaults(func=_flatness)

    b = wsub.add_parser("abundance", formatter_class=fmt, help="how much of parameter space leads to each cue",
                        description="rerun: perturb each cue's solution by radius r (filter-normalised direction) "
                        "and re-train on the diagonal set; which cue does it land on (public code's radius re-run). "
                        "census: train many random "
                        "initialisations on the diagonal set and count the adopted cues (cuekit's addition, not in "
                        "the paper). Writes radius_rerun.png and/or census.png.")
    _add_data_args(b, offdiag_train=True)
    _add_fit_args(b)
    _add_run_args(b, "abundance", seeds=1)
    g = b.add_argument_group("probe")
    g.add_argument("--mode", choices=("rerun", "census", "both"), default="both")
    g.add_argument("--radii", default="0.25,0.5,1", help="comma-separated radii for rerun, relative to each "
                   "filter's norm (filter-normalised directions)")
    g.add_argument("--repeats", type=int, default=2, help="re-runs per radius")
    g.add_argument("--rerun-epochs", type=int, default=None, help="epochs of each re-run (default: --epochs)")
    g.add_argument("--inits", type=int, default=10, help="random initialisations for the census")
    b.set_defaults(func=_abundance)

    c = wsub.add_parser("complexity", formatter_class=fmt, help="a Kolmogorov-complexity proxy of each cue (ours)",
                        description="Extra compressed bytes (zlib, bz2, LZMA) needed to describe how an image changes "
                        "when only the cue changes level: cue-only renderings for dsprites, per-level mean images "
                        "otherwise. This proxy is cuekit's own; the paper's is not public. Give --preference "
                        "(an audit's results.json) to correlate complexity with preference. Writes complexity.png.")
    _add_data_args(c, offdiag_train=False)
    g = c.add_argument_group("proxy")
    g.add_argument("--method", choices=("renderings", "level_means"), default=None,
                   help="default: renderings for dsprites, level_means otherwise")
    g.add_argument("--codecs", default="zlib,bz2,lzma")
    g.add_argument("--bases", type=int, default=32, help="random base images (renderings)")
    g.add_argument("--bits", type=int, default=4, help="bits kept per pixel of the mean images (level_means)")
    g.add_argument("--preference", default=None, help="results.json of `cuekit wcst audit` to correlate with")
    g.add_argument("--abundance", default=None,
                   help="results.json of `cuekit wcst abundance` to correlate with (census fractions and the "
                   "radius re-run's stay-on-cue fraction averaged over radii)")
    g.add_argument("--out", default="runs/wcst/complexity", help="folder for results.json, results.txt, PNG")
    c.set_defaults(func=_complexity)


def _build_data(args, offdiag_train: int | None = 0):
    from cuekit.wcst.datasets import build_cue_conflict, open_source

    source = open_source(args.data, image_root=args.images, ordinal=_csv_list(args.ordinal),
                         categorical=_csv_list(args.categorical))
    return build_cue_conflict(source, _csv_list(args.cues), train_per_class=args.train_per_class,
                              valid_per_class=args.valid_per_class, offdiag_train_per_class=offdiag_train,
                              offdiag_valid_per_class=args.valid_per_class, seed=args.data_seed,
                              img_size=args.img_size)


def _settings(args, model: str | None = None, epochs: int | None = None):
    from cuekit.wcst.runs import FitSettings

    s = FitSettings(model=model or args.model, epochs=epochs or args.epochs, batch_size=args.batch_size, lr=args.lr,
                    opt=args.opt, weight_decay=args.weight_decay, device=args.device)
    s.validate()
    return s


def _check_seeds(args) -> None:
    from cuekit.errors import UsageError

    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k != "func"}


def _audit(args) -> int:
    from cuekit.io import write_results
    from cuekit.wcst.preference import plot_learning_curves, run_preference

    _check_seeds(args)
    models = _csv_list(args.model)
    settings = [_settings(args, m) for m in models]
    data = _build_data(args)
    out = Path(args.out)
    results, rows, plots = {}, [], []
    for s in settings:
        res = run_preference(data, s, range(args.seeds), args.workers, progress=not args.no_progress)
        results[s.model] = res
        summ = res["summary"]
        for rank, cue in enumerate(summ["order"], start=1):
            rows.append([s.model, rank, cue, summ["mean"][cue], summ["std"][cue],
                         f"{summ['adoption'][cue]}/{args.seeds}"])
        plots.append(plot_learning_curves(res, data.cues, out / f"preference_{s.model}.png").name)
    table = write_results(out, {"command": "wcst audit", "config": _config(args), "data": data.summary(),
                                "results": results, "plots": plots},
                          ["model", "rank", "cue", "offdiag_acc_mean", "offdiag_acc_std", "adopted"], rows)
    print(table)
    for m, res in results.items():
        undecided = res["summary"]["undecided"]
        note = f"; {undecided} run(s) adopted no single cue above chance" if undecided else ""
        print(f"preference order ({m}): {' > '.join(res['summary']['order'])}  (chance {res['chance']:.3f}{note})")
    print(f"wrote {out / 'results.json'} and {', '.join(plots)}")
    return 0


def _flatness(args) -> int:
    from cuekit.io import write_results
    from cuekit.wcst.flatness import plot_flatness, run_flatness

    _check_seeds(args)
    settings = _settings(args)
    data = _build_data(args, args.offdiag_train_per_class if args.offdiag_train_per_class is not None
                       else args.train_per_class)
    res = run_flatness(data, settings, range(args.seeds), radii=_float_list(args.radii), directions=args.directions,
                       probes=args.probes, max_eval=args.eval_samples, workers=args.workers,
                       progress=not args.no_progress)
    out = Path(args.out)
    plot = plot_flatness(res, out / "flatness.png")
    nan = (float("nan"), float("nan"))
    rows = [[cue, s["sharpness"][0], s["sharpness"][1], *s.get("hessian_trace", nan), s["own_cue_acc"][0]]
            for cue, s in res["summary"].items()]
    table = write_results(out, {"command": "wcst flatness", "config": _config(args), "data": data.summary(),
                                "results": res, "plots": [plot.name]},
                          ["cue_solution", "loss_increase_mean", "loss_increase_std", "hessian_trace_mean",
                           "hessian_trace_std", "own_cue_acc"], rows)
    print(table)
    print(f"flattest first: {' > '.join(res['flatness_order'])}  (own_cue_acc: accuracy of each solution on its "
          "own cue's off-diagonal set; low = it did not learn that cue)")
    print(f"wrote {out / 'results.json'} and {plot.name}")
    return 0


def _abundance(args) -> int:
    from cuekit.io import write_results
    from cuekit.wcst.abundance import (
        CENSUS_LABEL,
        plot_census,
        plot_radius_rerun,
        run_census,
        run_radius_rerun,
    )

    _check_seeds(args)
    settings = _settings(args)
    data = _build_data(args, args.offdiag_train_per_class if args.offdiag_train_per_class is not None
                       else args.train_per_class)
    out = Path(args.out)
    results, rows, plots = {}, [], []
    if args.mode in ("rerun", "both"):
        radii = _float_list(args.radii)
        if not radii or min(radii) < 0:
            from cuekit.errors import UsageError

            raise UsageError(f"--radii must be numbers >= 0, got {args.radii!r}")
        rerun = _settings(args, epochs=args.rerun_epochs or args.epochs)
        res = run_radius_rerun(data, settings, rerun, range(args.seeds), radii, repeats=args.repeats,
                               workers=args.workers, progress=not args.no_progress)
        results["radius_rerun"] = res
        plots.append(plot_radius_rerun(res, out / "radius_rerun.png").name)
        for cue, landing in res["landing"].items():
            for r, row in zip(res["radii"], landing):
                rows.append(["rerun", f"from {cue}", round(r, 3), *row])
    if args.mode in ("census", "both"):
        from cuekit.errors import UsageError

        if args.inits < 1:
            raise UsageError(f"--inits must be >= 1, got {args.inits}")
        res = run_census(data, settings, args.inits, workers=args.workers, progress=not args.no_progress)
        results["census"] = res
        plots.append(plot_census(res, out / "census.png").name)
        rows.append(["census", f"{args.inits} inits", "", *[res["fractions"][c] for c in data.cues]])
    table = write_results(out, {"command": "wcst abundance", "config": _config(args), "data": data.summary(),
                                "results": results, "plots": plots},
                          ["probe", "start", "radius", *[f"landed_{c}" for c in data.cues]], rows)
    print(table)
    if "census" in results:
        print(f"census: {CENSUS_LABEL}")
    print(f"wrote {out / 'results.json'} and {', '.join(plots)}")
    return 0


def _complexity(args) -> int:
    import json

    from cuekit.errors import DataError
    from cuekit.io import write_results
    from cuekit.wcst.complexity import correlate, cue_complexity, plot_complexity

    data = _build_data(args)
    res = cue_complexity(data, method=args.method, codecs=_csv_list(args.codecs), bases=args.bases, bits=args.bits,
                         seed=args.data_seed)
    correlations = {}
    if args.preference:
        try:
            pref = json.loads(Path(args.preference).read_text())
            for model, r in pref["results"].items():
                correlations[model] = correlate(res, r["summary"]["mean"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"--preference {args.preference}: not a `cuekit wcst audit` results.json ({e})") from None
    res["correlation_with_preference"] = correlations
    abundance_corr = {}
    if args.abundance:
        try:
            ab = json.loads(Path(args.abundance).read_text())["results"]
            if "census" in ab:
                abundance_corr["census"] = correlate(res, ab["census"]["fractions"])
            if "radius_rerun" in ab:
                rr = ab["radius_rerun"]
                stay = {c: sum(row[rr["cues"].index(c)] for row in rows) / len(rows)
                        for c, rows in rr["landing"].items()}
                if len(stay) >= 2:
                    abundance_corr["radius_rerun"] = correlate(res, stay)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as e:
            raise DataError(f"--abundance {args.abundance}: not a `cuekit wcst abundance` results.json ({e})") from None
    res["correlation_with_abundance"] = abundance_corr
    out = Path(args.out)
    plot = plot_complexity(res, out / "complexity.png")
    codecs = list(res["cost"])
    rows = [[cue, *[res["cost"][c][cue] for c in codecs], res["mean_rank"][cue]] for cue in data.cues]
    table = write_results(out, {"command": "wcst complexity", "config": _config(args), "data": data.summary(),
                                "results": res, "plots": [plot.name]},
                          ["cue", *[f"{c}_bytes" for c in codecs], "mean_rank"], rows)
    print(table)
    print(res["label"])
    for codec, order in res["order"].items():
        print(f"simplest first ({codec}): {' < '.join(order)}")
    for model, corr in correlations.items():
        print(f"Spearman(complexity, preference of {model}): "
              + ", ".join(f"{c} {v:+.2f}" for c, v in corr.items()) + "  (the paper's account predicts < 0)")
    for probe, corr in abundance_corr.items():
        print(f"Spearman(complexity, abundance by {probe}): "
              + ", ".join(f"{c} {v:+.2f}" for c, v in corr.items()) + "  (the paper's account predicts < 0)")
    print(f"wrote {out / 'results.json'} and {plot.name}")
    return 0
