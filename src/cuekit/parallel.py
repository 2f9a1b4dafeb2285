"""Independent runs (seeds, models, radii) in spawned worker processes, shared by every area."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

import torch

from cuekit.errors import CuekitError, DataError, UsageError


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


def _guarded(fn: Callable[[Any], Any], job: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(job)
    except CuekitError as e:   # some error classes do not survive pickling: send the message
        return "error", (e.exit_code, str(e))


def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int = 1, desc: str = "runs",
             progress: bool = True, threads: int | None = None) -> list[Any]:
    """`[fn(job) for job in jobs]`, in `workers` spawned processes when workers > 1 (order kept).

    `fn` must be a module-level function and jobs picklable. Each worker gets `threads` torch
    threads (default: cpu_count // workers). A user error raised in a worker is raised here with
    its message.
    """
    from tqdm.auto import tqdm

    if workers < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    bar = tqdm(total=len(jobs), desc=desc, unit="run", disable=not progress, leave=False, dynamic_ncols=True)
    out: list[Any] = [None] * len(jobs)
    if workers == 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs):
            out[i] = ("ok", fn(job))
            bar.update(1)
    else:
        import concurrent.futures as cf
        import multiprocessing as mp

        if threads is None:
            threads = max(1, available_cpus() // workers)
        with cf.ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                    initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_guarded, fn, job): i for i, job in enumerate(jobs)}
            for fut in cf.as_completed(futures):
                out[futures[fut]] = fut.result()
                bar.update(1)
    bar.close()
    results = []
    for status, value in out:
        if status == "error":
            code, msg = value
            err = UsageError(msg) if code == 2 else DataError(msg)
            raise err
        results.append(value)
    return results
