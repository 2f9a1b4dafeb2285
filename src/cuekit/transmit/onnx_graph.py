"""The ONNX graph a browser runs for a progressive package: the weights are graph *inputs*.

`cuekit transmit pack` writes `model.onnx` beside the parts. The graph takes the image batch
(`images`, shape (1, C, H, W), float32) and one float32 input per floating tensor of the state dict,
named exactly as in the manifest (`layer1.0.conv1.weight`, ...), and returns `logits`. A browser
(ONNX Runtime Web) therefore opens one session once and feeds each stage's decoded weights into it,
instead of building a new model per stage. The manifest's `model.onnx` entry names the file, its
size and SHA-256 (so a signed manifest covers the graph too), and the inputs.

`embed_weights` turns such a graph into an ordinary self-contained model (weights as initializers,
e.g. float16 ones cast to float32 inside the graph): the "download the whole float16 ONNX model"
baseline of `benchmarks/transmit_browser.py`.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from cuekit.errors import DataError, UsageError

__all__ = ["GRAPH_NAME", "INPUT_NAME", "OUTPUT_NAME", "GraphUnavailable", "embed_weights", "export_weights_graph",
           "graph_weight_names", "write_package_graph"]

GRAPH_NAME = "model.onnx"
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


class GraphUnavailable(Exception):
    """No graph could be written (no architecture in the checkpoint, onnx missing, export failed): the reason."""


class _WeightsAsInputs(nn.Module):
    """forward(images, *weights) = model(images) with the given tensors in place of its own."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, images: Tensor, *weights: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, dict(zip(self.names, weights)), (images,))


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise GraphUnavailable("the ONNX graph needs the onnx and onnxscript packages "
                               "(pip install onnx onnxscript, or cuekit[onnx])") from None


def export_weights_graph(model: nn.Module, state: Mapping[str, Tensor], in_chans: int, img_size: int,
                         path: str | Path) -> list[str]:
    """Export `model` (eval mode) to `path` with every floating tensor of `state` as a float32 graph input;
    returns the weight input names in graph order (those the graph uses)."""
    import onnx

    _require_onnx()
    model = model.float().eval()
    names = [k for k, v in state.items() if v.is_floating_point()]
    if not names:
        raise GraphUnavailable("the state dict holds no floating tensor")
    weights = [state[k].detach().to("cpu", torch.float32) for k in names]
    wrapper = _WeightsAsInputs(model, names).eval()
    images = torch.zeros(1, in_chans, img_size, img_size)
    path = Path(path)
    out, err = io.StringIO(), io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (images, *weights), str(path), dynamo=True, external_data=False,
                              input_names=[INPUT_NAME, *names], output_names=[OUTPUT_NAME], verbose=False)
    except Exception as e:  # noqa: BLE001 (any exporter failure means: no graph)
        path.unlink(missing_ok=True)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise GraphUnavailable(f"torch.onnx.export failed: {first[:300]}") from None
    proto = onnx.load(str(path))
    _strip(proto)
    onnx.save(proto, str(path))
    graph = proto.graph
    inputs = [i.name for i in graph.input]
    if not inputs or inputs[0] != INPUT_NAME or [o.name for o in graph.output] != [OUTPUT_NAME]:
        path.unlink(missing_ok=True)
        raise GraphUnavailable(f"unexpected graph interface: inputs {inputs[:3]}..., outputs "
                               f"{[o.name for o in graph.output]}")
    unknown = [n for n in inputs[1:] if n not in state]
    if unknown:
        path.unlink(missing_ok=True)
        raise GraphUnavailable(f"the exported graph has inputs that are not weights: {unknown[:5]}")
    return inputs[1:]


def _strip(proto: Any) -> None:
    """Drop what the exporter records for debugging (stack traces with local paths, FX node text, inferred
    intermediate shapes): most of the graph's bytes, none of its meaning."""
    proto.doc_string = ""
    proto.graph.doc_string = ""
    del proto.graph.value_info[:]
    del proto.graph.metadata_props[:]
    del proto.metadata_props[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for item in (*proto.graph.input, *proto.graph.output, *proto.graph.initializer):
        del item.metadata_props[:]


def graph_weight_names(path: str | Path) -> list[str]:
    """The weight inputs of a graph written by `export_weights_graph` (all inputs but the images)."""
    import onnx

    return [i.name for i in onnx.load(str(path)).graph.input if i.name != INPUT_NAME]


def write_package_graph(state: Mapping[str, Tensor], model_info: Mapping[str, Any], out_dir: str | Path) -> dict:
    """Write `out_dir/model.onnx` for the architecture the manifest's `model` entry names and return the
    manifest's `model.onnx` entry (file, bytes, sha256, input, input_shape, output, weights, weights_dtype).

    GraphUnavailable (with the reason) when the package names no architecture or the export fails.
    """
    if not model_info.get("name"):
        raise GraphUnavailable("the checkpoint names no model architecture")
    _require_onnx()
    from cuekit.models.registry import create_model
    from cuekit.models.registry import model_info as registry_info

    name = str(model_info["name"])
    in_chans = int(model_info.get("in_chans") or 3)
    try:
        img_size = int(model_info.get("img_size") or registry_info(name).get("default_img_size") or 224)
        model = create_model(name, num_classes=int(model_info["num_classes"]), in_chans=in_chans,
                             img_size=model_info.get("img_size"), **(model_info.get("model_kwargs") or {}))
    except (UsageError, DataError, KeyError, TypeError, ValueError) as e:
        raise GraphUnavailable(f"cannot build model {name!r}: {e}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / GRAPH_NAME
    weights = export_weights_graph(model, state, in_chans, img_size, path)
    data = path.read_bytes()
    return {"file": GRAPH_NAME, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "input": INPUT_NAME, "input_shape": [1, in_chans, img_size, img_size], "output": OUTPUT_NAME,
            "weights": weights, "weights_dtype": "float32"}


def embed_weights(graph_path: str | Path, state: Mapping[str, Tensor], out_path: str | Path,
                  dtype: torch.dtype = torch.float16) -> int:
    """Write a self-contained copy of a weights-as-inputs graph: each weight input becomes an initializer of
    `dtype` (cast to float32 inside the graph when `dtype` is not float32). Returns the file's size in bytes."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(graph_path))
    graph = model.graph
    weight_inputs = [i for i in graph.input if i.name != INPUT_NAME]
    casts = []
    for inp in weight_inputs:
        if inp.name not in state:
            raise DataError(f"graph input {inp.name!r} is not in the state dict")
        t = state[inp.name].detach().to("cpu", dtype).contiguous()
        if dtype == torch.float32:
            graph.initializer.append(numpy_helper.from_array(t.numpy(), inp.name))
            continue
        stored = f"{inp.name}::{str(dtype).removeprefix('torch.')}"
        if dtype != torch.float16:
            raise UsageError(f"embed_weights supports float32 and float16, not {dtype}")
        graph.initializer.append(numpy_helper.from_array(t.numpy(), stored))
        casts.append(helper.make_node("Cast", [stored], [inp.name], to=onnx.TensorProto.FLOAT,
                                      name=f"cast::{inp.name}"))
    keep = [i for i in graph.input if i.name == INPUT_NAME]
    del graph.input[:]
    graph.input.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    Path(out_path).write_bytes(data)
    return len(data)


def with_graph(state: Mapping[str, Tensor], model_info: Mapping[str, Any], out_dir: str | Path) -> dict:
    """`model_info` plus its `onnx` entry after writing `out_dir/model.onnx`; when no graph can be written, a
    warning says why, any stale `model.onnx` is removed, and `model_info` comes back without the entry."""
    info = {k: v for k, v in model_info.items() if k != "onnx"}
    try:
        info["onnx"] = write_package_graph(state, info, out_dir)
    except GraphUnavailable as e:
        (Path(out_dir) / GRAPH_NAME).unlink(missing_ok=True)
        warnings.warn(f"no ONNX graph written for the browser page: {e}", stacklevel=2)
    return info
