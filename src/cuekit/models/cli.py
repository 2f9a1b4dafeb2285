"""`cuekit models list|info|convert|export`: the model registry from the command line."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `models` command group."""
    from cuekit.cli import output_file

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("models", help="list, inspect, convert and export registered models",
                       description="The model registry: names, parameters / MACs / throughput, checkpoint "
                       "conversion (official or timm -> cuekit safetensors) and export (ONNX, torch.export).")
    msub = p.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    ls = msub.add_parser("list", help="registered model names", formatter_class=fmt,
                         description="Registered model names with their family, default input size and what "
                         "they are. PATTERN is a glob, e.g. 'pit_*'.")
    ls.add_argument("pattern", nargs="?", default=None, metavar="PATTERN")
    ls.add_argument("--out", default=None, help="folder for results.json (default: print only)")
    ls.set_defaults(func=_list)

    info = msub.add_parser("info", help="parameters, MACs and measured throughput of a model", formatter_class=fmt,
                           description="Build NAME (random weights), count its parameters and multiply-accumulates "
                           "(torch FlopCounterMode, attention included) for one image, and measure forward "
                           "images/s on this machine.")
    info.add_argument("name", metavar="NAME")
    info.add_argument("--img-size", type=int, default=None,
                      help="input size; the model is built for it (default: the model's native size)")
    info.add_argument("--num-classes", type=int, default=1000)
    info.add_argument("--in-chans", type=int, default=3)
    info.add_argument("--batch-size", type=int, default=16, help="batch size for the throughput measurement")
    info.add_argument("--repeats", type=int, default=3, help="timed batches (median reported)")
    info.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    info.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    info.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    info.add_argument("--no-throughput", action="store_true", help="count parameters and MACs only")
    info.add_argument("--out", default=None, help="folder for results.json (default: print only)")
    info.set_defaults(func=_info)

    conv = msub.add_parser("convert", help="official / timm checkpoint -> cuekit safetensors", formatter_class=fmt,
                           description="Read a checkpoint (.pth/.pt read weights-only, or .safetensors) with the "
                           "official or timm key names, map the keys onto cuekit's, check that it loads "
                           "strictly into --model, and write safetensors (+ a .json of metadata) that "
                           "`cuekit eval/predict` and `create_model(..., checkpoint=)` read without pickle. "
                           "A .pth holding Python objects besides tensors (e.g. timm / DeiT files with their "
                           "argparse.Namespace) is refused unless --trust-pickle is given.")
    conv.add_argument("src", metavar="SRC", help="checkpoint file")
    conv.add_argument("--model", required=True, help="registered architecture, e.g. pit_s or pit_s_distilled")
    conv.add_argument("--to", required=True, help="output .safetensors path")
    conv.add_argument("--num-classes", type=int, default=None, help="default: read from the head's weight")
    conv.add_argument("--img-size", type=int, default=None,
                      help="training resolution (default: read from the position embedding)")
    conv.add_argument("--trust-pickle", action="store_true",
                      help="unpickle SRC fully (torch.load weights_only=False). This RUNS ANY CODE the file holds: "
                           "use it only for a file from a source you trust; the .safetensors written needs no pickle")
    conv.set_defaults(func=_convert)

    exp = msub.add_parser("export", help="export a model to ONNX or a torch.export program", formatter_class=fmt,
                          description="Export NAME (random weights, or --checkpoint) in eval mode with a dynamic "
                          "batch dimension at a fixed input size, then check the exported program against "
                          "eager PyTorch on a random batch. torch-export writes a .pt2 file "
                          "(torch.export.load); onnx needs the `onnx` and `onnxscript` packages.")
    exp.add_argument("name", metavar="NAME")
    exp.add_argument("--format", required=True, choices=["onnx", "torch-export"])
    exp.add_argument("--checkpoint", default=None, help="weights to load (e.g. from `models convert`)")
    exp.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's or the model's")
    exp.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's, else 1000")
    exp.add_argument("--out", default=None, type=output_file, help="output file (default: NAME.onnx / NAME.pt2)")
    exp.set_defaults(func=_export)


def _list(args: argparse.Namespace) -> int:
    from cuekit.io import format_table, write_results
    from cuekit.models import list_models, model_info

    names = list_models(args.pattern)
    rows = []
    for name in names:
        info = model_info(name)
        rows.append([name, info.get("family", ""), info.get("default_img_size", ""), info.get("description", "")])
    columns = ["model", "family", "img_size", "description"]
    if args.out:
        print(write_results(args.out, {"command": "models list", "pattern": args.pattern, "models": names},
                            columns, rows))
    else:
        print(format_table(columns, rows))
    if not names:
        print(f"no model matches {args.pattern!r}")
    return 0


def _info(args: argparse.Namespace) -> int:
    import torch

    from cuekit.errors import UsageError
    from cuekit.io import format_table, write_results
    from cuekit.models import create_model, model_info
    from cuekit.models.complexity import count_macs, count_params, measure_throughput

    meta = model_info(args.name)
    img_size = args.img_size or meta.get("default_img_size") or 224
    if args.batch_size < 1 or args.repeats < 1 or img_size < 1:
        raise UsageError("--batch-size, --repeats and --img-size must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = create_model(args.name, num_classes=args.num_classes, in_chans=args.in_chans,
                         img_size=img_size).to(args.device)
    params = count_params(model)
    macs = count_macs(model, img_size, args.in_chans)
    result = {"command": "models info", "model": args.name, "img_size": img_size, "num_classes": args.num_classes,
              "in_chans": args.in_chans, "params": params, "macs": macs, "gmacs": macs / 1e9,
              "gflops": 2 * macs / 1e9, "torch_threads": torch.get_num_threads()}
    rows = [["params", f"{params / 1e6:.2f}M"], ["MACs", f"{macs / 1e9:.3f} G"],
            ["FLOPs (2 x MACs)", f"{2 * macs / 1e9:.3f} G"], ["img_size", img_size]]
    if not args.no_throughput:
        tp = measure_throughput(model, img_size, args.batch_size, in_chans=args.in_chans, device=args.device,
                                warmup=args.warmup, repeats=args.repeats, progress=True)
        result["throughput"] = tp.as_dict()
        rows += [["images/s", f"{tp.images_per_s:.1f}"],
                 ["ms / batch", f"{tp.ms_per_batch:.1f} (batch {args.batch_size}, {tp.device}, "
                                f"{torch.get_num_threads()} threads)"]]
    columns = [args.name, "value"]
    print(write_results(args.out, result, columns, rows) if args.out else format_table(columns, rows))
    return 0


def infer_img_size(model_name: str, state: dict) -> int | None:
    """The input size a PiT / ViT checkpoint was trained at, from its position embedding (None if unknown)."""
    import torch

    from cuekit.models import create_model

    pos = state.get("pos_embed")
    if pos is None:
        return None
    with torch.device("meta"):  # the layer shapes are all we need
        probe = create_model(model_name, num_classes=1)
    conv = getattr(getattr(probe, "patch_embed", None), "conv", None) or getattr(
        getattr(probe, "patch_embed", None), "proj", None)
    if conv is None:
        return None
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    if pos.ndim == 4:       # PiT: (1, C, H, W)
        grid = pos.shape[-2]
    elif pos.ndim == 3:     # ViT: (1, 1 + H*W, D), square grid
        grid = math.isqrt(pos.shape[1] - 1)
        if grid * grid != pos.shape[1] - 1:
            return None
    else:
        return None
    return (grid - 1) * stride + kernel


def _convert(args: argparse.Namespace) -> int:
    from cuekit.errors import CheckpointError, UsageError
    from cuekit.io import format_table
    from cuekit.models import create_model, load_checkpoint, model_info, read_state_dict
    from cuekit.models.registry import key_remap
    from cuekit.train.checkpoint import save_weights

    model_info(args.model)  # unknown name -> UnknownChoiceError
    to = Path(args.to)
    if to.suffix != ".safetensors":
        raise UsageError(f"--to must end in .safetensors, got {args.to}")
    if args.trust_pickle and Path(args.src).suffix != ".safetensors":
        print(f"cuekit: warning: --trust-pickle: unpickling {args.src} runs any code it holds; do this only for "
              "a file from a source you trust", file=sys.stderr, flush=True)
    state, _ = read_state_dict(args.src, trust_pickle=args.trust_pickle)
    remap = key_remap(args.model)
    mapped = remap(state) if remap else state
    num_classes = args.num_classes
    if num_classes is None:
        head = mapped.get("head.weight")
        if head is None:
            raise CheckpointError(f"{args.src} has no head.weight; pass --num-classes")
        num_classes = int(head.shape[0])
    img_size = args.img_size or infer_img_size(args.model, mapped) or model_info(args.model).get("default_img_size")
    model = create_model(args.model, num_classes=num_classes, img_size=img_size)
    try:
        model.load_state_dict(mapped, strict=True)
    except RuntimeError as e:
        lines = str(e).strip().splitlines()
        raise CheckpointError(f"{args.src} does not fit {args.model}: {' '.join(lines[:3])}") from None
    renamed = sum(1 for a, b in zip(state, mapped) if a != b)
    metadata = {"model": args.model, "num_classes": num_classes, "in_chans": 3, "img_size": img_size,
                "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "source": str(args.src),
                "keys_renamed": renamed, "unpickled": bool(args.trust_pickle)}
    save_weights(to, model, metadata)
    load_checkpoint(create_model(args.model, num_classes=num_classes, img_size=img_size), to)  # read back
    print(format_table(["converted", "value"], [["source", args.src], ["model", args.model],
                                                ["tensors", len(mapped)], ["keys renamed", renamed],
                                                ["num_classes", num_classes], ["img_size", img_size],
                                                ["written", str(to)]]))
    return 0


def _export(args: argparse.Namespace) -> int:
    import torch

    from cuekit.errors import UsageError
    from cuekit.io import format_table
    from cuekit.models import checkpoint_metadata, create_model, load_checkpoint, model_info

    info = model_info(args.name)
    meta = checkpoint_metadata(args.checkpoint) if args.checkpoint else {}
    num_classes = args.num_classes or meta.get("num_classes") or 1000
    img_size = args.img_size or meta.get("img_size") or info.get("default_img_size") or 224
    in_chans = meta.get("in_chans", 3)
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UsageError("ONNX export needs the onnx and onnxscript packages: pip install onnx onnxscript "
                             "(or use --format torch-export)") from None
    out = Path(args.out or f"{args.name}.{'onnx' if args.format == 'onnx' else 'pt2'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    model = create_model(args.name, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint)
    model.eval()
    example = torch.randn(2, in_chans, img_size, img_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    start = time.perf_counter()
    check = torch.randn(3, in_chans, img_size, img_size)
    with torch.no_grad():
        expected = model(check)
    if args.format == "torch-export":
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, str(out))
        with torch.no_grad():
            got = torch.export.load(str(out)).module()(check)
        max_diff = (got - expected).abs().max().item()
    else:
        torch.onnx.export(model, (example,), str(out), dynamo=True, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: batch},))
        max_diff = float("nan")
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(str(out))
            got = torch.from_numpy(session.run(None, {"images": check.numpy()})[0])
            max_diff = (got - expected).abs().max().item()
        except ImportError:
            pass
    seconds = time.perf_counter() - start
    print(format_table(["export", "value"], [["model", args.name], ["format", args.format],
                                             ["input", f"(batch, {in_chans}, {img_size}, {img_size})"],
                                             ["max |exported - eager|", "not checked (no onnxruntime)"
                                              if math.isnan(max_diff) else f"{max_diff:.2e}"],
                                             ["seconds", f"{seconds:.1f}"], ["written", str(out)]]))
    return 0
