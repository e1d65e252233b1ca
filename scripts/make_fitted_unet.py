"""Fit a small UNet to reproduce alice's outputs, and export it to tests/data/fitted_unet.onnx.

The quality gate of `lipsync characters optimize` (docs/cpu.md) must be tested on a model whose activations
look trained: random weights give outputs that barely vary, and alice's procedural graphs are not networks.
This script trains a small convolutional UNet (about 130 thousand parameters, alice's contract: visual
[N, 6, 320, 320] and audio [N, 512] in, mouth [N, 3, 320, 320] out) for a few minutes on the CPU to copy
what alice's procedural UNet draws, from alice's own template crops and speech features, and writes the
ONNX file that the tests use. CI does not run it (the file is committed); it needs torch:

    pip install torch  # the CPU wheel
    python scripts/make_fitted_unet.py [--minutes 6] [--out tests/data/fitted_unet.onnx]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.compositing.blend import to_uint8
from lipsync_cli.frames.crops import fill_visual_input
from lipsync_cli.models.devices import CPU
from lipsync_cli.render.pipeline import audio_features
from lipsync_cli.render.renderer import FrameRenderer
from lipsync_cli.runtime import Runtime, RuntimeConfig

REPO = Path(__file__).resolve().parents[1]


class SmallUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        act = nn.ReLU
        self.enc1 = nn.Sequential(nn.Conv2d(6, 16, 3, 2, 1), act())
        self.enc2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1), act())
        self.enc3 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1), act())
        self.audio = nn.Sequential(nn.Linear(512, 64), act())
        self.mid = nn.Sequential(nn.Conv2d(64, 64, 3, 1, 1), act())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec3 = nn.Sequential(nn.Conv2d(96, 32, 3, 1, 1), act())
        self.dec2 = nn.Sequential(nn.Conv2d(48, 16, 3, 1, 1), act())
        self.dec1 = nn.Sequential(nn.Conv2d(19, 16, 3, 1, 1), act(), nn.Conv2d(16, 3, 1), nn.Sigmoid())

    def forward(self, visual: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(visual)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        m = self.mid(e3 + self.audio(audio)[:, :, None, None])
        d3 = self.dec3(torch.cat([self.up(m), e2], 1))
        d2 = self.dec2(torch.cat([self.up(d3), e1], 1))
        return self.dec1(torch.cat([self.up(d2), visual[:, :3]], 1))


def dataset(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, object]:
    """(uint8 crops [n, 320, 320, 3], features [n, 512], uint8 targets [n, 320, 320, 3], input spec): alice's
    template crops paired at random with frames of speech, and what alice's UNet makes of each pair."""
    rng = np.random.default_rng(seed)
    speech = [REPO / "samples" / name for name in ("hello.wav", "pauses.wav", "stereo_44k.flac")]
    synthetic = Path("/tmp/lipsync-fit-speech.wav")
    import soundfile as sf

    sf.write(synthetic, speech_like(30.0, seed=11), 16000)
    with Runtime(RuntimeConfig(devices="cpu")) as runtime, \
            FrameRenderer(runtime, runtime.character(REPO / "characters" / "alice"), CPU, 16, "feather") as r:
        windows = []
        for path in [*speech, synthetic]:
            for batch in audio_features(r.character, probe_audio(path), r.encode, 16):
                windows.extend(np.array(batch.features, np.float32))
        picks = rng.integers(0, len(windows), frames)
        templates = rng.integers(0, r.character.video.frames, frames)
        inner = r.character.crop.inner
        crops = np.empty((frames, inner, inner, 3), np.uint8)
        targets = np.empty_like(crops)
        visual = np.empty((16, 6, inner, inner), np.float32)
        for a in range(0, frames, 16):
            n = min(16, frames - a)
            for j in range(n):
                crops[a + j] = r.template.frame(int(templates[a + j])).crop
                fill_visual_input(visual[j], crops[a + j], r.character.input)
            out = r.unet.generate(visual[:n], np.stack([windows[int(i)] for i in picks[a : a + n]]))
            targets[a : a + n] = [to_uint8(p, r.character.input.color) for p in out]
        features = np.stack([windows[int(i)] for i in picks]).astype(np.float32)
        return crops, features, targets, r.character.input


def to_visual(crops: torch.Tensor, mask: tuple[int, int, int, int]) -> torch.Tensor:
    """uint8 [n, h, w, 3] BGR -> [n, 6, h, w]: reference, then masked (alice's channel order and colours)."""
    reference = crops.permute(0, 3, 1, 2).float() / 255
    masked = reference.clone()
    x, y, w, h = mask
    masked[:, :, y : y + h, x : x + w] = 0
    return torch.cat([reference, masked], 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=6.0)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "fitted_unet.onnx")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(2)
    crops, features, targets, spec = dataset(args.frames)
    assert spec.channels == ("reference", "masked") and spec.color == "bgr"
    crops_t, features_t = torch.from_numpy(crops), torch.from_numpy(features)
    targets_t = torch.from_numpy(targets).permute(0, 3, 1, 2).float() / 255
    model = SmallUNet()
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(crops)} frames")
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    ends, step = time.monotonic() + 60 * args.minutes, 0
    while time.monotonic() < ends:
        index = torch.randint(0, len(crops), (8,))
        out = model(to_visual(crops_t[index], spec.mask), features_t[index])
        loss = nn.functional.l1_loss(out, targets_t[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        step += 1
        if step % 100 == 0:
            print(f"step {step}: L1 {loss.item() * 255:.2f} levels", flush=True)
    model.eval()
    example = (to_visual(crops_t[:2], spec.mask), features_t[:2])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, example, str(args.out), input_names=["visual", "audio"], output_names=["mouth"],
                      dynamic_axes={"visual": {0: "N"}, "audio": {0: "N"}, "mouth": {0: "N"}}, opset_version=17,
                      dynamo=False)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB) after {step} steps")


if __name__ == "__main__":
    main()
