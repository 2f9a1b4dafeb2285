"""Data augmentation and targets: soft targets / label smoothing, Mixup, CutMix, Cutout, FGSM training, VideoMix."""
from __future__ import annotations

from cuekit.augment.adversarial import FGSMTraining, fgsm_perturb
from cuekit.augment.cutout import Cutout, cutout
from cuekit.augment.mix import CutMix, Mixup, MixupOrCutMix, sample_box, sample_boxes
from cuekit.augment.regularizers import REGULARIZER_NAMES, build_batch_transform, parse_regularizers
from cuekit.augment.targets import one_hot, smooth_targets, soft_target_cross_entropy
from cuekit.augment.video import VIDEOMIX_VARIANTS, FrameCutMix, VideoMix, VideoMixup

__all__ = [
    "one_hot", "smooth_targets", "soft_target_cross_entropy",
    "CutMix", "Cutout", "FGSMTraining", "Mixup", "MixupOrCutMix", "REGULARIZER_NAMES", "build_batch_transform",
    "cutout", "fgsm_perturb", "parse_regularizers", "sample_box", "sample_boxes",
    "VIDEOMIX_VARIANTS", "FrameCutMix", "VideoMix", "VideoMixup",
]
