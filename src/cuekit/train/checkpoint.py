"""Checkpoints as safetensors with JSON metadata, written atomically.

Two kinds: a weights file (`model.safetensors`: plain state-dict keys, readable by
`cuekit.models.load_checkpoint`) and a training-state file (`checkpoints/last.safetensors`:
model, optimizer, EMA and RNG states in one file, so a crash never leaves them out of step).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cuekit.errors import CheckpointError
from cuekit.io import atomic_write_bytes, atomic_write_json

TRAIN_STATE_FORMAT = "cuekit-train-state"
WEIGHTS_FORMAT = "cuekit-weights"


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(clean, metadata=meta))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _dedupe_shared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory (tied weights): store clones.
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        out[k] = v.clone() if ptr in seen else v
        if v.numel():
            seen.add(ptr)
    return out


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Model weights with plain keys plus metadata (config, class names, ...), atomically."""
    path = Path(path)
    state = _dedupe_shared(_unwrap(model).state_dict())
    _save(path, state, {"format": WEIGHTS_FORMAT, "cuekit": json.dumps(metadata)})
    atomic_write_json(path.with_suffix(".json"), metadata)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy.keys"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": [py_version, list(py_state), py_gauss]}
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["rng.numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in meta["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_train_state(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: Any | None, epoch: int, metadata: dict[str, Any],
                     extra: dict[str, Any] | None = None) -> None:
    """Everything needed to resume after `epoch` (0-based, completed) in one atomic file."""
    tensors = {f"model.{k}": v for k, v in _dedupe_shared(_unwrap(model).state_dict()).items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in _dedupe_shared(ema.state_dict()).items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    state_meta = {"epoch": epoch, "optimizer": opt_meta, "rng": rng_meta, "extra": extra or {}}
    _save(Path(path), tensors, {
        "format": TRAIN_STATE_FORMAT, "cuekit": json.dumps(metadata), "state": json.dumps(state_meta),
    })


def load_train_state(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: Any | None) -> tuple[int, dict, dict]:
    """Restore model, optimizer, EMA and RNG; returns (completed epoch, metadata, extra)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{path} is not a cuekit training-state checkpoint")
        state_meta = json.loads(meta["state"])
        metadata = json.loads(meta["cuekit"])
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): {e}") from None
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        _unwrap(model).load_state_dict(model_sd)
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state_meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this run: {str(e).splitlines()[0]}") from None
    _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state_meta["rng"])
    return int(state_meta["epoch"]), metadata, state_meta.get("extra", {})
