"""Checkpoints as safetensors with JSON metadata, written atomically.

Two kinds: a weights file (`model.safetensors`: plain state-dict keys, readable by
`cuekit.models.load_checkpoint`) and a training-state file (`checkpoints/last.safetensors`:
model, optimizer, EMA, gradient-scaler and every random state the training uses (Python, NumPy,
torch CPU and CUDA, and the batch transforms' own generators) in one file, so a crash never leaves
them out of step). Both carry a SHA-256 of their tensors (`tensors_sha256` in the metadata), checked
on every load, so flipped bytes in the tensor data are refused instead of used.
"""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cuekit.errors import CheckpointError, DataError, UsageError
from cuekit.io import atomic_write_bytes, atomic_write_json

TRAIN_STATE_FORMAT = "cuekit-train-state"
WEIGHTS_FORMAT = "cuekit-weights"
DIGEST_KEY = "tensors_sha256"


class CheckpointCorrupted(CheckpointError, DataError):
    """A checkpoint whose tensors do not match the SHA-256 stored with them."""


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order (independent of the file layout)."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        digest.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def verify_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    """Raise CheckpointCorrupted unless the tensors read from `path` hash to the stored SHA-256.

    Files without a stored digest (written before it existed, or by other tools) are accepted as they are.
    """
    stored = meta.get(DIGEST_KEY)
    if stored is not None and tensors_sha256(tensors) != stored:
        raise CheckpointCorrupted(f"{path} is corrupted: its tensor data does not match the SHA-256 stored in it "
                                  "(flipped bytes?); restore it from a copy or retrain")


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write_bytes(path, save(clean, metadata={**meta, DIGEST_KEY: tensors_sha256(clean)}))


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


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of `obj` with each tensor moved into `tensors` under a key from `prefix`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {str(k): _split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def _join_tensors(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of `_split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def _transform_name(transform: Any) -> str | None:
    return None if transform is None else type(transform).__name__


def save_train_state(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: Any | None, epoch: int, metadata: dict[str, Any],
                     extra: dict[str, Any] | None = None, batch_transform: Any | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    """Everything needed to resume after `epoch` (0-based, completed) in one atomic file.

    batch_transform: its `state_dict()` (JSON-able data and tensors: random generators' states) is saved
    when it has one; scaler: the AMP gradient scaler's state.
    """
    tensors = {f"model.{k}": v for k, v in _dedupe_shared(_unwrap(model).state_dict()).items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in _dedupe_shared(ema.state_dict()).items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer)
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(rng_tensors)
    transform_state = None
    if hasattr(batch_transform, "state_dict"):
        transform_state = _split_tensors(batch_transform.state_dict(), "transform", tensors)
    state_meta = {"epoch": epoch, "optimizer": opt_meta, "rng": rng_meta, "extra": extra or {},
                  "batch_transform": {"type": _transform_name(batch_transform), "state": transform_state},
                  "grad_scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None}
    _save(Path(path), tensors, {
        "format": TRAIN_STATE_FORMAT, "cuekit": json.dumps(metadata), "state": json.dumps(state_meta),
    })


def _read_train_state(path: Path, with_tensors: bool) -> tuple[dict, dict, dict, dict]:
    """(metadata, training state, raw header, tensors) of a training-state file; tensors {} unless asked for."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
        if meta.get("format") != TRAIN_STATE_FORMAT:
            raise CheckpointError(f"{path} is not a cuekit training-state checkpoint")
        return json.loads(meta["cuekit"]), json.loads(meta["state"]), meta, tensors
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or corrupted?): {e}") from None


def read_train_state_header(path: str | Path) -> tuple[dict, dict]:
    """(metadata, training state) of a training-state file without reading its tensors."""
    metadata, state_meta, _, _ = _read_train_state(Path(path), with_tensors=False)
    return metadata, state_meta


def _one_line(e: BaseException, limit: int = 400) -> str:
    """An exception's message on one line (load_state_dict's lists the keys on the lines after the first)."""
    text = " ".join(part.strip() for part in str(e).splitlines() if part.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _restore_transform(path: Path, saved: dict | None, transform: Any | None, tensors: Mapping) -> None:
    """Put the batch transform's saved random state back; refuse a transform other than the saved one."""
    if saved is None:  # written before batch-transform states were saved
        return
    was, now = saved.get("type"), _transform_name(transform)
    if was != now:
        said = f"the batch transform {was}" if was else "no batch transform"
        raise UsageError(f"{path} was trained with {said}, this run has {now or 'none'}: resume it with the same "
                         "--reg / --relabel flags")
    if saved.get("state") is not None:
        try:
            transform.load_state_dict(_join_tensors(saved["state"], tensors))
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"checkpoint {path}: the {was} state does not fit: {_one_line(e)}") from None


def load_train_state(path: str | Path, *, model: nn.Module, optimizer: torch.optim.Optimizer,
                     ema: Any | None, batch_transform: Any | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> tuple[int, dict, dict]:
    """Restore model, optimizer, EMA, scaler, RNG and batch-transform states; returns (completed epoch,
    metadata, extra). The tensors are checked against their stored SHA-256 first."""
    path = Path(path)
    metadata, state_meta, meta, tensors = _read_train_state(path, with_tensors=True)
    verify_tensors(path, tensors, meta)
    model_sd = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        _unwrap(model).load_state_dict(model_sd)
        if ema is not None:
            ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
        optimizer.load_state_dict(_unflatten_optimizer(tensors, state_meta["optimizer"]))
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit this run: {_one_line(e)}") from None
    _restore_transform(path, state_meta.get("batch_transform"), batch_transform, tensors)
    if scaler is not None and scaler.is_enabled() and state_meta.get("grad_scaler"):
        scaler.load_state_dict(state_meta["grad_scaler"])
    _set_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, state_meta["rng"])
    return int(state_meta["epoch"]), metadata, state_meta.get("extra", {})
