"""Progressive package on disk: `manifest.json` plus one file per part (`part-0.bin`, ...).

The manifest (JSON) names the model and its metadata, the bit-width list, every tensor (shape,
dtype, encoding, min, scale, bytes per part), every part (file, bytes, SHA-256) and its own hash
(`manifest_sha256`, over its canonical JSON without that field). Part s holds slice s of every
tensor, concatenated in manifest order; raw tensors are whole in part 0. A package may be signed:
`manifest.sig` beside the manifest (see `cuekit.transmit.signing`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from cuekit.errors import CheckpointError, DataError, UsageError
from cuekit.io import atomic_write_bytes, atomic_write_text
from cuekit.transmit.codec import (
    DEFAULT_BITS,
    RAW,
    StageDecoder,
    TensorEntry,
    cumulative_bits,
    encode_tensor,
    validate_bits,
)
from cuekit.transmit.signing import SIGNATURE_NAME, TrustedKey, load_private_key, sign_package, verify_signature

__all__ = ["FORMAT", "HASH_FIELD", "MANIFEST_NAME", "IntegrityError", "Manifest", "ProgressiveDecoder",
           "canonical_json", "check_manifest_model", "load_manifest", "manifest_hash", "pack", "pack_state_dict",
           "parse_manifest", "read_package_stage", "sha256_hex"]

FORMAT = "cuekit-progressive"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
HASH_FIELD = "manifest_sha256"


class IntegrityError(DataError):
    """A downloaded part whose size or SHA-256 does not match the manifest; nothing was loaded from it."""


def sha256_hex(data: bytes | memoryview) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The canonical form a manifest's own hash covers: keys sorted, no spaces, non-ASCII kept, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def manifest_hash(d: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the manifest's canonical JSON without its `manifest_sha256` field."""
    return sha256_hex(canonical_json({k: v for k, v in d.items() if k != HASH_FIELD}))


def check_manifest_hash(d: Mapping[str, Any], where: str) -> None:
    """IntegrityError when the manifest carries a `manifest_sha256` that is not its own hash (none: no check)."""
    if HASH_FIELD not in d:
        return
    stated = d[HASH_FIELD]
    got = manifest_hash(d)
    if stated != got:
        shown = f"{stated[:16]}..." if isinstance(stated, str) else repr(stated)
        raise IntegrityError(f"{where} failed its own hash check (manifest_sha256 says {shown}, its content hashes "
                             f"to {got[:16]}...): the manifest was altered or damaged; nothing was loaded from it")


@dataclasses.dataclass
class PartInfo:
    """One part file: name, size and hash."""

    file: str
    bytes: int
    sha256: str


@dataclasses.dataclass
class Manifest:
    """The parsed manifest of a package."""

    bits: tuple[int, ...]
    tensors: list[TensorEntry]
    parts: list[PartInfo]
    model: dict[str, Any]            # name, num_classes, in_chans, img_size, model_kwargs (may be empty)
    metadata: dict[str, Any]         # the checkpoint's cuekit metadata (class names, mean, std, data, ...)
    source: dict[str, Any]           # what was packed: file name, bytes of the float32 / float16 files

    @property
    def num_parts(self) -> int:
        """Number of parts (stages)."""
        return len(self.bits)

    @property
    def stage_bits(self) -> list[int]:
        """Bits per quantised weight after each part."""
        return cumulative_bits(self.bits)

    @property
    def total_bytes(self) -> int:
        """Bytes of all parts together (manifest excluded)."""
        return sum(p.bytes for p in self.parts)

    def to_json(self) -> dict:
        """The manifest file's content."""
        return {
            "format": FORMAT, "version": FORMAT_VERSION, "byte_order": "little", "code_bits": 32,
            "bits": list(self.bits), "stage_bits": self.stage_bits, "model": self.model, "metadata": self.metadata,
            "source": self.source, "parts": [dataclasses.asdict(p) for p in self.parts],
            "tensors": [t.to_json() for t in self.tensors],
        }

    def to_json_with_hash(self) -> dict:
        """`to_json()` plus its own hash, `manifest_sha256` (what `pack` writes)."""
        d = self.to_json()
        d[HASH_FIELD] = manifest_hash(d)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Manifest":
        """Parse and check a manifest dict (DataError when malformed)."""
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            raise DataError(f"not a {FORMAT} manifest")
        if d.get("version") != FORMAT_VERSION:
            raise DataError(f"unsupported manifest version {d.get('version')!r} (this cuekit reads {FORMAT_VERSION})")
        try:
            bits = validate_bits(d["bits"])
            parts = [PartInfo(str(p["file"]), int(p["bytes"]), str(p["sha256"])) for p in d["parts"]]
            raw_tensors = list(d["tensors"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"malformed manifest: {e!r}") from None
        except UsageError as e:
            raise DataError(f"malformed manifest: {e}") from None
        if len(parts) != len(bits):
            raise DataError(f"manifest lists {len(parts)} part files for {len(bits)} bit widths")
        for p in parts:
            if "/" in p.file or "\\" in p.file or p.file.startswith("."):
                raise DataError(f"manifest part file name {p.file!r} is not a plain file name")
        tensors = [TensorEntry.from_json(t, len(bits)) for t in raw_tensors]
        for s, p in enumerate(parts):
            if sum(t.byte_sizes[s] for t in tensors) != p.bytes:
                raise DataError(f"part {s}: tensor byte sizes do not add up to {p.bytes}")
        return cls(bits=bits, tensors=tensors, parts=parts, model=dict(d.get("model") or {}),
                   metadata=dict(d.get("metadata") or {}), source=dict(d.get("source") or {}))


def _float_file_bytes(state: Mapping[str, Tensor], dtype: torch.dtype) -> int:
    from safetensors.torch import save

    conv = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    return len(save(conv))


def pack_state_dict(state: Mapping[str, Tensor], out_dir: str | Path, bits: Sequence[int] = DEFAULT_BITS, *,
                    full_precision_1d: bool = False, model: Mapping[str, Any] | None = None,
                    metadata: Mapping[str, Any] | None = None, source: Mapping[str, Any] | None = None,
                    sign: str | Path | Any = None) -> Manifest:
    """Write a progressive package of `state` into out_dir and return its manifest.

    full_precision_1d: send tensors with at most one dimension (biases, normalisation weights and
    running statistics) whole, in their own dtype, in part 0 (our option; the paper quantises all).
    sign: an Ed25519 private key (object, or the path of a `.key` file) to sign the manifest with
    (`manifest.sig`); without it any old `manifest.sig` in out_dir is removed.
    """
    bits = validate_bits(bits)
    signing_key = load_private_key(sign) if isinstance(sign, (str, Path)) else sign  # a bad key fails first
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[TensorEntry] = []
    part_chunks: list[list[bytes]] = [[] for _ in bits]
    for name, tensor in state.items():
        raw = full_precision_1d and tensor.dim() <= 1
        entry, chunks = encode_tensor(name, tensor, bits, raw=raw)
        entries.append(entry)
        for s, c in enumerate(chunks):
            part_chunks[s].append(c)
    parts = []
    for s, chunks in enumerate(part_chunks):
        data = b"".join(chunks)
        name = f"part-{s}.bin"
        atomic_write_bytes(out_dir / name, data)
        parts.append(PartInfo(name, len(data), sha256_hex(data)))
    src = dict(source or {})
    src.setdefault("float32_bytes", _float_file_bytes(state, torch.float32))
    src.setdefault("float16_bytes", _float_file_bytes(state, torch.float16))
    src["full_precision_1d"] = bool(full_precision_1d)
    src["raw_tensors"] = sum(e.encoding == RAW for e in entries)
    manifest = Manifest(bits=bits, tensors=entries, parts=parts, model=dict(model or {}),
                        metadata=dict(metadata or {}), source=src)
    # Compact JSON (its size counts against the transfer); written last: a package is complete once it exists.
    # A signature of an earlier manifest in this folder would no longer match: it goes first.
    (out_dir / SIGNATURE_NAME).unlink(missing_ok=True)
    atomic_write_text(out_dir / MANIFEST_NAME,
                      json.dumps(manifest.to_json_with_hash(), separators=(",", ":")))
    if sign is not None:
        sign_package(out_dir, signing_key)
    return manifest


def pack(ckpt: str | Path, out_dir: str | Path, bits: Sequence[int] = DEFAULT_BITS, *,
         full_precision_1d: bool = False, sign: str | Path | Any = None, onnx_graph: bool = False) -> Manifest:
    """Pack a checkpoint (a `model.safetensors` written by `cuekit train`, or any state dict file); `sign`: a
    private key (or `.key` path) to sign the manifest with; `onnx_graph`: also write `model.onnx`, the graph
    the browser page runs (weights as inputs; `cuekit.transmit.onnx_graph`), named in the manifest's model entry."""
    from cuekit.models.registry import read_state_dict

    if isinstance(sign, (str, Path)):
        sign = load_private_key(sign)  # a bad key fails before any work
    ckpt = Path(ckpt)
    state, raw_meta = read_state_dict(ckpt)
    if not state:
        raise CheckpointError(f"{ckpt} holds no tensors")
    try:
        meta = json.loads(raw_meta.get("cuekit", "{}"))
    except json.JSONDecodeError:
        meta = {}
    model: dict[str, Any] = {}
    if "model" in meta and "num_classes" in meta:
        model = {"name": meta["model"], "num_classes": meta["num_classes"], "in_chans": meta.get("in_chans", 3),
                 "img_size": meta.get("img_size"),
                 "model_kwargs": (meta.get("config") or {}).get("model_kwargs", {}) or {}}
    source = {"file": ckpt.name, "file_bytes": ckpt.stat().st_size}
    if onnx_graph:
        from cuekit.transmit.onnx_graph import with_graph

        model = with_graph(state, model, out_dir)
    return pack_state_dict(state, out_dir, bits, full_precision_1d=full_precision_1d, model=model,
                           metadata=meta, source=source, sign=sign)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """Parse a manifest file's bytes: JSON, its own hash when it carries one (IntegrityError naming `where`),
    then its fields (DataError)."""
    try:
        d = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{where} is not valid JSON: {e}") from None
    if isinstance(d, Mapping):
        check_manifest_hash(d, where)
    return Manifest.from_json(d)


def load_manifest(package_dir: str | Path, trust: TrustedKey | None = None) -> Manifest:
    """Read the manifest of a package folder; with `trust` (a public key: 64 hex, a .pub file or 32 bytes), only
    a manifest signed by that key (`manifest.sig`) is accepted (SignatureError otherwise)."""
    path = Path(package_dir) / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"no {MANIFEST_NAME} in {package_dir}: not a progressive package "
                        "(run `cuekit transmit pack`)") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if trust is not None:
        try:
            sig = (Path(package_dir) / SIGNATURE_NAME).read_bytes()
        except FileNotFoundError:
            sig = None
        except OSError as e:
            raise DataError(f"cannot read {Path(package_dir) / SIGNATURE_NAME}: {e}") from None
        verify_signature(raw, sig, trust, str(path))
    return parse_manifest(raw, str(path))


class ProgressiveDecoder:
    """Checks each part (size, SHA-256) before merging it; yields the state dict after each part.

    A part that fails its check raises IntegrityError and leaves the decoder at the previous stage.
    """

    def __init__(self, manifest: Manifest):
        self.manifest = manifest
        self._stage = StageDecoder(manifest.tensors, manifest.bits)

    @property
    def parts_done(self) -> int:
        """Number of parts merged so far."""
        return self._stage.parts_done

    @property
    def known_bits(self) -> int:
        """Bits per quantised weight so far."""
        return self._stage.known_bits

    def verify(self, index: int, data: bytes | memoryview) -> None:
        """Raise IntegrityError unless `data` is part `index` exactly as the manifest describes it."""
        info = self.manifest.parts[index]
        if len(data) != info.bytes:
            raise IntegrityError(f"part {index} ({info.file}) has {len(data)} bytes, the manifest says "
                                 f"{info.bytes}; nothing was loaded from it")
        got = sha256_hex(data)
        if got != info.sha256:
            raise IntegrityError(f"part {index} ({info.file}) failed its SHA-256 check (expected "
                                 f"{info.sha256[:16]}..., got {got[:16]}...); nothing was loaded from it")

    def add_part(self, index: int, data: bytes | memoryview) -> None:
        """Verify and merge part `index` (parts must come in order)."""
        if index != self.parts_done:
            raise DataError(f"parts must be added in order: expected part {self.parts_done}, got {index}")
        self.verify(index, data)
        self._stage.add_part(data)

    def state_dict(self) -> dict[str, Tensor]:
        """The approximate weights after the parts added so far (fresh tensors)."""
        return self._stage.tensors()


def read_package_stage(package_dir: str | Path, num_parts: int | None = None,
                       trust: TrustedKey | None = None) -> dict[str, Tensor]:
    """Decode a local package after its first `num_parts` parts (all by default), verifying each (and the
    manifest's signature against `trust` when given)."""
    package_dir = Path(package_dir)
    manifest = load_manifest(package_dir, trust=trust)
    n = manifest.num_parts if num_parts is None else num_parts
    if not 1 <= n <= manifest.num_parts:
        raise DataError(f"num_parts must be in 1..{manifest.num_parts}, got {n}")
    dec = ProgressiveDecoder(manifest)
    for s in range(n):
        dec.add_part(s, (package_dir / manifest.parts[s].file).read_bytes())
    return dec.state_dict()


def check_manifest_model(manifest: Manifest) -> dict[str, Any] | None:
    """The manifest's model entry checked against this cuekit's registry before anything is built from it:
    a registered name, integer sizes, and constructor arguments the model's signature names (unknown ones
    are refused, DataError). Returns the create_model arguments (None when the manifest names no model)."""
    info = manifest.model
    if not info.get("name"):
        return None
    from cuekit.models.registry import check_model_arguments, list_models

    name = info["name"]
    if not isinstance(name, str) or name not in list_models():
        raise DataError(f"the manifest names model {name!r}, which this cuekit does not have; fetch the state "
                        "dict alone (build_model=False) or update cuekit")
    kwargs = info.get("model_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise DataError(f"the manifest's model_kwargs must be an object, got {type(kwargs).__name__}")
    try:
        check_model_arguments(name, kwargs, where="manifest")
    except UsageError as e:
        raise DataError(str(e)) from None
    args: dict[str, Any] = {}
    for key, default in (("num_classes", None), ("in_chans", 3), ("img_size", None)):
        value = info.get(key, default)
        if value is None and key != "img_size":
            raise DataError(f"the manifest's model entry has no {key}")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DataError(f"the manifest's model {key} must be a positive integer, got {value!r}")
        args[key] = value
    return {"name": name, **args, **kwargs}


def model_from_manifest(manifest: Manifest, device: str | torch.device = "cpu") -> torch.nn.Module | None:
    """A fresh model of the architecture the manifest names (None when it names none); its arguments are
    checked first (`check_manifest_model`)."""
    args = check_manifest_model(manifest)
    if args is None:
        return None
    from cuekit.models.registry import create_model

    try:
        model = create_model(**args)
    except (TypeError, ValueError) as e:
        raise DataError(f"cannot build model {args['name']} from the manifest's arguments: "
                        f"{' '.join(str(e).split())}") from None
    return model.to(device).eval()
