"""The echo brain of `lipsync agent`: what it keeps of a turn, at a cost per chunk that does not grow with it."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.pipecat
pytest.importorskip("pipecat", reason="the Pipecat extra is not installed: pip install 'lipsync-cli[pipecat]'")

from pipecat.frames.frames import InputAudioRawFrame  # noqa: E402

from lipsync_cli.integrations.pipecat.echo import EchoBrain, EchoOptions  # noqa: E402


class Counted(InputAudioRawFrame):
    """A chunk of the user's audio that counts how often anyone asks its rate (each look at its length does)."""

    looks = 0

    def __getattribute__(self, name):
        if name == "sample_rate":
            Counted.looks += 1
        return super().__getattribute__(name)


def test_a_long_turn_keeps_its_newest_seconds_at_a_constant_cost_per_chunk():
    brain = EchoBrain(EchoOptions(preroll=0.41, longest=30.01))  # clear of float sums at the edges
    rate, n = 16000, 2500  # 50 s of 20 ms chunks: 30 s are kept
    chunks = [Counted(audio=np.full(320, i % 30000, "<i2").tobytes(), sample_rate=rate, num_channels=1)
              for i in range(n)]
    for chunk in chunks[:40]:  # before the VAD's start: the pre-roll
        brain._hear(chunk)
    assert brain._turn is None and [f for f, _ in brain._before.frames] == chunks[20:40]
    brain._turn = type(brain._before)(brain._before)  # what VADUserStartedSpeakingFrame does
    Counted.looks = 0
    for chunk in chunks[40:]:
        brain._hear(chunk)
    assert [f for f, _ in brain._turn.frames] == chunks[n - 1500 :]  # the newest 30 s
    assert brain._turn.seconds == pytest.approx(30.0)
    assert Counted.looks <= 3 * (n - 40)  # a look or two per chunk, never the whole turn again
