"""A real voice agent with a face: speech-to-text, a language model and a voice (OpenAI's three here: swap in any
Pipecat services you like), and lipsync's character between the voice and the browser.

    pip install 'lipsync-cli[pipecat]' 'pipecat-ai[openai]'
    OPENAI_API_KEY=... python examples/pipecat_agent.py      # then open http://127.0.0.1:8090/

The page, the WebRTC offer and the trust rules are `lipsync agent`'s (lipsync_cli.integrations.pipecat.server);
each browser session gets the pipeline that `bot` builds."""

from __future__ import annotations

import os

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair, LLMUserAggregatorParams
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport

from lipsync_cli.integrations.pipecat import LipsyncVideoService, video_out_params
from lipsync_cli.integrations.pipecat.server import serve_agent
from lipsync_cli.runtime import Runtime

CHARACTER = os.environ.get("LIPSYNC_CHARACTER", "alice")
PROMPT = "You are a friendly assistant with a face. Answer in one or two short spoken sentences."
RUNTIME = Runtime()  # one for every session: the character's models are loaded once


def services():
    """Speech-to-text, language model and voice, keys from the environment."""
    from pipecat.services.openai.llm import OpenAILLMService
    from pipecat.services.openai.stt import OpenAISTTService
    from pipecat.services.openai.tts import OpenAITTSService

    key = os.environ["OPENAI_API_KEY"]
    return OpenAISTTService(api_key=key), OpenAILLMService(api_key=key), OpenAITTSService(api_key=key)


def pipeline(transport, stt, llm, tts, face) -> Pipeline:
    context = LLMContextAggregatorPair(LLMContext([{"role": "system", "content": PROMPT}]),
                                       user_params=LLMUserAggregatorParams(vad_analyzer=SileroVADAnalyzer()))
    return Pipeline([transport.input(), stt, context.user(), llm, tts, face, transport.output(), context.assistant()])


def bot(connection) -> PipelineWorker:
    transport = SmallWebRTCTransport(connection, TransportParams(audio_in_enabled=True, audio_out_enabled=True,
                                                                 **video_out_params(CHARACTER, RUNTIME)))
    face = LipsyncVideoService(CHARACTER, runtime=RUNTIME)
    return PipelineWorker(pipeline(transport, *services(), face), params=PipelineParams(enable_metrics=True))


if __name__ == "__main__":
    serve_agent(bot)
