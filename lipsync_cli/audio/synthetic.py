"""Deterministic test signals at 16 kHz: speech-like phrases and loudness bursts."""

from __future__ import annotations

import numpy as np

RATE = 16_000


def speech_like(seconds: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Voiced 'syllables' (a gliding harmonic series under a syllabic envelope) with pauses, float32."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 16))
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t), 0, None) ** 0.7
    phrases = (np.sin(2 * np.pi * 0.4 * t) > -0.3).astype(float)
    noise = rng.standard_normal(n) * 0.01
    return (0.25 * voice * syllables * phrases + noise).astype(np.float32)


def bursts(seconds: float, spans: list[tuple[float, float]], freq: float = 150.0, rate: int = RATE,
           seed: int = 0) -> np.ndarray:
    """Digital silence with loud broadband bursts (a rich harmonic buzz plus noise, like a held vowel)
    during the given (start, end) spans in seconds."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    buzz = sum(np.sin(2 * np.pi * freq * k * t) for k in range(1, int(3800 / freq))) / 8
    tone = 0.3 * buzz + 0.1 * np.random.default_rng(seed).standard_normal(n)
    out = np.zeros(n, np.float32)
    for start, end in spans:
        a, b = int(round(start * rate)), int(round(end * rate))
        out[a:b] = tone[a:b]
    return out
