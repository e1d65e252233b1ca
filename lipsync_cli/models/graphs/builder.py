"""A small, deterministic way to write ONNX graphs node by node."""

from __future__ import annotations

from pathlib import Path

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("building ONNX models needs the onnx package: pip install onnx") from exc

OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.10


class Graph:
    """Collects nodes and initialisers; names are generated in order, so output is reproducible."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list = []
        self.initializers: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0
        self.parameters = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def input(self, name: str, shape: list, elem_type: int = TensorProto.FLOAT) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def output(self, value: str, name: str, shape: list, elem_type: int = TensorProto.FLOAT) -> str:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, shape))
        return name

    def const(self, array, hint: str = "c", parameter: bool = False) -> str:
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        if parameter:
            self.parameters += array.size
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def model(self, doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipsync", producer_version="1"
        )
        model.ir_version = IR_VERSION
        model.doc_string = doc
        onnx.checker.check_model(model)
        return model


def save(model: onnx.ModelProto, path: str | Path) -> None:
    Path(path).write_bytes(model.SerializeToString(deterministic=True))


# Inputs that ONNX requires in float32 whatever the model's number format (Resize's roi and scales).
_FLOAT32_INPUTS = {"Resize": (1, 2), "Upsample": (1,)}


def to_float16(model: onnx.ModelProto, keep_io_types: bool = False) -> onnx.ModelProto:
    """The model with every float32 weight in float16, as users export for GPU speed; its inputs and outputs
    become float16 too, or (keep_io_types) stay float32 with Casts at the edges."""
    graph = model.graph
    stay = {node.input[k] for node in graph.node for k in _FLOAT32_INPUTS.get(node.op_type, ()) if k < len(node.input)}
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT and init.name not in stay:
            half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name)
            graph.initializer[i].CopyFrom(half)
    if not keep_io_types:
        for value in [*graph.input, *graph.output]:
            value.type.tensor_type.elem_type = TensorProto.FLOAT16
        return model
    casts_in = []
    for value in graph.input:
        inner = value.name + "_half"
        for node in graph.node:
            node.input[:] = [inner if n == value.name else n for n in node.input]
        casts_in.append(helper.make_node("Cast", [value.name], [inner], to=TensorProto.FLOAT16))
    for value in graph.output:
        inner = value.name + "_half"
        for node in graph.node:
            node.output[:] = [inner if n == value.name else n for n in node.output]
        graph.node.append(helper.make_node("Cast", [inner], [value.name], to=TensorProto.FLOAT))
    for cast in reversed(casts_in):
        graph.node.insert(0, cast)
    return model
