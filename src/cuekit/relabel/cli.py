"""`cuekit relabel generate|show`: localized multi-label maps from a teacher (ReLabel)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `relabel` command group."""
    p = sub.add_parser("relabel", help="ReLabel: localized multi-label maps from a teacher",
                       description="ReLabel (Yun et al., CVPR'21): run a strong classifier densely to get "
                       "per-location class scores (label maps), then train with random crops whose soft "
                       "targets are pooled from the map (cuekit train --relabel DIR).")
    rs = p.add_subparsers(dest="relabel_command", metavar="COMMAND")
    g = rs.add_parser(
        "generate", help="write label maps of a dataset with a teacher",
        description="Run a GAP + linear-head classifier densely (pooling removed, the head as a 1x1 conv) over "
        "every training image and store the top-k scores and class ids of each map cell in safetensors "
        "shards (fp16 scores, int16 ids) with an index. Rerunning with the same --out resumes: finished "
        "shards are kept.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g.add_argument("--teacher", required=True,
                   help="a model.safetensors written by `cuekit train`, or a registered model name (then "
                   "--weights gives its weights)")
    g.add_argument("--weights", default=None, help="weights for a --teacher given by name (safetensors or .pt)")
    g.add_argument("--data", default="multi-shapes",
                   help="an image folder (class sub-folders; DIR/train is used if present) or a dataset spec")
    g.add_argument("--out", required=True, help="output folder for index.json and the shards")
    g.add_argument("--map-size", type=int, default=15, help="label map side (cells)")
    g.add_argument("--topk", type=int, default=5, help="classes stored per cell")
    g.add_argument("--input-size", type=int, default=None,
                   help="teacher input side for folder images (default: the teacher's training size)")
    g.add_argument("--train-size", type=int, default=None, help="built-in data: training-set size (as in train)")
    g.add_argument("--img-size", type=int, default=None, help="built-in data: image size (as in train)")
    g.add_argument("--seed", type=int, default=0, help="built-in data: seed (as in train)")
    g.add_argument("--task", default=None)
    g.add_argument("--val-split", type=float, default=0.1)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--shard-size", type=int, default=1024, help="images per shard")
    g.add_argument("--workers", type=int, default=0)
    g.add_argument("--device", default="auto")
    g.add_argument("--no-progress", action="store_true")
    g.set_defaults(func=_generate)

    c = rs.add_parser(
        "check", help="check the (x, y) order of label maps against ground-truth boxes",
        description="Pool each image's label map over its ground-truth object box, read as (x1, y1, x2, y2) "
        "(cuekit's order) and with x and y swapped, and report how often the pooled label's top class is the "
        "image's class under each order. The order that agrees less is refused (exit 2): use it on the original "
        "ReLabel release before training with it. Reads a cuekit store or the release's <wnid>/<stem>.pt files "
        "(torch.load with weights_only=True: nothing is unpickled).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    c.add_argument("dir", help="label maps: a folder written by `relabel generate`, or the original release's folder")
    c.add_argument("--gt", required=True,
                   help="ground truth with boxes: a wsolevaluation metadata split folder (image_ids.txt, "
                   "class_labels.txt, image_sizes.txt, localization.txt; image ids as paths whose last two parts "
                   "name the map, e.g. train/n01440764/n01440764_10026.JPEG) or cub:PATH (CUB's train split)")
    c.add_argument("--num-classes", type=int, default=1000, help="classes of the original release's maps")
    c.add_argument("--limit", type=int, default=2000, help="check a seeded sample of this many images (0: all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--transpose", action="store_true", help="check the maps read transposed (rows = x)")
    c.add_argument("--out", default=None, help="folder for results.json")
    c.add_argument("--no-progress", action="store_true")
    c.set_defaults(func=_check)

    s = rs.add_parser("show", help="summarise a label-map store (or plot one image's map)",
                      description="Print a store's settings and size; with --image, the top class of "
                      "every cell of that image's map.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("dir", help="a folder written by `relabel generate`")
    s.add_argument("--image", default=None, help="an image name (or position) to print")
    s.set_defaults(func=_show)


def _teacher(args):
    from cuekit.errors import UnknownChoiceError, UsageError
    from cuekit.models.registry import checkpoint_metadata, list_models, model_from_checkpoint, model_info

    path = Path(args.teacher)
    if path.is_file():
        meta = checkpoint_metadata(path)
        if "model" not in meta or "num_classes" not in meta:
            raise UsageError(f"{path} has no cuekit metadata: give --teacher NAME --weights {path}")
        if meta.get("frames"):
            raise UsageError(f"{path} holds the video model {meta['model']}: label maps need an image classifier")
        return model_from_checkpoint(path)
    if args.teacher not in list_models():
        raise UnknownChoiceError("model", args.teacher, list_models())
    if model_info(args.teacher).get("input") == "video":
        raise UsageError(f"--teacher {args.teacher} is a video model: label maps need an image classifier")
    if args.weights is None:
        raise UsageError(f"--teacher {args.teacher}: give its trained weights with --weights PATH "
                         "(random weights make meaningless label maps)")
    return None, {"model": args.teacher}


def _folder_images(root: Path, size: int, mean, std):
    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from cuekit.errors import DataError

    src = root / "train" if (root / "train").is_dir() else root
    try:
        transform = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean, std)])
        folder = ImageFolder(str(src), transform=transform)
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{src}: not a class-per-folder image tree ({e})") from None
    names = [str(Path(p).relative_to(root)) for p, _ in folder.samples]
    return folder, names, len(folder.classes)


def _generate(args: argparse.Namespace) -> int:
    from cuekit.errors import UsageError
    from cuekit.io import write_results
    from cuekit.models.registry import create_model, load_checkpoint
    from cuekit.relabel.generate import generate_label_maps
    from cuekit.relabel.training import builtin_image_names
    from cuekit.train.distributed import resolve_device

    model, meta = _teacher(args)
    data_path = Path(args.data[len("folder:"):] if args.data.startswith("folder:") else args.data).expanduser()
    store_meta: dict = {"teacher": str(args.teacher)}
    if data_path.is_dir():
        size = args.input_size or meta.get("img_size") or 224
        mean = meta.get("mean") or (0.485, 0.456, 0.406)
        std = meta.get("std") or (0.229, 0.224, 0.225)
        images, names, num_classes = _folder_images(data_path, size, mean, std)
        store_meta.update(data=f"folder:{data_path}", data_root=str(data_path.resolve()), input_size=size)
    else:
        from cuekit.data.registry import create_dataset

        bundle = create_dataset(args.data, task=args.task, img_size=args.img_size, train_size=args.train_size,
                                seed=args.seed, val_split=args.val_split)
        images, num_classes = bundle.train, bundle.num_classes
        names = builtin_image_names(len(images))
        store_meta.update(data=args.data, train_size=args.train_size, img_size=args.img_size, seed=args.seed)
    if model is None:
        model = create_model(meta["model"], num_classes=num_classes)
        load_checkpoint(model, args.weights)
    if meta.get("num_classes") not in (None, num_classes):
        raise UsageError(f"the teacher has {meta['num_classes']} classes, the data {num_classes}")
    device = str(resolve_device(args.device))
    store = generate_label_maps(model, images, names, args.out, num_classes=num_classes,
                                map_size=(args.map_size, args.map_size), topk=args.topk,
                                batch_size=args.batch_size, shard_size=args.shard_size, device=device,
                                workers=args.workers, progress=not args.no_progress, meta=store_meta)
    rows = [[len(store), args.map_size, args.topk, len(store.index["shards"]), round(store.bytes_per_image(), 1)]]
    cols = ["images", "map_size", "topk", "shards", "bytes_per_image"]
    results = {"out": str(args.out), "images": len(store), "bytes_per_image": store.bytes_per_image(),
               "map_size": args.map_size, "topk": args.topk, "meta": store_meta}
    print(write_results(args.out, results, cols, rows))
    return 0


def _show(args: argparse.Namespace) -> int:
    from cuekit.io import format_table
    from cuekit.relabel.storage import LabelMapStore

    store = LabelMapStore(args.dir)
    print(format_table(["images", "classes", "topk", "map_size", "shards", "complete", "bytes_per_image"],
                       [[len(store), store.num_classes, store.topk, "x".join(map(str, store.map_size)),
                         len(store.index["shards"]), store.complete, round(store.bytes_per_image(), 1)]]))
    if args.image is not None:
        scores, indices = store[int(args.image)] if args.image.isdigit() else store.get(args.image)
        for row in indices[0].tolist():
            print(" ".join(f"{c:4d}" for c in row))
    return 0


def _check(args: argparse.Namespace) -> int:
    from cuekit.errors import UsageError
    from cuekit.io import format_table, write_results
    from cuekit.relabel.convention import check_box_order, check_label_maps
    from cuekit.relabel.storage import LabelMapStore, open_label_maps
    from cuekit.wsol.data import read_cub_metadata, read_wsol_metadata, subset_metadata

    if args.limit < 0:
        raise UsageError(f"--limit must be >= 0, got {args.limit}")
    if args.gt.startswith("cub:"):
        meta, _ = read_cub_metadata(args.gt[len("cub:"):], "train")
    else:
        meta = read_wsol_metadata(args.gt)
    meta = subset_metadata(meta, args.limit or None, args.seed)
    if args.gt.startswith("cub:"):
        from cuekit.wsol.data import image_size

        for image_id in meta.image_ids:
            meta.sizes[image_id] = image_size(meta.root / "images" / image_id)
    maps = open_label_maps(args.dir, args.num_classes)
    num_classes = maps.num_classes if isinstance(maps, LabelMapStore) else args.num_classes
    top = max(meta.labels.values(), default=-1)
    if top >= num_classes:
        raise UsageError(f"the ground truth has class {top} but the label maps have {num_classes} classes "
                         "(--num-classes)")
    report = check_label_maps(maps, meta, num_classes, transpose=args.transpose, progress=not args.no_progress)
    cols = ["read as", "agreement", "boxes", "images"]
    rows = [["(x, y)", report["xy"], report["boxes"], report["images"]],
            ["(y, x)", report["yx"], report["boxes"], report["images"]]]
    result = {"dir": str(args.dir), "gt": args.gt, "transpose": args.transpose, **report}
    if args.out:
        print(write_results(args.out, result, cols, rows))
    else:
        print(format_table(cols, rows))
    how = "read transposed" if args.transpose else "as stored"
    check_box_order(report, "xy", where=f"the label maps in {args.dir} ({how})")
    print(f"the label maps ({how}) agree with the ground truth in cuekit's (x, y) order"
          + (" (a tie: these boxes do not tell the orders apart)" if report["order"] == "tie" else ""))
    return 0
