"""Copies of alice's models changed with `onnx`, for tests: float16, run-time shapes, NaN, other types."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lipsync_cli.models.graphs.builder import to_float16

from .conftest import ALICE

MODELS = {"encoder": "audio_encoder.onnx", "unet": "model_best.onnx"}


def load(which):
    return onnx.load(str(ALICE / MODELS[which]))


def save_into(folder, which, model):
    onnx.checker.check_model(model)
    (folder / MODELS[which]).write_bytes(model.SerializeToString())


def float16(model, keep_io_types=False):
    return to_float16(model, keep_io_types)


def _rename_output(model):
    out = model.graph.output[0].name
    inner = out + "_raw"
    for node in model.graph.node:
        node.output[:] = [inner if n == out else n for n in node.output]
    return out, inner


def runtime_sliced(model, axis_ends):
    """The output sliced to `axis_ends` ({axis: end}) by a Slice whose ends are computed from the first input
    at run time (so no shape inference sees it), while the declared output shape stays the same."""
    out, inner = _rename_output(model)
    first = model.graph.input[0].name
    g = model.graph
    axes = sorted(axis_ends)
    zero = helper.make_node("ReduceMin", [first], ["rt_min"], keepdims=0)
    g.node.extend([
        zero,
        helper.make_node("Mul", ["rt_min", "rt_zero"], ["rt_zeroed"]),
        helper.make_node("Cast", ["rt_zeroed"], ["rt_offset"], to=TensorProto.INT64),
        helper.make_node("Add", ["rt_ends_base", "rt_offset"], ["rt_ends"]),
        helper.make_node("Slice", [inner, "rt_starts", "rt_ends", "rt_axes"], [out]),
    ])
    g.initializer.extend([
        numpy_helper.from_array(np.array(0, np.float32), "rt_zero"),
        numpy_helper.from_array(np.zeros(len(axes), np.int64), "rt_starts"),
        numpy_helper.from_array(np.array([axis_ends[a] for a in axes], np.int64), "rt_ends_base"),
        numpy_helper.from_array(np.array(axes, np.int64), "rt_axes"),
    ])
    return model


def nan_output(model):
    """The output replaced by (x - x) / (x - x): NaN everywhere, at run time."""
    out, inner = _rename_output(model)
    model.graph.node.extend([helper.make_node("Sub", [inner, inner], ["nan_zero"]),
                             helper.make_node("Div", ["nan_zero", "nan_zero"], [out])])
    return model


def tinted(model, factor):
    """The output multiplied by `factor`: a model whose colours drift (brighter with factor > 1)."""
    out, inner = _rename_output(model)
    model.graph.node.append(helper.make_node("Mul", [inner, "tint_factor"], [out]))
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "tint_factor"))
    return model


def int8_encoder():
    """An audio encoder whose input is int8 (cast to float inside)."""
    g = helper.make_graph(
        [helper.make_node("Cast", ["mel"], ["melf"], to=TensorProto.FLOAT),
         helper.make_node("Reshape", ["melf", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["features"])],
        "int8", [helper.make_tensor_value_info("mel", TensorProto.INT8, ["N", 1, 80, 16])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 512])],
        [numpy_helper.from_array(np.array([-1, 1280], np.int64), "shape"),
         numpy_helper.from_array(np.zeros((1280, 512), np.float32), "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def character_with(tmp_path, name="variant", **models):
    """A copy of alice with some of her models replaced: character_with(tmp_path, unet=model)."""
    folder = tmp_path / name
    shutil.copytree(ALICE, folder)
    for which, model in models.items():
        save_into(folder, which, model)
    return folder


def synctalk_unet(size=320):
    """A small UNet with SyncTalk_2D's audio layout ([N, 32, 16, 16]): the reference image brightened by a
    weighted sum of the 16 gathered feature rows (each row its own weight, so a row out of place changes
    the picture)."""
    rng = np.random.default_rng(5)
    g = helper.make_graph(
        [helper.make_node("Reshape", ["audio", "rows_shape"], ["rows"]),
         helper.make_node("MatMul", ["rows", "w_feature"], ["per_row"]),
         helper.make_node("Reshape", ["per_row", "flat_shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w_rows"], ["rgb"]),
         helper.make_node("Tanh", ["rgb"], ["rgb_t"]),
         helper.make_node("Reshape", ["rgb_t", "rgb_shape"], ["shift"]),
         helper.make_node("Slice", ["visual", "starts", "ends", "axes"], ["reference"]),
         helper.make_node("Mul", ["shift", "gain"], ["scaled"]),
         helper.make_node("Add", ["reference", "scaled"], ["moved"]),
         helper.make_node("Clip", ["moved", "lo", "hi"], ["patch"])],
        "synctalk-small",
        [helper.make_tensor_value_info("visual", TensorProto.FLOAT, ["N", 6, size, size]),
         helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 32, 16, 16])],
        [helper.make_tensor_value_info("patch", TensorProto.FLOAT, ["N", 3, size, size])],
        [numpy_helper.from_array(np.array([-1, 16, 512], np.int64), "rows_shape"),
         numpy_helper.from_array(rng.standard_normal((512, 1)).astype(np.float32) / 8, "w_feature"),
         numpy_helper.from_array(np.array([-1, 16], np.int64), "flat_shape"),
         numpy_helper.from_array(rng.standard_normal((16, 3)).astype(np.float32), "w_rows"),
         numpy_helper.from_array(np.array([-1, 3, 1, 1], np.int64), "rgb_shape"),
         numpy_helper.from_array(np.array([0], np.int64), "starts"),
         numpy_helper.from_array(np.array([3], np.int64), "ends"),
         numpy_helper.from_array(np.array([1], np.int64), "axes"),
         numpy_helper.from_array(np.array(0.25, np.float32), "gain"),
         numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
         numpy_helper.from_array(np.array(1.0, np.float32), "hi")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


FITTED_UNET = ALICE.parents[1] / "tests" / "data" / "fitted_unet.onnx"


def with_outlier_channel(model, conv: str, consumer: str, value: float = 2000.0):
    """`model` with one more output channel on the Conv node `conv`: zero weights and a bias of `value`, so the
    activation that the next Conv (`consumer`, through a ReLU) reads has an outlier range; `consumer` gets a zero
    weight for it, so the float model's output is unchanged. Per-tensor int8 activations then give the other
    channels of that tensor (what the mouth depends on) a step of value / 255."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = {n.name: n for n in g.node}
    weight, bias = inits[nodes[conv].input[1]], inits[nodes[conv].input[2]]
    w, b = numpy_helper.to_array(weight), numpy_helper.to_array(bias)
    weight.CopyFrom(numpy_helper.from_array(np.concatenate([w, np.zeros((1, *w.shape[1:]), w.dtype)]), weight.name))
    bias.CopyFrom(numpy_helper.from_array(np.concatenate([b, np.array([value], b.dtype)]), bias.name))
    next_weight = inits[nodes[consumer].input[1]]
    n = numpy_helper.to_array(next_weight)
    next_weight.CopyFrom(numpy_helper.from_array(
        np.concatenate([n, np.zeros((n.shape[0], 1, *n.shape[2:]), n.dtype)], axis=1), next_weight.name))
    del g.value_info[:]  # the shapes inside changed: let onnxruntime infer them again
    return model


def fitted_character(folder, outlier: bool = False):
    """A copy of alice whose UNet is the small UNet fitted to reproduce alice (scripts/make_fitted_unet.py); with
    `outlier`, one that quantises badly (with_outlier_channel on its last 3x3 convolution)."""
    shutil.copytree(ALICE, folder)
    model = onnx.load(str(FITTED_UNET))
    if outlier:
        model = with_outlier_channel(model, "/dec1/dec1.0/Conv", "/dec1/dec1.2/Conv")
    save_into(folder, "unet", model)
    manifest = folder / "character.toml"
    manifest.write_text(manifest.read_text().replace('name = "alice"', f'name = "{folder.name}"'))
    return folder
