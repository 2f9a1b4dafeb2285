"""Codec: bit packing, stage s == direct quantisation at the cumulative bits, final error bounds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cuekit.errors import DataError, UsageError
from cuekit.transmit.codec import (
    StageDecoder,
    decode_stage,
    encode_tensor,
    pack_bits,
    parse_bits,
    unpack_bits,
)


def direct_quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Independent reference: uniform min-max quantisation to `bits` bits, decoded at bin centres (float64)."""
    v = x.double()
    lo, hi = v.min(), v.max()
    scale = hi - lo
    if scale == 0:
        return torch.full_like(v, float(lo))
    code = torch.floor((v - lo) / scale * 2.0 ** bits).clamp(max=2 ** bits - 1)
    return lo + (code + 0.5) * scale / 2.0 ** bits


def encode_all(state: dict[str, torch.Tensor], bits, raw_1d: bool = False):
    entries, parts = [], [[] for _ in bits]
    for name, t in state.items():
        e, chunks = encode_tensor(name, t, bits, raw=raw_1d and t.dim() <= 1)
        entries.append(e)
        for s, c in enumerate(chunks):
            parts[s].append(c)
    return entries, [b"".join(p) for p in parts]


def awkward_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(37, 5, generator=g, dtype=torch.float64) * 3 - 1
    x[0, 0], x[5, 1] = x.max(), x.max()          # the maximum twice (codes clamp to 2^32 - 1)
    return {
        "w64": x,
        "w32": torch.rand(4, 3, 3, 3, generator=g) * 0.01 - 0.02,
        "tiny_range": 1.0 + torch.arange(11, dtype=torch.float64) * 1e-9,
        "const": torch.full((6,), 0.25),
        "scalar": torch.tensor(3.5),
        "half": torch.randn(20, generator=g).half(),
        "count": torch.tensor(42),
    }


@pytest.mark.parametrize("bits", [(2,) * 8, (4, 4, 8, 16), (5, 11, 16), (3, 7, 1)])
def test_stage_equals_direct_quantisation(bits):
    state = awkward_tensors()
    entries, parts = encode_all(state, bits)
    dec = StageDecoder(entries, bits)
    cum = 0
    for s, b in enumerate(bits):
        cum += b
        dec.add_part(parts[s])
        assert dec.known_bits == cum
        got = dec.tensors()
        for name, x in state.items():
            assert got[name].dtype == x.dtype and got[name].shape == x.shape
            if not x.is_floating_point():
                assert torch.equal(got[name], x)  # int tensors are whole in part 0
                continue
            ref = direct_quantize(x, cum).to(x.dtype)
            assert torch.equal(got[name], ref), (name, s, cum)


def test_float64_stage_values_equal_reference_exactly(state):
    x = torch.randn(1000, dtype=torch.float64)
    bits = (2,) * 8
    entries, parts = encode_all({"x": x}, bits)
    for s in range(len(bits)):
        got = decode_stage(entries, bits, parts[: s + 1])["x"]
        assert torch.equal(got, direct_quantize(x, 2 * (s + 1)))


@pytest.mark.parametrize("bits", [(2,) * 8, (4, 4, 8, 16)])
def test_last_stage_error_within_quantisation_step(state, bits):
    entries, parts = encode_all(state, bits)
    final = decode_stage(entries, bits, parts)
    total = sum(bits)
    for name, x in state.items():
        if not x.is_floating_point():
            assert torch.equal(final[name], x)
            continue
        step = float(x.max() - x.min()) / 2 ** total
        err = float((final[name].double() - x.double()).abs().max())
        # half a step from the bin centre, plus float32 rounding of the decoded value
        assert err <= step / 2 + float(x.abs().max()) * 2 ** -24 + 1e-30, (name, err, step)
        assert err <= step or step == 0


def test_error_shrinks_stage_by_stage(state):
    bits = (2,) * 8
    entries, parts = encode_all(state, bits)
    w = state["conv.weight"].double()
    errs = [float((decode_stage(entries, bits, parts[: s + 1])["conv.weight"].double() - w).abs().max())
            for s in range(8)]
    step0 = float(w.max() - w.min())
    for s, e in enumerate(errs):
        assert e <= step0 / 2 ** (2 * (s + 1) + 1) * (1 + 1e-6) + 1e-7
    assert errs[-1] < errs[0] / 1000


def test_non_float_and_raw_tensors_go_whole_into_part_0(state):
    bits = (4, 4, 8)
    entries, parts = encode_all(state, bits, raw_1d=True)
    by_name = {e.name: e for e in entries}
    for name, x in state.items():
        e = by_name[name]
        if x.dim() <= 1 or not x.is_floating_point():
            assert e.encoding == "raw" and e.byte_sizes[1:] == [0, 0]
            assert e.byte_sizes[0] == x.numel() * x.element_size()
        else:
            assert e.encoding == "quantized"
            assert e.byte_sizes == [(x.numel() * b + 7) // 8 for b in bits]
    stage0 = decode_stage(entries, bits, parts[:1])
    for name, x in state.items():
        if x.dim() <= 1:
            assert torch.equal(stage0[name], x)  # exact from the first stage on


@pytest.mark.parametrize("bits", list(range(1, 33)))
def test_pack_unpack_roundtrip(bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 1001):
        v = rng.integers(0, 2 ** bits, size=n, dtype=np.int64)
        if n:
            v[0] = 2 ** bits - 1
        packed = pack_bits(v, bits)
        assert len(packed) == (n * bits + 7) // 8
        assert np.array_equal(unpack_bits(packed, bits, n), v)


def test_pack_bits_is_msb_first():
    assert pack_bits(np.array([1, 0, 3, 2]), 2) == bytes([0b01001110])
    assert pack_bits(np.array([5, 2]), 3) == bytes([0b10101000])
    assert pack_bits(np.array([0x123456]), 24) == bytes([0x12, 0x34, 0x56])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5).filter(lambda b: sum(b) <= 32),
       st.integers(0, 2 ** 31))
def test_any_bit_list_matches_direct_quantisation(bits, seed):
    x = torch.randn(50, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    entries, parts = encode_all({"x": x}, bits)
    cum = 0
    for s, b in enumerate(bits):
        cum += b
        assert torch.equal(decode_stage(entries, bits, parts[: s + 1])["x"], direct_quantize(x, cum))


def test_bad_bit_lists_are_usage_errors():
    assert parse_bits("4,4,8,16") == (4, 4, 8, 16)
    for text in ("", "0,2", "16,16,1", "a,b", "-2,4"):
        with pytest.raises(UsageError):
            parse_bits(text)


def test_nan_weights_are_refused():
    with pytest.raises(DataError, match="NaN"):
        encode_tensor("x", torch.tensor([1.0, float("nan")]), (8,))


def test_malformed_part_leaves_decoder_unchanged(state):
    bits = (8, 8)
    entries, parts = encode_all(state, bits)
    dec = StageDecoder(entries, bits)
    dec.add_part(parts[0])
    before = dec.tensors()
    with pytest.raises(DataError):
        dec.add_part(parts[1][:-1])  # truncated
    assert dec.parts_done == 1
    after = dec.tensors()
    assert all(torch.equal(before[k], after[k]) for k in before)
