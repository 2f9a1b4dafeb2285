"""The shared training engine: `train(TrainConfig(...))`, `evaluate(model, dataset)`."""
from __future__ import annotations

from cuekit.train.config import TrainConfig
from cuekit.train.engine import TrainResult, epoch_batches, evaluate, seed_everything, train

__all__ = ["TrainConfig", "TrainResult", "epoch_batches", "evaluate", "seed_everything", "train"]
