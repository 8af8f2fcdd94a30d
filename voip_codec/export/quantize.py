"""int8 weights for the exported step graphs.

:func:`quantize_export` rewrites the matrix products of an fp32 export folder (written by
:func:`voip_codec.export.onnx.export_onnx`) with the torch int8 path's int8 weights and per
output channel scales. Which products are quantised is decided by weight, not by node name: a
product is quantised when its weight initializer is byte for byte the (transposed) weight of a
layer that :func:`voip_codec.codec.precision.set_precision` makes int8, so the ONNX int8 graphs
keep the same layers fp32 as torch does (the stage-boundary projections, the compressor's last
block, layers under 64 features). On the token path (the encoder graph) the activations are
split as torch splits them (:func:`_split_product`: coarse and remainder rows through one
``MatMulInteger``, about 16-bit activations); on the decoder side a product becomes
onnxruntime's ``DynamicQuantizeMatMul`` (uint8 activations per call, as fbgemm's). The
vocoder's kernel-7 embedding, which the export writes as one product of unfolded windows, is
int8 in both. With ``grouped_convs=True`` the encoder's positional convolution (16 per-group
products in the export) is quantised too; torch keeps it fp32.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .manifest import DECODER_FILE, ENCODER_FILE, MANIFEST_FILE

if TYPE_CHECKING:
    from torch import Tensor

    from ..codec.model import FocalCodec

__all__ = ["ONNX_KEEP_FP32", "QuantizeReport", "int8_weight_digests", "quantize_export"]

ONNX_KEEP_FP32: tuple[str, ...] = ()
"""Layers the onnxruntime int8 graphs keep fp32 beyond the torch int8 choice: none since the
graphs split the token path's activations. With 8-bit activations they kept the first WavLM
feed-forward block (``encoder.encoder.layers.0.feed_forward``), which cost 0.4 points of token
agreement; split, keeping it gave 99.65 / 99.71 % (eval / dev) against 99.56 / 99.75 % for the
same layers as torch."""


def _digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes()).hexdigest()


def _grouped_products(weight: Tensor, groups: int) -> list[Tensor]:
    """The per-group ``(c_in_g * kernel, c_out / groups)`` matrices the export multiplies by."""
    c_out, c_in_g, kernel = weight.shape
    w = weight.detach().float().reshape(groups, c_out // groups, c_in_g * kernel)
    return [w[g].t() for g in range(groups)]


def int8_weight_digests(model: FocalCodec, grouped_convs: bool = False,
                        keep_fp32: tuple[str, ...] = ()) -> dict[str, str]:
    """Digest of each weight matrix (as the exported graph stores it) that gets int8 weights.

    Args:
        model: the fp32 model the folder was exported from.
        grouped_convs: also the grouped convolutions' per-group matrices.
        keep_fp32: module paths (and their children) left fp32 beyond torch's choice.

    Returns:
        ``{sha1 of the (in, out) float32 matrix: module path}``.
    """
    from ..codec.precision import _int8_targets, _matrix

    paths = {id(m): name for name, m in model.named_modules()}
    out = {}
    for _, _, layer in _int8_targets(model):
        path = paths[id(layer)]
        if not any(path == k or path.startswith(k + ".") for k in keep_fp32):
            # a kernel > 1 convolution (the vocoder embedding) is exported as the product of
            # its unfolded windows, by the same (in * kernel, out) matrix
            out[_digest(_matrix(layer).detach().float().t().numpy())] = path
    if grouped_convs:
        convs: list[tuple[str, Any, int]] = [
            ("encoder.encoder.positional_embedding.conv",
             model.encoder.encoder.positional_embedding.conv.weight,  # type: ignore[union-attr]
             int(model.encoder.encoder.positional_embedding.conv.groups)),  # type: ignore[union-attr]
        ]
        for name, weight, groups in convs:
            for g, w in enumerate(_grouped_products(weight, groups)):
                out[_digest(w.numpy())] = f"{name}[group {g}]"
    return out


QUANTIZE_REVISION = 3
"""Version of the int8 graph rules: export caches keep int8 folders per revision (2: the token
path's products take split activations; 3: the vocoder's waveform projection stays fp32,
``precision.KEEP_FLOAT``)."""

_GAIN = 254.0
"""The remainder rows' factor, ``2 * 127``, as torch's split layers (``precision._split_levels``)."""


def _dynamic_product(node: str, x: str, y: str, q: np.ndarray, scale: np.ndarray
                     ) -> tuple[list[Any], list[Any]]:
    """One ``com.microsoft.DynamicQuantizeMatMul`` node replacing the product ``node``:
    ``y = x @ W`` for an int8 ``W = q * scale`` (``q`` ``(in, out)``), the activations
    quantised per call (uint8, per tensor) by onnxruntime. Returns ``(nodes, initializers)``."""
    from onnx import helper, numpy_helper

    base = f"{node}.int8"
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(q), f"{base}.weight"),
        numpy_helper.from_array(scale.astype(np.float32), f"{base}.scale"),
        numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}.zero_point"),
    ]
    return [helper.make_node(
        "DynamicQuantizeMatMul", [x, f"{base}.weight", f"{base}.scale", f"{base}.zero_point"],
        [y], name=f"{node}_int8", domain="com.microsoft")], inits


def _split_product(node: str, x: str, y: str, q: np.ndarray, scale: np.ndarray
                   ) -> tuple[list[Any], list[Any]]:
    """Nodes computing ``y = x @ W`` for an int8 ``W = q * scale`` (``q`` ``(in, out)``) with the
    activations split as torch's token path splits them: ``d = max|x| / 127``, coarse rows
    ``c = round(x / d)`` and remainder rows ``f = round((x / d - c) * 254)``, both uint8 about
    128, through one ``MatMulInteger`` call on a new leading axis (one read of the weights),
    then ``y = d * scale * (yc + yf / 254)``. About 16-bit activations where
    :func:`_dynamic_product` gives 8. Returns ``(nodes, initializers)``."""
    from onnx import TensorProto, helper, numpy_helper

    def c(suffix: str) -> str:
        return f"{node}.int8.{suffix}"

    inits = [
        numpy_helper.from_array(np.ascontiguousarray(q), c("weight")),
        numpy_helper.from_array(scale.astype(np.float32), c("scale")),
        numpy_helper.from_array(np.array([0], np.int64), c("axis0")),
        numpy_helper.from_array(np.array(127.0, np.float32), c("levels")),
        numpy_helper.from_array(np.array(1e-30, np.float32), c("tiny")),
        numpy_helper.from_array(np.array(_GAIN, np.float32), c("gain")),
        numpy_helper.from_array(np.array(1.0 / _GAIN, np.float32), c("inv_gain")),
        numpy_helper.from_array(np.array(128.0, np.float32), c("zero_f")),
        numpy_helper.from_array(np.array(128, np.uint8), c("zero_a")),
        numpy_helper.from_array(np.array(0, np.int8), c("zero_w")),
    ]
    n = helper.make_node
    nodes = [
        n("Unsqueeze", [x, c("axis0")], [c("xu")], name=c("unsqueeze")),
        n("Abs", [c("xu")], [c("abs")], name=c("abs_op")),
        n("ReduceMax", [c("abs")], [c("amax")], name=c("amax_op"), keepdims=0),
        n("Div", [c("amax"), c("levels")], [c("step0")], name=c("step0_op")),
        n("Max", [c("step0"), c("tiny")], [c("step")], name=c("step_op")),
        n("Div", [c("xu"), c("step")], [c("t")], name=c("t_op")),
        n("Round", [c("t")], [c("coarse")], name=c("coarse_op")),
        n("Sub", [c("t"), c("coarse")], [c("rest")], name=c("rest_op")),
        n("Mul", [c("rest"), c("gain")], [c("rest_up")], name=c("rest_up_op")),
        n("Round", [c("rest_up")], [c("fine")], name=c("fine_op")),
        n("Concat", [c("coarse"), c("fine")], [c("rows")], name=c("rows_op"), axis=0),
        n("Add", [c("rows"), c("zero_f")], [c("rows_u")], name=c("rows_u_op")),
        n("Cast", [c("rows_u")], [c("rows_q")], name=c("rows_q_op"), to=TensorProto.UINT8),
        n("MatMulInteger", [c("rows_q"), c("weight"), c("zero_a"), c("zero_w")], [c("acc")],
          name=c("matmul")),
        n("Cast", [c("acc")], [c("acc_f")], name=c("acc_f_op"), to=TensorProto.FLOAT),
        n("Mul", [c("acc_f"), c("scale")], [c("scaled")], name=c("scaled_op")),
        n("Split", [c("scaled")], [c("y_coarse"), c("y_fine")], name=c("split_op"), axis=0),
        n("Mul", [c("y_fine"), c("inv_gain")], [c("y_fine_d")], name=c("y_fine_d_op")),
        n("Add", [c("y_coarse"), c("y_fine_d")], [c("merged")], name=c("merged_op")),
        n("Squeeze", [c("merged"), c("axis0")], [c("merged_s")], name=c("squeeze")),
        n("Mul", [c("merged_s"), c("step")], [y], name=c("out_op")),
    ]
    return nodes, inits


class QuantizeReport(dict[str, list[str]]):
    """Per graph file, the module paths whose products were quantised."""


def quantize_export(model: FocalCodec, src: str | Path, dst: str | Path,
                    grouped_convs: bool = False, keep_fp32: tuple[str, ...] = ONNX_KEEP_FP32,
                    calibration: Mapping[str, Tensor] | None = None,
                    split_activations: bool = True) -> QuantizeReport:
    """Write an int8-weight copy of the export folder ``src`` to ``dst``.

    Each quantised ``MatMul`` gets exactly the int8 weight and per-output-channel scale the
    torch int8 path computes (:class:`~voip_codec.codec.precision.Int8Linear`, symmetric,
    ``[-127, 127]``): on the token path a split product (:func:`_split_product`), elsewhere a
    ``com.microsoft.DynamicQuantizeMatMul`` node, whose activations onnxruntime quantises per
    call, uint8 per tensor, as fbgemm does. onnxruntime's own
    ``quantize_dynamic`` gave the same token agreement; its 8-bit ``MatMulNBits`` blocks
    (weight-only, block 32/128) were worse, 96.2-98.4 % on the default model.

    Args:
        model: the fp32 model ``src`` was exported from (it names the layers to quantise).
        src: an fp32 export folder.
        dst: the folder to write (created; its graph files and manifest are replaced).
        grouped_convs: also quantise the grouped convolutions (see the module docstring).
        keep_fp32: module paths left fp32 beyond the torch int8 choice
            (:data:`ONNX_KEEP_FP32` by default).
        calibration: the :func:`~voip_codec.codec.precision.int8_calibration` given to
            ``set_precision``, so that the graphs get the same fitted int8 weights (None: the
            model's own ``int8_calibration`` if it has one, as ``set_precision`` does, else
            nearest rounding).
        split_activations: split the token path's activations as torch does (False: 8-bit
            ``DynamicQuantizeMatMul`` everywhere, the rule before; default model v7, 8 eval
            clips: 98.42 % token agreement with fp32 against 99.56 % split).

    Returns:
        For each graph file, the quantised layers.

    Raises:
        ValueError: a layer torch quantises was not found in the graphs (the export and the
            model disagree), or ``src`` is not an fp32 export of ``model``.
        ImportError: ``onnx`` is missing.
    """
    import onnx
    from onnx import helper, numpy_helper

    from ..codec.precision import _splits_activations, quantize_weight

    src, dst = Path(src), Path(dst)
    manifest = json.loads((src / MANIFEST_FILE).read_text())
    if manifest.get("weights", "fp32") != "fp32":
        raise ValueError(f"{src} holds {manifest['weights']} weights; quantise an fp32 export")
    if manifest.get("fingerprint") != model.fingerprint().hex():
        raise ValueError(f"{src} was exported from another model (fingerprint differs)")
    if calibration is None:
        calibration = getattr(model, "int8_calibration", None)
    wanted = int8_weight_digests(model, grouped_convs, keep_fp32)
    dst.mkdir(parents=True, exist_ok=True)
    report = QuantizeReport()
    found: set[str] = set()
    for file in (ENCODER_FILE, DECODER_FILE):
        graph = onnx.load(str(src / file))
        g = graph.graph
        inits = {i.name: i for i in g.initializer}
        layers: list[str] = []
        nodes = []
        replaced: set[str] = set()
        for node in g.node:
            init = inits.get(node.input[1]) if node.op_type == "MatMul" else None
            if init is None or len(init.dims) != 2:
                nodes.append(node)
                continue
            weight = numpy_helper.to_array(init)
            key = _digest(weight)
            if key not in wanted:
                nodes.append(node)
                continue
            import torch

            moment = None if calibration is None else calibration.get(wanted[key])
            q, scale = quantize_weight(torch.from_numpy(np.ascontiguousarray(weight.T)), moment)
            split = split_activations and _splits_activations(wanted[key].split("[")[0])
            product = _split_product if split else _dynamic_product
            new_nodes, new_inits = product(node.name, node.input[0], node.output[0],
                                           q.t().contiguous().numpy(), scale.numpy())
            g.initializer.extend(new_inits)
            nodes.extend(new_nodes)
            replaced.add(init.name)
            layers.append(wanted[key])
            found.add(key)
        del g.node[:]
        g.node.extend(nodes)
        used = {name for n in g.node for name in n.input}
        keep = [i for i in g.initializer if i.name not in replaced or i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        if not any(o.domain == "com.microsoft" for o in graph.opset_import):
            graph.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        onnx.save(graph, str(dst / file))
        del graph
        report[file] = layers
    missing = sorted(wanted[k] for k in set(wanted) - found)
    if missing:
        raise ValueError(f"{len(missing)} int8 layers not found in the exported graphs, e.g. "
                         f"{missing[0]}; export the model again")
    manifest["weights"] = "int8+conv" if grouped_convs else "int8"
    (dst / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
    if src != dst:
        for extra in src.iterdir():
            if extra.name not in (ENCODER_FILE, DECODER_FILE, MANIFEST_FILE) and extra.is_file():
                shutil.copy(extra, dst / extra.name)
    return report
