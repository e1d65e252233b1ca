"""IO binding, exercised on the CPU provider (onnxruntime binds CPU buffers the way it binds GPU ones): the
same outputs as plain session.run, one batch shape, buffers allocated once, and whole renders unchanged."""

import numpy as np
import onnxruntime as ort
import pytest

from lipsync_cli.audio.loading import probe_audio
from lipsync_cli.audio.synthetic import speech_like
from lipsync_cli.characters.manifest import load_character
from lipsync_cli.errors import InferenceError
from lipsync_cli.models.devices import CPU
from lipsync_cli.models.inference import AudioEncoder, MouthModel
from lipsync_cli.render.pipeline import PipelineOptions, render_frames
from lipsync_cli.runtime import Runtime, RuntimeConfig

from .models import character_with, float16, load, nan_output


def session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def unet_inputs(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 6, 320, 320), dtype=np.float32), rng.random((n, 512), dtype=np.float32)


def test_bound_unet_equals_plain_run_and_keeps_one_set_of_buffers(alice):
    plain = MouthModel(session(alice.model), alice.unet_contract)
    bound = MouthModel(session(alice.model), alice.unet_contract, bind_on=CPU)
    results = []
    for n, seed in ((4, 0), (4, 1), (3, 2), (9, 3)):  # a short batch is padded; a long one split
        visual, audio = unet_inputs(n, seed)
        expected = plain.generate(visual, audio)
        got = bound.generate(visual, audio)
        assert got.shape == (n, 3, 320, 320) and np.array_equal(got, expected)
        results.append(got)
        if n == 4 and seed == 0:
            first_buffers = bound._bindings
    assert bound._bindings is first_buffers and bound.fixed_batch == 4  # allocated once, one batch shape
    assert not np.array_equal(results[0], results[1])  # outputs are copies, not views of the bound buffer


def test_bound_encoder_equals_plain_run(alice):
    windows = np.random.default_rng(4).standard_normal((5, 80, 16)).astype(np.float32)
    plain = AudioEncoder(session(alice.audio_encoder), alice.encoder_contract).encode(windows)
    encoder = AudioEncoder(session(alice.audio_encoder), alice.encoder_contract, bind_on=CPU)
    assert np.array_equal(encoder.encode(windows[:2]), plain[:2])
    assert np.array_equal(encoder.encode(windows), plain)


def test_bound_float16_model_is_fed_and_read_in_its_own_type(tmp_path):
    character = load_character(character_with(tmp_path, "half", unet=float16(load("unet"))))
    visual, audio = unet_inputs(2)
    plain = MouthModel(session(character.model), character.unet_contract).generate(visual, audio)
    bound = MouthModel(session(character.model), character.unet_contract, bind_on=CPU).generate(visual, audio)
    assert bound.dtype == np.float32 and np.array_equal(bound, plain)


def test_bound_model_output_is_still_checked(tmp_path):
    character = load_character(character_with(tmp_path, "nan", unet=nan_output(load("unet"))))
    model = MouthModel(session(character.model), character.unet_contract, bind_on=CPU)
    with pytest.raises(InferenceError, match="produced NaN at frame 0"):
        model.generate(*unet_inputs(3))


def frames_with(binding, alice, audio):
    with Runtime(RuntimeConfig(devices="cpu", io_binding=binding)) as runtime:
        assert (runtime.bind_on(CPU) is not None) == binding
        frames = render_frames(alice, probe_audio(audio), PipelineOptions(device=CPU, batch_size=4), runtime)
        try:
            return [f.copy() for f in frames]
        finally:
            frames.close()


def test_renders_with_and_without_binding_are_identical(alice, write_audio):
    audio = write_audio(speech_like(0.7), 16000)  # 18 frames: batches of 4 and a short last one
    plain, bound = frames_with(False, alice, audio), frames_with(True, alice, audio)
    assert len(plain) == len(bound) == 18
    assert all(np.array_equal(a, b) for a, b in zip(plain, bound, strict=True))


def test_binding_is_on_by_default_only_on_a_gpu():
    from lipsync_cli.models.devices import Device

    with Runtime(RuntimeConfig(devices="cpu")) as runtime:
        assert runtime.bind_on(CPU) is None
        assert runtime.bind_on(Device("cuda", 1)) == Device("cuda", 1)


def test_renders_in_flight_share_the_sessions_with_binding_and_graphs(alice, write_audio):
    from concurrent.futures import ThreadPoolExecutor

    audios = [write_audio(speech_like(0.5 + 0.1 * i, seed=i), 16000, name=f"a{i}.wav") for i in range(3)]
    config = RuntimeConfig(devices="cpu", io_binding=True, device_processing=True)

    def frames(runtime, audio):
        generated = render_frames(alice, probe_audio(audio), PipelineOptions(device=CPU, batch_size=4,
                                                                             blend="feather"), runtime)
        try:
            return [f.copy() for f in generated]
        finally:
            generated.close()

    with Runtime(config) as runtime:
        alone = [frames(runtime, audio) for audio in audios]
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(lambda audio: frames(runtime, audio), audios))
        loads = {s.name: s.loads for s in runtime.registry.stats()}
    assert [len(f) for f in together] == [len(f) for f in alone] == [13, 15, 18]
    for a, b in zip(alone, together, strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert loads == {"alice": 1}  # the pair was loaded once and shared (the graphs live outside the budget)


def test_the_graphs_do_not_count_against_the_model_budget(alice, write_audio):
    audio = write_audio(speech_like(0.3), 16000)
    with Runtime(RuntimeConfig(devices="cpu", device_processing=True, max_models=1)) as runtime:
        generated = render_frames(alice, probe_audio(audio), PipelineOptions(device=CPU, blend="feather"), runtime)
        try:
            assert sum(1 for _ in generated) == 8
        finally:
            generated.close()
        assert runtime.processing_sessions(CPU) is runtime.processing_sessions(CPU)
