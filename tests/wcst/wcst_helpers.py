"""Small synthetic cue sources for the WCST tests."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from cuekit.wcst.datasets import CATEGORICAL, Cue, CueSource


class FactorialSource(CueSource):
    """Every combination of K cues with L values each, `repeats` times; images (3, S, S).

    Cue k (if in `rendered`) is drawn as the brightness (value + 1) / (L + 1) of pixel row k of
    channel 0; other pixels are 0, so a cue that is not rendered is invisible.
    """

    name = "factorial"

    def __init__(self, num_cues: int, num_values: int, repeats: int = 1, rendered=None, size: int = 8):
        self.cue_names = tuple(f"c{k}" for k in range(num_cues))
        combos = np.array(list(itertools.product(range(num_values), repeat=num_cues)), dtype=np.int64)
        self.table = np.repeat(combos, repeats, axis=0)
        self.num_values = num_values
        self.rendered = tuple(range(num_cues)) if rendered is None else tuple(rendered)
        self.default_img_size = size

    def __len__(self) -> int:
        return len(self.table)

    def cue(self, name: str) -> Cue:
        if name not in self.cue_names:
            raise self._unknown(name)
        return Cue(name, CATEGORICAL, self.table[:, self.cue_names.index(name)])

    def load_images(self, indices, img_size):
        rows = self.table[np.asarray(indices, dtype=np.int64)]
        imgs = torch.zeros(len(rows), 3, img_size, img_size)
        for k in self.rendered:
            imgs[:, 0, k, :] = torch.from_numpy((rows[:, k] + 1) / (self.num_values + 1)).float()[:, None]
        return imgs


def read_cue_from_pixels(images: torch.Tensor, k: int, num_values: int) -> torch.Tensor:
    """The oracle: cue k's value from pixel row k of a FactorialSource image (N,) long."""
    return (images[:, 0, k, 0] * (num_values + 1)).round().long() - 1
