"""The shared UNet's scheduler alone: what it does with frames withdrawn while it waits to fill a batch."""

import threading
import time

import numpy as np

from lipsync_cli.live.scheduler import BatchPolicy, UNetScheduler, Withdrawn


class Recorder:
    """Stands in for the renderer: the scheduler only hands it batches (the models are tested elsewhere)."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    def infer(self, frames, inputs, features, first):
        self.calls.append([int(x[0]) for x in inputs])
        return [f"patch {int(x[0])}" for x in inputs]


def test_frames_withdrawn_while_a_batch_fills_leave_no_empty_call():
    renderer = Recorder()
    scheduler = UNetScheduler(renderer, BatchPolicy(frames=4, wait=0.3))  # type: ignore[arg-type]
    outcomes: dict[int, object] = {}
    done = {i: threading.Event() for i in (1, 2)}

    def request(index: int, owner: int) -> None:
        def finished(outcome, queued, seconds):
            outcomes[index] = outcome
            done[index].set()

        scheduler.submit(None, np.full(1, index), np.zeros(1), index, time.monotonic(), finished,  # type: ignore
                         owner=owner)

    try:
        request(1, owner=7)
        time.sleep(0.05)  # the scheduler now waits for more frames to fill its batch
        assert scheduler.withdraw(7) == 1
        assert done[1].wait(5) and isinstance(outcomes[1], Withdrawn)
        time.sleep(0.4)  # past the batch's wait: nothing is left to compute
        request(2, owner=8)
        assert done[2].wait(5) and outcomes[2] == "patch 2"
    finally:
        scheduler.close()
    assert renderer.calls == [[2]]
    assert 0 not in scheduler.batches and scheduler.batches[1] == 1
