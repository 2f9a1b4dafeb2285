"""Label-map storage: round trip, fp16/int16 shards, corrupt and missing maps, the original format."""
from __future__ import annotations

import pytest
import torch

from cuekit.errors import DataError, UsageError
from cuekit.relabel.storage import LabelMapStore, LabelMapWriter, OriginalLabelMaps, open_label_maps, shard_name


def make_maps(n: int, k: int = 5, h: int = 4, w: int = 4, c: int = 300, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, k, h, w, generator=g) * 4
    indices = torch.randint(0, c, (n, k, h, w), generator=g)
    return scores, indices


def write_store(root, n=10, shard_size=4, c=300):
    names = [f"cls{i % 3}/img{i}.jpg" for i in range(n)]
    scores, indices = make_maps(n, c=c)
    writer = LabelMapWriter(root, names, num_classes=c, topk=5, map_size=(4, 4), shard_size=shard_size)
    for s in writer.missing_shards():
        r = writer.shard_range(s)
        writer.write_shard(s, scores[r.start:r.stop], indices[r.start:r.stop])
    return names, scores, indices


def test_round_trip_in_fp16_and_int16(tmp_path):
    names, scores, indices = write_store(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [shard_name(s) for s in range(3)]
    store = open_label_maps(tmp_path)
    assert isinstance(store, LabelMapStore) and store.complete and len(store) == 10
    for i, name in enumerate(names):
        s, idx = store.get(name)
        assert torch.equal(idx, indices[i])
        assert torch.equal(s, scores[i].half().float())
    from safetensors.torch import load_file

    raw = load_file(str(tmp_path / shard_name(0)))
    assert raw["scores"].dtype == torch.float16 and raw["indices"].dtype == torch.int16
    assert store.bytes_per_image() < 5 * 16 * 4 + 200  # 4 bytes per stored entry plus a share of the header


def test_missing_and_corrupt_shards_name_the_image(tmp_path):
    names, _, _ = write_store(tmp_path)
    (tmp_path / shard_name(1)).unlink()
    with pytest.raises(DataError, match="cls1/img4.jpg"):
        LabelMapStore(tmp_path).get(names[4])
    (tmp_path / shard_name(0)).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"corrupt label map for image 'cls0/img0.jpg'"):
        LabelMapStore(tmp_path).get(names[0])
    with pytest.raises(DataError, match="nope.jpg"):
        LabelMapStore(tmp_path).get("nope.jpg")
    with pytest.raises(DataError, match="index.json"):
        LabelMapStore(tmp_path / "empty")


def test_out_of_range_class_ids_are_reported(tmp_path):
    names = ["a.jpg", "b.jpg"]
    writer = LabelMapWriter(tmp_path, names, num_classes=10, topk=2, map_size=(2, 2), shard_size=2)
    ids = torch.zeros(2, 2, 2, 2, dtype=torch.long)
    ids[1, 0, 0, 0] = 12
    writer.write_shard(0, torch.zeros(2, 2, 2, 2), ids)
    store = LabelMapStore(tmp_path)
    store.get("a.jpg")
    with pytest.raises(DataError, match="'b.jpg'"):
        store.get("b.jpg")


def test_reopening_with_other_images_is_refused(tmp_path):
    write_store(tmp_path)
    with pytest.raises(UsageError, match="other images"):
        LabelMapWriter(tmp_path, ["x.jpg"], num_classes=300, topk=5, map_size=(4, 4), shard_size=4)


def test_original_release_format(tmp_path):
    scores, indices = make_maps(1, h=15, w=15, c=1000)
    (tmp_path / "n01440764").mkdir()
    torch.save(torch.stack([scores[0], indices[0].float()]), tmp_path / "n01440764" / "n01440764_10026.pt")
    maps = open_label_maps(tmp_path)
    assert isinstance(maps, OriginalLabelMaps)
    s, idx = maps.get("/data/imagenet/train/n01440764/n01440764_10026.JPEG")
    assert torch.equal(s, scores[0]) and torch.equal(idx, indices[0])
    with pytest.raises(DataError, match="n01440764_9.JPEG"):
        maps.get("train/n01440764/n01440764_9.JPEG")
    (tmp_path / "n01440764" / "bad.pt").write_bytes(b"not a tensor")
    with pytest.raises(DataError, match="corrupt label map for image 'n01440764/bad.JPEG'"):
        maps.get("n01440764/bad.JPEG")
    torch.save(torch.zeros(3, 15, 15), tmp_path / "n01440764" / "flat.pt")
    with pytest.raises(DataError, match="flat.JPEG.*expected a \\[2, K, h, w\\]"):
        maps.get("n01440764/flat.JPEG")
