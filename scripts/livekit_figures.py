"""The LiveKit figures (docs/voice-agents.md): a character through AvatarRunner's synchroniser into the tests'
stand-in room, whose published tracks LiveKit's own streams read back: video frames per second handed to the
room's video source (idle and speaking) against the character's fps, whether the voice arrives whole and
contiguous (silence the audio source had to insert while starved, in 10 ms pieces), and the time from the
first push_audio to the first speech frame and to the first voice sample published. One or more avatars at
once on one runtime.

    python scripts/livekit_figures.py [--character alice] [--avatars 1,2] [--seconds 6] [--device cpu]
        [--json FILE]

Needs the livekit extra (pip install '.[livekit]'); run it alone on the machine (flock -x) for figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AvatarRunner, QueueAudioOutput  # noqa: E402

from lipsync_cli.integrations.livekit import LipsyncVideoGenerator  # noqa: E402
from lipsync_cli.runtime import Runtime, RuntimeConfig  # noqa: E402
from tests.livekit_helpers import StandInRoom, audio_frames, published_audio, voice  # noqa: E402

RATE = 24_000
PIECE = RATE // 100  # the audio source's 10 ms


def continuity(heard: np.ndarray, x: np.ndarray) -> dict:
    """Walk the published audio along the voice, 10 ms at a time: where it stops matching, find where the
    voice resumes and count what was put between (the source's silence when it was starved)."""
    nonzero = np.flatnonzero(heard)
    if not len(nonzero):
        return {"voice_found": False}
    i, p, gaps, inserted = int(nonzero[0]), 0, 0, 0
    while p < len(x):
        n = min(PIECE, len(x) - p)
        if np.array_equal(heard[i : i + n], x[p : p + n]):
            i, p = i + n, p + n
            continue
        window = heard[i : i + 5 * RATE]
        found = next((int(k) for k in np.flatnonzero(window == x[p])
                      if np.array_equal(window[k : k + n], x[p : p + n])), None)
        if found is None:
            return {"voice_found": True, "whole": False, "matched_s": p / RATE, "gaps": gaps,
                    "inserted_ms": inserted * 1000 / RATE}
        gaps, inserted, i = gaps + 1, inserted + found, i + found
    return {"voice_found": True, "whole": True, "matched_s": p / RATE, "gaps": gaps,
            "inserted_ms": round(inserted * 1000 / RATE, 1)}


def fps(times: list[float]) -> float | None:
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None


async def one_avatar(runtime: Runtime, character: str, device: str, seconds: float, seed: int) -> dict:
    room = StandInRoom()
    gen = LipsyncVideoGenerator(character, runtime=runtime, device=device)
    audio = QueueAudioOutput(sample_rate=RATE, wait_playback_start=True)
    finished = asyncio.Event()
    audio.on("playback_finished", lambda _: finished.set())
    runner = AvatarRunner(room, audio_recv=audio, video_gen=gen, options=gen.avatar_options())
    marks: dict[str, float] = {}
    sync, push = runner.av_sync, runner.av_sync.push
    last_video = [0.0]

    async def recording(frame, timestamp=None):
        if isinstance(frame, rtc.VideoFrame):
            last_video[0] = time.monotonic()
        elif "first_speech_frame" not in marks:
            marks["first_speech_frame"] = last_video[0]
        await push(frame, timestamp)

    sync.push = recording  # type: ignore[method-assign]
    captured: list[float] = []  # when the synchroniser handed each picture to the video source (the room)
    source = sync._video_source
    capture = source.capture_frame

    def capturing(frame, **kw):
        captured.append(time.monotonic())
        return capture(frame, **kw)

    source.capture_frame = capturing  # type: ignore[method-assign]
    x = voice(seconds, RATE, seed=seed)
    await gen.start()
    await runner.start()
    try:
        await asyncio.sleep(2.0)  # idle
        marks["first_push"] = time.monotonic()
        for frame in audio_frames(x):  # as fast as the agent's TTS sends it
            await audio.capture_frame(frame)
        audio.flush()
        await asyncio.wait_for(finished.wait(), seconds * 4 + 30)
        marks["finished"] = time.monotonic()
        await asyncio.sleep(2.0)  # idle again
        actual = sync.actual_fps
    finally:
        await runner.aclose()
        await gen.aclose()
        await room.local_participant.aclose()
    video = captured
    received = len(room.local_participant.frames(rtc.LocalVideoTrack))
    sound = room.local_participant.frames(rtc.LocalAudioTrack)
    heard = published_audio(room)
    nonzero = np.flatnonzero(heard)
    first_heard = None
    if len(nonzero):  # the published 10 ms piece that holds the voice's first sample
        piece = int(nonzero[0]) // PIECE
        first_heard = sound[piece][0] - marks["first_push"]
    speaking = [t for t in video if marks["first_speech_frame"] <= t <= marks["finished"]]
    idle = [t for t in video if t < marks["first_push"]]
    gaps = np.diff(speaking) if len(speaking) > 1 else np.zeros(1)
    return {
        "fps_character": float(gen.fps),
        "fps_idle": fps(idle), "fps_speaking": fps(speaking), "fps_synchroniser_last_second": actual,
        "frame_interval_ms_speaking": {"p50": float(np.percentile(gaps, 50) * 1000),
                                       "p95": float(np.percentile(gaps, 95) * 1000),
                                       "max": float(gaps.max() * 1000)},
        "frames_published": len(video), "frames_read_back": received,
        "voice_s": len(x) / RATE,
        "audio": continuity(heard, x),
        "first_speech_frame_ms": (marks["first_speech_frame"] - marks["first_push"]) * 1000,
        "first_voice_published_ms": None if first_heard is None else first_heard * 1000,
    }


async def main(args: argparse.Namespace) -> dict:
    out: dict = {"character": args.character, "device": args.device, "runs": {}}
    with Runtime(RuntimeConfig(devices="cpu" if args.device == "cpu" else "auto")) as runtime:
        for count in (int(a) for a in args.avatars.split(",")):
            results = await asyncio.gather(*(one_avatar(runtime, args.character, args.device, args.seconds, seed=i)
                                             for i in range(count)))
            out["runs"][str(count)] = results
            for i, r in enumerate(results):
                print(f"{count} avatar(s), #{i}: fps idle {r['fps_idle']:.1f}, speaking {r['fps_speaking']:.1f} "
                      f"(character {r['fps_character']:g}); interval p95 "
                      f"{r['frame_interval_ms_speaking']['p95']:.0f} ms, max "
                      f"{r['frame_interval_ms_speaking']['max']:.0f} ms; audio {r['audio']}; first speech frame "
                      f"{r['first_speech_frame_ms']:.0f} ms, first voice published "
                      f"{r['first_voice_published_ms']:.0f} ms after the first push", flush=True)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--character", default="alice")
    parser.add_argument("--avatars", default="1,2", help="avatars at once, for each run (comma-separated)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the voice")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    result = asyncio.run(main(parser.parse_args()))
    if parser.parse_args().json:
        parser.parse_args().json.write_text(json.dumps(result, indent=2))
