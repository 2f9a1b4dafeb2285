"""`cuekit data list` and `cuekit data preview`: which datasets exist and what their samples look like."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` command group (list, preview)."""
    p = sub.add_parser("data", help="list datasets and preview their samples",
                       description="Inspect the datasets cuekit can train on: the built-in procedural ones "
                       "(no downloads) and readers for local copies of real data (NAME:PATH).")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: _no_subcommand(p))

    ls = dsub.add_parser("list", help="list dataset names", description="Print the dataset names accepted by "
                         "--data (built-in ones such as dsprites, and readers used as NAME:PATH).")
    ls.set_defaults(func=_list)

    pv = dsub.add_parser(
        "preview", help="save a labelled grid of samples as a PNG",
        description="Render a grid of training samples of a dataset, each tile titled with its label name. "
        "NAME is any dataset spec accepted by --data, e.g. dsprites or folder:PATH.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pv.add_argument("name", nargs="?", default="dsprites", help="dataset spec (see `cuekit data list`)")
    pv.add_argument("--out", default="preview.png", help="PNG file to write")
    pv.add_argument("--n", type=int, default=32, help="number of samples")
    pv.add_argument("--task", default=None, help="label to show, for datasets with several (dsprites: color, "
                    "shape, scale, orientation, posx, posy; default shape)")
    pv.add_argument("--img-size", type=int, default=None, help="resolution (default: the dataset's)")
    pv.add_argument("--frames", type=int, default=None,
                    help="video datasets: frames per clip (default: the dataset's); each clip is a row of frames")
    pv.add_argument("--seed", type=int, default=0, help="which random samples")
    pv.add_argument("--split", default="train", choices=["train", "val"], help="split to sample from")
    pv.set_defaults(func=_preview)


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


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
