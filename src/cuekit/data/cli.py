"""`cuekit data list|preview|check`: which datasets exist, what their samples look like, whether their files read."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group (list, preview, check)."""
    from cuekit.cli import output_file

    p = sub.add_parser("data", help="list datasets, preview their samples, check their files",
                       description="Inspect the datasets cuekit can train on: the built-in procedural ones "
                       "(no downloads) and readers for local copies of real data (NAME:PATH).")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")  # none given: cuekit.cli says so

    ls = dsub.add_parser("list", help="list dataset names", description="Print the dataset names accepted by "
                         "--data (built-in ones such as dsprites, and readers used as NAME:PATH).")
    ls.set_defaults(func=_list)

    pv = dsub.add_parser(
        "preview", help="save a labelled grid of samples as a PNG",
        description="Render a grid of training samples of a dataset, each tile titled with its label name. "
        "NAME is any dataset spec accepted by --data, e.g. dsprites or folder:PATH.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pv.add_argument("name", nargs="?", default="dsprites", help="dataset spec (see `cuekit data list`)")
    pv.add_argument("--out", default="preview.png", type=output_file, help="PNG file to write")
    pv.add_argument("--n", type=int, default=32, help="number of samples")
    pv.add_argument("--task", default=None, help="label to show, for datasets with several (dsprites: color, "
                    "shape, scale, orientation, posx, posy; default shape)")
    pv.add_argument("--img-size", type=int, default=None, help="resolution (default: the dataset's)")
    pv.add_argument("--frames", type=int, default=None,
                    help="video datasets: frames per clip (default: the dataset's); each clip is a row of frames")
    pv.add_argument("--seed", type=int, default=0, help="which random samples")
    pv.add_argument("--split", default="train", choices=["train", "val"], help="split to sample from")
    pv.set_defaults(func=_preview)

    ck = dsub.add_parser(
        "check", help="open every file of a dataset once and list the unreadable ones",
        description="Open every sample of every split of SPEC once, in parallel, as training reads it (images "
        "decoded fully, video files and frame folders frame by frame) and list each file that cannot be read, so "
        "a long run never stops mid-epoch on one. Exit code 1 when any file is unreadable. `cuekit train "
        "--check-data` runs the same check first; --skip-bad-images trains without the unreadable files.")
    ck.add_argument("name", metavar="SPEC", help="dataset spec with files: folder:PATH or video-folder:PATH "
                    "(built-in data has none)")
    ck.add_argument("--workers", type=int, default=None,
                    help="threads opening files (default: two per usable CPU, at most 32; 0: none)")
    ck.add_argument("--out", default=None, help="folder for results.json and results.txt (default: print only)")
    ck.add_argument("--no-progress", action="store_true", help="no progress bar")
    ck.set_defaults(func=_check)


def _list(args: argparse.Namespace) -> int:
    from cuekit.data import registry
    from cuekit.io import format_table

    rows = [[name, registry.dataset_description(name)] for name in registry.list_datasets()]
    print(format_table(["dataset", "description"], rows))
    return 0


def _preview(args: argparse.Namespace) -> int:
    import io
    import math
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from cuekit.data.registry import create_dataset
    from cuekit.errors import UsageError
    from cuekit.io import atomic_write_bytes

    if args.n < 1:
        raise UsageError(f"--n must be at least 1, got {args.n}")
    bundle = create_dataset(args.name, task=args.task, img_size=args.img_size, train_size=args.n, val_size=args.n,
                            seed=args.seed, frames=args.frames)
    ds = bundle.train if args.split == "train" else bundle.val
    n = min(args.n, len(ds))
    if n == 0:
        raise UsageError(f"the {args.split} split of {args.name} is empty")
    items = list(range(n))
    samples = ds.__getitems__(items) if hasattr(ds, "__getitems__") else [ds[i] for i in items]

    mean = torch.tensor(bundle.mean, dtype=torch.float32)[:, None, None]
    std = torch.tensor(bundle.std, dtype=torch.float32)[:, None, None]
    video = torch.as_tensor(samples[0][0]).dim() == 4  # (C, T, H, W) clips: one tile shows the frames in a row
    frames = torch.as_tensor(samples[0][0]).shape[1] if video else 1
    cols = min(n, 2 if video else 8)
    rows = math.ceil(n / cols)
    width = 1.6 * cols * (frames * 0.5 if video else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(width, (1.1 if video else 1.9) * rows + 0.4), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, label) in zip(axes.flat, samples):
        img = torch.as_tensor(img, dtype=torch.float32)
        if video:
            img = torch.cat(list(img.unbind(1)), dim=2)  # (C, H, T * W)
        if img.shape[0] == len(bundle.mean):  # undo the normalisation the transforms applied
            img = img * std + mean
        img = img.clamp(0, 1)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        label = int(label)
        name = bundle.class_names[label] if 0 <= label < len(bundle.class_names) else str(label)
        ax.set_title(name, fontsize=8)
    task = f", task {bundle.task}" if bundle.task else ""
    fig.suptitle(f"{args.name} ({args.split}{task}, {bundle.img_size} px)", fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    out = Path(args.out)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e}") from None
    print(f"wrote {out} ({n} samples of {args.name})")
    return 0


def _check(args: argparse.Namespace) -> int:
    from cuekit.data.check import bad_files_table, check_bundle
    from cuekit.data.registry import create_dataset, is_video_dataset
    from cuekit.errors import EXIT_FAILED
    from cuekit.io import write_results

    # The size and clip length only shape the transforms, never which files there are: fixed here, so that no
    # default is announced.
    clip = {"frames": 2} if is_video_dataset(args.name) else {}
    bundle = create_dataset(args.name, img_size=64, **clip)
    found = check_bundle(bundle, args.workers, progress=not args.no_progress)
    if found is None:
        print(f"{args.name} is not read from files (built in, or read whole when opened): nothing to check")
        return 0
    rows = [list(b) for b in found.bad]
    result = {"command": "data check", **found.as_dict()}
    if args.out:
        write_results(args.out, result, ["unreadable file", "problem"], rows)
    if found.bad:
        print(bad_files_table(found.bad))
    print(f"checked {found.checked} files of {args.name}: "
          + (f"{len(found.bad)} unreadable" if found.bad else "all readable")
          + (f"; results in {args.out}" if args.out else ""))
    return EXIT_FAILED if found.bad else 0
