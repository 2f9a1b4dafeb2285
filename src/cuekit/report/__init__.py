"""`cuekit reproduce` and its HTML report: run each area's experiment, then build the page from its files."""
from __future__ import annotations

from cuekit.report.experiments import (
    AREA_MODULES,
    VERDICTS,
    ExperimentConfig,
    claim,
    make_result,
    mean_spread,
    precondition,
    verdict,
)
from cuekit.report.html import render_index, write_index
from cuekit.report.runner import ReproduceRun, run_reproduce

__all__ = ["AREA_MODULES", "VERDICTS", "ExperimentConfig", "ReproduceRun", "claim", "make_result", "mean_spread",
           "precondition",
           "render_index", "run_reproduce", "verdict", "write_index"]
