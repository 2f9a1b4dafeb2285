"""ReLabel (Yun et al., CVPR'21): localized multi-labels from a teacher, their storage, and LabelPooling."""
from __future__ import annotations

from cuekit.relabel.generate import DenseClassifier, generate_label_maps
from cuekit.relabel.pooling import (
    RandomResizedCropWithBox,
    label_pooling,
    label_pooling_dense,
    original_relabel,
    relabel_cutmix,
)
from cuekit.relabel.storage import LabelMapStore, LabelMapWriter, OriginalLabelMaps, open_label_maps

__all__ = [
    "DenseClassifier", "LabelMapStore", "LabelMapWriter", "OriginalLabelMaps", "RandomResizedCropWithBox",
    "generate_label_maps", "label_pooling", "label_pooling_dense", "open_label_maps", "original_relabel",
    "relabel_cutmix",
]
