"""Bit-plane codec of progressive transmission: per-tensor min-max quantisation to 32-bit codes,
split most-significant bits first into parts, decoded after any number of parts.

A floating tensor w (any shape) is mapped to codes q = floor((w - min) / scale * 2^32), clamped to
[0, 2^32 - 1], with min = min(w) and scale = max(w) - min(w). Part s carries the next b_s bits of
every code (most significant first). After s parts, B = b_1 + ... + b_s bits of each code are
known, and the value is decoded at the centre of the remaining interval:
w_hat = min + (q >> (32 - B) + 1/2) * scale / 2^B, which is exactly direct B-bit quantisation.
Integer work is done in int64 and decoding in float64 (float32 keeps only 24 bits of a code).
Tensors that are not floating point, or that the caller wants exact, go whole into part 0.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cuekit.errors import DataError, UsageError

__all__ = [
    "CODE_BITS", "DEFAULT_BITS", "TensorEntry", "StageDecoder", "decode_stage", "dequantize_codes",
    "encode_tensor", "pack_bits", "parse_bits", "quantize", "unpack_bits", "validate_bits",
]

CODE_BITS = 32
DEFAULT_BITS: tuple[int, ...] = (2,) * 8

QUANTIZED, RAW = "quantized", "raw"

# dtypes a package may name (the manifest is data: never getattr(torch, <anything>)).
_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16,
    torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)}

_CHUNK = 1 << 20  # values per chunk in the generic bit packer (a multiple of 8)


def dtype_from_name(name: str) -> torch.dtype:
    """torch dtype for a manifest dtype name such as "float32"; DataError if unknown."""
    if name not in _DTYPES:
        raise DataError(f"unsupported tensor dtype {name!r} in package (known: {', '.join(sorted(_DTYPES))})")
    return _DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The manifest name of a torch dtype ("float32", ...)."""
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise DataError(f"cannot pack tensors of dtype {name}")
    return name


def validate_bits(bits: Sequence[int]) -> tuple[int, ...]:
    """Check a bit-width list (each >= 1, at most 32 in all) and return it as a tuple."""
    bits = tuple(int(b) for b in bits)
    if not bits:
        raise UsageError("the bit-width list is empty; give e.g. --bits 2,2,2,2,2,2,2,2")
    if any(b < 1 for b in bits):
        raise UsageError(f"every bit width must be >= 1, got {list(bits)}")
    if sum(bits) > CODE_BITS:
        raise UsageError(f"the bit widths add up to {sum(bits)}, more than the {CODE_BITS}-bit codes: {list(bits)}")
    return bits


def parse_bits(text: str) -> tuple[int, ...]:
    """Parse "2,2,2,2" into a validated bit-width list."""
    try:
        bits = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--bits must be comma-separated integers such as 2,2,2,2, got {text!r}") from None
    return validate_bits(bits)


def cumulative_bits(bits: Sequence[int]) -> list[int]:
    """Bits known after each part: [b1, b1+b2, ...]."""
    return list(np.cumsum(bits).tolist())


# ---------------------------------------------------------------------------------------------
# Bit packing: n values of b bits each -> ceil(n*b/8) bytes, most significant bit first.

def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers `values` (n,) < 2**bits into a big-endian bit stream."""
    v = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
    n = v.size
    if n == 0:
        return b""
    if bits % 8 == 0:
        width = bits // 8
        be = v.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - width:]
        return be.tobytes()
    if 8 % bits == 0:
        per = 8 // bits
        pad = (-n) % per
        u = np.concatenate([v, np.zeros(pad, np.int64)]) if pad else v
        u = u.reshape(-1, per)
        out = np.zeros(u.shape[0], np.int64)
        for i in range(per):
            out |= u[:, i] << (8 - bits * (i + 1))
        return out.astype(np.uint8).tobytes()
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    chunks = []
    for start in range(0, n, _CHUNK):
        seg = v[start:start + _CHUNK]
        bit_matrix = ((seg[:, None] >> shifts) & 1).astype(np.uint8)
        chunks.append(np.packbits(bit_matrix.reshape(-1)).tobytes())
    return b"".join(chunks)


def unpack_bits(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack_bits`: `count` integers of `bits` bits -> int64 array (count,)."""
    need = (count * bits + 7) // 8
    if len(data) != need:
        raise DataError(f"expected {need} bytes for {count} values of {bits} bits, got {len(data)}")
    if count == 0:
        return np.zeros(0, np.int64)
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits % 8 == 0:
        width = bits // 8
        be = np.zeros((count, 8), np.uint8)
        be[:, 8 - width:] = raw.reshape(count, width)
        return be.view(">u8").reshape(-1).astype(np.int64)
    if 8 % bits == 0:
        per = 8 // bits
        b = raw.astype(np.int64)
        mask = (1 << bits) - 1
        cols = [(b >> (8 - bits * (i + 1))) & mask for i in range(per)]
        return np.stack(cols, axis=1).reshape(-1)[:count]
    weights = (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))
    out = np.empty(count, np.int64)
    bytes_per_chunk = _CHUNK * bits // 8
    for i, start in enumerate(range(0, count, _CHUNK)):
        n = min(_CHUNK, count - start)
        seg = raw[i * bytes_per_chunk: i * bytes_per_chunk + (n * bits + 7) // 8]
        bit_matrix = np.unpackbits(seg, count=n * bits).reshape(n, bits).astype(np.int64)
        out[start:start + n] = bit_matrix @ weights
    return out


# ---------------------------------------------------------------------------------------------
# Quantisation

def quantize(x: Tensor) -> tuple[Tensor, float, float]:
    """Min-max 32-bit codes of a floating tensor: (codes (numel,) int64 in [0, 2^32), min, scale).

    A constant tensor has scale 0 and all codes 0 (it decodes exactly to min).
    """
    v = x.detach().to("cpu", torch.float64).reshape(-1)
    if v.numel() == 0:
        return torch.zeros(0, dtype=torch.int64), 0.0, 0.0
    if not bool(torch.isfinite(v).all()):
        raise DataError("cannot quantise a tensor holding NaN or infinity")
    lo, hi = float(v.min()), float(v.max())
    scale = hi - lo
    if scale == 0.0:
        return torch.zeros(v.numel(), dtype=torch.int64), lo, 0.0
    codes = torch.floor((v - lo) / scale * float(2 ** CODE_BITS)).clamp_(0, 2 ** CODE_BITS - 1)
    return codes.to(torch.int64), lo, scale


def dequantize_codes(codes: Tensor, known_bits: int, lo: float, scale: float) -> Tensor:
    """float64 values of `codes` (int64, the top `known_bits` of 32-bit codes in place, lower bits 0)
    decoded at the centre of the remaining interval: lo + (code_B + 1/2) * scale / 2^B."""
    top = codes >> (CODE_BITS - known_bits)
    return lo + (top.to(torch.float64) + 0.5) * (scale / float(2 ** known_bits))


@dataclasses.dataclass
class TensorEntry:
    """One tensor of a package: how it is encoded and how many bytes it has in each part."""

    name: str
    shape: list[int]
    dtype: str                 # torch dtype name, e.g. "float32"
    encoding: str              # "quantized" (bit planes) or "raw" (whole, in part 0)
    min: float | None          # quantized only
    scale: float | None        # quantized only: max - min
    byte_sizes: list[int]      # bytes in each part

    @property
    def numel(self) -> int:
        """Number of elements."""
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    def to_json(self) -> dict:
        """Manifest form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict, num_parts: int) -> "TensorEntry":
        """Read one manifest entry, checking its fields."""
        try:
            entry = cls(name=str(d["name"]), shape=[int(s) for s in d["shape"]], dtype=str(d["dtype"]),
                        encoding=str(d["encoding"]),
                        min=None if d.get("min") is None else float(d["min"]),
                        scale=None if d.get("scale") is None else float(d["scale"]),
                        byte_sizes=[int(b) for b in d["byte_sizes"]])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"malformed tensor entry in manifest: {e!r}") from None
        dtype_from_name(entry.dtype)
        if entry.encoding not in (QUANTIZED, RAW):
            raise DataError(f"tensor {entry.name}: unknown encoding {entry.encoding!r}")
        if len(entry.byte_sizes) != num_parts or any(b < 0 for b in entry.byte_sizes):
            raise DataError(f"tensor {entry.name}: byte_sizes must list {num_parts} sizes")
        if entry.encoding == QUANTIZED and (entry.min is None or entry.scale is None):
            raise DataError(f"tensor {entry.name}: quantized entry without min/scale")
        return entry


def _raw_bytes(t: Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.numel() == 0:
        return b""
    return t.reshape(-1).view(torch.uint8).numpy().tobytes()


def _from_raw_bytes(data: bytes, entry: TensorEntry) -> Tensor:
    dtype = dtype_from_name(entry.dtype)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    if len(data) != entry.numel * itemsize:
        raise DataError(f"tensor {entry.name}: {len(data)} raw bytes for {entry.numel} x {entry.dtype}")
    if entry.numel == 0:
        return torch.empty(entry.shape, dtype=dtype)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape(entry.shape).clone()


def encode_tensor(name: str, x: Tensor, bits: Sequence[int], raw: bool = False) -> tuple[TensorEntry, list[bytes]]:
    """Encode one tensor into one byte string per part (bit planes, or whole into part 0 when
    `raw` or when the tensor is not floating point / is empty)."""
    bits = validate_bits(bits)
    shape = list(x.shape)
    if raw or not x.is_floating_point() or x.numel() == 0:
        data = _raw_bytes(x)
        chunks = [data] + [b""] * (len(bits) - 1)
        return TensorEntry(name, shape, dtype_name(x.dtype), RAW, None, None, [len(c) for c in chunks]), chunks
    codes, lo, scale = quantize(x)
    codes_np = codes.numpy()
    chunks, used = [], 0
    for b in bits:
        used += b
        plane = (codes_np >> (CODE_BITS - used)) & ((1 << b) - 1)
        chunks.append(pack_bits(plane, b))
    entry = TensorEntry(name, shape, dtype_name(x.dtype), QUANTIZED, lo, scale, [len(c) for c in chunks])
    return entry, chunks


class StageDecoder:
    """Accumulates parts in order and decodes the approximate tensors after each one.

    `add_part(data)` takes one whole part (every tensor's slice, concatenated in entry order);
    `tensors()` returns the current approximation {name: tensor of the original shape and dtype}.
    A part is parsed completely before any state changes, so a malformed part leaves the decoder as it was.
    """

    def __init__(self, entries: Sequence[TensorEntry], bits: Sequence[int]):
        self.entries = list(entries)
        self.bits = validate_bits(bits)
        self.parts_done = 0
        self._codes: dict[str, Tensor] = {}
        self._raw: dict[str, Tensor] = {}

    @property
    def known_bits(self) -> int:
        """Bits of each code known so far."""
        return sum(self.bits[: self.parts_done])

    def part_size(self, index: int) -> int:
        """Bytes of part `index`."""
        return sum(e.byte_sizes[index] for e in self.entries)

    def add_part(self, data: bytes | memoryview) -> None:
        """Parse the next part and merge its bits into the codes."""
        s = self.parts_done
        if s >= len(self.bits):
            raise DataError(f"all {len(self.bits)} parts were already added")
        if len(data) != self.part_size(s):
            raise DataError(f"part {s} has {len(data)} bytes, the manifest says {self.part_size(s)}")
        view = memoryview(data)
        b, shift = self.bits[s], CODE_BITS - sum(self.bits[: s + 1])
        new_codes: dict[str, Tensor] = {}
        new_raw: dict[str, Tensor] = {}
        offset = 0
        for e in self.entries:
            n = e.byte_sizes[s]
            chunk = view[offset: offset + n]
            offset += n
            if e.encoding == RAW:
                if s == 0:
                    new_raw[e.name] = _from_raw_bytes(bytes(chunk), e)
                elif n:
                    raise DataError(f"raw tensor {e.name} has bytes in part {s}")
                continue
            plane = torch.from_numpy(unpack_bits(chunk, b, e.numel))
            if plane.numel() and int(plane.max()) >= (1 << b):
                raise DataError(f"tensor {e.name}: part {s} holds values beyond {b} bits")
            prev = self._codes.get(e.name)
            new_codes[e.name] = (plane << shift) if prev is None else (prev | (plane << shift))
        self._codes.update(new_codes)
        self._raw.update(new_raw)
        self.parts_done += 1

    def tensors(self) -> dict[str, Tensor]:
        """The current approximation of every tensor, in its original shape and dtype (fresh tensors)."""
        if self.parts_done == 0:
            raise DataError("no part decoded yet")
        out: dict[str, Tensor] = {}
        known = self.known_bits
        for e in self.entries:
            if e.encoding == RAW:
                out[e.name] = self._raw[e.name].clone()
                continue
            vals = dequantize_codes(self._codes[e.name], known, e.min, e.scale)
            out[e.name] = vals.to(dtype_from_name(e.dtype)).reshape(e.shape)
        return out


def decode_stage(entries: Sequence[TensorEntry], bits: Sequence[int], parts: Sequence[bytes]) -> dict[str, Tensor]:
    """The approximate tensors after the given leading parts (len(parts) >= 1)."""
    dec = StageDecoder(entries, bits)
    for p in parts:
        dec.add_part(p)
    return dec.tensors()
