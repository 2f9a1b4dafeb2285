"""WCST-ML: which shortcut cue does a model choose, and why (cue-conflict audits).

Build the diagonal / off-diagonal sets of several cues of a dataset (`build_cue_conflict` over a
source from `open_source`), then measure preference (`run_preference`), flatness (`run_flatness`, along
filter-normalised directions),
abundance (`run_radius_rerun`, `run_census`) and a complexity proxy (`cue_complexity`).
"""
from __future__ import annotations

from cuekit.wcst.datasets import (
    CSVSource,
    Cue,
    CueConflictData,
    CueSource,
    DSpritesSource,
    UTKFaceSource,
    build_cue_conflict,
    compute_levels,
    open_source,
)
from cuekit.wcst.runs import FitSettings, fit


def __getattr__(name: str):
    # The probes import matplotlib-free but heavier modules lazily.
    lazy = {
        "run_preference": "cuekit.wcst.preference",
        "run_flatness": "cuekit.wcst.flatness",
        "sphere_test": "cuekit.wcst.flatness",
        "hutchinson_trace": "cuekit.wcst.flatness",
        "loss_increase": "cuekit.wcst.flatness",
        "filter_normalized_direction": "cuekit.wcst.flatness",
        "kendall_tau": "cuekit.wcst.complexity",
        "run_radius_rerun": "cuekit.wcst.abundance",
        "run_census": "cuekit.wcst.abundance",
        "cue_complexity": "cuekit.wcst.complexity",
        "spearman": "cuekit.wcst.complexity",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(lazy[name]), name)
    raise AttributeError(f"module 'cuekit.wcst' has no attribute {name!r}")


__all__ = [
    "CSVSource", "Cue", "CueConflictData", "CueSource", "DSpritesSource", "FitSettings", "UTKFaceSource",
    "build_cue_conflict", "compute_levels", "cue_complexity", "filter_normalized_direction", "fit",
    "hutchinson_trace", "kendall_tau", "loss_increase", "open_source",
    "run_census", "run_flatness", "run_preference", "run_radius_rerun", "spearman", "sphere_test",
]
