"""The registry of reproducible experiments that `cuekit reproduce` runs, one per area.

An area provides `run_experiment(config: ExperimentConfig) -> dict` in its own module and is
listed in AREA_MODULES below. The function writes its PNGs into `config.out_dir` and returns
a result dict (see `make_result`); the report only reads results, it never computes.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from pathlib import Path
from typing import Sequence

# area name -> module holding `run_experiment`. Each issue adds its line; a module that does
# not exist yet is reported as "not implemented yet" in the index page.
AREA_MODULES: dict[str, str] = {
    "adamp": "cuekit.optim.experiment",
    "pit": "cuekit.models.pit_experiment",
    "rexnet": "cuekit.rank.experiment",
    "wcst": "cuekit.wcst.experiment",
    "wsol": "cuekit.wsol.experiment",
    "robustness": "cuekit.robustness.experiment",
    "videomix": "cuekit.augment.video_experiment",
    "relabel": "cuekit.relabel.experiment",
    "transmit": "cuekit.transmit.experiment",
    "nara": "cuekit.nara.experiment",
}

VERDICTS = ("held", "did not hold", "inconclusive")


@dataclasses.dataclass
class ExperimentConfig:
    """What every area's `run_experiment` receives."""

    out_dir: Path            # reports/<area>/ : write PNGs (and anything else) here
    quick: bool = True       # quick: smoke scale (32 px, few steps); full: larger
    seeds: Sequence[int] = (0, 1, 2)  # at least 3 seeds for a verdict
    img_size: int = 32       # quick mode runs at 32 px
    device: str = "cpu"
    workers: int = 0         # DataLoader workers
    progress: bool = True    # whether the area may show progress bars


def verdict(effects: Sequence[float], expected_sign: int = 1) -> str:
    """One rule for every area: "held" / "did not hold" / "inconclusive".

    `effects` holds one number per seed (e.g. accuracy of the method minus the baseline), with
    the paper's claim predicting `expected_sign` (+1 or -1). "held" only where every seed has
    the paper's sign and the mean effect exceeds the spread (sample standard deviation);
    "did not hold" where every seed has the opposite sign likewise; else "inconclusive".
    Fewer than 3 seeds is always "inconclusive".
    """
    vals = [float(e) * (1 if expected_sign >= 0 else -1) for e in effects]
    if len(vals) < 3 or any(math.isnan(v) for v in vals):
        return "inconclusive"
    mean, spread = statistics.fmean(vals), statistics.stdev(vals)
    if all(v > 0 for v in vals) and mean > spread:
        return "held"
    if all(v < 0 for v in vals) and -mean > spread:
        return "did not hold"
    return "inconclusive"


_verdict_rule = verdict  # make_result's `verdict` argument shadows the function


def mean_spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def make_result(
    *,
    area: str,
    title: str,
    claim: str,
    measured: str,
    verdict: str,
    table: dict,
    plots: Sequence[str] = (),
    seeds: Sequence[int] = (),
    details: dict | None = None,
    effects: Sequence[float] | None = None,
    expected_sign: int | None = None,
) -> dict:
    """The result dict an area returns.

    table: {"columns": [str, ...], "rows": [[cell, ...], ...]}; plots: PNG file names in
    out_dir; verdict: one of VERDICTS (use `verdict()`); details: anything else, JSON-able.
    Optional `effects` (one per seed) and `expected_sign`: the numbers the verdict came from;
    given both, the verdict is checked against the rule and the page shows them.
    `cuekit reproduce` adds config, environment and time taken.
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    result = {
        "area": area, "title": title, "claim": claim, "measured": measured,
        "verdict": verdict, "table": table, "plots": list(plots), "seeds": list(seeds),
        "details": details or {},
    }
    if (effects is None) != (expected_sign is None):
        raise ValueError("give both effects and expected_sign, or neither")
    if effects is not None:
        effects = [float(e) for e in effects]
        ruled = _verdict_rule(effects, expected_sign)
        if ruled != verdict:
            raise ValueError(f"verdict {verdict!r} does not follow the rule for effects {effects} "
                             f"(expected sign {expected_sign:+d}): the rule gives {ruled!r}")
        result["effects"], result["expected_sign"] = effects, int(expected_sign)
    return result
