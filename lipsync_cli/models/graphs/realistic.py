"""Full-size model pairs with seeded random weights, for timing what real models cost.

- The Wav2Lip audio encoder: [N, 1, 80, 16] -> [N, 512], 2,812,672 parameters (13 conv + batch-norm +
  ReLU blocks, 1 -> 32 -> 64 -> 128 -> 256 -> 512, residual blocks adding their input before the ReLU).
- The SyncTalk_2D 328 UNet with its "ave" audio branch: visual [N, 6, 320, 320] + audio [N, 32, 16, 16]
  -> [N, 3, 320, 320], 12,186,935 parameters (MobileNetV2 inverted-residual blocks, 5 down / 5 up
  stages, bilinear up-sampling with aligned corners, sigmoid output).

Parameters are counted as PyTorch counts them: conv weights and biases and batch-norm scale and shift
(running statistics are buffers). Outputs are meaningless; the arithmetic is that of the real models.
"""

from __future__ import annotations

import numpy as np

from lipsync_cli.models.graphs.builder import Graph

WAV2LIP_ENCODER_PARAMETERS = 2_812_672
SYNCTALK_UNET_PARAMETERS = 12_186_935


class _Layers:
    def __init__(self, g: Graph, seed: int) -> None:
        self.g, self.rng = g, np.random.default_rng(seed)

    def conv(self, x: str, cin: int, cout: int, k: int, stride=(1, 1), pad: int = 0, groups: int = 1,
             bias: bool = True) -> str:
        fan_in = cin // groups * k * k
        w = (self.rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        inputs = [x, self.g.const(w, "w", parameter=True)]
        if bias:
            inputs.append(self.g.const(np.zeros(cout, np.float32), "b", parameter=True))
        strides = list(stride) if isinstance(stride, tuple) else [stride, stride]
        return self.g.op("Conv", *inputs, kernel_shape=[k, k], strides=strides, pads=[pad] * 4, group=groups)

    def bn(self, x: str, c: int) -> str:
        g = self.g
        scale = g.const((1.0 + 0.05 * self.rng.standard_normal(c)).astype(np.float32), "gamma", parameter=True)
        shift = g.const((0.05 * self.rng.standard_normal(c)).astype(np.float32), "beta", parameter=True)
        return g.op("BatchNormalization", x, scale, shift, g.const(np.zeros(c, np.float32), "mean"),
                    g.const(np.ones(c, np.float32), "var"), epsilon=1e-5)

    def relu(self, x: str) -> str:
        return self.g.op("Relu", x)

    # Wav2Lip's conv block: conv + BN (+ input) -> ReLU
    def wav2lip_block(self, x: str, cin: int, cout: int, k: int, stride=(1, 1), pad: int = 1,
                      residual: bool = False) -> str:
        y = self.bn(self.conv(x, cin, cout, k, stride, pad), cout)
        return self.relu(self.g.op("Add", y, x) if residual else y)

    # MobileNetV2 inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, each with BN
    def inverted_residual(self, x: str, cin: int, cout: int, stride: int, residual: bool, expand: int = 2) -> str:
        hidden = cin * expand
        y = self.relu(self.bn(self.conv(x, cin, hidden, 1, bias=False), hidden))
        y = self.relu(self.bn(self.conv(y, hidden, hidden, 3, (stride, stride), 1, groups=hidden, bias=False), hidden))
        y = self.bn(self.conv(y, hidden, cout, 1, bias=False), cout)
        return self.g.op("Add", x, y) if residual else y

    def double_dw(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.inverted_residual(x, cin, cout, stride, residual=False)
        return self.inverted_residual(y, cout, cout, 1, residual=True)

    def up(self, x: str, skip: str, cin: int, cout: int) -> str:
        g = self.g
        scales = g.const(np.array([1, 1, 2, 2], np.float32))
        y = g.op("Resize", x, g.const(np.zeros(0, np.float32)), scales, mode="linear",
                 coordinate_transformation_mode="align_corners")
        return self.double_dw(g.op("Concat", y, skip, axis=1), cin, cout, 1)


def wav2lip_audio_encoder(seed: int = 7) -> Graph:
    g = Graph("wav2lip_audio_encoder")
    L = _Layers(g, seed)
    x = g.input("mel", ["N", 1, 80, 16])
    plan = [  # cin, cout, kernel, stride, pad, residual
        (1, 32, 3, (1, 1), 1, False), (32, 32, 3, (1, 1), 1, True), (32, 32, 3, (1, 1), 1, True),
        (32, 64, 3, (3, 1), 1, False), (64, 64, 3, (1, 1), 1, True), (64, 64, 3, (1, 1), 1, True),
        (64, 128, 3, (3, 3), 1, False), (128, 128, 3, (1, 1), 1, True), (128, 128, 3, (1, 1), 1, True),
        (128, 256, 3, (3, 2), 1, False), (256, 256, 3, (1, 1), 1, True),
        (256, 512, 3, (1, 1), 0, False), (512, 512, 1, (1, 1), 0, False),
    ]
    for cin, cout, k, stride, pad, residual in plan:
        x = L.wav2lip_block(x, cin, cout, k, stride, pad, residual)
    g.output(g.op("Reshape", x, g.const(np.array([-1, 512], np.int64))), "audio_features", ["N", 512])
    return g


def synctalk_unet(seed: int = 11) -> Graph:
    g = Graph("synctalk_2d_328_unet")
    L = _Layers(g, seed)
    ch = [32, 64, 128, 256, 512]
    visual = g.input("visual", ["N", 6, 320, 320])
    audio = g.input("audio", ["N", 32, 16, 16])
    # audio branch ("ave"): [N, 32, 16, 16] -> [N, 512, 10, 10]
    a = L.inverted_residual(audio, ch[0], ch[1], 1, residual=False)
    a = L.inverted_residual(a, ch[1], ch[2], 1, residual=False)
    a = L.relu(L.bn(L.conv(a, ch[2], ch[3], 3, (1, 1), 1), ch[3]))
    a = L.inverted_residual(a, ch[3], ch[3], 1, residual=True)
    a = L.relu(L.bn(L.conv(a, ch[3], ch[4], 3, (2, 2), 3), ch[4]))
    a = L.inverted_residual(a, ch[4], ch[4], 1, residual=True)
    a = L.inverted_residual(a, ch[4], ch[4], 1, residual=True)
    # encoder: 320 -> 160 -> 80 -> 40 -> 20 -> 10
    x1 = L.inverted_residual(visual, 6, ch[0], 1, residual=False)
    x2 = L.double_dw(x1, ch[0], ch[0], 2)
    x3 = L.double_dw(x2, ch[0], ch[1], 2)
    x4 = L.double_dw(x3, ch[1], ch[2], 2)
    x5 = L.double_dw(x4, ch[2], ch[3], 2)
    x6 = L.double_dw(x5, ch[3], ch[4], 2)
    x6 = L.double_dw(g.op("Concat", x6, a, axis=1), ch[4] * 2, ch[4], 1)
    x6 = L.double_dw(x6, ch[4], ch[3], 1)
    # decoder
    x = L.up(x6, x5, ch[4], ch[3] // 2)
    x = L.up(x, x4, ch[3], ch[2] // 2)
    x = L.up(x, x3, ch[2], ch[1] // 2)
    x = L.up(x, x2, ch[1], ch[0])
    x = L.up(x, x1, ch[1], ch[0] // 2)
    out = g.op("Sigmoid", L.conv(x, ch[0] // 2, 3, 1))
    g.output(out, "mouth", ["N", 3, 320, 320])
    return g
