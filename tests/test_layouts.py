import numpy as np
import pytest

from lipsync_cli.features.layouts import SyncTalkGatherer, detect_layout, synctalk_gather


def test_detect_layout():
    assert detect_layout(("N", 512)) == "per_frame"
    assert detect_layout((1, 32, 16, 16)) == "synctalk"
    assert detect_layout(("N", 256)) is None


def features(n):
    return np.arange(1, n + 1, dtype=np.float32)[:, None] * np.ones((1, 512), np.float32)


def rows(gathered):
    return gathered.reshape(16, 512)[:, 0].tolist()


def test_gather_at_the_start_and_the_end():
    f = features(20)  # row value k+1 stands for f_k; 0 is a zero row
    # p = [f0, f0, f1, ..., f19, f19]; frame 0 takes p[-8 .. 7]: eight zero rows, then f0, f0, f1 .. f5
    assert rows(synctalk_gather(f, 0)) == [0] * 8 + [1, 1, 2, 3, 4, 5, 6, 7]
    assert rows(synctalk_gather(f, 10)) == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]
    # frame 19 takes p[11 .. 26]: p[11..20] = f10..f19, p[21] = f19 again, then five zero rows
    assert rows(synctalk_gather(f, 19)) == [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 20, 0, 0, 0, 0, 0]
    assert synctalk_gather(f, 0).shape == (32, 16, 16)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16, 41])
@pytest.mark.parametrize("step", [1, 3, 16, 64])
def test_streamed_gather_equals_the_pure_function(n, step):
    f = np.random.default_rng(n).standard_normal((n, 512)).astype(np.float32)
    gatherer = SyncTalkGatherer()
    out = np.concatenate([gatherer.push(f[a : a + step]) for a in range(0, n, step)] + [gatherer.finish()])
    assert np.array_equal(out, np.stack([synctalk_gather(f, i) for i in range(n)]))
