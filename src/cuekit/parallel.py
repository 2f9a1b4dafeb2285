"""Independent runs (seeds, models, radii) in spawned worker processes, shared by every area."""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from cuekit.errors import CuekitError, UsageError


def cgroup_cpu_limit(root: str = "/sys/fs/cgroup") -> float | None:
    """CPUs a cgroup CPU quota allows this container (e.g. `docker --cpus=2`), or None without a quota.

    A quota is invisible to os.cpu_count() and to the affinity mask, so a process that sizes its thread
    pool by them on a many-core host runs far more threads than it may use, and is throttled.
    """
    from pathlib import Path

    base = Path(root)
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = (base / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(1.0, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int((base / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((base / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else max(1.0, quota / period)
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPU cores this process may use: the affinity mask (where the OS has one), capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, int(limit))) if limit is not None else cpus


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch threads (None: as it is), restoring the count afterwards.

    The small models of the experiments run fastest on one thread, and steadiest on a busy machine.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


@dataclasses.dataclass
class PartialResults:
    """Where `run_jobs` records each finished run while set (`cuekit reproduce` sets it per area): one JSON line
    per run appended to `path`, and, with `lines`, one printed line per run (for runs without progress bars)."""

    path: Path
    label: str
    lines: bool = False
    finished: int = 0

    def record(self, desc: str, index: int, total: int, job: Any, result: Any, seconds: float) -> None:
        """Append one finished run (its job and result summarised by `json_summary`) and maybe print a line."""
        self.finished += 1
        entry = {"area": self.label, "desc": desc, "run": index, "of": total, "seconds": round(seconds, 3),
                 "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "job": json_summary(job), "result": json_summary(result)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if self.lines:
            shown = json.dumps(entry["job"])
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            print(f"{self.label}: {desc} {index + 1}/{total} finished in {seconds:.1f} s: {shown}", flush=True)


_PARTIAL: contextvars.ContextVar[PartialResults | None] = contextvars.ContextVar("cuekit_partial_results",
                                                                                 default=None)


@contextlib.contextmanager
def recording_partial_results(path: str | Path, label: str, lines: bool = False) -> Iterator[PartialResults]:
    """Within the block, every run that `run_jobs` finishes is appended to `path` as a JSON line (see
    PartialResults); `cuekit.report.runner` sets this per area so an interrupted area leaves its finished runs."""
    token = _PARTIAL.set(PartialResults(Path(path), label, lines))
    try:
        yield _PARTIAL.get()
    finally:
        _PARTIAL.reset(token)


def json_summary(obj: Any, depth: int = 0) -> Any:
    """A small JSON-able summary of a run's job or result: numbers, strings and small containers as they are;
    tensors and arrays by shape and dtype (their values when they hold at most 8 numbers); models by parameter
    count; anything else by type name. Long containers and strings are cut."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj if not isinstance(obj, str) or len(obj) <= 200 else obj[:200] + "..."
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if depth >= 4:
        return f"<{type(obj).__name__}>"
    if isinstance(obj, torch.nn.Module):
        return f"<{type(obj).__name__}: {sum(p.numel() for p in obj.parameters())} parameters>"
    if hasattr(obj, "shape") and hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # torch tensors, numpy arrays
        size = math.prod(obj.shape)
        if size <= 8:
            return json_summary(obj.tolist(), depth + 1)
        return {"shape": list(obj.shape), "dtype": str(obj.dtype).replace("torch.", "")}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        items = list(obj.items())
        out = {str(k): json_summary(v, depth + 1) for k, v in items[:50]}
        if len(items) > 50:
            out["..."] = f"{len(items) - 50} more keys"
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        values = list(obj)
        out = [json_summary(v, depth + 1) for v in values[:20]]
        return out + [f"... {len(values) - 20} more"] if len(values) > 20 else out
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return json_summary(obj.item(), depth + 1)
    return f"<{type(obj).__name__}>"


def _guarded(fn: Callable[[Any], Any], job: Any) -> tuple[str, Any, float]:
    start = time.perf_counter()
    try:
        return "ok", fn(job), time.perf_counter() - start
    except CuekitError as e:   # some error classes do not survive pickling: send the class name and message
        return "error", (type(e).__name__, e.exit_code, str(e)), time.perf_counter() - start


def _reraise(name: str, code: int, msg: str) -> None:
    """Raise a worker's user error here: as its own class when cuekit.errors has one taking a message, else as a
    CuekitError with the same exit code."""
    import cuekit.errors as errors

    cls = getattr(errors, name, None)
    err: CuekitError | None = None
    if isinstance(cls, type) and issubclass(cls, CuekitError):
        try:
            err = cls(msg)
        except TypeError:  # a class built from other arguments (UnknownChoiceError)
            err = None
    if err is None:
        err = CuekitError(msg)
        err.exit_code = code
    raise err


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1, desc: str = "runs",
             progress: bool = True, threads: int | None = None) -> list[Any]:
    """`[fn(job) for job in jobs]`, in `workers` spawned processes when workers > 1 (order kept).

    `fn` must be a module-level function and jobs picklable. Each worker gets `threads` torch
    threads (default: cpu_count // workers). A user error raised in a worker is raised here with
    its message. Inside `recording_partial_results`, each finished run is recorded as it finishes.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False, dynamic_ncols=True)
    partial = _PARTIAL.get()
    out: list[Any] = [None] * len(jobs)

    def finished(i: int, outcome: tuple[str, Any, float]) -> None:
        out[i] = outcome
        bar.update(1)
        if partial is not None and outcome[0] == "ok":
            partial.record(desc, i, len(jobs), jobs[i], outcome[1], outcome[2])

    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            start = time.perf_counter()
            finished(i, ("ok", fn(job), time.perf_counter() - start))
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        if threads is None:
            threads = max(1, available_cpus() // workers)
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                    initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_guarded, fn, job): i for i, job in enumerate(jobs)}
            for fut in cf.as_completed(futures):
                finished(futures[fut], fut.result())
    bar.close()
    results = []
    for status, value, _ in out:
        if status == "error":
            _reraise(*value)
        results.append(value)
    return results
