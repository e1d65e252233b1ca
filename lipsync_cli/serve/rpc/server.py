"""The gRPC face of `lipsync serve`: grpcio's asyncio server on an event loop of its own thread, in the same
process and on the same runtime as the HTTP server, with `monolithic.MonolithicService`,
`lipsync.v1.Live`, `grpc.health.v1.Health` and server reflection (so that grpcurl needs no .proto).

With a token configured every call but the health check needs the metadata `authorization: Bearer TOKEN`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from lipsync_cli.errors import InputError
from lipsync_cli.serve.rpc import live_pb2, live_pb2_grpc, monolithic_pb2, monolithic_pb2_grpc
from lipsync_cli.serve.rpc.live import LiveService
from lipsync_cli.serve.rpc.monolithic import GrpcOptions, MonolithicService
from lipsync_cli.serve.rpc.undecodable import RefuseUndecodable
from lipsync_cli.trust import Trust, address

if TYPE_CHECKING:
    from lipsync_cli.serve.server import Server

HEALTH = "/grpc.health.v1.Health/"
DRAIN_POLL = 0.05  # seconds
MAX_RECEIVE = 128 * 2**20  # 32 frames of the client's UNet input are 79 MB
MAX_SEND = 64 * 2**20
SERVICES = (monolithic_pb2.DESCRIPTOR.services_by_name["MonolithicService"].full_name,
            live_pb2.DESCRIPTOR.services_by_name["Live"].full_name)


def _denied(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    message = "a valid token is needed (metadata authorization: Bearer TOKEN)"

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)
    return grpc.unary_unary_rpc_method_handler(deny, handler.request_deserializer, handler.response_serializer)


class TokenCheck(grpc.aio.ServerInterceptor):
    """The server's token, as the other faces check it (trust.py): `authorization: Bearer TOKEN` metadata."""

    def __init__(self, trust: Trust) -> None:
        self._trust = trust

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(HEALTH):
            return handler
        metadata = {k: v for k, v in details.invocation_metadata or () if isinstance(v, str)}
        return handler if self._trust.token_ok(metadata, {}) else _denied(handler)


class GrpcServer:
    """Started at construction (bound to `port`, a free one when 0); `stop()` ends it."""

    def __init__(self, server: Server, host: str, port: int, options: GrpcOptions = GrpcOptions()) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="lipsync-grpc", daemon=True)
        self._thread.start()
        self.monolithic = MonolithicService(server, options)
        self.live = LiveService(server)
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(server, host, port), self._loop).result(30)
        except BaseException:
            self.monolithic.close()
            self._end_loop()
            raise

    async def _start(self, server: Server, host: str, port: int) -> int:
        self._server = grpc.aio.server(
            interceptors=[*([TokenCheck(server.trust)] if server.trust.token else []), RefuseUndecodable()],
            options=[("grpc.max_receive_message_length", MAX_RECEIVE), ("grpc.max_send_message_length", MAX_SEND),
                     ("grpc.so_reuseport", 0)])
        monolithic_pb2_grpc.add_MonolithicServiceServicer_to_server(self.monolithic, self._server)
        live_pb2_grpc.add_LiveServicer_to_server(self.live, self._server)
        self.health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        for name in SERVICES:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        reflection.enable_server_reflection((*SERVICES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                                             reflection.SERVICE_NAME), self._server)
        try:
            bound = self._server.add_insecure_port(address(host, port))
        except RuntimeError:
            bound = 0
        if not bound:
            raise InputError(f"the gRPC port {address(host, port)} cannot be listened on (in use?)",
                             option="grpc_port")
        await self._server.start()
        self._draining = asyncio.create_task(self._not_serving_once_draining(server))
        return bound

    async def _not_serving_once_draining(self, server: Server) -> None:
        """NOT_SERVING as soon as a drain starts (a load balancer stops sending sessions), before the
        sessions end and long before the port closes."""
        while not server.manager.draining.is_set():
            await asyncio.sleep(DRAIN_POLL)
        await self.health.enter_graceful_shutdown()

    async def _stop(self, grace: float) -> None:
        self._draining.cancel()
        await self.health.enter_graceful_shutdown()
        await self._server.stop(grace)

    def stop(self, grace: float = 1.0) -> None:
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._stop(grace), self._loop).result(grace + 10)
        finally:
            self.monolithic.close()
            self._end_loop()

    def _end_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> GrpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
