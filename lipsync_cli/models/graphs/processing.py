"""The pre- and post-processing of the render as ONNX graphs, so that a GPU's execution provider runs them
beside the UNet and frames cross the bus as uint8 (built by scripts/make_processing_graphs.py, shipped in
lipsync_cli/models/processing/; rendering reads the files and does not need `onnx`).

prepare:   crops uint8 [N, H, W, 3] (BGR), planes int64 [6], mask float [1, 1, H, W]
           -> visual float [N, 6, H, W]: the crops in [0, 1], then the same with the mask applied, the six
           planes picked in the model's colour and channel order (what frames/crops.py computes).
composite: patches float [N, 3, S, S] (the UNet's output), index int64 [1], colors int64 [3] (to BGR),
           region uint8 [h, w, 3] (the template's box region), box int64 [4] (x1, y1, x2, y2 in the region),
           pads int64 [8] (the crop border), alpha float [1, 1, S, S] (feather or ones), hard float [1]
           -> y uint8 [h, w], u and v uint8 [h/2, w/2]: patch `index` rounded to uint8, padded by its edge,
           resized (cubic) into the box, blended, and the region converted to I420 as encoding/yuv.py does
           (compositing/blend.py's numbers, within a level); and nonfinite int64 [1], the patch's count of
           NaN and infinite values (a model that breaks at run time must not pass unseen).
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from lipsync_cli.models.graphs.builder import Graph

# OpenCV's fixed-point BT.601 coefficients: luma of COLOR_BGR2YUV_I420, and COLOR_BGR2YCrCb's
_Y_LIMITED = (269484 / 2**20, 528482 / 2**20, 102760 / 2**20)  # R, G, B
_Y_FULL = (4899 / 2**14, 9617 / 2**14, 1868 / 2**14)
_CR, _CB = 11682 / 2**14, 9241 / 2**14
_CHROMA_SCALE = 224 / 255


def prepare_graph() -> Graph:
    g = Graph("lipsync_prepare")
    crops = g.input("crops", ["N", "H", "W", 3], TensorProto.UINT8)
    planes = g.input("planes", [6], TensorProto.INT64)
    mask = g.input("mask", [1, 1, "H", "W"])
    x = g.op("Mul", g.op("Cast", crops, to=TensorProto.FLOAT), g.const(np.float32(1 / 255), "scale"))
    x = g.op("Transpose", x, perm=[0, 3, 1, 2])
    both = g.op("Concat", x, g.op("Mul", x, mask), axis=1)
    g.output(g.op("Gather", both, planes, axis=1), "visual", ["N", 6, "H", "W"])
    return g


def _round_clip(g: Graph, x: str) -> str:
    return g.op("Clip", g.op("Round", x), g.const(np.float32(0)), g.const(np.float32(255)))


def _half_up(g: Graph, x: str) -> str:
    """OpenCV's fixed-point rounding (add a half, shift): halves go up."""
    return g.op("Floor", g.op("Add", x, g.const(np.float32(0.5))))


def _scalar(g: Graph, x: str, index: int) -> str:
    """Element `index` of an int64 vector, as a [1] vector."""
    return g.op("Gather", x, g.const(np.array([index], np.int64)), axis=0)


def composite_graph() -> Graph:
    g = Graph("lipsync_composite")
    patches = g.input("patches", ["N", 3, "S", "S"])
    index = g.input("index", [1], TensorProto.INT64)
    colors = g.input("colors", [3], TensorProto.INT64)
    region = g.input("region", ["h", "w", 3], TensorProto.UINT8)
    box = g.input("box", [4], TensorProto.INT64)
    pads = g.input("pads", [8], TensorProto.INT64)
    feather = g.input("alpha", [1, 1, "S", "S"])
    hard = g.input("hard", [1])

    patch = g.op("Gather", g.op("Gather", patches, index, axis=0), colors, axis=1)
    nonfinite = g.op("ReduceSum", g.op("Cast", g.op("Or", g.op("IsNaN", patch), g.op("IsInf", patch)),
                                       to=TensorProto.INT64), keepdims=1)
    nonfinite = g.op("Reshape", nonfinite, g.const(np.array([1], np.int64)))
    patch = _round_clip(g, g.op("Mul", patch, g.const(np.float32(255))))
    padded = g.op("Pad", patch, pads, mode="edge")
    x1, y1, x2, y2 = (_scalar(g, box, i) for i in range(4))
    h, w = g.op("Sub", y2, y1), g.op("Sub", x2, x1)
    one, three = g.const(np.array([1], np.int64)), g.const(np.array([3], np.int64))
    resize = {"coordinate_transformation_mode": "half_pixel"}
    placed = g.op("Resize", padded, "", "", g.op("Concat", one, three, h, w, axis=0), mode="cubic",
                  cubic_coeff_a=-0.75, exclude_outside=0, **resize)
    placed = _round_clip(g, placed)
    alpha = g.op("Resize", g.op("Pad", feather, pads, mode="constant"), "", "",
                 g.op("Concat", one, one, h, w, axis=0), mode="linear", **resize)
    cut = g.op("Cast", g.op("Greater", alpha, g.const(np.float32(0.5))), to=TensorProto.FLOAT)
    alpha = g.op("Add", g.op("Mul", hard, cut), g.op("Mul", g.op("Sub", g.const(np.float32(1)), hard), alpha))

    image = g.op("Unsqueeze", g.op("Transpose", g.op("Cast", region, to=TensorProto.FLOAT), perm=[2, 0, 1]),
                 g.const(np.array([0], np.int64)))  # [1, 3, rh, rw]
    roi = g.op("Slice", image, g.op("Concat", y1, x1, axis=0), g.op("Concat", y2, x2, axis=0),
               g.const(np.array([2, 3], np.int64)))
    change = g.op("Mul", g.op("Sub", placed, roi), alpha)
    blended = g.op("Round", g.op("Add", roi, change))
    shape = g.op("Shape", image)
    rh, rw = _scalar(g, shape, 2), _scalar(g, shape, 3)
    zero = g.const(np.array([0, 0], np.int64))
    region_pads = g.op("Concat", zero, y1, x1, zero, g.op("Sub", rh, y2), g.op("Sub", rw, x2), axis=0)
    image = g.op("Add", image, g.op("Pad", g.op("Sub", blended, roi), region_pads, mode="constant"))

    def channel(x: str, c: int) -> str:
        return g.op("Slice", x, g.const(np.array([c], np.int64)), g.const(np.array([c + 1], np.int64)),
                    g.const(np.array([1], np.int64)))

    b, gr, r = (channel(image, c) for c in range(3))

    def weighted(weights: tuple[float, float, float], r: str, gr: str, b: str) -> str:
        parts = [g.op("Mul", v, g.const(np.float32(k))) for v, k in zip((r, gr, b), weights, strict=True)]
        return g.op("Add", g.op("Add", parts[0], parts[1]), parts[2])

    def as_plane(x: str) -> str:
        return g.op("Cast", g.op("Squeeze", x, g.const(np.array([0, 1], np.int64))), to=TensorProto.UINT8)

    y = _half_up(g, g.op("Add", weighted(_Y_LIMITED, r, gr, b), g.const(np.float32(16))))
    small = _half_up(g, g.op("AveragePool", image, kernel_shape=[2, 2], strides=[2, 2]))  # INTER_AREA, uint8
    sb, sg, sr = (channel(small, c) for c in range(3))
    luma = _half_up(g, weighted(_Y_FULL, sr, sg, sb))
    beta = g.const(np.float32(128 * (1 - _CHROMA_SCALE)))
    low, high = g.const(np.float32(0)), g.const(np.float32(255))

    def chroma(x: str, k: float) -> str:
        shifted = g.op("Add", g.op("Mul", g.op("Sub", x, luma), g.const(np.float32(k))), g.const(np.float32(128)))
        full = g.op("Clip", _half_up(g, shifted), low, high)
        return _round_clip(g, g.op("Add", g.op("Mul", full, g.const(np.float32(_CHROMA_SCALE))), beta))

    g.output(as_plane(y), "y", ["h", "w"], TensorProto.UINT8)
    g.output(as_plane(chroma(sb, _CB)), "u", ["h2", "w2"], TensorProto.UINT8)
    g.output(as_plane(chroma(sr, _CR)), "v", ["h2", "w2"], TensorProto.UINT8)
    g.output(nonfinite, "nonfinite", [1], TensorProto.INT64)
    return g


GRAPHS = {"prepare.onnx": (prepare_graph, "lipsync pre-processing: crops to the UNet's input"),
          "composite.onnx": (composite_graph, "lipsync post-processing: patch into the region, I420")}
