"""Datasets: procedural ones built in (no downloads) and readers for local copies of real data."""
from __future__ import annotations

import importlib

from cuekit.data.registry import DataBundle, create_dataset, list_datasets, materialise, register_dataset

__all__ = ["DataBundle", "create_dataset", "list_datasets", "materialise", "register_dataset"]

# Modules that register datasets on import; an area's module not written yet is skipped.
for _mod in ("folders", "dsprites", "shapes_loc", "multi_shapes", "moving_shapes", "video_folders",
             "video_annotations", "corrupted_sets", "wsol_sets"):
    _full = f"{__name__}.{_mod}"
    try:
        importlib.import_module(_full)
    except ModuleNotFoundError as _e:
        if _e.name != _full:
            raise
