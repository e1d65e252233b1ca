"""examples/pipecat_agent.py cannot rot: its pipeline is built with stand-in speech-to-text, language model and
voice services (no network, no keys), and the face sits between the voice and the output transport, whose video
settings are the character's."""

from __future__ import annotations

import importlib.util

import pytest

from .conftest import REPO

pytestmark = pytest.mark.pipecat
pytest.importorskip("pipecat", reason="the Pipecat extra is not installed: pip install 'lipsync-cli[pipecat]'")


def test_the_examples_pipeline_builds_with_stand_in_services(runtime, alice):
    from pipecat.processors.frame_processor import FrameProcessor
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

    from lipsync_cli.integrations.pipecat import LipsyncVideoService, video_out_params

    spec = importlib.util.spec_from_file_location("pipecat_agent_example", REPO / "examples" / "pipecat_agent.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    try:
        stand_ins = [FrameProcessor(name=name) for name in ("stt", "llm", "tts")]
        params = TransportParams(audio_in_enabled=True, audio_out_enabled=True, **video_out_params("alice", runtime))
        transport = SmallWebRTCTransport(SmallWebRTCConnection(), params)
        face = LipsyncVideoService("alice", runtime=runtime, device="cpu")
        built = example.pipeline(transport, *stand_ins, face)
        chain = built.processors[1:-1]  # between the pipeline's own source and sink
        names = [p.name for p in chain]
        assert chain[0] is transport.input() and chain[-2] is transport.output()
        assert names.index("stt") < names.index("llm") < names.index("tts")
        at = chain.index(face)  # the face: right after the voice, right before the output transport
        assert chain[at - 1].name == "tts" and chain[at + 1] is transport.output()
        assert transport.output()._params.video_out_width == alice.video.width  # the character's size
        assert example.CHARACTER == "alice" and callable(example.bot) and callable(example.services)
    finally:
        example.RUNTIME.close()
