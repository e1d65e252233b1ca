"""Feature batches carry the index of their first frame, through the encoder, the layout and regrouping."""

import numpy as np
import pytest

from lipsync_cli.features.layouts import synctalk_gather
from lipsync_cli.features.stream import FeatureBatch, FeatureStream, rebatch


def encode(windows):
    return np.repeat(windows[:, :1, :1].reshape(-1, 1), 512, axis=1).astype(np.float32)


def windows(first, count):
    return np.arange(first, first + count, dtype=np.float32)[:, None, None] * np.ones((1, 80, 16), np.float32)


@pytest.mark.parametrize("layout", ["per_frame", "synctalk"])
def test_batches_are_numbered_and_equal_the_whole(layout):
    n, stream, out = 23, FeatureStream(encode, layout), []
    for a in range(0, n, 5):
        batch = stream.push(windows(a, min(5, n - a)))
        if batch is not None:
            out.append(batch)
    rest = stream.finish()
    out += [rest] if rest is not None else []
    assert [b.first for b in out] == list(np.cumsum([0] + [len(b) for b in out[:-1]]))
    joined = np.concatenate([b.features for b in out])
    features = encode(windows(0, n))
    whole = features if layout == "per_frame" else np.stack([synctalk_gather(features, i) for i in range(n)])
    assert np.array_equal(joined, whole)


def test_rebatch_keeps_the_first_frame_of_each_batch():
    parts = [FeatureBatch(0, np.arange(3)), FeatureBatch(3, np.arange(3, 4)), FeatureBatch(4, np.arange(4, 11))]
    out = list(rebatch(parts, 4))
    assert [(b.first, b.features.tolist()) for b in out] == [(0, [0, 1, 2, 3]), (4, [4, 5, 6, 7]), (8, [8, 9, 10])]
