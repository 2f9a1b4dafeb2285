"""`video-folder:`: class-per-folder video files (PyAV) and frame folders, clip sampling, splits and errors.

Every generated frame k carries its index: video frames are grey at level 16 + 6k (luma only, so lossy
codecs keep it to within a fraction of a step); PNG frames have green = 16 + 6k, red a left-to-right
ramp and blue a top-to-bottom ramp, so crops and flips show in the red and blue channels.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cuekit.cli import main
from cuekit.data import create_dataset
from cuekit.data.video_folders import (
    KINETICS_MEAN,
    KINETICS_STD,
    VideoClipDataset,
    _decode_frames,
    clip_indices,
    count_video_frames,
    natural_key,
    random_clip_indices,
    scan_video_folder,
)
from cuekit.errors import DataError, UsageError

av = pytest.importorskip("av")

H, W = 40, 56


def _level(k: int) -> int:
    return 16 + 6 * k


def write_video(path, n: int, codec: str = "mpeg4", gop: int = 5, fps: int = 25):
    """A video whose frame k is uniformly grey at level 16 + 6 (k mod 40)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt, stream.gop_size = W, H, "yuv420p", gop
        stream.bit_rate = 4_000_000
        for k in range(n):
            img = np.full((H, W, 3), _level(k % 40), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder, n: int, ext: str = "png"):
    """Frame images frame_1.EXT .. frame_N.EXT (no zero padding): green = 16 + 6k, red / blue spatial ramps."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:H, 0:W]
    for k in range(n):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 0] = 10 + (200 * xx / (W - 1)).astype(np.uint8)
        img[..., 1] = _level(k)
        img[..., 2] = 10 + (200 * yy / (H - 1)).astype(np.uint8)
        Image.fromarray(img).save(folder / f"frame_{k + 1}.{ext}")
    return folder


def unnormalise(clip: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) normalised clip -> values in [0, 255]."""
    mean = torch.tensor(KINETICS_MEAN)[:, None, None, None]
    std = torch.tensor(KINETICS_STD)[:, None, None, None]
    return (clip * std + mean) * 255


def frame_ids(clip: torch.Tensor, channel: int | None = None) -> list[int]:
    """The index each frame of a clip shows (grey level, or one channel's level)."""
    v = unnormalise(clip)
    v = v.mean(0) if channel is None else v[channel]
    levels = v.mean((1, 2))
    ids = (levels - 16) / 6
    assert (ids - ids.round()).abs().max() < 0.45, ids  # near a level a frame really had
    return [int(i) for i in ids.round()]


def make_tree(root, per_class=3, n=24):
    """Two classes, each with videos and frame folders."""
    for c, name in enumerate(["jump", "run"]):
        for i in range(per_class):
            if i % 2 == 0:
                write_video(root / name / f"clip{i}.mp4", n)
            else:
                write_frames(root / name / f"clip{i}", n)
    return root


def test_natural_sort_orders_numbers_by_value():
    names = ["frame_10.jpg", "frame_2.jpg", "frame_1.jpg", "Frame_3.jpg", "frame_1b.jpg"]
    assert sorted(names, key=natural_key) == ["frame_1.jpg", "frame_1b.jpg", "frame_2.jpg", "Frame_3.jpg",
                                               "frame_10.jpg"]


def test_clip_indices_stride_centre_and_short_videos():
    assert clip_indices(30, 4, 3, start=5) == [5, 8, 11, 14]
    assert clip_indices(30, 4, 2) == [11, 13, 15, 17]  # centre: start (30 - 7) // 2
    assert clip_indices(30, 4, 2, start=100) == [23, 25, 27, 29]  # clamped to the end
    assert clip_indices(10, 4, 4) == [0, 3, 6, 9]  # stride shrinks to the largest that fits
    assert clip_indices(5, 8, 2) == [0, 0, 1, 1, 2, 3, 3, 4]  # fewer frames than the clip: repeat, in order
    assert clip_indices(1, 3, 2) == [0, 0, 0]
    starts = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = random_clip_indices(30, 4, 3, generator=g)
        assert np.all(np.diff(idx) == 3) and 0 <= idx[0] and idx[-1] < 30
        starts.add(idx[0])
    assert len(starts) > 10 and min(starts) == 0 and max(starts) == 30 - 10


def test_scan_labels_by_class_folder_and_mixes_kinds(tmp_path):
    root = make_tree(tmp_path / "d", per_class=3, n=6)
    (root / "jump" / "notes.txt").write_text("not a clip")
    (root / "run" / ".hidden.mp4").write_bytes(b"")
    classes, samples = scan_video_folder(root)
    assert classes == ["jump", "run"]
    assert [(p.split("/")[-2:], y) for p, y in samples] == [
        (["jump", "clip0.mp4"], 0), (["jump", "clip1"], 0), (["jump", "clip2.mp4"], 0),
        (["run", "clip0.mp4"], 1), (["run", "clip1"], 1), (["run", "clip2.mp4"], 1)]


@pytest.mark.parametrize("name,codec", [("v.mp4", "mpeg4"), ("v.mp4", "libx264"), ("v.avi", "mpeg4"),
                                        ("v.mkv", "libx264"), ("v.webm", "libvpx")])
def test_video_file_frames_and_counts(tmp_path, name, codec):
    path = write_video(tmp_path / name, 40, codec=codec)
    assert count_video_frames(str(path)) == 40  # container metadata, or packets where it has none (mkv, webm)
    val = VideoClipDataset([(str(path), 0)], frames=5, stride=3, img_size=24, train=False)
    clip, label = val[0]
    assert clip.shape == (3, 5, 24, 24) and clip.dtype == torch.float32 and label == 0
    assert frame_ids(clip) == [13, 16, 19, 22, 25]  # centre clip: start (40 - 13) // 2
    assert torch.equal(val[0][0], clip)  # deterministic
    # seeking to the clip gives the frames a full decode from the start gives
    for wanted in ([0, 3], [7, 9, 11], [21, 33, 39]):
        with av.open(str(path)) as c:
            seeked, _ = _decode_frames(c, c.streams.video[0], wanted, (W, H), seek=True)
        with av.open(str(path)) as c:
            full, _ = _decode_frames(c, c.streams.video[0], wanted, (W, H), seek=False)
        for i in wanted:
            assert np.array_equal(seeked[i], full[i])
            assert abs(float(full[i].mean()) - _level(i)) < 3


class CountingContainer:
    """Wraps a PyAV container and counts the frames its decoder hands out."""

    def __init__(self, container):
        self.container, self.decoded = container, 0

    def seek(self, *args, **kwargs):
        return self.container.seek(*args, **kwargs)

    def decode(self, stream):
        for frame in self.container.decode(stream):
            self.decoded += 1
            yield frame


@pytest.mark.parametrize("codec", ["mpeg4", "libx264"])
def test_a_late_clip_is_read_by_seeking_not_by_decoding_the_whole_file(tmp_path, codec):
    path = write_video(tmp_path / "long.mp4", 120, codec=codec, gop=10)
    wanted = [100, 102, 104]
    with av.open(str(path)) as c:
        counting = CountingContainer(c)
        got, _ = _decode_frames(counting, c.streams.video[0], wanted, (W, H), seek=True)
    assert counting.decoded <= 15  # from the key frame at 100 (or before) to 104, not 105 frames
    assert [round((float(got[i].mean()) - 16) / 6) for i in wanted] == [i % 40 for i in wanted]


def test_train_clips_are_consecutive_at_the_stride_and_vary_with_the_seed(tmp_path):
    path = write_video(tmp_path / "v.mp4", 30)
    train = VideoClipDataset([(str(path), 1)], frames=4, stride=3, img_size=24, train=True)
    starts = []
    for seed in range(12):
        torch.manual_seed(seed)
        clip, label = train[0]
        ids = frame_ids(clip)
        assert clip.shape == (3, 4, 24, 24) and label == 1
        assert np.all(np.diff(ids) == 3) and ids == train.last_indices
        starts.append(ids[0])
    assert len(set(starts)) > 3
    torch.manual_seed(5)
    a = train[0][0]
    torch.manual_seed(5)
    assert torch.equal(train[0][0], a)


def test_frame_folder_natural_order_and_consistent_crop_and_flip(tmp_path):
    folder = write_frames(tmp_path / "c" / "clip", 12)
    val = VideoClipDataset([(str(folder), 0)], frames=4, stride=2, img_size=32, train=False)
    clip, _ = val[0]
    assert frame_ids(clip, channel=1) == [2, 4, 6, 8]  # frame_10.png sorts after frame_9.png
    train = VideoClipDataset([(str(folder), 0)], frames=4, stride=2, img_size=32, train=True)
    torch.manual_seed(0)
    flips, crops = 0, set()
    for _ in range(20):
        clip, _ = train[0]
        v = unnormalise(clip)
        ids = frame_ids(clip, channel=1)
        assert np.all(np.diff(ids) == 2)
        for t in range(1, 4):  # every frame has the same crop and the same flip as the first
            assert torch.allclose(v[0, t], v[0, 0], atol=1e-3) and torch.allclose(v[2, t], v[2, 0], atol=1e-3)
        red = v[0, 0]
        flips += bool(red[:, 0].mean() > red[:, -1].mean())  # the left-to-right ramp runs backwards
        crops.add((round(float(red.mean()), 1), round(float(v[2, 0].mean()), 1)))
    assert 3 <= flips <= 17 and len(crops) > 10


def test_short_videos_still_give_full_clips(tmp_path):
    path = write_video(tmp_path / "short.mp4", 5)
    folder = write_frames(tmp_path / "short_frames", 3)
    for sample, n in ((str(path), 5), (str(folder), 3)):
        for train in (False, True):
            ds = VideoClipDataset([(sample, 0)], frames=8, stride=2, img_size=16, train=train)
            clip, _ = ds[0]
            ids = frame_ids(clip, channel=None if sample.endswith(".mp4") else 1)
            assert clip.shape == (3, 8, 16, 16)
            assert ids == [k * n // 8 for k in range(8)]


def test_an_overcounted_video_is_resampled_within_its_real_frames(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20)
    ds = VideoClipDataset([(str(path), 0)], frames=4, stride=2, img_size=16, train=False)
    ds._frame_counts[0] = 100  # as if the container's metadata were wrong
    clip, _ = ds[0]
    assert frame_ids(clip) == clip_indices(20, 4, 2) and ds._frame_counts[0] == 20


def test_splits_from_subfolders_and_seeded(tmp_path):
    make_tree(tmp_path / "a" / "train", per_class=3, n=8)
    make_tree(tmp_path / "a" / "val", per_class=1, n=8)
    make_tree(tmp_path / "a" / "test", per_class=2, n=8)
    b = create_dataset(f"video-folder:{tmp_path / 'a'}", frames=4, img_size=16)
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 4)
    assert b.frames == 4 and b.img_size == 16 and b.class_names == ["jump", "run"] and b.num_classes == 2
    assert tuple(b.mean) == KINETICS_MEAN and tuple(b.std) == KINETICS_STD
    x, y = b.train[0]
    assert x.shape == (3, 4, 16, 16) and y in (0, 1)

    make_tree(tmp_path / "b" / "train", per_class=2, n=8)
    make_tree(tmp_path / "b" / "test", per_class=1, n=8)
    b = create_dataset(f"video-folder:{tmp_path / 'b'}", frames=2, img_size=16)
    assert (len(b.train), len(b.val)) == (4, 2)  # no val folder: the test split validates

    make_tree(tmp_path / "c", per_class=5, n=8)
    b = create_dataset(f"video-folder:{tmp_path / 'c'}", val_split=0.3, seed=3)
    assert b.frames == 16 and b.img_size == 112 and b.test is None  # the defaults
    assert len(b.train) == 7 and len(b.val) == 3
    assert not set(b.train.indices) & set(b.val.indices)
    again = create_dataset(f"video-folder:{tmp_path / 'c'}", val_split=0.3, seed=3)
    assert list(again.val.indices) == list(b.val.indices)
    other = create_dataset(f"video-folder:{tmp_path / 'c'}", val_split=0.3, seed=4)
    assert list(other.val.indices) != list(b.val.indices)
    assert [y for _, y in b.val.dataset.samples] == [0] * 5 + [1] * 5

    make_tree(tmp_path / "d" / "train", per_class=2, n=8)
    write_video(tmp_path / "d" / "val" / "jump" / "x.mp4", 8)
    with pytest.raises(DataError, match="different class folders"):
        create_dataset(f"video-folder:{tmp_path / 'd'}")


def test_bad_input_is_a_data_or_usage_error_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        create_dataset(f"video-folder:{tmp_path / 'nope'}")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        create_dataset(f"video-folder:{tmp_path / 'none'}")
    with pytest.raises(UsageError):
        create_dataset("video-folder")
    make_tree(tmp_path / "ok", per_class=2, n=6)
    with pytest.raises(UsageError):
        create_dataset(f"video-folder:{tmp_path / 'ok'}", frames=0)
    with pytest.raises(UsageError, match="task"):
        create_dataset(f"video-folder:{tmp_path / 'ok'}", task="shape")

    empty_class = make_tree(tmp_path / "e", per_class=2, n=6)
    (empty_class / "walk").mkdir()
    (empty_class / "walk" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="walk"):
        create_dataset(f"video-folder:{empty_class}")

    empty_clip = make_tree(tmp_path / "f", per_class=2, n=6)
    (empty_clip / "run" / "clip9").mkdir()
    with pytest.raises(DataError, match="clip9"):
        create_dataset(f"video-folder:{empty_clip}")

    garbage = tmp_path / "g" / "a" / "broken.mp4"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    good = write_video(tmp_path / "g" / "a" / "good.mp4", 10)
    truncated = tmp_path / "g" / "a" / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for bad in (garbage, truncated):
        with pytest.raises(DataError, match=bad.name):
            VideoClipDataset([(str(bad), 0)], frames=4, img_size=16)[0]

    bad_frame = write_frames(tmp_path / "h", 4)
    (bad_frame / "frame_3.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="frame_3.png"):
        VideoClipDataset([(str(bad_frame), 0)], frames=4, stride=1, img_size=16)[0]


def test_dataloader_workers_read_a_batch(tmp_path):
    root = make_tree(tmp_path / "d", per_class=3, n=12)
    b = create_dataset(f"video-folder:{root}", frames=4, img_size=16, val_split=0.34)
    x, y = next(iter(DataLoader(b.train, batch_size=4, num_workers=2)))
    assert x.shape == (4, 3, 4, 16, 16) and y.shape == (4,) and torch.isfinite(x).all()


def test_cli_train_on_a_video_folder_end_to_end(tmp_path, capsys):
    root = make_tree(tmp_path / "d", per_class=4, n=10)
    run = tmp_path / "run"
    code = main(["train", "--data", f"video-folder:{root}", "--model", "video_cnn_small", "--frames", "4",
                 "--img-size", "32", "--epochs", "1", "--batch-size", "4", "--val-split", "0.25",
                 "--out", str(run), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "completed" and len(results["history"]) == 1
    meta = json.loads((run / "model.json").read_text())
    assert meta["frames"] == 4 and meta["img_size"] == 32 and meta["class_names"] == ["jump", "run"]

    code = main(["train", "--data", f"video-folder:{tmp_path / 'missing'}", "--model", "video_cnn_small",
                 "--out", str(tmp_path / "run2"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "not found" in err and "Traceback" not in err
