"""The pipeline of one `lipsync agent` session: the browser's microphone over WebRTC (`SmallWebRTCTransport`),
Pipecat's Silero VAD, the echo brain, the character's face (`LipsyncVideoService`) and back to the browser; and
the reporter that tells the page, over the transport's messages, each reply's time to first frame and the
frames' latency parts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import Frame, MetricsFrame, OutputTransportMessageUrgentFrame
from pipecat.metrics.metrics import TTFBMetricsData
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.audio.vad_processor import VADProcessor
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from lipsync_cli.integrations.pipecat.echo import EchoBrain, EchoOptions
from lipsync_cli.integrations.pipecat.media import video_out_params
from lipsync_cli.integrations.pipecat.service import LipsyncFrameLatencyData, LipsyncVideoService
from lipsync_cli.runtime import Runtime

RATE = 16_000  # the microphone as the VAD hears it, and so the echo's voice and the audio sent back


@dataclass(frozen=True)
class AgentOptions:
    character: str = "alice"
    device: str = "auto"
    latency_ms: float | None = None  # the face's latency budget (None: the live session's default)
    vad_stop_secs: float = 0.5  # silence after which the user has stopped talking (Pipecat's default is 0.2 s)
    echo: EchoOptions = EchoOptions()


class PageReporter(FrameProcessor):
    """After the face: each reply's time to first frame and, once a second, the mean latency parts of the speech
    frames, as messages to the page (the per-frame metrics stop here)."""

    def __init__(self, service: LipsyncVideoService, **kwargs) -> None:
        super().__init__(**kwargs)
        self._service = service
        self._parts: list[LipsyncFrameLatencyData] = []
        self._sent = time.monotonic()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if not isinstance(frame, MetricsFrame) or direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
            return
        rest = []
        for data in frame.data:
            if isinstance(data, LipsyncFrameLatencyData):
                self._parts.append(data)
            elif isinstance(data, TTFBMetricsData) and data.processor == self._service.name and data.value > 0:
                await self._tell({"type": "lipsync-reply", "first_frame_ms": round(data.value * 1000)})
            elif data.processor != self._service.name:
                rest.append(data)
        if rest:
            await self.push_frame(MetricsFrame(data=rest), direction)
        if self._parts and time.monotonic() - self._sent >= 1.0:
            n = len(self._parts)
            mean = {k: round(sum(getattr(p, k) for p in self._parts) / n * 1000, 1)
                    for k in ("lookahead", "queueing", "inference", "composite", "total")}
            await self._tell({"type": "lipsync-latency", "frames": n, **mean})
            self._parts, self._sent = [], time.monotonic()

    async def _tell(self, message: dict) -> None:
        await self.push_frame(OutputTransportMessageUrgentFrame(message=message))


@dataclass(eq=False)
class AgentSession:
    transport: SmallWebRTCTransport
    brain: EchoBrain
    service: LipsyncVideoService
    worker: PipelineWorker


def agent_session(connection: SmallWebRTCConnection, runtime: Runtime, options: AgentOptions) -> AgentSession:
    """The pipeline of one browser's session (to be run by a WorkerRunner)."""
    service = LipsyncVideoService(options.character, runtime=runtime, device=options.device,
                                  latency_ms=options.latency_ms)
    params = TransportParams(audio_in_enabled=True, audio_in_sample_rate=RATE, audio_out_enabled=True,
                             audio_out_sample_rate=RATE, **video_out_params(service.character))
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=params)
    vad = VADProcessor(vad_analyzer=SileroVADAnalyzer(params=VADParams(stop_secs=options.vad_stop_secs)))
    brain = EchoBrain(options.echo)
    pipeline = Pipeline([transport.input(), vad, brain, service, PageReporter(service), transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_in_sample_rate=RATE, audio_out_sample_rate=RATE,
                                                            enable_metrics=True),
                            enable_rtvi=False, idle_timeout_secs=None, cancel_on_idle_timeout=False)

    @transport.event_handler("on_app_message")
    async def _message(_transport, message, _sender) -> None:
        if isinstance(message, dict) and message.get("type") == "lipsync-interrupt":
            await brain.interrupt()

    @transport.event_handler("on_client_disconnected")
    async def _gone(_transport, _client) -> None:
        await worker.cancel()

    return AgentSession(transport, brain, service, worker)
