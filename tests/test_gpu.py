"""On a GPU (skipped without one): the CUDA path with IO binding and the device graphs gives the CPU path's
frames within a level, for every blend, and several renders share one GPU's sessions."""

import numpy as np
import pytest

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.models.devices import CPU, Device
from lipsync_cli.models.sessions import cuda_unavailable_reason
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(cuda_unavailable_reason() is not None, reason="no usable CUDA GPU here")]

GPU = Device("cuda", 0)


def frames_on(device, character, audio, blend):
    with Runtime(RuntimeConfig(devices=str(device))) as runtime:
        frames = render_frames(character, probe_audio(audio), PipelineOptions(device=device, batch_size=8,
                                                                              blend=blend), runtime)
        try:
            return [f.copy() for f in frames], runtime.bind_on(device), runtime.processes_on(device)
        finally:
            frames.close()


@pytest.mark.parametrize("blend", ["feather", "hard", "match"])
def test_gpu_frames_equal_the_cpu_path_within_a_level(alice, write_audio, blend):
    audio = write_audio(speech_like(1.0), 16000)
    cpu, _, _ = frames_on(CPU, alice, audio, blend)
    gpu, bound, graphs = frames_on(GPU, alice, audio, blend)
    assert bound == GPU and graphs  # the defaults on a GPU
    assert len(cpu) == len(gpu) == 25
    for a, b in zip(cpu, gpu, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_a_lease_that_only_tests_the_gpu_counts_no_request(alice):
    from lipsync_cli.models.devices import DeviceRequest
    from lipsync_cli.render.planning import resolve_device

    with Runtime(RuntimeConfig(devices="cuda:0")) as runtime:
        for request in (DeviceRequest("cuda", 0), DeviceRequest("auto")):
            assert resolve_device(runtime, alice, request)[0] == GPU
        stats = runtime.registry.stats()
        assert stats and all(s.loads == 1 and s.requests == 0 for s in stats), stats
