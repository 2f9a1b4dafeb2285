"""Multi-clip x multi-crop testing of video models: the clips and crops taken, the averaged softmax, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from cuekit.cli import main
from cuekit.data.video_folders import (
    KINETICS_MEAN,
    KINETICS_STD,
    VideoClipDataset,
    clip_indices,
    crop_offsets,
    uniform_clip_indices,
    with_test_views,
)
from cuekit.errors import UsageError
from cuekit.train.engine import evaluate
from video_helpers import write_frame_folder, write_lines, write_tiny_video

av = pytest.importorskip("av")


def test_uniform_clips_are_spaced_evenly_and_one_clip_is_the_centre_clip():
    # 20 frames, 4-frame clips at stride 2 span 7 frames: starts 0..13; 3 clips start at the centres of
    # three equal segments of [0, 13]: floor(13/6) = 2, floor(39/6) = 6, floor(65/6) = 10
    assert uniform_clip_indices(20, 4, 2, 3) == [[2, 4, 6, 8], [6, 8, 10, 12], [10, 12, 14, 16]]
    assert uniform_clip_indices(20, 4, 2, 1) == [clip_indices(20, 4, 2)]
    starts = [c[0] for c in uniform_clip_indices(300, 16, 2, 10)]  # 269 starts; segments of 26.9
    assert starts == [int(269 * (2 * k + 1) / 20) for k in range(10)]
    assert starts[0] + starts[-1] == 269 - 1 or starts[0] + starts[-1] == 269  # symmetric up to rounding
    assert uniform_clip_indices(3, 4, 2, 2) == [[0, 0, 1, 2]] * 2  # too short: the one repeated clip
    assert crop_offsets(24, 16, 3) == [0, 4, 8] and crop_offsets(24, 16, 1) == [4]
    assert crop_offsets(16, 16, 3) == [0] * 3
    with pytest.raises(UsageError):
        uniform_clip_indices(20, 4, 2, 0)


def decode_all(path) -> np.ndarray:
    """Every frame of a video (N, H, W, 3) uint8, decoded at its own size."""
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def normalise(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float, normalised with the Kinetics mean / std."""
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2) / 255
    return (x - torch.tensor(KINETICS_MEAN)[:, None, None, None]) / torch.tensor(KINETICS_STD)[:, None, None, None]


class SpatialProbe(nn.Module):
    """A fixed linear classifier over the whole clip: every pixel, frame and channel counts, so clips and crops
    give different predictions."""

    def __init__(self, clip_shape, classes=3):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(clip_shape)), classes)
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.05)
            self.fc.bias.zero_()

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_ten_clips_three_crops_equal_the_hand_computed_average(tmp_path):
    # two wide 16 x 24 videos with a spatial pattern, so the 3 crops differ
    paths = []
    for v in range(2):
        path = tmp_path / f"v{v}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=12)
            stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 24, 16, "yuv420p", 2_000_000
            for k in range(20):
                img = np.zeros((16, 24, 3), np.uint8)
                img[:, :, 0] = np.linspace(20, 230, 24)[None, :] if v == 0 else np.linspace(230, 20, 24)[None, :]
                img[:, :, 1] = 16 + 9 * k
                img[4:12, (k % 3) * 8:(k % 3) * 8 + 8, 2] = 200  # a square that moves across the frame
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    ds = VideoClipDataset([(str(p), v) for v, p in enumerate(paths)], frames=4, stride=2, img_size=16)
    views = with_test_views(ds, clips=3, crops=3)
    model = SpatialProbe((3, 4, 16, 16)).eval()

    probs, hand_views = [], []
    for p in paths:
        frames = decode_all(p)  # (20, 16, 24, 3): the shorter side is already the 16-px crop size
        clips = [[2, 4, 6, 8], [6, 8, 10, 12], [10, 12, 14, 16]]  # see the test above
        vs = [normalise(frames[c][:, :, left:left + 16]) for c in clips for left in (0, 4, 8)]
        hand_views.append(torch.stack(vs))
        with torch.no_grad():
            probs.append(torch.stack([model(v[None]).softmax(-1)[0] for v in vs]).mean(0))
    for i in range(2):
        x, y = views[i]
        assert x.shape == (9, 3, 4, 16, 16) and y == i
        assert torch.allclose(x, hand_views[i], atol=1e-4)
    probs = torch.stack(probs)
    labels = torch.tensor([0, 1])
    hand_loss = float(-probs[torch.arange(2), labels].log().mean())
    hand_acc = float((probs.argmax(1) == labels).float().mean())
    for batch_size in (9, 100):  # one video per batch, or both
        ev = evaluate(model, views, batch_size=batch_size, multi_view=True)
        assert ev["n"] == 2 and ev["loss"] == pytest.approx(hand_loss, rel=1e-5) and ev["acc"] == hand_acc
    # the averaged prediction is not the single centre view's on these videos
    single = evaluate(model, ds, batch_size=2)
    assert single["loss"] != pytest.approx(hand_loss, rel=1e-3)


def test_one_view_equals_plain_validation_and_frame_folders_work(tmp_path):
    folders = [write_frame_folder(tmp_path / f"c{i}", n=10, height=20, width=30) for i in range(3)]
    ds = VideoClipDataset([(str(f), i % 2) for i, f in enumerate(folders)], frames=3, stride=2, img_size=16)
    one = with_test_views(torch.utils.data.Subset(ds, [2, 0]), clips=1, crops=1)
    assert isinstance(one, torch.utils.data.Subset) and one.indices == [2, 0]
    x, y = one[0]
    assert x.shape == (1, 3, 3, 16, 16) and torch.equal(x[0], ds[2][0]) and y == 0
    model = SpatialProbe((3, 3, 16, 16), classes=2).eval()
    plain = evaluate(model, torch.utils.data.Subset(ds, [2, 0]), batch_size=4)
    multi = evaluate(model, one, batch_size=4, multi_view=True)
    assert multi["loss"] == pytest.approx(plain["loss"], rel=1e-5) and multi["acc"] == plain["acc"]
    x, _ = with_test_views(ds, clips=2, crops=3)[1]
    assert x.shape == (6, 3, 3, 16, 16)
    green = x[:, 1].mean((2, 3))  # (views, T): the frame levels; clips 0 and 1 start at 1 and 3 (starts 0..4)
    assert not torch.allclose(green[0], green[3])
    assert torch.allclose(green[0], green[1]) and torch.allclose(green[0], green[2])  # crops of one clip
    with pytest.raises(UsageError, match="video read from files"):
        with_test_views(torch.utils.data.TensorDataset(torch.zeros(2, 3, 2, 4, 4), torch.zeros(2)), 2, 1)


def test_cli_train_with_split_stride_then_multi_view_eval(tmp_path, capsys):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", ["1 Jump", "2 Run"])
    for split in (1, 2):
        train = [f"{c}/v_{c}_g0{g}_c01.avi {i + 1}" for i, c in enumerate(["Jump", "Run"]) for g in range(1, 4)
                 if g != split]
        write_lines(lists / f"trainlist0{split}.txt", train)
        write_lines(lists / f"testlist0{split}.txt", [f"{c}/v_{c}_g0{split}_c01.avi" for c in ["Jump", "Run"]])
    for c in ("Jump", "Run"):
        for g in (1, 2, 3):
            write_tiny_video(root / "UCF-101" / c / f"v_{c}_g0{g}_c01.avi", n=10, width=24)
    run = tmp_path / "run"
    code = main(["train", "--data", f"ucf101:{root}", "--split", "2", "--stride", "3", "--no-flip",
                 "--model", "video_cnn_small", "--frames", "3", "--img-size", "16", "--epochs", "1",
                 "--batch-size", "2", "--out", str(run), "--no-progress"])
    out = capsys.readouterr()
    assert code == 0, out.err
    meta = json.loads((run / "model.json").read_text())
    assert meta["stride"] == 3 and meta["split"] == 2 and meta["flip"] is False and meta["frames"] == 3

    code = main(["eval", "--ckpt", str(run / "model.safetensors"), "--clips", "4", "--crops", "3",
                 "--out", str(tmp_path / "ev")])
    out = capsys.readouterr()
    assert code == 0, out.err
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["clips"] == 4 and res["crops"] == 3 and res["stride"] == 3 and res["n"] == 2  # split 2's test list
    assert "4 clips x 3 crops" in out.out

    code = main(["eval", "--ckpt", str(run / "model.safetensors"), "--clips", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--clips" in err and "Traceback" not in err
    (lists / "testlist03.txt").write_text("")
    code = main(["eval", "--ckpt", str(run / "model.safetensors"), "--split", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "trainlist03.txt" in err and "Traceback" not in err
    code = main(["train", "--data", f"ucf101:{root}", "--split", "7", "--model", "video_cnn_small",
                 "--out", str(tmp_path / "r2"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--split must be 1, 2 or 3" in err and "Traceback" not in err
    code = main(["train", "--data", "dsprites", "--stride", "2", "--out", str(tmp_path / "r3"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--stride does not apply to 'dsprites'" in err


def test_predict_reads_the_clip_at_the_checkpoints_stride(tmp_path):
    from cuekit.data.preprocess import load_clip_tensor

    folder = write_frame_folder(tmp_path / "clip", n=12)
    meta = {"frames": 3, "img_size": 16, "mean": [0.0] * 3, "std": [1.0] * 3, "in_chans": 3}
    for stride in (1, 4):
        x = load_clip_tensor(folder, {**meta, "stride": stride})
        levels = (x[0, 1].mean((1, 2)) * 255).round().tolist()
        assert levels == [16 + 6 * k for k in clip_indices(12, 3, stride)]
