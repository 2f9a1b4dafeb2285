"""`cuekit reproduce`: run every area's small reproduction and write reports/index.html."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `reproduce` command."""
    from cuekit.cli import output_file
    from cuekit.report.experiments import AREA_MODULES, DATA_KINDS
    p = sub.add_parser(
        "reproduce", help="reproduce each paper's claim on built-in data and write an HTML report",
        description="Run the experiment of every implemented area (or only the AREAs named) on built-in data "
        "(with --data, on a dataset of yours, for the areas whose experiment allows it), "
        "writing OUT/<area>/results.json and PNG plots, then OUT/index.html: per area the paper's claim, what "
        "was measured, the verdict (held / did not hold / inconclusive, from >= 3 seeds), a table and plots. "
        "--quick (default) is a smoke-scale run at 32 px meant to take about 15 minutes on 2 CPU cores; "
        "--full runs the same experiments larger (64 px). An area that fails is recorded as failed, the "
        "others still run, and the exit code is 1. Each finished run of an area is appended to "
        "OUT/<area>/partial.jsonl as it comes, kept when the area fails or is interrupted. --report-only rebuilds "
        "the page from existing results.")
    p.add_argument("areas", nargs="*", metavar="AREA",
                   help=f"areas to run (default: every implemented one): {', '.join(AREA_MODULES)}")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="quick", action="store_true", default=True,
                      help="smoke-scale run: 32 px, few steps (default)")
    mode.add_argument("--full", dest="quick", action="store_false", help="larger run: 64 px, more steps")
    p.add_argument("--out", default="reports",
                   help="output folder for index.html and one folder per area (default: reports)")
    p.add_argument("--seeds", type=int, default=3,
                   help="seeds per experiment (default: 3); fewer than 3 makes every verdict inconclusive")
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda if available, else cpu), cpu, cuda, cuda:1, ...")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="run the experiment on this dataset instead of the built-in one, for the areas whose "
                   f"experiment allows it ({', '.join(DATA_KINDS)}): a spec of `cuekit data list`, e.g. "
                   "folder:PATH or cifar10:PATH; its own train/val split is used, subsampled to the experiment's "
                   "sizes, at the experiment's image size. Other areas refuse it, before anything runs")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (default: 0)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: rebuild OUT/index.html from the results already in OUT")
    p.add_argument("--markdown", default=None, metavar="FILE", type=output_file,
                   help="also write the claims of every area in OUT as Markdown tables to FILE (for docs/results.md)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress display: one line per finished run instead")
    p.set_defaults(func=_reproduce)


def _reproduce(args: argparse.Namespace) -> int:
    import sys

    from cuekit.errors import UsageError
    from cuekit.io import format_table
    from cuekit.report.html import write_index
    from cuekit.report.runner import resolve_areas, resolve_device, run_reproduce, summary_rows

    if args.report_only:
        if args.areas or args.data:
            raise UsageError("--report-only runs nothing and takes no AREA or --data: it rebuilds the whole page")
        print(f"report written to {write_index(args.out)}")
        _write_markdown(args)
        return 0
    resolve_areas(args.areas), resolve_device(args.device)  # bad input fails before any warning
    if 1 <= args.seeds < 3:
        print(f"cuekit: warning: {args.seeds} seed(s) < 3: every verdict will be inconclusive", file=sys.stderr)
    run = run_reproduce(args.areas, out_dir=args.out, quick=args.quick, seeds=args.seeds, device=args.device,
                        workers=args.workers, progress=not args.no_progress, data=args.data)
    if run.records:
        print(format_table(*summary_rows(run)))
    else:
        print("no area is implemented yet: nothing to run")
    for area in run.failed:
        print(f"{area} failed: {run.records[area]['error']} (traceback in {run.out_dir / area / 'results.json'})")
    print(f"report written to {run.index}")
    _write_markdown(args)
    return run.exit_code


def _write_markdown(args: argparse.Namespace) -> None:
    if args.markdown:
        from cuekit.io import atomic_write_text
        from cuekit.report.markdown import results_markdown

        atomic_write_text(args.markdown, results_markdown(args.out) + "\n")
        print(f"claims written to {args.markdown}")
