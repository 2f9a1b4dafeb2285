"""Open every file of a dataset once, in parallel, and list the unreadable ones before any training starts.

Used by `cuekit data check SPEC` and by `cuekit train --check-data` / `--skip-bad-images`. A sample is an
image file (decoded fully, as training reads it), a video file (every frame decoded with PyAV) or a folder of
frame images (every frame decoded). Built-in data and CIFAR (read whole when opened) have no files to check.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Iterable, Sequence

from torch.utils.data import Dataset, Subset

from cuekit.data.registry import DataBundle
from cuekit.errors import DataError


@dataclasses.dataclass
class FileCheck:
    """What a check found: how many samples were opened and the unreadable ones (path, problem)."""

    data: str
    checked: int
    bad: list[tuple[str, str]]

    def as_dict(self) -> dict:
        """JSON-able summary (for results.json)."""
        return {"data": self.data, "checked": self.checked, "unreadable": len(self.bad),
                "bad": [{"file": p, "problem": why} for p, why in self.bad]}


def sample_paths(ds: Dataset) -> list[str] | None:
    """The file (or frame folder) of every sample of a split, in sample order; None for data without files.

    Understands Subsets and any dataset holding `samples` [(path, label)] itself or in `.folder` (ImageFolder).
    """
    if isinstance(ds, Subset):
        base = sample_paths(ds.dataset)
        return None if base is None else [base[i] for i in ds.indices]
    samples = getattr(ds, "samples", None)
    if samples is None:
        samples = getattr(getattr(ds, "folder", None), "samples", None)
    if not isinstance(samples, (list, tuple)):
        return None
    return [str(s[0]) for s in samples]


def _splits(bundle: DataBundle) -> dict[str, Dataset]:
    splits = {"train": bundle.train, "val": bundle.val}
    if getattr(bundle, "test", None) is not None:
        splits["test"] = bundle.test
    return splits


def bundle_paths(bundle: DataBundle) -> list[str] | None:
    """Every distinct sample path of a bundle's splits (train, val and test when present); None without files."""
    found: dict[str, None] = {}
    any_files = False
    for ds in _splits(bundle).values():
        paths = sample_paths(ds)
        if paths is not None:
            any_files = True
            found.update(dict.fromkeys(paths))
    return list(found) if any_files else None


def _check_image(path: str) -> None:
    from PIL import Image

    with Image.open(path) as img:
        img.convert("RGB")  # decodes the whole image, as training's loader does


def _check_video(path: str) -> None:
    from cuekit.data.video_folders import _import_av

    av = _import_av()
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            frames = sum(1 for _ in container.decode(container.streams.video[0]))
    except av.FFmpegError as e:
        raise ValueError(str(e)) from None
    if frames == 0:
        raise ValueError("no decodable frames")


def check_sample(path: str) -> str | None:
    """What is wrong with one sample (None: it reads): an image, a video file or a folder of frame images."""
    from cuekit.data.video_folders import FRAME_EXTENSIONS, VIDEO_EXTENSIONS, _frame_files

    try:
        if os.path.isdir(path):
            frames = _frame_files(Path(path))
            if not frames:
                return f"no frame images ({', '.join(FRAME_EXTENSIONS)})"
            for frame in frames:
                problem = check_sample(frame)
                if problem is not None:
                    return f"frame {Path(frame).name}: {problem}"
            return None
        if not os.path.isfile(path):
            return "file not found"
        if path.lower().endswith(VIDEO_EXTENSIONS):
            _check_video(path)
        else:
            _check_image(path)
    except DataError:
        raise  # e.g. PyAV missing: a problem of the setup, not of this file
    except Exception as e:  # any failure to decode makes the sample unreadable
        return " ".join(str(e).split()) or type(e).__name__
    return None


def default_threads() -> int:
    """Threads for a check: two per usable CPU (decoding releases the GIL; files may sit on slow disks), <= 32."""
    from cuekit.parallel import available_cpus

    return min(32, 2 * available_cpus())


def check_paths(paths: Sequence[str], threads: int | None = None, progress: bool = True,
                desc: str = "checking files") -> list[tuple[str, str]]:
    """(path, problem) of every unreadable sample among `paths`, in their order; `threads` 0 checks in this thread."""
    import concurrent.futures as cf

    from tqdm.auto import tqdm

    threads = default_threads() if threads is None else threads
    bar = tqdm(total=len(paths), desc=desc, unit="file", disable=not progress, leave=False, dynamic_ncols=True)
    bad: list[tuple[str, str]] = []

    def record(results: Iterable[str | None], chunk: Sequence[str]) -> None:
        for path, problem in zip(chunk, results):
            if problem is not None:
                bad.append((path, problem))
            bar.update(1)

    chunk_size = 4096  # bounds the futures alive at once on millions of files
    try:
        if threads <= 0:
            record(map(check_sample, paths), paths)
        else:
            with cf.ThreadPoolExecutor(max_workers=threads) as pool:
                for start in range(0, len(paths), chunk_size):
                    chunk = paths[start:start + chunk_size]
                    record(pool.map(check_sample, chunk), chunk)
    finally:
        bar.close()
    return bad


def check_bundle(bundle: DataBundle, threads: int | None = None, progress: bool = True) -> FileCheck | None:
    """Open every sample of a bundle (all splits) once; None when its data is not read from files."""
    paths = bundle_paths(bundle)
    if paths is None:
        return None
    return FileCheck(data=bundle.name, checked=len(paths), bad=check_paths(paths, threads, progress))


def without_samples(bundle: DataBundle, drop: set[str]) -> DataBundle:
    """The bundle with every sample whose path is in `drop` left out of each split (labels unchanged)."""

    def keep(ds: Dataset) -> Dataset:
        paths = sample_paths(ds)
        if paths is None or not drop.intersection(paths):
            return ds
        kept = [i for i, p in enumerate(paths) if p not in drop]
        if isinstance(ds, Subset):
            return Subset(ds.dataset, [ds.indices[i] for i in kept])
        return Subset(ds, kept)

    changes = {name: keep(ds) for name, ds in _splits(bundle).items()}
    if len(changes["train"]) == 0:
        raise DataError(f"{bundle.name}: every training file is unreadable")
    return dataclasses.replace(bundle, **changes)


def bad_files_table(bad: Sequence[tuple[str, str]]) -> str:
    """The unreadable files as a text table."""
    from cuekit.io import format_table

    return format_table(["unreadable file", "problem"], [list(b) for b in bad])


def check_before_training(bundle: DataBundle, skip_bad: bool, threads: int | None = None,
                          progress: bool = True) -> tuple[DataBundle, list[tuple[str, str]]]:
    """Check every file of `bundle` before training: list the unreadable ones on stderr, then raise DataError,
    or with skip_bad leave them out. Returns the bundle to train on and the files left out."""
    import sys

    from cuekit.data.folders import note

    found = check_bundle(bundle, threads, progress)
    if found is None:
        note(f"{bundle.name or 'the data'} is not read from files: nothing to check")
        return bundle, []
    if not found.bad:
        note(f"checked {found.checked} files of {bundle.name}: all readable")
        return bundle, []
    print(bad_files_table(found.bad), file=sys.stderr)
    if not skip_bad:
        raise DataError(f"{len(found.bad)} of {found.checked} files of {bundle.name} cannot be read (listed above): "
                        "fix or remove them, or pass --skip-bad-images to train without them")
    note(f"leaving out {len(found.bad)} unreadable file(s) of {found.checked} (listed above)")
    return without_samples(bundle, {p for p, _ in found.bad}), found.bad
