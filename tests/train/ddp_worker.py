"""Run by test_ddp.py under torchrun: trains a BatchNorm-free net on fixed data, saves weights."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cuekit.train import TrainConfig, train  # noqa: E402
from shared_helpers import TinyNoBN, make_blobs_bundle  # noqa: E402

if __name__ == "__main__":
    out = sys.argv[1]
    torch.manual_seed(0)
    model = TinyNoBN()
    cfg = TrainConfig(model="tiny", epochs=2, batch_size=32, lr=0.1, opt="sgd", momentum=0.9,
                      weight_decay=1e-3, progress=False, out=out, device="cpu", seed=3)
    train(cfg, model=model, data=make_blobs_bundle())
