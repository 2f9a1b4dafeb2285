"""The video benchmarks' own annotation formats: Kinetics, Mini-Kinetics, Something-Something-V2, UCF101, HMDB51.

Each is a `--data NAME:PATH` spec. PATH is the dataset's root: the annotation files are looked for in PATH and
in its usual subfolders (`annotations/`, `labels/`, `splits/`, and the names the official archives unpack to),
the videos anywhere below PATH, found by file name (one walk of the tree), so the layouts of the common
downloaders all work: `<split>/<label>/NAME.mp4`, `<label>/NAME.mp4`, flat `NAME.mp4`, any of the extensions in
`VIDEO_EXTENSIONS`, or a folder `NAME/` of frame images (mmaction2's rawframes). A video file is preferred over
a frame folder of the same name. A folder named like a wanted clip is not walked into.

- `kinetics:PATH`: `train.csv` and `validate.csv` (or `val.csv`; also `kinetics_train.csv` / `kinetics_val.csv`)
  with the header `label,youtube_id,time_start,time_end[,split]`; clips named
  `<youtube_id>_<time_start:06d>_<time_end:06d>.<ext>` (ActivityNet crawler, cvdfoundation tarballs), or
  `<youtube_id>.<ext>`. Classes: the sorted labels of the training CSV. Kinetics downloads always miss some
  videos (removed from YouTube): missing clips are left out with a note giving their number.
- `mini-kinetics:PATH`: Kinetics restricted to Mini-Kinetics-200 (Xie et al., S3D): the Kinetics files above
  plus `train_ytid_list.txt` / `val_ytid_list.txt` (one YouTube id a line); classes: the labels of its clips.
- `ssv2:PATH`: `something-something-v2-{train,validation}.json` (entries with `id` and `template`, or `label`
  already a class name) and `something-something-v2-labels.json` (class name -> index); videos `<id>.webm`.
  Training does not flip clips (labels say "left to right") unless `flip=True` (`--flip`).
- `ucf101:PATH`: `classInd.txt` (`INDEX CLASS`, 1-based), `trainlist0N.txt` (`CLASS/v_X.avi INDEX`),
  `testlist0N.txt` (`CLASS/v_X.avi`); `split` N in 1-3 (`--split`); the test list validates.
- `hmdb51:PATH`: `<class>_test_split<N>.txt` per class, lines `NAME.avi TAG` (1 train, 2 test, 0 unused);
  classes sorted by name; the test videos validate.

A missing or malformed annotation file is a DataError naming the file (and the line or entry); a clip listed but
not found is a DataError naming the list and the clip (Kinetics: left out, with a note).
"""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from cuekit.data.registry import DataBundle, register_dataset
from cuekit.data.video_folders import VIDEO_EXTENSIONS, ClipSettings, clip_bundle, clip_settings, natural_key
from cuekit.errors import DataError, UsageError

__all__ = ["KINETICS_COLUMNS", "find_annotation", "index_videos", "kinetics_clip_name", "read_hmdb51",
           "read_kinetics", "read_ssv2", "read_ucf101"]

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end")  # `split` is optional
ANNOTATION_DIRS = ("", "annotations", "labels", "splits")
Samples = list[tuple[str, int]]


def find_annotation(root: Path, names: Sequence[str], what: str, dirs: Sequence[str] = ANNOTATION_DIRS) -> Path:
    """The first of `names` found in root or its annotation subfolders `dirs`; DataError saying where it looked."""
    for d in dirs:
        for name in names:
            path = root / d / name
            if path.is_file():
                return path
    where = ", ".join(str(root / d) if d else str(root) for d in dirs)
    raise DataError(f"{what} not found: no {' or '.join(names)} in {where}")


def _read_text(path: Path) -> list[str]:
    """The lines of an annotation text file; DataError naming it when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def index_videos(root: Path, stems: Iterable[str]) -> dict[str, str]:
    """{stem: path} of the video files (`VIDEO_EXTENSIONS`) and frame folders under `root` whose name (without
    the extension) is one of `stems`; one walk of the tree, not into hidden folders nor into the frame folders.

    A video file wins over a frame folder of the same name; among several of one name, the first found (depth
    first, in natural order).
    """
    wanted = set(stems)
    files: dict[str, str] = {}
    folders: dict[str, str] = {}
    stack, seen = [Path(root)], set()
    while stack:
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:  # a symlink loop
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: natural_key(e.name))
        except OSError as e:
            raise DataError(f"cannot list {folder}: {e}") from None
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                if entry.name in wanted:
                    folders.setdefault(entry.name, entry.path)
                else:
                    subfolders.append(Path(entry.path))
                continue
            stem, ext = os.path.splitext(entry.name)
            if ext.lower() in VIDEO_EXTENSIONS and stem in wanted and stem not in files:
                files[stem] = entry.path
        stack.extend(reversed(subfolders))  # depth first, in natural order
    return {**folders, **files}


def _resolve(spec: str, root: Path, listed: Sequence[tuple[Sequence[str], int]], index: dict[str, str],
             source: Path, skip_missing: bool = False) -> Samples:
    """(path, label) of each listed clip (names to try in order, label) found in `index`.

    A missing clip is a DataError naming `source` and the clip, or (skip_missing) left out with a note.
    """
    samples, missing = [], []
    for names, label in listed:
        path = next((index[n] for n in names if n in index), None)
        if path is None:
            missing.append(names[0])
        else:
            samples.append((path, label))
    if missing and (not skip_missing or not samples):
        raise DataError(f"{len(missing)} of the {len(listed)} clips listed in {source} are not under {root}, e.g. "
                        f"{missing[0]} (a video file {missing[0]}.mp4 (or .webm, .avi, ...) or a frame folder "
                        f"{missing[0]}/ anywhere below {root})")
    if missing:
        from cuekit.data.folders import note

        note(f"{spec}: {len(missing)} of the {len(listed)} clips listed in {source.name} are not under {root} "
             f"(e.g. {missing[0]}) and are left out")
    return samples


def _check_path(path: str | None, name: str, task: str | None) -> Path:
    if not path:
        raise UsageError(f"{name} data needs the dataset's folder: --data {name}:PATH (cuekit never downloads data)")
    if task is not None:
        raise UsageError(f"{name} data has one label (the action class); --task {task!r} does not apply")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"{name} folder not found: {root}")
    return root


def _check_split(split: int | None) -> int:
    split = 1 if split is None else split
    if split not in (1, 2, 3):
        raise UsageError(f"--split must be 1, 2 or 3 (the dataset's three official train/test splits), got {split}")
    return split


# ---------------------------------------------------------------------------------------------------- Kinetics

def kinetics_clip_name(youtube_id: str, time_start: int, time_end: int) -> str:
    """The file name (without extension) of a Kinetics clip: `<youtube_id>_<start:06d>_<end:06d>`."""
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def _seconds(value: str, column: str, where: str) -> int:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {column} {value!r} is not a number of seconds") from None
    if f != int(f) or f < 0:
        raise DataError(f"{where}: {column} {value!r} is not a whole, non-negative number of seconds")
    return int(f)


_SPLIT_NAMES = {"train": {"train", "training"}, "val": {"val", "validate", "validation"}}


def read_kinetics_csv(path: Path, split: str) -> list[tuple[str, str, int, int]]:
    """Rows (label, youtube_id, time_start, time_end) of a Kinetics CSV; DataError naming the file and line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in KINETICS_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected the header "
                                f"label,youtube_id,time_start,time_end,split (found {','.join(header) or 'nothing'})")
            col = {c: header.index(c) for c in header}
            rows = []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not row or all(not v.strip() for v in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} fields, the header has {len(header)}")
                value = {c: row[i].strip() for c, i in col.items()}
                if not value["youtube_id"] or not value["label"]:
                    raise DataError(f"{where}: empty youtube_id or label")
                if "split" in value and value["split"] and value["split"] not in _SPLIT_NAMES[split]:
                    raise DataError(f"{where}: split {value['split']!r} in the {split} file")
                rows.append((value["label"], value["youtube_id"], _seconds(value["time_start"], "time_start", where),
                             _seconds(value["time_end"], "time_end", where)))
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file: {e}") from None
    if not rows:
        raise DataError(f"{path}: no clips listed")
    return rows


KINETICS_TRAIN_CSV = ("train.csv", "kinetics_train.csv")
KINETICS_VAL_CSV = ("validate.csv", "val.csv", "kinetics_val.csv", "validation.csv")


def _read_id_list(path: Path) -> set[str]:
    ids = {line.strip() for line in _read_text(path) if line.strip()}
    if not ids:
        raise DataError(f"{path}: no YouTube ids listed")
    return ids


def read_kinetics(root: Path, spec: str, settings: ClipSettings, *, mini: bool = False, train_size: int | None = None,
                  val_size: int | None = None, seed: int = 0) -> DataBundle:
    """Kinetics (or Mini-Kinetics-200 with mini=True) from its CSVs and a folder of downloaded clips."""
    train_csv = find_annotation(root, KINETICS_TRAIN_CSV, "Kinetics training CSV")
    val_csv = find_annotation(root, KINETICS_VAL_CSV, "Kinetics validation CSV")
    train_rows, val_rows = read_kinetics_csv(train_csv, "train"), read_kinetics_csv(val_csv, "val")
    if mini:
        train_ids = _read_id_list(find_annotation(root, ("train_ytid_list.txt",), "Mini-Kinetics training id list"))
        val_ids = _read_id_list(find_annotation(root, ("val_ytid_list.txt",), "Mini-Kinetics validation id list"))
        train_rows = [r for r in train_rows if r[1] in train_ids]
        val_rows = [r for r in val_rows if r[1] in val_ids]
        if not train_rows or not val_rows:
            empty = train_csv if not train_rows else val_csv
            raise DataError(f"{empty}: lists none of the Mini-Kinetics ids (train/val_ytid_list.txt)")
    classes = sorted({r[0] for r in train_rows})
    label_of = {c: i for i, c in enumerate(classes)}
    for r in val_rows:
        if r[0] not in label_of:
            raise DataError(f"{val_csv}: label {r[0]!r} (clip {r[1]}) is not a class of {train_csv}")

    def listed(rows):
        return [((kinetics_clip_name(y, a, b), y), label_of[lab]) for lab, y, a, b in rows]

    train_list, val_list = listed(train_rows), listed(val_rows)
    index = index_videos(root, {n for names, _ in train_list + val_list for n in names})
    train = _resolve(spec, root, train_list, index, train_csv, skip_missing=True)
    val = _resolve(spec, root, val_list, index, val_csv, skip_missing=True)
    return clip_bundle(spec, settings, classes, train, val, train_size=train_size, val_size=val_size, seed=seed)


def _kinetics_builder(mini: bool):
    name = "mini-kinetics" if mini else "kinetics"

    def builder(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0, val_split=0.1,
                frames=None, stride=None, flip=None) -> DataBundle:
        root = _check_path(path, name, task)
        settings = clip_settings(frames, stride, img_size, flip)
        return read_kinetics(root, f"{name}:{path}", settings, mini=mini, train_size=train_size,
                             val_size=val_size, seed=seed)

    builder.__doc__ = ("Mini-Kinetics-200: Kinetics CSVs + train/val_ytid_list.txt over downloaded clips." if mini else
                       "Kinetics: train.csv / validate.csv (label,youtube_id,time_start,time_end) over downloaded "
                       "clips.")
    return builder


register_dataset("kinetics", video=True)(_kinetics_builder(False))
register_dataset("mini-kinetics", video=True)(_kinetics_builder(True))


# ------------------------------------------------------------------------------------ Something-Something-V2

SSV2_FILES = {"labels": "something-something-v2-labels.json", "train": "something-something-v2-train.json",
              "val": "something-something-v2-validation.json"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid JSON file: {e}") from None


def read_ssv2_labels(path: Path) -> list[str]:
    """Class names in index order from `something-something-v2-labels.json` ({name: "index"})."""
    data = _read_json(path)
    if not isinstance(data, dict) or not data:
        raise DataError(f"{path}: expected a JSON object mapping each class name to its index")
    by_index: dict[int, str] = {}
    for name, value in data.items():
        try:
            i = int(value)
        except (TypeError, ValueError):
            raise DataError(f"{path}: class {name!r} has the index {value!r}, not a whole number") from None
        if i in by_index:
            raise DataError(f"{path}: classes {by_index[i]!r} and {name!r} share the index {i}")
        by_index[i] = name
    if sorted(by_index) != list(range(len(by_index))):
        raise DataError(f"{path}: the indices are not 0..{len(by_index) - 1}")
    return [by_index[i] for i in range(len(by_index))]


def read_ssv2_list(path: Path, classes: Sequence[str], labels_path: Path) -> list[tuple[str, int]]:
    """(video id, label) of each entry of an SSv2 train / validation JSON; DataError naming file and entry."""
    data = _read_json(path)
    if not isinstance(data, list) or not data:
        raise DataError(f"{path}: expected a JSON list of entries with id and template")
    exact = {c: i for i, c in enumerate(classes)}
    folded = {c.lower(): i for i, c in enumerate(classes)}
    out = []
    for k, entry in enumerate(data):
        where = f"{path}: entry {k}"
        if not isinstance(entry, dict) or not str(entry.get("id", "")).strip():
            raise DataError(f"{where} has no id")
        vid = str(entry["id"]).strip()
        if "template" in entry:
            name = str(entry["template"]).replace("[", "").replace("]", "")  # "Putting [something] on ..."
        elif "label" in entry:
            name = str(entry["label"])
        else:
            raise DataError(f"{where} (id {vid}) has no template or label")
        label = exact.get(name, folded.get(name.lower()))
        if label is None:
            raise DataError(f"{where} (id {vid}): {name!r} is not a class of {labels_path}")
        out.append((vid, label))
    return out


def read_ssv2(root: Path, spec: str, settings: ClipSettings, *, train_size: int | None = None,
              val_size: int | None = None, seed: int = 0) -> DataBundle:
    """Something-Something-V2 from its JSON files and the `<id>.webm` videos (or `<id>/` frame folders)."""
    labels_path = find_annotation(root, (SSV2_FILES["labels"],), "Something-Something-V2 class list")
    classes = read_ssv2_labels(labels_path)
    lists = {}
    for split in ("train", "val"):
        path = find_annotation(root, (SSV2_FILES[split],), f"Something-Something-V2 {split} list")
        lists[split] = (path, [((vid,), label) for vid, label in read_ssv2_list(path, classes, labels_path)])
    index = index_videos(root, {names[0] for _, listed in lists.values() for names, _ in listed})
    train, val = (_resolve(spec, root, lists[s][1], index, lists[s][0]) for s in ("train", "val"))
    return clip_bundle(spec, settings, classes, train, val, train_size=train_size, val_size=val_size, seed=seed)


@register_dataset("ssv2", video=True)
def ssv2_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0, val_split=0.1,
                 frames=None, stride=None, flip=None) -> DataBundle:
    """Something-Something-V2: the JSON lists + labels over <id>.webm; no training flip unless --flip."""
    root = _check_path(path, "ssv2", task)
    settings = clip_settings(frames, stride, img_size, flip, flip_default=False)  # direction-sensitive labels
    return read_ssv2(root, f"ssv2:{path}", settings, train_size=train_size, val_size=val_size, seed=seed)


# ---------------------------------------------------------------------------------------------- UCF101, HMDB51

def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name.replace("\\", "/")))[0]


def read_ucf101_lists(folder: Path, split: int) -> tuple[list[str], dict[str, list[tuple[tuple[str], int]]],
                                                          dict[str, Path]]:
    """(classes, {"train"/"val": [((stem,), label)]}, {"train"/"val": list file}) of UCF101 split `split`."""
    class_file = folder / "classInd.txt"
    entries = []
    for n, line in enumerate(_read_text(class_file), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"{class_file}:{n}: expected 'INDEX CLASS', got {line.strip()!r}")
        entries.append((int(parts[0]), parts[1]))
    if [i for i, _ in entries] != list(range(1, len(entries) + 1)):
        raise DataError(f"{class_file}: the class indices are not 1..{len(entries)} in order")
    classes = [c for _, c in entries]
    by_name = {c.lower(): i for i, c in enumerate(classes)}  # lists write HandstandPushups / HandStandPushups
    lists, files = {}, {}
    for key, name in (("train", f"trainlist0{split}.txt"), ("val", f"testlist0{split}.txt")):
        path = folder / name
        if not path.is_file():
            raise DataError(f"UCF101 split list not found: {path}")
        listed = []
        for n, line in enumerate(_read_text(path), 1):
            parts = line.split()
            if not parts:
                continue
            where = f"{path}:{n}"
            if len(parts) > 2 or "/" not in parts[0].replace("\\", "/"):
                raise DataError(f"{where}: expected 'CLASS/v_NAME.avi [INDEX]', got {line.strip()!r}")
            cls = parts[0].replace("\\", "/").split("/")[0]
            label = by_name.get(cls.lower())
            if label is None:
                raise DataError(f"{where}: class {cls!r} is not in {class_file}")
            if len(parts) == 2:
                if not parts[1].isdigit():
                    raise DataError(f"{where}: class index {parts[1]!r} is not a number")
                if int(parts[1]) - 1 != label:
                    raise DataError(f"{where}: class index {parts[1]} but the folder {cls} is class {label + 1} "
                                    f"in {class_file}")
            listed.append(((_stem(parts[0]),), label))
        if not listed:
            raise DataError(f"{path}: no videos listed")
        lists[key], files[key] = listed, path
    return classes, lists, files


HMDB_TAGS = {"1": "train", "2": "val"}  # 0: in neither split


def read_hmdb51_lists(folder: Path, split: int) -> tuple[list[str], dict[str, list[tuple[tuple[str], int]]],
                                                          dict[str, Path]]:
    """(classes, {"train"/"val": [((stem,), label)]}, {"train"/"val": the split files' pattern}) of HMDB51 split
    `split`."""
    suffix = f"_test_split{split}.txt"
    class_files = sorted((p for p in folder.iterdir() if p.name.endswith(suffix) and p.is_file()),
                         key=lambda p: p.name)
    if not class_files:
        raise DataError(f"HMDB51 split files not found: no *{suffix} in {folder}")
    classes = [p.name[: -len(suffix)] for p in class_files]
    lists: dict[str, list] = {"train": [], "val": []}
    for label, path in enumerate(class_files):
        for n, line in enumerate(_read_text(path), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"{path}:{n}: expected 'NAME.avi TAG' with TAG 0, 1 or 2, got {line.strip()!r}")
            if parts[1] in HMDB_TAGS:
                lists[HMDB_TAGS[parts[1]]].append(((_stem(parts[0]),), label))
    for key, what in (("train", "training (tag 1)"), ("val", "test (tag 2)")):
        if not lists[key]:
            raise DataError(f"{folder}: the *{suffix} files list no {what} videos")
    pattern = folder / f"*{suffix}"  # named in errors: the clip's list is one of these
    return classes, lists, {"train": pattern, "val": pattern}


def _split_folder(root: Path, probe, dirs: Sequence[str], what: str) -> Path:
    for d in dirs:
        folder = root / d
        if folder.is_dir() and probe(folder):
            return folder
    raise DataError(f"{what} not found in {', '.join(str(root / d) if d else str(root) for d in dirs)}")


def _fixed_split_bundle(name: str, path, reader, probe, dirs: Sequence[str], what: str, *, task, img_size,
                        train_size, val_size, seed, frames, stride, flip, split) -> DataBundle:
    root = _check_path(path, name, task)
    split = _check_split(split)
    settings = clip_settings(frames, stride, img_size, flip)
    folder = _split_folder(root, probe, dirs, what)
    classes, lists, files = reader(folder, split)
    spec = f"{name}:{path}"
    index = index_videos(root, {names[0] for key in lists for names, _ in lists[key]})
    train = _resolve(spec, root, lists["train"], index, files["train"])
    val = _resolve(spec, root, lists["val"], index, files["val"])
    return clip_bundle(spec, settings, classes, train, val, train_size=train_size, val_size=val_size, seed=seed)


def read_ucf101(path, **kw) -> DataBundle:
    """UCF101 split kw["split"] (1-3): trainlist0N for training, testlist0N for validation."""
    return _fixed_split_bundle("ucf101", path, read_ucf101_lists, lambda f: (f / "classInd.txt").is_file(),
                               ("", "ucfTrainTestlist", "annotations", "splits"), "UCF101 classInd.txt", **kw)


def read_hmdb51(path, **kw) -> DataBundle:
    """HMDB51 split kw["split"] (1-3): tag-1 videos for training, tag-2 videos for validation."""
    pattern = re.compile(r".+_test_split[123]\.txt$")
    return _fixed_split_bundle("hmdb51", path, read_hmdb51_lists,
                               lambda f: any(pattern.match(p.name) for p in f.iterdir()),
                               ("", "testTrainMulti_7030_splits", "annotations", "splits"),
                               "HMDB51 split files (<class>_test_split<N>.txt)", **kw)


@register_dataset("ucf101", video=True)
def ucf101_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0, val_split=0.1,
                   frames=None, stride=None, flip=None, split=None) -> DataBundle:
    """UCF101: classInd.txt + trainlist0N / testlist0N.txt (--split N, 1-3) over the videos."""
    return read_ucf101(path, task=task, img_size=img_size, train_size=train_size, val_size=val_size, seed=seed,
                       frames=frames, stride=stride, flip=flip, split=split)


@register_dataset("hmdb51", video=True)
def hmdb51_dataset(path, *, task=None, img_size=None, train_size=None, val_size=None, seed=0, val_split=0.1,
                   frames=None, stride=None, flip=None, split=None) -> DataBundle:
    """HMDB51: <class>_test_split<N>.txt (1 train, 2 test; --split N, 1-3) over the videos."""
    return read_hmdb51(path, task=task, img_size=img_size, train_size=train_size, val_size=val_size, seed=seed,
                       frames=frames, stride=stride, flip=flip, split=split)
