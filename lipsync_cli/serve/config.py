"""What `lipsync serve` is told: options, a TOML file with the same keys, and the checks on them (a server
that listens beyond this machine must be told how to trust its clients)."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from lipsync_cli.errors import InputError
from lipsync_cli.models.precision import as_precision_request
from lipsync_cli.trust import Trust, is_loopback

LogFormat = Literal["text", "json"]


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    characters: tuple[str, ...] = ()  # folders of characters (default: ./characters and the bundled ones)
    devices: str = "auto"
    max_sessions: int = 4  # in total
    max_sessions_per_device: int | None = None  # default: max_sessions
    max_models: int | None = None
    max_memory: str | None = None
    token: str | None = None
    no_auth: bool = False
    allow_origin: tuple[str, ...] = ()  # besides the page's own origin; "*" allows any
    allow_host: tuple[str, ...] = ()  # names clients reach the server by, besides localhost and IP addresses
    session_max_seconds: float = 3600.0
    log_format: LogFormat = "text"
    capacity: str | None = None  # a `lipsync loadtest --find-capacity --json` result: sessions per device
    jpeg_quality: int = 75  # the seed's
    grpc_port: int = 50051  # the seed's gRPC interface and the live stream over gRPC, on the same host; 0: off
    grpc_queue: int = 16  # InferBatchComposite calls in flight or waiting before "server busy"
    precision: str = "auto"  # of the live sessions' models: auto, fp32, int8, bf16, fp16 (render/precision.py)

    def checked(self) -> ServeConfig:
        if not 0 <= self.port <= 65535:
            raise InputError(f"port must be 0 to 65535, not {self.port}", option="port")
        if self.max_sessions < 1:
            raise InputError(f"max sessions must be at least 1, not {self.max_sessions}", option="max_sessions")
        if self.max_sessions_per_device is not None and self.max_sessions_per_device < 1:
            raise InputError("max sessions per device must be at least 1", option="max_sessions_per_device")
        if not 0 <= self.grpc_port <= 65535:
            raise InputError(f"gRPC port must be 0 (off) to 65535, not {self.grpc_port}", option="grpc_port")
        if self.grpc_queue < 1:
            raise InputError(f"the gRPC queue must hold at least 1 call, not {self.grpc_queue}", option="grpc_queue")
        if self.session_max_seconds <= 0:
            raise InputError("the session length limit must be positive", option="session_max_seconds")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"JPEG quality must be 1 to 100, not {self.jpeg_quality}", option="jpeg_quality")
        if self.log_format not in ("text", "json"):
            raise InputError(f"log format must be text or json, not {self.log_format!r}", option="log_format")
        as_precision_request(self.precision)
        if self.token is not None and len(self.token) < 8:
            raise InputError("a token must be at least 8 characters", option="token")
        if not is_loopback(self.host) and self.token is None and not self.no_auth:
            raise InputError(f"listening on {self.host} (beyond this machine) needs a token (--token or "
                             "LIPSYNC_TOKEN) or an explicit --no-auth", option="host")
        for folder in self.characters:
            if not Path(folder).is_dir():
                raise InputError(f"{folder}: not a folder of characters", option="characters")
        return self

    @property
    def trust(self) -> Trust:
        return Trust(self.token, self.allow_origin, self.allow_host, self.host)

    @property
    def per_device(self) -> int:
        return self.max_sessions_per_device or self.max_sessions

    def with_capacity(self) -> ServeConfig:
        """Sessions per device from a measured capacity (when given and no explicit per-device cap is)."""
        if self.capacity is None or self.max_sessions_per_device is not None:
            return self
        path = Path(self.capacity)
        try:
            data = json.loads(path.read_text())
            measured, asked = data["capacity"], data.get("precision", "auto")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"{path}: not a capacity measured by lipsync loadtest --find-capacity --json ({exc})",
                             option="capacity") from None
        if asked != self.precision:  # a capacity holds for the models it was measured with
            raise InputError(f"{path}: the capacity was measured with precision {asked}, and this server runs "
                             f"{self.precision}: measure it with the same precision", option="capacity")
        if isinstance(measured, bool) or not isinstance(measured, int) or measured < 1:
            raise InputError(f"{path}: the measured capacity is {measured!r} sessions: nothing can be admitted",
                             option="capacity")
        return replace(self, max_sessions_per_device=measured)


def load_toml(path: Path) -> dict[str, Any]:
    """The keys of a config file (the options' long names, with _ or -)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: malformed TOML ({exc})") from None
    known = {f.name for f in fields(ServeConfig)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in known:
            raise InputError(f"{path}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        out[name] = tuple(value) if isinstance(value, list) else value
    for name, value in out.items():
        default = getattr(ServeConfig(), name)
        if default is not None and not isinstance(value, type(default)) and not (
                isinstance(default, float) and isinstance(value, int)):
            raise InputError(f"{path}: {name} must be a {type(default).__name__}, not {value!r}")
    return out


def token_from_env(token: str | None) -> str | None:
    return token if token is not None else (os.environ.get("LIPSYNC_TOKEN") or None)
