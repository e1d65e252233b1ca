"""alice's procedural models: no trained weights, exactly the contracts of real ones.

The audio encoder [N, 1, 80, 16] -> [N, 512] puts the window's loudness in feature 0: the mean normalised
mel over the speech band (bins 5-60, about 270-3600 Hz), averaged over the window's frames with
triangular weights (frames 0-12, peak at 6.5: a burst entering or leaving the window changes it over 2-3
video frames, as a speaking mouth moves), mapped from [-4, 4] to [0, 1]; features 1-511 are a fixed random
projection of the window pooled to 20 x 4 (deterministic).

The UNet (visual [N, 6, 320, 320], audio [N, 512]) -> [N, 3, 320, 320] returns the reference crop with a
drawn mouth: lips, a dark opening and teeth, whose opening follows feature 0 and is shut in silence.
Edges are sigmoids of an elliptic distance, so there is no blockiness. The mouth is drawn in a
WINDOW-sized square around it and added back as a padded difference, so outside that square the output
is exactly the reference and the graph costs little.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipsync_cli.models.graphs.builder import Graph

SPEECH_BINS = (5, 61)
FRAME_WEIGHTS = np.maximum(0.0, 1 - np.abs(np.arange(16) - 6.5) / 6.5)  # over the window's 16 mel frames
FRAME_WEIGHTS = (FRAME_WEIGHTS / FRAME_WEIGHTS.sum()).astype(np.float32)
EDGE_SHARPNESS = 2.0  # sigmoid slope per pixel of the lips' and opening's edges: as crisp as the artwork
OPEN_THRESHOLD, OPEN_GAIN = 0.12, 2.2  # opening = clip((loudness - threshold) * gain, 0, 1)


@dataclass(frozen=True)
class MouthGeometry:
    """The mouth in the UNet's 320 x 320 patch (pixel centres at integers; centre between rows)."""

    cx: float = 160.0
    cy: float = 150.5
    lip_half_width: float = 46.0
    lip_half_height: float = 12.0  # closed
    open_height: float = 34.0  # added to the lips' and the opening's half-height when fully open
    gap_half_height: float = 1.4  # the dark line between closed lips


WINDOW = (96, 83, 128)  # x0, y0, side: the square of the patch where the mouth can be drawn

# BGR colours in [0, 1]
LIP = (0.36, 0.30, 0.74)
DARK = (0.10, 0.06, 0.24)
TEETH = (0.93, 0.95, 0.96)


def audio_encoder(seed: int = 1234) -> Graph:
    g = Graph("alice_audio_encoder")
    mel = g.input("mel", ["N", 1, 80, 16])
    band = g.op("Slice", mel, g.const(np.array([SPEECH_BINS[0]], np.int64)),
                g.const(np.array([SPEECH_BINS[1]], np.int64)), g.const(np.array([2], np.int64)))  # [N, 1, 56, 16]
    # one weighted sum over bins and frames, as the mean over both was: the same for every batch size
    weights = np.tile(FRAME_WEIGHTS / (SPEECH_BINS[1] - SPEECH_BINS[0]), (SPEECH_BINS[1] - SPEECH_BINS[0], 1))
    weights *= 1 + 2**-18  # summing to a hair over 1, so that silence (-4 everywhere) clips to exactly 0
    mean = g.op("ReduceSum", g.op("Mul", band, g.const(weights.astype(np.float32).reshape(1, 1, -1, 16))),
                g.const(np.array([2, 3], np.int64)), keepdims=0)  # [N, 1]
    loudness = g.op("Clip", g.op("Div", g.op("Add", mean, g.const(np.float32(4.0))), g.const(np.float32(8.0))),
                    g.const(np.float32(0.0)), g.const(np.float32(1.0)))
    rng = np.random.default_rng(seed)
    blocks = g.op("Reshape", mel, g.const(np.array([-1, 20, 4, 4, 4], np.int64)))  # bins 20x4, frames 4x4
    flat = g.op("Reshape", g.op("ReduceMean", blocks, axes=[2, 4], keepdims=0), g.const(np.array([-1, 80], np.int64)))
    weights = (rng.standard_normal((80, 511)) / np.sqrt(80 * 16)).astype(np.float32)
    rest = g.op("Tanh", g.op("Add", g.op("MatMul", flat, g.const(weights, parameter=True)),
                             g.const(rng.standard_normal(511).astype(np.float32) * 0.1, parameter=True)))
    g.output(g.op("Concat", loudness, rest, axis=1), "audio_features", ["N", 512])
    return g


def _grid(geometry: MouthGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Offsets of the window's pixels from the mouth centre, as a row [1, 1, 1, side] and a column
    [1, 1, side, 1] (broadcast)."""
    x0, y0, side = WINDOW
    axis = np.arange(side, dtype=np.float32)
    return (axis + x0 - geometry.cx).reshape(1, 1, 1, side), (axis + y0 - geometry.cy).reshape(1, 1, side, 1)


def unet(size: int = 320, geometry: MouthGeometry = MouthGeometry()) -> Graph:
    g = Graph("alice_unet")
    visual = g.input("visual", ["N", 6, size, size])
    audio = g.input("audio", ["N", 512])
    f = lambda x: g.const(np.float32(x))  # noqa: E731
    x0, y0, side = WINDOW
    reference = g.op("Slice", visual, g.const(np.array([0], np.int64)), g.const(np.array([3], np.int64)),
                     g.const(np.array([1], np.int64)))
    window = g.op("Slice", reference, g.const(np.array([y0, x0], np.int64)),
                  g.const(np.array([y0 + side, x0 + side], np.int64)), g.const(np.array([2, 3], np.int64)))
    loud = g.op("Slice", audio, g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64)),
                g.const(np.array([1], np.int64)))
    loud = g.op("Reshape", loud, g.const(np.array([-1, 1, 1, 1], np.int64)))
    opening = g.op("Clip", g.op("Mul", g.op("Sub", loud, f(OPEN_THRESHOLD)), f(OPEN_GAIN)), f(0.0), f(1.0))
    dx_grid, dy_grid = _grid(geometry)
    dx2, dy2, dy = g.const(dx_grid * dx_grid, "dx2"), g.const(dy_grid * dy_grid, "dy2"), g.const(dy_grid, "dy")

    def ellipse_alpha(half_w: float, half_h: str, sharpness: float) -> str:
        """Sigmoid((1 - r) * sharpness), r the elliptic radius with a per-sample half-height [N,1,1,1]."""
        r2 = g.op("Add", g.op("Div", dx2, f(half_w * half_w)), g.op("Div", dy2, g.op("Mul", half_h, half_h)))
        r = g.op("Sqrt", r2)
        return g.op("Sigmoid", g.op("Mul", g.op("Sub", f(1.0), r), f(sharpness)))

    extra = g.op("Mul", opening, f(geometry.open_height))
    lips_h = g.op("Add", extra, f(geometry.lip_half_height))
    gap_h = g.op("Add", extra, f(geometry.gap_half_height))
    lips = ellipse_alpha(geometry.lip_half_width, lips_h, EDGE_SHARPNESS * geometry.lip_half_width)
    gap = ellipse_alpha(geometry.lip_half_width - 9.0, gap_h, EDGE_SHARPNESS * (geometry.lip_half_width - 9.0))
    # teeth: the upper part of the opening, above a line that falls with the opening
    teeth_line = g.op("Mul", gap_h, f(-0.35))
    teeth_band = g.op("Sigmoid", g.op("Mul", g.op("Sub", teeth_line, dy), f(1.2)))
    teeth = g.op("Mul", g.op("Mul", gap, teeth_band), g.op("Clip", g.op("Mul", opening, f(4.0)), f(0.0), f(1.0)))

    def paint(base: str, alpha: str, colour: tuple) -> str:
        c = g.const(np.array(colour, np.float32).reshape(1, 3, 1, 1))
        return g.op("Add", g.op("Mul", base, g.op("Sub", f(1.0), alpha)), g.op("Mul", c, alpha))

    painted = paint(paint(paint(window, lips, LIP), gap, DARK), teeth, TEETH)
    pads = np.array([0, 0, y0, x0, 0, 0, size - y0 - side, size - x0 - side], np.int64)
    change = g.op("Pad", g.op("Sub", painted, window), g.const(pads))
    g.output(g.op("Clip", g.op("Add", reference, change), f(0.0), f(1.0)), "mouth", ["N", 3, size, size])
    return g
