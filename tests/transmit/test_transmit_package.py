"""Package format: manifest fields, SHA-256 per part, tamper refusal, packing a `cuekit train` checkpoint."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from cuekit.errors import DataError
from cuekit.transmit.package import (
    IntegrityError,
    ProgressiveDecoder,
    load_manifest,
    manifest_hash,
    model_from_manifest,
    pack,
    pack_state_dict,
    read_package_stage,
)


def test_manifest_describes_parts_and_tensors(tmp_path, state):
    man = pack_state_dict(state, tmp_path / "pkg", (4, 4, 8, 16))
    raw = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert raw["bits"] == [4, 4, 8, 16] and raw["stage_bits"] == [4, 8, 16, 32]
    assert [t["name"] for t in raw["tensors"]] == list(state)
    for s, part in enumerate(raw["parts"]):
        data = (tmp_path / "pkg" / part["file"]).read_bytes()
        assert len(data) == part["bytes"] == sum(t["byte_sizes"][s] for t in raw["tensors"])
        assert hashlib.sha256(data).hexdigest() == part["sha256"]
    conv = next(t for t in raw["tensors"] if t["name"] == "conv.weight")
    w = state["conv.weight"].double()
    assert conv["min"] == float(w.min()) and conv["scale"] == float(w.max() - w.min())
    assert conv["shape"] == list(state["conv.weight"].shape) and conv["dtype"] == "float32"
    assert load_manifest(tmp_path / "pkg").to_json() == man.to_json()


def test_total_size_is_one_quantised_model(tmp_path, state):
    man = pack_state_dict(state, tmp_path / "p", (2,) * 8)
    n_float = sum(v.numel() for v in state.values() if v.is_floating_point())
    n_int_bytes = sum(v.numel() * v.element_size() for v in state.values() if not v.is_floating_point())
    per_tensor_padding = 8 * len(state)  # at most one padding byte per tensor and part
    assert 2 * n_float + n_int_bytes <= man.total_bytes <= 2 * n_float + n_int_bytes + per_tensor_padding
    assert man.source["float16_bytes"] > 2 * n_float  # safetensors adds its header


def test_local_roundtrip_matches_decoder(tmp_path, state):
    pack_state_dict(state, tmp_path / "p", (2,) * 8)
    for s in (1, 4, 8):
        sd = read_package_stage(tmp_path / "p", s)
        assert set(sd) == set(state)
        assert torch.equal(sd["bn.num_batches_tracked"], state["bn.num_batches_tracked"])


def test_tampered_part_is_refused_and_nothing_loaded(tmp_path, state):
    pack_state_dict(state, tmp_path / "p", (2,) * 8)
    man = load_manifest(tmp_path / "p")
    parts = [(tmp_path / "p" / p.file).read_bytes() for p in man.parts]
    dec = ProgressiveDecoder(man)
    dec.add_part(0, parts[0])
    dec.add_part(1, parts[1])
    before = dec.state_dict()
    bad = bytearray(parts[2])
    bad[len(bad) // 2] ^= 0x10  # one flipped bit
    with pytest.raises(IntegrityError, match=r"part 2 \(part-2.bin\) failed its SHA-256 check.*nothing was loaded"):
        dec.add_part(2, bytes(bad))
    assert dec.parts_done == 2 and dec.known_bits == 4
    after = dec.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(IntegrityError, match="bytes"):
        dec.add_part(2, parts[2] + b"x")
    dec.add_part(2, parts[2])  # the genuine part still goes in
    assert dec.known_bits == 6


def test_parts_must_come_in_order(tmp_path, state):
    pack_state_dict(state, tmp_path / "p", (8, 8))
    man = load_manifest(tmp_path / "p")
    with pytest.raises(DataError, match="in order"):
        ProgressiveDecoder(man).add_part(1, (tmp_path / "p" / "part-1.bin").read_bytes())


def test_manifest_with_path_in_part_name_is_refused(tmp_path, state):
    pack_state_dict(state, tmp_path / "p", (8, 8))
    raw = json.loads((tmp_path / "p" / "manifest.json").read_text())
    raw["parts"][0]["file"] = "../../etc/passwd"
    raw["manifest_sha256"] = manifest_hash(raw)  # a consistent manifest: the name check itself refuses it
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match="plain file name"):
        load_manifest(tmp_path / "p")


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not a progressive package"):
        load_manifest(tmp_path)


def test_pack_a_trained_checkpoint_rebuilds_the_model(tmp_path):
    from cuekit.models import create_model
    from cuekit.train.checkpoint import save_weights

    model = create_model("resnet8", num_classes=4, width=4)
    meta = {"model": "resnet8", "num_classes": 4, "in_chans": 3, "img_size": 16, "class_names": list("abcd"),
            "config": {"model_kwargs": {"width": 4}}}
    save_weights(tmp_path / "model.safetensors", model, meta)
    man = pack(tmp_path / "model.safetensors", tmp_path / "pkg", (8, 8), full_precision_1d=True)
    assert man.model == {"name": "resnet8", "num_classes": 4, "in_chans": 3, "img_size": 16,
                         "model_kwargs": {"width": 4}}
    assert man.metadata["class_names"] == list("abcd")
    rebuilt = model_from_manifest(man)
    rebuilt.load_state_dict(read_package_stage(tmp_path / "pkg"))
    x = torch.rand(2, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), model(x), atol=1e-2)
    for k, v in model.state_dict().items():  # 1-D tensors exact with --full-precision-1d
        if v.dim() <= 1:
            assert torch.equal(rebuilt.state_dict()[k], v)
