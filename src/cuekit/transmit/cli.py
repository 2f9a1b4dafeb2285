"""`cuekit transmit keygen|pack|verify|serve|fetch`: progressive model transmission (Lee et al., ICMLA 2021)."""
from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `transmit` command group (parsers only; aiohttp and torch are imported when a command runs)."""
    p = sub.add_parser(
        "transmit", help="progressive model transmission: pack a checkpoint into parts, serve, fetch stage by stage",
        description="Progressive transmission (Lee et al., ICMLA 2021): every floating tensor is quantised "
        "per tensor (min-max) to 32-bit codes, and the codes are sent most significant bits first, in parts "
        "(default eight parts of 2 bits). A client decodes an approximate model after each part (2, 4, ..., "
        "16 bits) and can predict before the download ends.")
    g = p.add_subparsers(dest="transmit_command", metavar="SUBCOMMAND")

    kg = g.add_parser(
        "keygen", help="make an Ed25519 key pair for signing packages",
        description="Write NAME.key (the Ed25519 private key, PKCS#8 PEM, unencrypted, file mode 0600: keep it "
        "secret) and NAME.pub (the public key as 64 hex characters: give it, or the file, to `fetch --trust` and "
        "to the page). Existing files are not replaced without --force.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    kg.add_argument("--out", required=True, metavar="NAME", type=_key_name,
                    help="path and name of the key pair, without extension (e.g. keys/release)")
    kg.add_argument("--force", action="store_true", help="replace existing NAME.key and NAME.pub")
    kg.set_defaults(func=_keygen)

    pk = g.add_parser(
        "pack", help="split a checkpoint into a manifest and bit-plane parts",
        description="Write DIR/manifest.json (model, tensors with shape, dtype, min, scale and bytes per part, "
        "SHA-256 per part, the bit list) and DIR/part-0.bin ... one file per entry of --bits. Part s holds the next "
        "bits of every quantised weight; non-float tensors go whole into part 0.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pk.add_argument("ckpt", help="model.safetensors written by `cuekit train` (or any state-dict file)")
    pk.add_argument("--bits", default="2,2,2,2,2,2,2,2",
                    help="bit widths of the parts, most significant first, at most 32 in all (e.g. 4,4,8,16)")
    pk.add_argument("--out", required=True, help="package folder to write")
    pk.add_argument("--full-precision-1d", action="store_true",
                    help="send tensors of at most one dimension (biases, normalisation parameters) whole at their "
                         "own precision in part 0 (our option, not the paper's)")
    pk.add_argument("--sign", metavar="KEY", default=None,
                    help="sign the manifest with this Ed25519 private key (a .key file from `transmit keygen`): "
                         "writes DIR/manifest.sig (default: unsigned; an old manifest.sig in DIR is removed)")
    pk.add_argument("--no-onnx", action="store_true",
                    help="do not write DIR/model.onnx, the ONNX graph (weights as inputs) that the browser page of "
                         "`transmit serve` runs; needs the onnx and onnxscript packages")
    pk.set_defaults(func=_pack)

    vf = g.add_parser(
        "verify", help="check a package folder: manifest hash, signature, every part's size and SHA-256",
        description="Check DIR as a client would before loading it: the manifest's own hash (manifest_sha256), "
        "with --trust its signature (manifest.sig) against that public key, and every part's size and SHA-256. "
        "Exit code 2 at the first problem.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    vf.add_argument("dir", help="package folder")
    vf.add_argument("--trust", metavar="PUBKEY", default=None,
                    help="accept only a manifest signed by this Ed25519 public key (64 hex characters or a .pub file)")
    vf.set_defaults(func=_verify)

    sv = g.add_parser(
        "serve", help="serve package folders over HTTP (Range, ETag, optional rate limit)",
        description="Serve every package below DIR (DIR itself or DIR/<name>/ holding a manifest.json) to any "
        "number of clients at once. GET / lists the packages (JSON); in a browser it is a page that downloads a "
        "package part by part, decodes it in JavaScript and predicts after every part with ONNX Runtime Web "
        "(installed by `npm ci`). Supports HTTP Range and ETag; paths outside DIR "
        "are refused. --rate-mbit limits each transfer and --rtt-ms delays each answer, to demonstrate slow links. "
        "Stop with Ctrl-C.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sv.add_argument("dir", help="folder of packages")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it to the network)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--rate-mbit", type=float, default=None, help="rate limit per transfer in Mbit/s (default: none)")
    sv.add_argument("--rtt-ms", type=float, default=0.0,
                    help="milliseconds every request waits before its answer, to simulate a link's round-trip time")
    sv.set_defaults(func=_serve)

    ft = g.add_parser(
        "fetch", help="download a package part by part, predicting with each approximate model",
        description="Download the package at URL (e.g. http://127.0.0.1:8000/resnet20/) one part at a time, "
        "checking each part's SHA-256, resuming broken transfers, and print for each stage its bits, time and "
        "bytes received with the prediction for each --image. Without --image, and when the checkpoint names a "
        "built-in dataset, the accuracy of every stage on --eval-size validation images is printed instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ft.add_argument("url", help="package URL (its folder, or its manifest.json)")
    ft.add_argument("--image", action="append", default=[], metavar="PATH", help="image to classify (repeatable)")
    ft.add_argument("--topk", type=int, default=1, help="classes shown per image")
    ft.add_argument("--eval-size", type=int, default=256,
                    help="validation images for per-stage accuracy when no --image is given (0: none)")
    ft.add_argument("--no-overlap", action="store_true",
                    help="request part s+1 only after stage s's inference (default: download continues meanwhile)")
    ft.add_argument("--max-parts", type=int, default=None, help="stop after this many parts")
    ft.add_argument("--timeout", type=float, default=30.0, help="seconds without data before a retry")
    ft.add_argument("--retries", type=int, default=8,
                    help="retries in a row that bring no new bytes before giving up; the waits between them "
                         "double from 0.25 s to at most 4 s (about 20 s in all, longer than a server restart)")
    ft.add_argument("--total-retries", type=int, default=50,
                    help="retries over the whole transfer (all parts), even when each brings new bytes")
    ft.add_argument("--trust", metavar="PUBKEY", default=None,
                    help="accept only a manifest signed by this Ed25519 public key (64 hex characters or a .pub "
                         "file): an unsigned package, another key's signature or a manifest altered after signing "
                         "is refused before any part is downloaded (default: signatures are not checked)")
    ft.add_argument("--device", default="cpu")
    ft.add_argument("--out", default=None, help="write results.json and results.txt here")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    ft.set_defaults(func=_fetch)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _key_name(text: str) -> str:
    """An argparse type: NAME of NAME.key / NAME.pub, not a folder, with an existing (or creatable) parent."""
    from pathlib import Path

    path = Path(text).expanduser()
    if not text or text.endswith(("/", "\\")) or path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a key name such as {text.rstrip('/')}/release "
                                         "(NAME.key and NAME.pub are written)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, so no key can be made inside it")
            break
    return text


def _keygen(args: argparse.Namespace) -> int:
    from cuekit.transmit.signing import generate_keypair

    key_path, pub_path, pub_hex = generate_keypair(args.out, overwrite=args.force)
    print(f"private key {key_path} (mode 0600; keep it secret; sign with `transmit pack --sign {key_path}`)")
    print(f"public key  {pub_path}: {pub_hex}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cuekit.io import format_table
    from cuekit.transmit.package import HASH_FIELD, MANIFEST_NAME, ProgressiveDecoder, load_manifest
    from cuekit.transmit.signing import SIGNATURE_NAME, parse_public_key

    trusted = parse_public_key(args.trust) if args.trust is not None else None
    folder = Path(args.dir)
    man = load_manifest(folder, trust=trusted)
    has_hash = HASH_FIELD in json.loads((folder / MANIFEST_NAME).read_bytes())
    dec = ProgressiveDecoder(man)
    for s, part in enumerate(man.parts):
        try:
            data = (folder / part.file).read_bytes()
        except FileNotFoundError:
            from cuekit.errors import DataError

            raise DataError(f"part {s} ({part.file}) is missing from {folder}") from None
        dec.verify(s, data)
    if trusted is not None:
        signature = f"verified: signed by {trusted.hex()}"
    elif (folder / SIGNATURE_NAME).exists():
        signature = "present, unverified (no --trust)"
    else:
        signature = "none"
    print(format_table(["check", "result"], [
        ["manifest_sha256", "matches" if has_hash else "absent (a manifest from an older cuekit)"],
        ["signature", signature], ["parts", f"{len(man.parts)} of {len(man.parts)}: sizes and SHA-256 match"],
        ["bytes", _fmt_bytes(man.total_bytes)]]))
    return 0


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _pack(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cuekit.io import format_table
    from cuekit.transmit.codec import parse_bits
    from cuekit.transmit.package import MANIFEST_NAME, pack

    bits = parse_bits(args.bits)
    man = pack(args.ckpt, args.out, bits, full_precision_1d=args.full_precision_1d, sign=args.sign,
               onnx_graph=not args.no_onnx)
    cols = ["part", "file", "bits", "bytes", "sha256"]
    rows = [[s, p.file, b, p.bytes, p.sha256[:16]] for s, (p, b) in enumerate(zip(man.parts, man.stage_bits))]
    print(format_table(cols, rows))
    mbytes = (Path(args.out) / MANIFEST_NAME).stat().st_size
    print(f"{len(man.tensors)} tensors ({man.source.get('raw_tensors', 0)} sent whole), "
          f"parts {_fmt_bytes(man.total_bytes)} + manifest {_fmt_bytes(mbytes)}; "
          f"float32 file {_fmt_bytes(man.source['float32_bytes'])}, "
          f"float16 file {_fmt_bytes(man.source['float16_bytes'])} -> {args.out}")
    if man.model.get("onnx"):
        graph = man.model["onnx"]
        print(f"ONNX graph for the browser page: {graph['file']} ({_fmt_bytes(graph['bytes'])})")
    if args.sign:
        from cuekit.transmit.signing import SIGNATURE_NAME

        sig = json.loads((Path(args.out) / SIGNATURE_NAME).read_text())
        print(f"signed: {SIGNATURE_NAME} by Ed25519 key {sig['public_key']}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cuekit.errors import UsageError
    from cuekit.transmit.server import serve_forever

    if args.rate_mbit is not None and args.rate_mbit <= 0:
        raise UsageError(f"--rate-mbit must be positive, got {args.rate_mbit}")
    if not args.rtt_ms >= 0:
        raise UsageError(f"--rtt-ms must be 0 or more, got {args.rtt_ms}")
    rate = args.rate_mbit * 1e6 / 8 if args.rate_mbit else None
    serve_forever(args.dir, args.host, args.port, rate, rtt=args.rtt_ms / 1000)
    return 0


def _eval_data(meta: dict, size: int):
    from cuekit.data.registry import create_dataset

    cfg = meta.get("config") or {}
    data = create_dataset(meta["data"], task=meta.get("task"), img_size=meta.get("img_size"),
                          train_size=cfg.get("train_size"), val_size=size, seed=cfg.get("seed", 0),
                          val_split=cfg.get("val_split", 0.1))
    return data.val


def _fetch(args: argparse.Namespace) -> int:
    import time

    import torch
    from tqdm import tqdm

    from cuekit.errors import UsageError
    from cuekit.io import format_table, write_results
    from cuekit.transmit.client import image_tensor, iter_stages
    from cuekit.transmit.signing import parse_public_key

    if args.topk < 1:
        raise UsageError(f"--topk must be >= 1, got {args.topk}")
    if args.retries < 0 or args.total_retries < 0 or not args.timeout > 0:
        raise UsageError("--retries and --total-retries must be 0 or more and --timeout positive")
    trusted = parse_public_key(args.trust) if args.trust is not None else None
    from torchvision import transforms  # noqa: F401

    import cuekit.models  # noqa: F401  (imported before the clock starts: stage times count no import)
    import cuekit.train  # noqa: F401
    rows, records = [], []
    with iter_stages(args.url, overlap=not args.no_overlap, max_parts=args.max_parts, timeout_s=args.timeout,
                     retries=args.retries, max_total_retries=args.total_retries, device=args.device,
                     trust=trusted) as it:
        bar = None
        images, eval_set, names = None, None, None
        for stage in it:
            meta = stage.manifest.metadata
            if bar is None:
                if trusted is not None:
                    print(f"manifest signature verified: signed by the trusted key {trusted.hex()}", flush=True)
                bar = tqdm(total=stage.num_parts if args.max_parts is None else min(args.max_parts, stage.num_parts),
                           desc="stages", unit="part", disable=args.no_progress, leave=False)
                names = meta.get("class_names") or [str(i) for i in range(int(meta.get("num_classes", 0) or 0))]
                if stage.model is None:
                    raise UsageError("the package names no model architecture; fetch it from Python "
                                     "(cuekit.transmit.iter_stages) and load the state dict yourself")
                if args.image:
                    images = [(p, image_tensor(p, meta).to(args.device)) for p in args.image]
                elif args.eval_size > 0 and meta.get("data"):
                    eval_set = _eval_data(meta, args.eval_size)
            rec = {"stage": stage.index + 1, "bits": stage.bits, "part_bytes": stage.part_bytes,
                   "bytes_received": stage.bytes_received}
            cells = []
            if images:
                preds = []
                with torch.no_grad():
                    for path, x in images:
                        probs = stage.model(x).softmax(-1)[0].cpu()
                        p, idx = probs.topk(min(args.topk, probs.numel()))
                        top = [{"class": names[i] if i < len(names) else str(int(i)), "index": int(i), "prob": float(q)}
                               for q, i in zip(p, idx)]
                        preds.append({"image": str(path), "top": top})
                        cells.append(f"{top[0]['class']} ({top[0]['prob']:.2f})")
                rec["predictions"] = preds
            elif eval_set is not None:
                from cuekit.train import evaluate

                ev = evaluate(stage.model, eval_set, batch_size=256, device=args.device)
                rec["acc"], rec["loss"] = ev["acc"], ev["loss"]
                cells.append(f"{ev['acc']:.4f}")
            rec["time_s"] = time.perf_counter() - it.client.t_start
            records.append(rec)
            rows.append([stage.index + 1, stage.bits, _fmt_bytes(stage.bytes_received), f"{rec['time_s']:.3f}", *cells])
            if bar is not None:
                bar.update(1)
                bar.write(f"stage {stage.index + 1}/{stage.num_parts}: {stage.bits} bits, "
                          f"{_fmt_bytes(stage.bytes_received)} received, {rec['time_s']:.3f} s"
                          + (f": {', '.join(cells)}" if cells else ""))
        if bar is not None:
            bar.close()
    extra = ([f"pred {p}" for p in args.image] if args.image else (["acc"] if eval_set is not None else []))
    cols = ["stage", "bits", "received", "time_s", *extra]
    t0 = it.client.t_start or 0.0
    result = {"url": args.url, "overlap": not args.no_overlap,
              "signature": {"verified": trusted is not None, "public_key": trusted.hex() if trusted else None},
              "stages": records,
              "timeline": [{**e, "time": e["time"] - t0} for e in it.client.timeline]}
    print(write_results(args.out, result, cols, rows) if args.out else format_table(cols, rows))
    return 0
