"""Small shared I/O: atomic writes, results.json with environment, plain-text tables."""
from __future__ import annotations

import json
import math
import os
import platform
import secrets
from pathlib import Path
from typing import Any, Sequence


def _create_temporary(path: Path) -> tuple[int, Path]:
    """A new, empty file beside `path` (random hidden name), open for writing; its mode follows the umask
    as any newly created file's does (tempfile.mkstemp would make it 0600 whatever the umask)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write a file so that readers (and a crash) see either the old or the new content; the new file's
    permissions follow the umask (0644 under umask 022), like a file written with open()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())  # numpy / torch scalars
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically; numpy/torch scalars, arrays and Paths are converted."""
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def environment() -> dict:
    """Library versions and machine facts recorded with every result."""
    import numpy
    import torch

    from cuekit import __version__

    env = {
        "cuekit": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "platform": platform.platform(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
    }
    try:
        import torchvision

        env["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A fixed-width text table; floats shown with 4 significant decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.4g}"
        return str(v)

    text = [[cell(c) for c in columns]] + [[cell(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in text]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_results(out_dir: str | Path, results: dict, columns: Sequence[str] | None = None,
                  rows: Sequence[Sequence[Any]] | None = None) -> str:
    """Write out_dir/results.json (with environment) and, given a table, results.txt; returns
    the table text (empty without one) for the caller to print."""
    out_dir = Path(out_dir)
    results = {**results, "environment": results.get("environment") or environment()}
    atomic_write_json(out_dir / "results.json", results)
    if columns is None or rows is None:
        return ""
    table = format_table(columns, rows)
    atomic_write_text(out_dir / "results.txt", table + "\n")
    return table


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG (creating the folder) and close it; returns the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
