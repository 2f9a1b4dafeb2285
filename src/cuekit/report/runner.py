"""`cuekit reproduce`: run every registered area's experiment, record each one, write the page.

Each area runs in turn; its result (or its failure, with the traceback) is written to
OUT/<area>/results.json at once, atomically, so a later failure or interruption never loses it.
While an area runs, each of its finished (seed, method) runs is appended to OUT/<area>/partial.jsonl
(by `cuekit.parallel.run_jobs`); the file is removed when the area completes and kept when it fails
or is interrupted. The page (OUT/index.html) is then rebuilt from the files on disk by `cuekit.report.html`.
"""
from __future__ import annotations

import dataclasses
import datetime
import importlib
import importlib.util
import math
import time
import traceback
from pathlib import Path
from typing import Sequence

from cuekit.errors import UnknownChoiceError, UsageError
from cuekit.report import experiments
from cuekit.report.experiments import VERDICTS, ExperimentConfig

QUICK_SCALE = "smoke-scale run (quick, 32 px)"
FULL_SCALE = "full"
QUICK_BUDGET_S = 15 * 60
RUN_FILE = "reproduce.json"  # run-level facts (mode, seeds, total time) for the page
PARTIAL_FILE = "partial.jsonl"  # one JSON line per finished run of an area, kept when the area does not complete
REQUIRED_KEYS = ("area", "title", "claim", "measured", "verdict", "table", "plots", "seeds", "details", "claims",
                 "regime")


@dataclasses.dataclass
class ReproduceRun:
    """What one `run_reproduce` call did: the records it wrote and where the page is."""

    out_dir: Path
    index: Path
    records: dict[str, dict]  # area -> the dict written to OUT/<area>/results.json
    total_time_s: float
    mode: str                 # "quick" or "full"

    @property
    def failed(self) -> list[str]:
        """Areas whose experiment raised or returned an invalid result."""
        return [a for a, r in self.records.items() if r.get("status") != "completed"]

    @property
    def exit_code(self) -> int:
        """0 when every area that ran completed, else 1."""
        return 1 if self.failed else 0


def module_exists(module: str) -> bool:
    """Whether `module` can be imported, found without running it (missing parents count as absent)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def implemented_areas() -> list[str]:
    """Registered areas whose experiment module exists, in registry order."""
    return [a for a, m in experiments.AREA_MODULES.items() if module_exists(m)]


def resolve_areas(names: Sequence[str] | None) -> list[str]:
    """The areas to run: all implemented ones for no names, else the named ones (validated, deduplicated)."""
    implemented = implemented_areas()
    if not names:
        return implemented
    chosen: list[str] = []
    for name in names:
        if name not in experiments.AREA_MODULES:
            raise UnknownChoiceError("area", name, experiments.AREA_MODULES)
        if name not in implemented:
            have = ", ".join(implemented) if implemented else "none yet"
            raise UsageError(f"area {name!r} is not implemented yet "
                             f"({experiments.AREA_MODULES[name]} does not exist); implemented areas: {have}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when available, else "cpu"; other names are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as e:
        raise UsageError(f"invalid --device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device!r} asked for CUDA, which is not available here; use --device cpu")
    return device


def make_config(area_dir: Path, *, quick: bool, seeds: int, device: str, workers: int,
                progress: bool = True, data: str | None = None) -> ExperimentConfig:
    """The ExperimentConfig for one area: quick = 32 px smoke scale, full = 64 px; data: a spec or None (built-in)."""
    return ExperimentConfig(out_dir=area_dir, quick=quick, seeds=tuple(range(seeds)),
                            img_size=32 if quick else 64, device=device, workers=workers, progress=progress,
                            data=data)


def machine_facts() -> dict:
    """CPUs usable (affinity and cgroup quota), torch threads, and the calibration speed of this machine.

    Torch sizes its thread pool by the host's cores; under a container CPU quota that oversubscribes the
    quota, so the thread count is capped at the usable CPUs first.
    """
    import os

    import torch

    from cuekit.parallel import available_cpus, cgroup_cpu_limit
    from cuekit.report.calibration import machine_speed

    cpus = available_cpus()
    if torch.get_num_threads() > cpus:
        torch.set_num_threads(cpus)
    return {"os_cpu_count": os.cpu_count(), "available_cpus": cpus, "cgroup_cpu_limit": cgroup_cpu_limit(),
            "torch_threads": torch.get_num_threads(), "speed": machine_speed()}


def _relative_plot(plot: object, area_dir: Path) -> str:
    """A plot name as a POSIX path relative to the area folder (absolute paths inside it are accepted)."""
    if not isinstance(plot, (str, Path)):
        raise TypeError(f"plots must be file names, got {type(plot).__name__}")
    p = Path(plot)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(area_dir.resolve())
        except ValueError:
            raise ValueError(f"plot {str(plot)!r} is outside the area folder {area_dir}") from None
    if ".." in p.parts:
        raise ValueError(f"plot {str(plot)!r} points outside the area folder")
    return p.as_posix()


def check_result(result: object, area_dir: Path) -> tuple[dict, list[str]]:
    """Validate what run_experiment returned; returns (the result with normalised plots, warnings).

    Raises TypeError / ValueError for a result the page cannot show or whose verdict breaks the rule.
    """
    if not isinstance(result, dict):
        raise TypeError(f"run_experiment must return the dict from make_result, got {type(result).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in result]
    if missing:
        raise ValueError(f"run_experiment's result lacks {', '.join(missing)} (build it with make_result)")
    if result["verdict"] not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {result['verdict']!r}")
    table = result["table"]
    if not isinstance(table, dict) or not isinstance(table.get("columns"), (list, tuple)) \
            or not isinstance(table.get("rows"), (list, tuple)):
        raise ValueError('table must be {"columns": [...], "rows": [[...], ...]}')
    ncol = len(table["columns"])
    for i, row in enumerate(table["rows"]):
        if not isinstance(row, (list, tuple)) or len(row) != ncol:
            raise ValueError(f"table row {i} does not have {ncol} cells")
    seeds = list(result["seeds"])
    if len(seeds) < 3 and result["verdict"] != "inconclusive":
        raise ValueError(f"verdict {result['verdict']!r} from {len(seeds)} seed(s) breaks the rule "
                         "(fewer than 3 seeds is always inconclusive)")
    head = experiments.check_claims(result["claims"])
    if head["verdict"] != result["verdict"]:
        raise ValueError(f"the area's verdict {result['verdict']!r} is not its headline claim's "
                         f"({head['id']}: {head['verdict']!r})")
    if "effects" in result and "expected_sign" in result:
        ruled = experiments.claim_verdict(result["effects"], result["expected_sign"], head["preconditions"])
        if ruled != result["verdict"]:
            raise ValueError(f"verdict {result['verdict']!r} does not follow the rule for the reported "
                             f"effects (the rule gives {ruled!r})")
    plots = [_relative_plot(p, area_dir) for p in result["plots"]]
    warnings = [f"plot {p} was not written" for p in plots if not (area_dir / p).is_file()]
    return {**result, "plots": plots}, warnings


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _config_dict(config: ExperimentConfig) -> dict:
    d = dataclasses.asdict(config)
    d["out_dir"], d["seeds"] = str(config.out_dir), list(config.seeds)
    return d


def run_area(area: str, module: str, config: ExperimentConfig, scale: str) -> dict:
    """Run one area's experiment and write OUT/<area>/results.json; a failure is recorded, not raised.

    Finished runs are appended to OUT/<area>/partial.jsonl as they come (one line each is printed when
    config.progress is off); the file is removed when the area completes, kept when it fails or is interrupted.
    """
    import sys

    from cuekit.io import environment, write_results
    from cuekit.parallel import recording_partial_results

    area_dir = Path(config.out_dir)
    area_dir.mkdir(parents=True, exist_ok=True)
    partial_path = area_dir / PARTIAL_FILE
    partial_path.unlink(missing_ok=True)  # an earlier run's partial results are not this run's
    t0 = time.perf_counter()
    warnings: list[str] = []
    with recording_partial_results(partial_path, area, lines=not config.progress) as partial:
        try:
            run_experiment = getattr(importlib.import_module(module), "run_experiment", None)
            if not callable(run_experiment):
                raise AttributeError(f"{module} has no run_experiment(config) function")
            result, warnings = check_result(run_experiment(config), area_dir)
            record = {**result, "area": area, "status": "completed"}
        except (Exception, SystemExit) as e:  # one area's failure must not stop the others
            record = {"area": area, "status": "failed", "error": f"{type(e).__name__}: {e}",
                      "traceback": traceback.format_exc()}
        except KeyboardInterrupt:
            if partial.finished:
                print(f"{area} interrupted: its {partial.finished} finished run(s) are in {partial_path}",
                      file=sys.stderr)
            raise
    if record["status"] != "completed" and partial.finished:
        record.update(partial_results=PARTIAL_FILE, finished_runs=partial.finished)
    elapsed = time.perf_counter() - t0
    record.update(module=module, config=_config_dict(config), environment=environment(),
                  time_s=elapsed, scale=scale, finished_at=_now(), warnings=warnings)
    table = record.get("table") or {}
    try:
        write_results(area_dir, record, table.get("columns"), table.get("rows"))
        if record["status"] == "completed":
            from cuekit.io import atomic_write_text

            table_file = area_dir / "results.txt"
            text = table_file.read_text(encoding="utf-8") if table_file.is_file() else ""
            atomic_write_text(area_dir / "results.txt", claims_text(record["claims"]) + "\n\n" + text)
    except (TypeError, ValueError) as e:  # a result JSON cannot hold
        record = {k: record[k] for k in ("area", "module", "config", "environment", "time_s", "scale",
                                         "finished_at")}
        record.update(status="failed", error=f"the result could not be written as JSON: {type(e).__name__}: {e}",
                      traceback=traceback.format_exc(), warnings=[])
        write_results(area_dir, record)
    if record["status"] != "completed":
        (area_dir / "results.txt").unlink(missing_ok=True)  # a table from an earlier run would mislead
    else:
        partial_path.unlink(missing_ok=True)  # the results hold everything now
    return record


def run_reproduce(
    areas: Sequence[str] | None = None,
    *,
    out_dir: str | Path = "reports",
    quick: bool = True,
    seeds: int = 3,
    device: str = "auto",
    workers: int = 0,
    progress: bool = True,
    data: str | None = None,
) -> ReproduceRun:
    """Run the named (default: every implemented) area's experiment, then write OUT/index.html.

    data: a dataset spec to run on instead of each area's built-in data; every area named must take it
    (`experiments.DATA_KINDS`), checked before any area runs.

    Each area writes OUT/<area>/results.json (run_experiment's dict plus config, environment,
    time_s, scale, status) and its PNGs; OUT/reproduce.json keeps the run's mode and total time.
    """
    from tqdm.auto import tqdm

    from cuekit.io import atomic_write_json, environment
    from cuekit.report.html import write_index

    if seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {seeds}")
    if workers < 0:
        raise UsageError(f"--workers must be 0 or more, got {workers}")
    chosen = resolve_areas(areas)
    dev = resolve_device(device)
    if data is not None:
        experiments.check_data_areas(chosen, data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scale = QUICK_SCALE if quick else FULL_SCALE
    machine = machine_facts()
    if progress:
        rel = machine["speed"]["relative_speed"]
        print(f"machine: {machine['available_cpus']} CPU(s) usable, {machine['torch_threads']} torch thread(s); "
              f"calibration step {1000 * machine['speed']['step_s']:.1f} ms"
              + (f" ({rel:.2f}x the reference machine's speed)" if rel else ""), flush=True)
    started, t0 = _now(), time.perf_counter()
    records: dict[str, dict] = {}

    def write_run_file(total: float) -> None:
        atomic_write_json(out / RUN_FILE, {
            "mode": "quick" if quick else "full", "scale": scale, "areas": chosen,
            "finished_areas": list(records), "seeds": seeds, "device": dev, "workers": workers,
            "img_size": 32 if quick else 64, "data": data, "total_time_s": total, "started_at": started,
            "finished_at": _now(), "budget_s": QUICK_BUDGET_S if quick else None,
            "environment": environment(), "machine": machine,
        })

    bar = tqdm(chosen, desc="reproduce", unit="area", disable=not progress or not chosen)
    try:
        for area in bar:
            bar.set_postfix_str(area)
            config = make_config(out / area, quick=quick, seeds=seeds, device=dev, workers=workers,
                                 progress=progress, data=data)
            rec = run_area(area, experiments.AREA_MODULES[area], config, scale)
            records[area] = rec
            shown = rec["verdict"] if rec["status"] == "completed" else f"FAILED ({rec['error']})"
            if progress:
                bar.write(f"{area}: {shown} [{format_seconds(rec['time_s'])}, "
                          f"total {format_seconds(time.perf_counter() - t0)}]")
                for c in rec.get("claims") or []:
                    role = " (headline)" if c["headline"] else (" (reference)" if c["reference"] else "")
                    failed = f" - failed: {'; '.join(c['failed_preconditions'])}" if c["failed_preconditions"] else ""
                    bar.write(f"    {c['id']}{role}: {c['verdict']}{failed}")
    finally:  # an interrupt still leaves a page describing what finished
        bar.close()
        total = time.perf_counter() - t0
        write_run_file(total)
        index = write_index(out)
    return ReproduceRun(out_dir=out, index=index, records=records, total_time_s=total,
                        mode="quick" if quick else "full")


def format_seconds(s: float | None) -> str:
    """12.3 s, 4 min 05 s, 1 h 02 min; "n/a" for a missing time."""
    if s is None or not isinstance(s, (int, float)) or not math.isfinite(s):
        return "n/a"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def claims_rows(claims: Sequence[dict]) -> tuple[list[str], list[list]]:
    """The claims of one area as a plain table (id, verdict, mean ± s.d. of the effect, failed preconditions)."""
    rows = []
    for c in claims:
        mean, spread = experiments.mean_spread(c["effects"]) if c["effects"] else (float("nan"), float("nan"))
        role = "headline" if c["headline"] else ("reference" if c["reference"] else "")
        rows.append([c["id"], role, c["verdict"], f"{mean:+.4g} ± {spread:.2g} (sign {c['expected_sign']:+d})",
                     "; ".join(c["failed_preconditions"]) or "all met"])
    return ["claim", "role", "verdict", "effect (mean ± s.d.)", "preconditions"], rows


def claims_text(claims: Sequence[dict]) -> str:
    """claims_rows as text, for results.txt and the terminal."""
    from cuekit.io import format_table

    return format_table(*claims_rows(claims))


def summary_rows(run: ReproduceRun) -> tuple[list[str], list[list]]:
    """The final summary table (area, verdict, time) of a run, for cuekit.io.format_table."""
    rows = []
    for a, r in run.records.items():
        counts: dict[str, int] = {}
        for c in r.get("claims") or []:
            counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        per_claim = ", ".join(f"{n} {v}" for v, n in counts.items())
        rows.append([a, r["verdict"] if r.get("status") == "completed" else "failed", per_claim,
                     format_seconds(r.get("time_s"))])
    rows.append(["total", "", "", format_seconds(run.total_time_s)])
    return ["area", "headline verdict", "claims", "time"], rows
