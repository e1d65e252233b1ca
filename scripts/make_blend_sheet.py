"""The README's picture of the three blends on a model whose colours drift: python scripts/make_blend_sheet.py
writes docs/blends.png (needs the onnx package: pip install '.[bench]')."""

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import onnx
import soundfile as sf
from onnx import helper, numpy_helper

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import bursts
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

REPO = Path(__file__).resolve().parents[1]
TINT, FRAME = 1.08, 20  # a brighter patch, as a drifting model gives; a frame with the mouth open


def tinted_alice(folder: Path) -> Path:
    import shutil

    shutil.copytree(REPO / "characters" / "alice", folder)
    model = onnx.load(str(folder / "model_best.onnx"))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [out + "_raw" if n == out else n for n in node.output]
    model.graph.node.append(helper.make_node("Mul", [out + "_raw", "tint"], [out]))
    model.graph.initializer.append(numpy_helper.from_array(np.array(TINT, np.float32), "tint"))
    (folder / "model_best.onnx").write_bytes(model.SerializeToString())
    return folder


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        character = load_character(tinted_alice(Path(tmp) / "tinted"))
        sf.write(Path(tmp) / "a.wav", bursts(1.2, [(0.4, 1.0)]), 16000)
        info = probe_audio(Path(tmp) / "a.wav")
        tiles = []
        with Runtime(RuntimeConfig(devices="cpu", cache=False)) as runtime:
            for blend in ("hard", "feather", "match"):
                frames = list(render_frames(character, info, PipelineOptions(blend=blend), runtime))
                bgr = cv2.cvtColor(frames[FRAME], cv2.COLOR_YUV2BGR_I420)
                x1, y1, x2, y2 = (int(v) for v in character.boxes[character.template_index(FRAME)])
                tile = bgr[y1 - 30 : y2 + 30, x1 - 30 : x2 + 30].copy()
                cv2.putText(tile, blend, (12, 32), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
                tiles.append(tile)
    cv2.imwrite(str(target), cv2.hconcat(tiles), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{target}: hard, feather and match on alice with her UNet's output times {TINT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "blends.png")
