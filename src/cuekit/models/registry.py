"""The one model registry: every model in cuekit is created by name through `create_model`."""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import json
import pickle
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from cuekit.errors import CheckpointError, UnknownChoiceError, UsageError

ModelFactory = Callable[..., nn.Module]
KeyRemap = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]

_MODELS: dict[str, ModelFactory] = {}
_MODEL_INFO: dict[str, dict] = {}
_KEY_REMAPS: dict[str, KeyRemap] = {}
_KWARGS_TO: dict[str, Callable | str] = {}


def register_model(name: str | None = None, *, key_remap: KeyRemap | None = None,
                   kwargs_to: Callable | str | None = None, **info) -> Callable:
    """Decorator: register `fn(num_classes=..., in_chans=..., img_size=..., **kw) -> nn.Module`.

    `key_remap` maps foreign state-dict keys (e.g. timm's) onto ours; `kwargs_to` is what `fn` passes its
    `**kw` on to (a class or function, or "module:name" imported when needed), so that `model_arguments`
    can name every keyword the model takes; `info` is free metadata (e.g. `family="pit"`,
    `default_img_size=224`).
    """

    def deco(fn: ModelFactory) -> ModelFactory:
        key = name or fn.__name__
        if key in _MODELS:
            raise ValueError(f"model {key!r} registered twice")
        _MODELS[key] = fn
        _MODEL_INFO[key] = dict(info)
        if key_remap is not None:
            _KEY_REMAPS[key] = key_remap
        if kwargs_to is not None:
            _KWARGS_TO[key] = kwargs_to
        return fn

    return deco


def _ensure_builtin_models() -> None:
    # Importing the model modules registers them; done lazily so `import cuekit` stays light.
    import cuekit.models  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a glob pattern (e.g. "pit_*")."""
    _ensure_builtin_models()
    names = sorted(_MODELS)
    return [n for n in names if pattern is None or fnmatch.fnmatch(n, pattern)]


def model_info(name: str) -> dict:
    """The metadata a model was registered with."""
    _ensure_builtin_models()
    if name not in _MODELS:
        raise UnknownChoiceError("model", name, _MODELS)
    return dict(_MODEL_INFO[name])


def key_remap(name: str) -> KeyRemap | None:
    """The function mapping foreign state-dict keys (e.g. timm's) onto model `name`'s, if any."""
    _ensure_builtin_models()
    if name not in _MODELS:
        raise UnknownChoiceError("model", name, _MODELS)
    return _KEY_REMAPS.get(name)


def _keyword_names(fn: Callable) -> tuple[set[str], bool]:
    """The names `fn` takes by keyword, and whether it also takes **kwargs."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _resolve(target: Callable | str) -> Callable:
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)
    return target


def model_arguments(name: str) -> list[str]:
    """Every keyword `create_model(name, ...)` passes on to the model, sorted: the factory's own parameters and,
    when the factory forwards `**kw` (its `kwargs_to`), the parameters of what it forwards them to. A function
    target that itself takes **kwargs and is annotated to return a class (torchvision's builders) adds that
    class's parameters. Keywords outside this list are not passed to any constructor."""
    _ensure_builtin_models()
    if name not in _MODELS:
        raise UnknownChoiceError("model", name, _MODELS)
    names, var_kw = _keyword_names(_MODELS[name])
    if var_kw and name in _KWARGS_TO:
        target = _resolve(_KWARGS_TO[name])
        more, target_var_kw = _keyword_names(target)
        names |= more
        returned = inspect.signature(target).return_annotation if not isinstance(target, type) else None
        if target_var_kw and isinstance(returned, type):
            names |= _keyword_names(returned)[0]
    return sorted(names)


def check_model_arguments(name: str, kwargs: Mapping[str, Any], where: str = "") -> None:
    """Refuse (UsageError) keyword arguments that model `name` does not take (see `model_arguments`), and the
    ones given separately (name, num_classes, in_chans, img_size, checkpoint) or that would fetch or load weights
    (weights, pretrained); `where` prefixes the message."""
    accepted = set(model_arguments(name)) - {"name", "num_classes", "in_chans", "img_size", "checkpoint", "weights",
                                             "pretrained"}
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        prefix = f"{where}: " if where else ""
        close = difflib.get_close_matches(unknown[0], sorted(accepted), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UsageError(f"{prefix}model {name} takes no argument {', '.join(map(repr, unknown))} (it takes "
                         f"{', '.join(sorted(accepted)) or 'no extra arguments'}){hint}")


def create_model(
    name: str,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int | None = None,
    checkpoint: str | Path | None = None,
    **kwargs,
) -> nn.Module:
    """Create a registered model by name; optionally load weights from a local checkpoint."""
    _ensure_builtin_models()
    if name not in _MODELS:
        raise UnknownChoiceError("model", name, _MODELS)
    if img_size is not None:
        kwargs["img_size"] = img_size
    model = _MODELS[name](num_classes=num_classes, in_chans=in_chans, **kwargs)
    model.cuekit_name = name  # type: ignore[attr-defined]
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model


_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def pickle_refusal(path: str | Path, torch_message: str) -> str:
    """cuekit's one-line refusal of a torch file that weights-only loading rejected (what, and how to convert)."""
    found = _REFUSED_GLOBAL.search(torch_message)
    if found:
        held = f"it holds Python objects besides tensors ({found.group(1)})"
    else:
        reasons = [line.strip() for line in torch_message.splitlines() if line.strip() and not any(
            word in line for word in ("weights_only", "Weights only", "documentation", "file an issue"))]
        held = "it is not a plain tensor file" + (f" ({reasons[0][:120]})" if reasons else "")
    return (f"refused to unpickle {path}: {held}, and unpickling can run code hidden in the file. If you trust "
            f"the file, convert it once: cuekit models convert {path} --model NAME --to OUT.safetensors "
            "--trust-pickle (then use OUT.safetensors)")


def _load_torch_file(path: Path, trust_pickle: bool) -> Any:
    if trust_pickle:
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(pickle_refusal(path, str(e))) from None


def read_state_dict(path: str | Path, *, trust_pickle: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors and string metadata from safetensors, or a torch file with weights_only=True.

    A torch file that holds anything beyond tensors and plain containers is refused (CheckpointError);
    trust_pickle=True unpickles it instead, which runs any code the file holds: only for trusted files
    (`cuekit models convert --trust-pickle`). Training-state files written by `cuekit.train` are
    recognised and only the model weights (keys under "model.") are returned.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    meta: dict[str, str] = {}
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            tensors = {}
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
        else:
            obj = _load_torch_file(path, trust_pickle)
            for wrapper in ("state_dict", "model", "model_state", "module"):
                if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), (Mapping, nn.Module)):
                    obj = obj[wrapper]
            if isinstance(obj, nn.Module):  # a whole pickled model (trust_pickle only)
                obj = obj.state_dict()
            if not isinstance(obj, Mapping):
                raise CheckpointError(f"{path}: no state dict inside (found {type(obj).__name__})")
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    except CheckpointError:
        raise
    except Exception as e:  # truncated / corrupted / not a checkpoint at all
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {' '.join(str(e).split())}") \
            from None
    if "tensors_sha256" in meta:  # cuekit's own files carry a digest of their tensors: refuse flipped bytes
        from cuekit.train.checkpoint import verify_tensors

        verify_tensors(path, tensors, meta)
    if meta.get("format") == "cuekit-train-state":
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    tensors = {k[len("module."):] if k.startswith("module.") else k: v for k, v in tensors.items()}
    return tensors, meta


def checkpoint_metadata(path: str | Path) -> dict:
    """The JSON metadata (config, class names, epoch, ...) stored with a cuekit checkpoint."""
    _, meta = read_state_dict(path)
    return json.loads(meta.get("cuekit", "{}"))


def load_checkpoint(model: nn.Module, path: str | Path, strict: bool = True) -> dict:
    """Load weights (safetensors or weights-only torch file) into `model`; returns the metadata.

    Foreign key names are mapped through the model's registered key remap (e.g. timm -> official).
    """
    state, meta = read_state_dict(path)
    name = getattr(model, "cuekit_name", None)
    remap = _KEY_REMAPS.get(name) if name else None
    if remap is not None:
        state = remap(state)
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} does not fit the model: {' '.join(first[:3])}") from None
    return json.loads(meta.get("cuekit", "{}"))


def model_from_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild and load the model a cuekit checkpoint describes (its metadata names model and classes).

    Returns (model on the CPU in eval mode, metadata); CheckpointError for a file without that metadata.
    """
    state, raw = read_state_dict(path)
    meta = json.loads(raw.get("cuekit", "{}"))
    if "model" not in meta or "num_classes" not in meta:
        raise CheckpointError(f"{path} has no cuekit metadata (model name, classes); "
                              "use a model.safetensors written by `cuekit train` or an area's train command")
    model = create_model(meta["model"], num_classes=meta["num_classes"], in_chans=meta.get("in_chans", 3),
                         img_size=meta.get("img_size"), **meta.get("config", {}).get("model_kwargs", {}))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {path} does not fit the model: {' '.join(first[:3])}") from None
    return model.eval(), meta
