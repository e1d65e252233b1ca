from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ClientMessage(_message.Message):
    __slots__ = ("start", "audio", "flush", "interrupt", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FLUSH_FIELD_NUMBER: _ClassVar[int]
    INTERRUPT_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: Start
    audio: Audio
    flush: Flush
    interrupt: Interrupt
    stop: Stop
    def __init__(self, start: _Optional[_Union[Start, _Mapping]] = ..., audio: _Optional[_Union[Audio, _Mapping]] = ..., flush: _Optional[_Union[Flush, _Mapping]] = ..., interrupt: _Optional[_Union[Interrupt, _Mapping]] = ..., stop: _Optional[_Union[Stop, _Mapping]] = ...) -> None: ...

class Start(_message.Message):
    __slots__ = ("character", "audio_format", "rate", "codec", "latency_ms", "return_rate")
    CHARACTER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FORMAT_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RETURN_RATE_FIELD_NUMBER: _ClassVar[int]
    character: str
    audio_format: str
    rate: int
    codec: str
    latency_ms: float
    return_rate: int
    def __init__(self, character: _Optional[str] = ..., audio_format: _Optional[str] = ..., rate: _Optional[int] = ..., codec: _Optional[str] = ..., latency_ms: _Optional[float] = ..., return_rate: _Optional[int] = ...) -> None: ...

class Audio(_message.Message):
    __slots__ = ("pcm",)
    PCM_FIELD_NUMBER: _ClassVar[int]
    pcm: bytes
    def __init__(self, pcm: _Optional[bytes] = ...) -> None: ...

class Flush(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Interrupt(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Stop(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("ready", "frame", "stats", "interrupted", "error")
    READY_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ready: Ready
    frame: Frame
    stats: Stats
    interrupted: Interrupted
    error: Error
    def __init__(self, ready: _Optional[_Union[Ready, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ..., interrupted: _Optional[_Union[Interrupted, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class Ready(_message.Message):
    __slots__ = ("session", "fps", "width", "height", "codec", "audio_rate", "lookahead_ms", "latency_ms")
    SESSION_FIELD_NUMBER: _ClassVar[int]
    FPS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_RATE_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    session: str
    fps: float
    width: int
    height: int
    codec: str
    audio_rate: int
    lookahead_ms: float
    latency_ms: float
    def __init__(self, session: _Optional[str] = ..., fps: _Optional[float] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., codec: _Optional[str] = ..., audio_rate: _Optional[int] = ..., lookahead_ms: _Optional[float] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("index", "generation", "pts_us", "keyframe", "speech", "jpeg", "video", "audio")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    PTS_US_FIELD_NUMBER: _ClassVar[int]
    KEYFRAME_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FIELD_NUMBER: _ClassVar[int]
    JPEG_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    index: int
    generation: int
    pts_us: int
    keyframe: bool
    speech: bool
    jpeg: bool
    video: bytes
    audio: bytes
    def __init__(self, index: _Optional[int] = ..., generation: _Optional[int] = ..., pts_us: _Optional[int] = ..., keyframe: bool = ..., speech: bool = ..., jpeg: bool = ..., video: _Optional[bytes] = ..., audio: _Optional[bytes] = ...) -> None: ...

class Latency(_message.Message):
    __slots__ = ("total", "lookahead", "queueing", "inference", "composite", "encode")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    LOOKAHEAD_FIELD_NUMBER: _ClassVar[int]
    QUEUEING_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_FIELD_NUMBER: _ClassVar[int]
    COMPOSITE_FIELD_NUMBER: _ClassVar[int]
    ENCODE_FIELD_NUMBER: _ClassVar[int]
    total: float
    lookahead: float
    queueing: float
    inference: float
    composite: float
    encode: float
    def __init__(self, total: _Optional[float] = ..., lookahead: _Optional[float] = ..., queueing: _Optional[float] = ..., inference: _Optional[float] = ..., composite: _Optional[float] = ..., encode: _Optional[float] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("frames_sent", "speech_frames", "idle_frames", "underrun_frames", "underruns", "generation", "queued_ms", "latency_ms")
    FRAMES_SENT_FIELD_NUMBER: _ClassVar[int]
    SPEECH_FRAMES_FIELD_NUMBER: _ClassVar[int]
    IDLE_FRAMES_FIELD_NUMBER: _ClassVar[int]
    UNDERRUN_FRAMES_FIELD_NUMBER: _ClassVar[int]
    UNDERRUNS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    QUEUED_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    frames_sent: int
    speech_frames: int
    idle_frames: int
    underrun_frames: int
    underruns: int
    generation: int
    queued_ms: float
    latency_ms: Latency
    def __init__(self, frames_sent: _Optional[int] = ..., speech_frames: _Optional[int] = ..., idle_frames: _Optional[int] = ..., underrun_frames: _Optional[int] = ..., underruns: _Optional[int] = ..., generation: _Optional[int] = ..., queued_ms: _Optional[float] = ..., latency_ms: _Optional[_Union[Latency, _Mapping]] = ...) -> None: ...

class Interrupted(_message.Message):
    __slots__ = ("generation", "first_frame")
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FIRST_FRAME_FIELD_NUMBER: _ClassVar[int]
    generation: int
    first_frame: int
    def __init__(self, generation: _Optional[int] = ..., first_frame: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("message", "code", "reason")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    message: str
    code: int
    reason: str
    def __init__(self, message: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...
