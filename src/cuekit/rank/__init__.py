"""The ReXNet paper's feature-rank study of random networks (`cuekit rank-study`).

Names are loaded on first use, so that `cuekit.rank.cli` stays light to import.
"""
from __future__ import annotations

import importlib

__all__ = [
    "BLOCK_TYPES", "INPUTS", "NONLINEARITIES", "TOLERANCES", "RankStudyConfig", "RankStudyResult",
    "block_output_features", "check_ordering", "effective_rank", "numerical_rank", "run_rank_study",
    "singular_values",
]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("cuekit.rank.study"), name)
    raise AttributeError(f"module 'cuekit.rank' has no attribute {name!r}")
