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

    def input(self, name: str, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        return name

    def output(self, value: str, name: str, shape: list) -> str:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
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
