"""gRPC test helpers: a server with gRPC on free ports of 127.0.0.1, a session creator that is slow for one
character's files, and the protobuf wire format written and read by hand (so that wire compatibility is
checked without our own stubs)."""

from __future__ import annotations

import shutil
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import grpc
import numpy as np

from lipsync_cli.models.sessions import SessionMaker
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.rpc import monolithic_pb2_grpc
from lipsync_cli.serve.run import RunningServer

from .conftest import ALICE


@contextmanager
def grpc_server(runtime, characters: Path, **kw):
    config = ServeConfig(port=0, devices="cpu", characters=(str(characters),), **kw).checked()
    with RunningServer(config, runtime, grpc_port=0) as running:
        assert running.grpc is not None
        channel = grpc.insecure_channel(f"127.0.0.1:{running.grpc.port}",
                                        options=[("grpc.max_receive_message_length", 64 * 2**20)])
        try:
            yield running, channel
        finally:
            channel.close()


def stub(channel):
    return monolithic_pb2_grpc.MonolithicServiceStub(channel)


def alice_named(folder: Path, name: str) -> Path:
    """A copy of alice under another name in `folder`."""
    dest = folder / name
    shutil.copytree(ALICE, dest)
    manifest = dest / "character.toml"
    manifest.write_text(manifest.read_text().replace('name = "alice"', f'name = "{name}"'))
    return dest


class SlowFor:
    """Sessions as usual, but creating one for a file under `folder` first sleeps `seconds`."""

    def __init__(self, folder: Path, seconds: float) -> None:
        self.folder, self.seconds = folder.resolve(), seconds
        self._make = SessionMaker(2)

    def __call__(self, path: Path, device):
        if self.folder in Path(path).resolve().parents:
            time.sleep(self.seconds)
        return self._make(path, device)


def jpeg_i420(data: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a JPEG"
    return cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)


# -- the protobuf wire format by hand ------------------------------------------------------------------
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 values go on the wire as 10-byte two's complement
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(number << 3 | VARINT) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(number << 3 | BYTES) + varint(len(data)) + data


def parse(data: bytes) -> dict[int, list]:
    """{field number: [values]}: varints as ints, length-delimited as bytes, fixed32 as float."""
    out: dict[int, list] = {}
    i = 0
    while i < len(data):
        key, i = _read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == VARINT:
            value, i = _read_varint(data, i)
        elif kind == BYTES:
            size, i = _read_varint(data, i)
            value, i = data[i : i + size], i + size
        elif kind == FIXED32:
            value, i = struct.unpack_from("<f", data, i)[0], i + 4
        elif kind == FIXED64:
            value, i = struct.unpack_from("<d", data, i)[0], i + 8
        else:
            raise ValueError(f"wire type {kind} of field {number}")
        out.setdefault(number, []).append(value)
    return out


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def int32(value: int) -> int:
    """A varint read back as the int32 it encodes."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def raw_call(channel, method: str, request: bytes, timeout: float = 60) -> bytes:
    """A unary call with bytes in and out, no stubs in between."""
    call = channel.unary_unary(f"/monolithic.MonolithicService/{method}", request_serializer=None,
                               response_deserializer=None)
    return call(request, timeout=timeout)
