"""Progressive package on disk: `manifest.json` plus one file per part (`part-0.bin`, ...).

The manifest (JSON) names the model and its metadata, the bit-width list, every tensor (shape,
dtype, encoding, min, scale, bytes per part) and every part (file, bytes, SHA-256). Part s holds
slice s of every tensor, concatenated in manifest order; raw tensors are whole in part 0.
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

__all__ = ["FORMAT", "MANIFEST_NAME", "IntegrityError", "Manifest", "ProgressiveDecoder", "load_manifest",
           "pack", "pack_state_dict", "read_package_stage", "sha256_hex"]

FORMAT = "cuekit-progressive"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class IntegrityError(DataError):
    """A downloaded part whose size or SHA-256 does not match the manifest; nothing was loaded from it."""


def sha256_hex(data: bytes | memoryview) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()


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
                    metadata: Mapping[str, Any] | None = None, source: Mapping[str, Any] | None = None) -> Manifest:
    """Write a progressive package of `state` into out_dir and return its manifest.

    full_precision_1d: send tensors with at most one dimension (biases, normalisation weights and
    running statistics) whole, in their own dtype, in part 0 (our option; the paper quantises all).
    """
    bits = validate_bits(bits)
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
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest.to_json(), separators=(",", ":")))
    return manifest


def pack(ckpt: str | Path, out_dir: str | Path, bits: Sequence[int] = DEFAULT_BITS, *,
         full_precision_1d: bool = False) -> Manifest:
    """Pack a checkpoint (a `model.safetensors` written by `cuekit train`, or any state dict file)."""
    from cuekit.models.registry import read_state_dict

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
    return pack_state_dict(state, out_dir, bits, full_precision_1d=full_precision_1d, model=model,
                           metadata=meta, source=source)


def load_manifest(package_dir: str | Path) -> Manifest:
    """Read the manifest of a package folder."""
    path = Path(package_dir) / MANIFEST_NAME
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"no {MANIFEST_NAME} in {package_dir}: not a progressive package "
                        "(run `cuekit transmit pack`)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return Manifest.from_json(d)


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


def read_package_stage(package_dir: str | Path, num_parts: int | None = None) -> dict[str, Tensor]:
    """Decode a local package after its first `num_parts` parts (all by default), verifying each."""
    package_dir = Path(package_dir)
    manifest = load_manifest(package_dir)
    n = manifest.num_parts if num_parts is None else num_parts
    if not 1 <= n <= manifest.num_parts:
        raise DataError(f"num_parts must be in 1..{manifest.num_parts}, got {n}")
    dec = ProgressiveDecoder(manifest)
    for s in range(n):
        dec.add_part(s, (package_dir / manifest.parts[s].file).read_bytes())
    return dec.state_dict()


def model_from_manifest(manifest: Manifest, device: str | torch.device = "cpu") -> torch.nn.Module | None:
    """A fresh model of the architecture the manifest names (None when it names none)."""
    info = manifest.model
    if not info.get("name"):
        return None
    from cuekit.models.registry import create_model

    model = create_model(info["name"], num_classes=int(info["num_classes"]), in_chans=int(info.get("in_chans", 3)),
                         img_size=info.get("img_size"), **(info.get("model_kwargs") or {}))
    return model.to(device).eval()
