"""Tiny videos and frame folders for the video tests, written with PyAV / Pillow (a few frames, 16 px).

Frame k of a written video is grey at level 16 + 6k (mod 40), plus, with `ramp=True`, a left-to-right ramp
added to the red channel of frame folders (so crops and flips show).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CODECS = {".mp4": "mpeg4", ".avi": "mpeg4", ".mkv": "libx264", ".webm": "libvpx"}


def level(k: int) -> int:
    """The grey level of frame k."""
    return 16 + 6 * (k % 40)


def write_tiny_video(path: Path, n: int = 8, height: int = 16, width: int = 16, fps: int = 12) -> Path:
    """A video file (codec by suffix) whose frame k is uniformly grey at `level(k)`."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[path.suffix.lower()], rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 2_000_000
        for k in range(n):
            img = np.full((height, width, 3), level(k), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, n: int = 6, height: int = 16, width: int = 16) -> Path:
    """PNG frames img_00001.png ..: green = level(k), red a left-to-right ramp (10 .. 210), blue 0."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ramp = (10 + 200 * np.arange(width) / max(1, width - 1)).astype(np.uint8)
    for k in range(n):
        img = np.zeros((height, width, 3), np.uint8)
        img[..., 0] = ramp[None, :]
        img[..., 1] = level(k)
        Image.fromarray(img).save(folder / f"img_{k + 1:05d}.png")
    return folder


def write_lines(path: Path, lines: list[str]) -> Path:
    """A text file of `lines` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path
