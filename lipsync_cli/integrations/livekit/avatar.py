"""`LipsyncAvatarSession`: a lipsync face for an `AgentSession`, in the agent's own process (LiveKit's
convention for local avatars). The agent's voice goes to a `QueueAudioOutput` instead of the room;
`AvatarRunner` feeds it to a `LipsyncVideoGenerator` and publishes the character's video and that voice,
in sync, as the agent's tracks; playback started / finished go back to the agent from the runner."""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING

from livekit import rtc
from livekit.agents.job import get_job_context
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput
from livekit.agents.voice.events import ErrorEvent

from lipsync_cli.compositing.blend import Blend
from lipsync_cli.integrations.livekit.generator import LipsyncVideoGenerator
from lipsync_cli.runtime import Runtime

if TYPE_CHECKING:
    from livekit.agents import AgentSession

log = logging.getLogger("lipsync.livekit")


class LipsyncAvatarSession:
    """`await LipsyncAvatarSession("alice").start(agent_session, room)`, before or after
    `agent_session.start(...)`: from then on the agent speaks with the character's face."""

    def __init__(self, character: str, *, runtime: Runtime | None = None, device: str = "auto",
                 latency_ms: float | None = None, blend: Blend = "match", sample_rate: int = 24_000) -> None:
        self.character_name = character
        self._make = functools.partial(LipsyncVideoGenerator, character, runtime=runtime, device=device,
                                       latency_ms=latency_ms, blend=blend, sample_rate=sample_rate)
        self.generator: LipsyncVideoGenerator | None = None
        self.audio: QueueAudioOutput | None = None
        self.runner: AvatarRunner | None = None
        self._agent_session: AgentSession | None = None
        self._watch: asyncio.Task[None] | None = None

    async def start(self, agent_session: AgentSession, room: rtc.Room) -> None:
        """Load the character and its models (on worker threads), start the runner on `room` and make it the
        agent's audio output (the tail of its chain, so transcript synchronisation stays in front of it)."""
        if self.runner is not None:
            raise RuntimeError("the avatar session has started already")
        self.generator = generator = await asyncio.to_thread(self._make)
        try:
            await generator.start()
            options = generator.avatar_options()
            # playback started is reported when the runner plays the first audio, not when the agent sends it
            self.audio = audio = QueueAudioOutput(sample_rate=options.audio_sample_rate, wait_playback_start=True)
            runner = AvatarRunner(room, audio_recv=audio, video_gen=generator, options=options)
            await runner.start()
            self.runner = runner
        except BaseException:
            await self.aclose()
            raise
        self._agent_session = agent_session
        agent_session.output.replace_audio_tail(audio)
        self._watch = asyncio.create_task(self._watch_runner())
        job = get_job_context(required=False)
        if job is not None:
            job.add_shutdown_callback(self.aclose)

    async def _watch_runner(self) -> None:
        """A failure the runner's tasks raised (the generator logs it first) reaches the agent session as an
        `error` event, LiveKit's way for a component of the agent that broke."""
        assert self.runner is not None
        try:
            await self.runner.wait_for_complete()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("the lipsync avatar's runner stopped taking audio: %s", exc)
            if self._agent_session is not None:
                self._agent_session.emit("error", ErrorEvent(error=exc, source=self))

    async def aclose(self) -> None:
        """Stop the runner (its tracks end) and close the generator's session."""
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
        runner, self.runner = self.runner, None
        if runner is not None:
            await runner.aclose()
        generator, self.generator = self.generator, None
        if generator is not None:
            await generator.aclose()
