"""`cuekit data check` and `cuekit train --check-data / --skip-bad-images`: every file opened once, before training."""
from __future__ import annotations

import json

import pytest

from cuekit.cli import main
from cuekit.data import create_dataset
from cuekit.data.check import check_bundle, check_paths, check_sample, sample_paths, without_samples
from shared_helpers import write_image_folder


def spoil(folder):
    """Two unreadable files in a 2-class image folder: one not an image at all, one cut short."""
    (folder / "circle" / "3.png").write_text("not an image")
    whole = (folder / "square" / "5.png").read_bytes()
    (folder / "square" / "5.png").write_bytes(whole[: len(whole) // 2])
    return {str(folder / "circle" / "3.png"), str(folder / "square" / "5.png")}


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_data_check_lists_every_unreadable_file_as_json_and_a_table(tmp_path, capsys):
    bad = spoil(write_image_folder(tmp_path / "imgs", per_class=6))
    code, out, err = run(["data", "check", f"folder:{tmp_path / 'imgs'}", "--out", tmp_path / "chk", "--no-progress"],
                         capsys)
    assert code == 1  # the check found a problem
    result = json.loads((tmp_path / "chk" / "results.json").read_text())
    assert result["checked"] == 12 and result["unreadable"] == 2
    assert {b["file"] for b in result["bad"]} == bad
    assert "truncated" in " ".join(b["problem"] for b in result["bad"])
    for path in bad:
        assert path in out and path in (tmp_path / "chk" / "results.txt").read_text()
    assert "12 files" in out and "2 unreadable" in out and "Traceback" not in err


def test_data_check_of_readable_and_of_built_in_data_exits_0(tmp_path, capsys):
    write_image_folder(tmp_path / "imgs", per_class=3)
    code, out, _ = run(["data", "check", f"folder:{tmp_path / 'imgs'}", "--workers", "0"], capsys)
    assert code == 0 and "all readable" in out
    code, out, _ = run(["data", "check", "dsprites"], capsys)
    assert code == 0 and "nothing to check" in out


def test_threads_find_what_one_thread_finds(tmp_path):
    bad = spoil(write_image_folder(tmp_path / "imgs", per_class=10))
    paths = sample_paths(create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16).train)
    one = check_paths(paths, threads=0, progress=False)
    many = check_paths(paths, threads=4, progress=False)
    assert one == many and {p for p, _ in many} == bad & set(paths)
    assert [p for p, _ in many] == [p for p in paths if p in bad]  # in sample order


def test_video_files_and_frame_folders_are_checked_frame_by_frame(tmp_path):
    pytest.importorskip("av")
    from data.test_video_folders import write_frames, write_video

    good_video = write_video(tmp_path / "run" / "a.mp4", 12)
    broken_video = tmp_path / "run" / "b.mp4"
    broken_video.write_bytes(good_video.read_bytes()[:200])
    good_frames = write_frames(tmp_path / "jump" / "c", 5)
    bad_frames = write_frames(tmp_path / "jump" / "d", 5)
    (bad_frames / "frame_3.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    assert check_sample(str(good_video)) is None and check_sample(str(good_frames)) is None
    assert check_sample(str(broken_video)) is not None
    assert check_sample(str(bad_frames)).startswith("frame frame_3.png:")
    bundle = create_dataset(f"video-folder:{tmp_path}", frames=2, img_size=16)
    found = check_bundle(bundle, threads=2, progress=False)
    assert found.checked == 4 and {p for p, _ in found.bad} == {str(broken_video), str(bad_frames)}


def test_without_samples_drops_only_the_named_files(tmp_path):
    bad = spoil(write_image_folder(tmp_path / "imgs", per_class=6))
    bundle = create_dataset(f"folder:{tmp_path / 'imgs'}", img_size=16, val_split=0.25)
    kept = without_samples(bundle, bad)
    for split in ("train", "val"):
        before, after = sample_paths(getattr(bundle, split)), sample_paths(getattr(kept, split))
        assert after == [p for p in before if p not in bad]
    x, y = kept.train[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 2


def test_train_check_data_stops_before_training_and_skip_bad_images_trains_without_them(tmp_path, capsys):
    bad = spoil(write_image_folder(tmp_path / "imgs", per_class=8))
    common = ["train", "--model", "resnet8", "--data", f"folder:{tmp_path / 'imgs'}", "--img-size", "16",
              "--epochs", "1", "--batch-size", "2", "--no-progress"]  # batches of 2: every training file is read
    code, _, err = run([*common, "--check-data", "--out", tmp_path / "r1"], capsys)
    assert code == 2 and "--skip-bad-images" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert all(p in err for p in bad)
    assert not (tmp_path / "r1").exists()  # nothing trained

    code, out, err = run([*common, "--skip-bad-images", "--out", tmp_path / "r2"], capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "r2" / "results.json").read_text())
    assert results["train_samples"] + results["val_samples"] == 16 - 2
    assert "skipped 2 unreadable file(s)" in out.strip().splitlines()[-2]

    # without the check, the unreadable file stops the run mid-epoch (what the check prevents)
    code, _, err = run([*common, "--out", tmp_path / "r3"], capsys)
    assert code == 2 and "cannot read image" in err
