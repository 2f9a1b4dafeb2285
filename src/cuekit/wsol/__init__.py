"""Weakly supervised object localization: CAMs, their normalization (minmax, max, PaS, IVR),
and the wsolevaluation metrics (MaxBoxAcc, MaxBoxAccV2, PxAP, top-1 / GT-known loc), fast.

    from cuekit.wsol import normalize_cams, maxboxacc_v2, pxap
    maps = normalize_cams(upsample_cams(cams, (224, 224)), "ivr")   # (N, 224, 224) in [0, 1]
    score = maxboxacc_v2(maps, gt_boxes)                             # percent

Names are resolved lazily so that `import cuekit.wsol` (and the CLI) stay light.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "cam_thresholds": "metrics", "scoremaps_to_uint8": "metrics", "box_ious": "metrics",
    "BoxEvaluator": "metrics", "MaskEvaluator": "metrics", "LocalizationEvaluator": "metrics",
    "maxboxacc": "metrics", "maxboxacc_v2": "metrics", "pxap": "metrics", "box_accuracy": "metrics",
    "predicted_boxes": "metrics",
    "NORMALIZATIONS": "normalize", "normalize_cams": "normalize", "upsample_cams": "normalize",
    "minmax_norm": "normalize", "max_norm": "normalize", "pas_norm": "normalize", "ivr_norm": "normalize",
    "cams_from_features": "cams", "compute_cams": "cams", "compute_score_maps": "cams",
    "evaluate_wsol": "cams", "evaluate_score_map_folder": "cams",
    "METHODS": "methods", "HideAndSeek": "methods", "ADL": "methods", "cutmix_transform": "methods",
    "make_batch_transform": "methods", "model_kwargs_for": "methods",
    "WSOLMetadata": "data", "read_wsol_metadata": "data", "WSOLImageDataset": "data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
