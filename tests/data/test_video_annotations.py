"""The video benchmarks' annotation formats on tiny copies written here: Kinetics, Mini-Kinetics, SSv2, UCF101,
HMDB51. Counts, labels, splits, the training flip, and the errors that name a missing or malformed file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cuekit.data import create_dataset
from cuekit.data.video_annotations import index_videos, kinetics_clip_name
from cuekit.errors import DataError, UsageError
from video_helpers import write_frame_folder, write_lines, write_tiny_video

pytest.importorskip("av")

HEADER = "label,youtube_id,time_start,time_end,split"


def samples(ds) -> list[tuple[str, int]]:
    """(file name, label) of each sample of a split (a Subset of a VideoClipDataset)."""
    return sorted((Path(ds.dataset.samples[i][0]).name, ds.dataset.samples[i][1]) for i in ds.indices)


# ------------------------------------------------------------------------------------------------ Kinetics

def make_kinetics(root: Path, missing_train: bool = True) -> Path:
    """Kinetics as the downloaders leave it: CSVs in annotations/, clips under train/<label>/ and flat val/."""
    train = [("abseiling", "aaaaaaaaaaa", 0, 10), ("abseiling", "bbbbbbbbbbb", 14, 24),
             ("passing American football (in game)", "ccccccccccc", 5, 15), ("zumba", "ddddddddddd", 130, 140)]
    val = [("zumba", "eeeeeeeeeee", 1, 11), ("abseiling", "fffffffffff", 2, 12)]
    rows = lambda items, split: [HEADER] + [f'"{lab}",{y},{a},{b},{split}' for lab, y, a, b in items]
    write_lines(root / "annotations" / "train.csv", rows(train + [("zumba", "missingmiss", 0, 10)] if missing_train
                                                         else train, "train"))
    write_lines(root / "annotations" / "validate.csv", rows(val, "val"))
    for lab, y, a, b in train[:3]:
        write_tiny_video(root / "train" / lab / f"{kinetics_clip_name(y, a, b)}.mp4")
    write_frame_folder(root / "rawframes" / kinetics_clip_name(*train[3][1:]))  # a frame folder
    write_tiny_video(root / "val" / f"{kinetics_clip_name(*val[0][1:])}.mkv")  # flat, another extension
    write_tiny_video(root / "val" / f"{val[1][1]}.mp4")  # named by the bare YouTube id
    return root


def test_kinetics_counts_labels_splits_and_missing_clips(tmp_path, capsys):
    root = make_kinetics(tmp_path / "k400")
    b = create_dataset(f"kinetics:{root}", frames=4, img_size=16)
    assert b.class_names == ["abseiling", "passing American football (in game)", "zumba"]
    assert b.num_classes == 3 and b.frames == 4 and b.stride == 2 and b.flip is True
    assert samples(b.train) == [("aaaaaaaaaaa_000000_000010.mp4", 0), ("bbbbbbbbbbb_000014_000024.mp4", 0),
                                ("ccccccccccc_000005_000015.mp4", 1), ("ddddddddddd_000130_000140", 2)]
    assert samples(b.val) == [("eeeeeeeeeee_000001_000011.mkv", 2), ("fffffffffff.mp4", 0)]
    err = capsys.readouterr().err
    assert "1 of the 5 clips listed in train.csv" in err and "missingmiss_000000_000010" in err
    x, y = b.train[3]
    assert x.shape == (3, 4, 16, 16) and y in (0, 1, 2)
    x, y = b.val[0]
    assert x.shape == (3, 4, 16, 16)


def test_kinetics_errors_name_the_file(tmp_path):
    root = make_kinetics(tmp_path / "k")
    csv = root / "annotations" / "train.csv"
    (root / "annotations" / "validate.csv").rename(root / "annotations" / "gone.csv")
    with pytest.raises(DataError, match="validate.csv"):
        create_dataset(f"kinetics:{root}")
    (root / "annotations" / "gone.csv").rename(root / "annotations" / "val.csv")  # the other accepted name
    assert create_dataset(f"kinetics:{root}", frames=2, img_size=16).num_classes == 3

    good = csv.read_text()
    csv.write_text("label,youtube_id,start,end\nzumba,x,0,10\n")
    with pytest.raises(DataError, match=rf"{csv}: missing column\(s\) time_start, time_end"):
        create_dataset(f"kinetics:{root}")
    csv.write_text(good + "zumba,zzzzzzzzzzz,ten,20,train\n")
    with pytest.raises(DataError, match=rf"{csv}:7: time_start 'ten'"):
        create_dataset(f"kinetics:{root}")
    csv.write_text(good + "zumba,zzzzzzzzzzz,0,train\n")
    with pytest.raises(DataError, match=rf"{csv}:7: 4 fields"):
        create_dataset(f"kinetics:{root}")
    csv.write_text(good + "zumba,zzzzzzzzzzz,0,10,val\n")
    with pytest.raises(DataError, match=rf"{csv}:7: split 'val' in the train file"):
        create_dataset(f"kinetics:{root}")
    csv.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match=str(csv)):
        create_dataset(f"kinetics:{root}")
    csv.write_text(good)
    val = root / "annotations" / "val.csv"
    val.write_text(val.read_text() + "yoga,ggggggggggg,0,10,val\n")
    with pytest.raises(DataError, match=rf"{val}: label 'yoga'"):
        create_dataset(f"kinetics:{root}")

    empty = tmp_path / "none"
    write_lines(empty / "train.csv", [HEADER, "a,x1,0,10,train", "b,x2,0,10,train"])
    write_lines(empty / "val.csv", [HEADER, "a,x3,0,10,val"])
    with pytest.raises(DataError, match=r"2 of the 2 clips listed in .*train.csv.*x1_000000_000010"):
        create_dataset(f"kinetics:{empty}")
    with pytest.raises(DataError, match="not found"):
        create_dataset(f"kinetics:{tmp_path / 'nowhere'}")
    with pytest.raises(UsageError, match="kinetics:PATH"):
        create_dataset("kinetics")


def test_mini_kinetics_keeps_the_listed_ids_and_their_classes(tmp_path):
    root = make_kinetics(tmp_path / "k", missing_train=False)
    write_lines(root / "train_ytid_list.txt", ["aaaaaaaaaaa", "ddddddddddd"])
    write_lines(root / "annotations" / "val_ytid_list.txt", ["eeeeeeeeeee"])
    b = create_dataset(f"mini-kinetics:{root}", frames=2, img_size=16)
    assert b.class_names == ["abseiling", "zumba"]
    assert samples(b.train) == [("aaaaaaaaaaa_000000_000010.mp4", 0), ("ddddddddddd_000130_000140", 1)]
    assert samples(b.val) == [("eeeeeeeeeee_000001_000011.mkv", 1)]
    (root / "train_ytid_list.txt").unlink()
    with pytest.raises(DataError, match="train_ytid_list.txt"):
        create_dataset(f"mini-kinetics:{root}")


# ------------------------------------------------------------------------------- Something-Something-V2

SSV2_CLASSES = ["Pushing something from left to right", "Pushing something from right to left",
                "Putting something on a surface"]


def make_ssv2(root: Path, frame_folders: bool = False) -> Path:
    """SSv2's JSON files in labels/ and <id>.webm videos (or <id>/ frame folders) in 20bn-something-something-v2/."""
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "something-something-v2-labels.json").write_text(
        json.dumps({name: str(i) for i, name in enumerate(SSV2_CLASSES)}))
    entry = lambda vid, k, label=None: {"id": vid, "label": label or "pushing a pen from left to right",
                                        "template": SSV2_CLASSES[k].replace("something", "[something]"),
                                        "placeholders": ["a pen"]}
    train = [entry("101", 0), entry("102", 1), entry("103", 2), entry("104", 0)]
    val = [entry("201", 1), entry("202", 2)]
    (labels / "something-something-v2-train.json").write_text(json.dumps(train))
    (labels / "something-something-v2-validation.json").write_text(json.dumps(val))
    (labels / "something-something-v2-test.json").write_text(json.dumps([{"id": "301"}]))
    videos = root / "20bn-something-something-v2"
    for e in train + val:
        if frame_folders:
            write_frame_folder(videos / e["id"], n=6, height=16, width=24)
        else:
            write_tiny_video(videos / f"{e['id']}.webm", n=6)
    return root


def test_ssv2_counts_labels_and_no_flip_by_default(tmp_path):
    root = make_ssv2(tmp_path / "ssv2")
    b = create_dataset(f"ssv2:{root}", frames=4, img_size=16)
    assert b.class_names == SSV2_CLASSES and b.num_classes == 3
    assert samples(b.train) == [("101.webm", 0), ("102.webm", 1), ("103.webm", 2), ("104.webm", 0)]
    assert samples(b.val) == [("201.webm", 1), ("202.webm", 2)]
    assert b.flip is False and b.train.dataset.flip is False  # direction-sensitive labels
    assert b.train[0][0].shape == (3, 4, 16, 16)
    assert create_dataset(f"ssv2:{root}", frames=4, img_size=16, flip=True).train.dataset.flip is True


def red_ramp_runs_left_to_right(clip: torch.Tensor) -> bool:
    """Whether the red ramp of a (3, T, S, S) clip of `write_frame_folder` frames still rises to the right."""
    red = clip[0]
    return bool(red[..., 0].mean() < red[..., -1].mean())


def test_a_direction_sensitive_set_never_flips_and_others_do(tmp_path):
    root = make_ssv2(tmp_path / "ssv2", frame_folders=True)
    never = create_dataset(f"ssv2:{root}", frames=2, img_size=16).train
    asked = create_dataset(f"ssv2:{root}", frames=2, img_size=16, flip=True).train
    flips_never = flips_asked = 0
    for seed in range(24):
        torch.manual_seed(seed)
        flips_never += not red_ramp_runs_left_to_right(never[seed % 4][0])
        torch.manual_seed(seed)
        flips_asked += not red_ramp_runs_left_to_right(asked[seed % 4][0])
    assert flips_never == 0
    assert 4 <= flips_asked <= 20

    # video-folder: flips by default, --no-flip turns it off
    folder = tmp_path / "vf"
    for c in ("a", "b"):
        for i in range(2):
            write_frame_folder(folder / c / f"clip{i}", n=4, width=24)
    default = create_dataset(f"video-folder:{folder}", frames=2, img_size=16, val_split=0.5).train
    off = create_dataset(f"video-folder:{folder}", frames=2, img_size=16, val_split=0.5, flip=False).train
    torch.manual_seed(0)
    assert sum(not red_ramp_runs_left_to_right(default[i % 2][0]) for i in range(24)) >= 4
    torch.manual_seed(0)
    assert all(red_ramp_runs_left_to_right(off[i % 2][0]) for i in range(24))


def test_ssv2_errors_name_the_file(tmp_path):
    root = make_ssv2(tmp_path / "s", frame_folders=True)
    labels = root / "labels" / "something-something-v2-labels.json"
    train = root / "labels" / "something-something-v2-train.json"
    good_labels, good_train = labels.read_text(), train.read_text()
    labels.write_text("{not json")
    with pytest.raises(DataError, match=rf"{labels}: not a valid JSON"):
        create_dataset(f"ssv2:{root}")
    labels.write_text(json.dumps({"a": "0", "b": "0"}))
    with pytest.raises(DataError, match=rf"{labels}: classes 'a' and 'b' share the index 0"):
        create_dataset(f"ssv2:{root}")
    labels.write_text(good_labels)
    entries = json.loads(good_train)
    entries[2]["template"] = "Spinning [something]"
    train.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=rf"{train}: entry 2 \(id 103\): 'Spinning something' is not a class"):
        create_dataset(f"ssv2:{root}")
    del entries[2]["template"]
    entries[2]["label"] = SSV2_CLASSES[2]  # a label that is already a class name is accepted
    train.write_text(json.dumps(entries))
    assert samples(create_dataset(f"ssv2:{root}", frames=2, img_size=16).train)[2] == ("103", 2)
    entries[1] = {"template": "x"}
    train.write_text(json.dumps(entries))
    with pytest.raises(DataError, match=rf"{train}: entry 1 has no id"):
        create_dataset(f"ssv2:{root}")
    train.write_text(good_train)
    (root / "20bn-something-something-v2" / "202" / "img_00001.png").unlink()
    for f in (root / "20bn-something-something-v2" / "202").iterdir():
        f.unlink()
    (root / "20bn-something-something-v2" / "202").rmdir()
    with pytest.raises(DataError, match=r"1 of the 2 clips listed in .*validation.json .* e.g. 202"):
        create_dataset(f"ssv2:{root}")
    labels.unlink()
    with pytest.raises(DataError, match="something-something-v2-labels.json not found|no something-something-v2-"):
        create_dataset(f"ssv2:{root}")


# ------------------------------------------------------------------------------------------------- UCF101

UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "HandstandPushups"]


def make_ucf101(root: Path) -> Path:
    """ucfTrainTestlist/ (classInd, trainlist0N, testlist0N for N = 1, 2, 3) and UCF-101/<Class>/v_*.avi."""
    lists = root / "ucfTrainTestlist"
    write_lines(lists / "classInd.txt", [f"{i + 1} {c}" for i, c in enumerate(UCF_CLASSES)])
    videos = {c: [f"v_{c.replace('Handstand', 'HandStand')}_g0{g}_c01" for g in (1, 2, 3)] for c in UCF_CLASSES}
    for split in (1, 2, 3):
        test_group = split  # split N tests on group N (the real lists test on groups 1-7, 8-14, 15-21)
        train, test = [], []
        for i, c in enumerate(UCF_CLASSES):
            for g, v in enumerate(videos[c], 1):
                (test if g == test_group else train).append((f"{c}/{v}.avi", i + 1))
        write_lines(lists / f"trainlist0{split}.txt", [f"{p} {i}" for p, i in train])
        write_lines(lists / f"testlist0{split}.txt", [p for p, _ in test])
    for c in UCF_CLASSES:
        for v in videos[c]:
            folder = "HandStandPushups" if c == "HandstandPushups" else c
            write_tiny_video(root / "UCF-101" / folder / f"{v}.avi", n=6)
    return root


def test_ucf101_counts_labels_and_the_three_splits(tmp_path):
    root = make_ucf101(tmp_path / "ucf")
    seen_val = []
    for split in (1, 2, 3):
        b = create_dataset(f"ucf101:{root}", frames=2, img_size=16, split=split)
        assert b.class_names == UCF_CLASSES and len(b.train) == 6 and len(b.val) == 3
        val, train = samples(b.val), samples(b.train)
        assert val == [(f"v_ApplyEyeMakeup_g0{split}_c01.avi", 0), (f"v_Basketball_g0{split}_c01.avi", 1),
                       (f"v_HandStandPushups_g0{split}_c01.avi", 2)]
        assert not {n for n, _ in val} & {n for n, _ in train}
        assert sorted(y for _, y in train) == [0, 0, 1, 1, 2, 2]
        seen_val.append(val)
    assert create_dataset(f"ucf101:{root}", frames=2, img_size=16).val.dataset.samples == \
        create_dataset(f"ucf101:{root}", frames=2, img_size=16, split=1).val.dataset.samples  # default split 1
    with pytest.raises(UsageError, match="--split must be 1, 2 or 3"):
        create_dataset(f"ucf101:{root}", split=4)


def test_ucf101_errors_name_the_file(tmp_path):
    root = make_ucf101(tmp_path / "u")
    lists = root / "ucfTrainTestlist"
    class_ind, train1 = lists / "classInd.txt", lists / "trainlist01.txt"
    good_ind, good_train = class_ind.read_text(), train1.read_text()
    class_ind.write_text(good_ind + "four Zumba\n")
    with pytest.raises(DataError, match=rf"{class_ind}:4: expected 'INDEX CLASS'"):
        create_dataset(f"ucf101:{root}")
    class_ind.write_text(good_ind)
    train1.write_text(good_train + "Basketball/v_Basketball_g09_c01.avi 3\n")
    with pytest.raises(DataError, match=rf"{train1}:7: class index 3 but the folder Basketball is class 2"):
        create_dataset(f"ucf101:{root}")
    train1.write_text(good_train + "Zumba/v_Zumba_g01_c01.avi 1\n")
    with pytest.raises(DataError, match=rf"{train1}:7: class 'Zumba' is not in"):
        create_dataset(f"ucf101:{root}")
    train1.write_text(good_train + "Basketball/v_Basketball_g09_c01.avi 2\n")
    with pytest.raises(DataError, match=r"1 of the 7 clips listed in .*trainlist01.txt .*v_Basketball_g09_c01"):
        create_dataset(f"ucf101:{root}")
    train1.write_text(good_train)
    (lists / "testlist03.txt").unlink()
    with pytest.raises(DataError, match="testlist03.txt"):
        create_dataset(f"ucf101:{root}", split=3)
    class_ind.unlink()
    with pytest.raises(DataError, match="classInd.txt"):
        create_dataset(f"ucf101:{root}")


# ------------------------------------------------------------------------------------------------- HMDB51

def make_hmdb51(root: Path) -> Path:
    """testTrainMulti_7030_splits/<class>_test_split<N>.txt (tags 1 train, 2 test, 0 unused) and <class>/*.avi."""
    for c in ("brush_hair", "cartwheel"):
        names = [f"{c}_video{i}" for i in range(4)]
        for split in (1, 2, 3):
            # split N: video N-1 is tested, video 3 unused, the others train
            tags = {n: 2 if i == split - 1 else 0 if i == 3 else 1 for i, n in enumerate(names)}
            write_lines(root / "testTrainMulti_7030_splits" / f"{c}_test_split{split}.txt",
                        [f"{n}.avi {t} " for n, t in tags.items()])
        for n in names:
            write_frame_folder(root / "rawframes" / c / n, n=3) if n.endswith("3") else \
                write_tiny_video(root / "videos" / c / f"{n}.avi", n=6)
    return root


def test_hmdb51_counts_labels_and_splits(tmp_path):
    root = make_hmdb51(tmp_path / "hmdb")
    for split in (1, 2, 3):
        b = create_dataset(f"hmdb51:{root}", frames=2, img_size=16, split=split)
        assert b.class_names == ["brush_hair", "cartwheel"]
        t = split - 1
        assert samples(b.val) == [(f"brush_hair_video{t}.avi", 0), (f"cartwheel_video{t}.avi", 1)]
        assert samples(b.train) == sorted((f"{c}_video{i}.avi", y) for y, c in enumerate(["brush_hair", "cartwheel"])
                                          for i in range(3) if i != t)


def test_hmdb51_errors_name_the_file(tmp_path):
    root = make_hmdb51(tmp_path / "h")
    f = root / "testTrainMulti_7030_splits" / "cartwheel_test_split2.txt"
    f.write_text(f.read_text() + "cartwheel_video9.avi 7\n")
    with pytest.raises(DataError, match=rf"{f}:5: expected 'NAME.avi TAG' with TAG 0, 1 or 2"):
        create_dataset(f"hmdb51:{root}", split=2)
    assert create_dataset(f"hmdb51:{root}", frames=2, img_size=16, split=1).num_classes == 2  # split 1 is fine
    (root / "videos" / "cartwheel" / "cartwheel_video1.avi").unlink()
    with pytest.raises(DataError, match=r"1 of the 4 clips listed in .*_test_split1.txt .* e.g. cartwheel_video1"):
        create_dataset(f"hmdb51:{root}", split=1)
    for p in (root / "testTrainMulti_7030_splits").glob("*_test_split3.txt"):
        p.unlink()
    with pytest.raises(DataError, match=r"no \*_test_split3.txt in .*testTrainMulti_7030_splits"):
        create_dataset(f"hmdb51:{root}", split=3)


# ---------------------------------------------------------------------------------------- shared machinery

def test_options_reach_only_the_datasets_that_take_them(tmp_path):
    root = make_hmdb51(tmp_path / "h")
    b = create_dataset(f"hmdb51:{root}", frames=2, img_size=16, stride=3, flip=False)
    assert b.stride == 3 and b.train.dataset.stride == 3 and b.train.dataset.flip is False
    with pytest.raises(UsageError, match="--split does not apply to 'kinetics' data; it applies to: hmdb51, ucf101"):
        create_dataset(f"kinetics:{tmp_path}", split=2)
    with pytest.raises(UsageError, match="--stride does not apply to 'dsprites'"):
        create_dataset("dsprites", stride=2)
    with pytest.raises(UsageError, match="--stride must be at least 1"):
        create_dataset(f"hmdb51:{root}", stride=0)
    with pytest.raises(UsageError, match="--task"):
        create_dataset(f"hmdb51:{root}", task="shape")


def test_the_index_finds_files_and_frame_folders_without_walking_into_them(tmp_path):
    write_tiny_video(tmp_path / "a" / "x.mp4")
    write_frame_folder(tmp_path / "b" / "x", n=2)  # same name: the file wins
    write_frame_folder(tmp_path / "c" / "y", n=2)
    (tmp_path / "c" / "y" / "z.mp4").write_bytes(b"")  # inside a wanted frame folder: not looked at
    (tmp_path / ".hidden").mkdir()
    write_tiny_video(tmp_path / ".hidden" / "w.mp4")
    found = index_videos(tmp_path, {"x", "y", "z", "w"})
    assert found == {"x": str(tmp_path / "a" / "x.mp4"), "y": str(tmp_path / "c" / "y")}
