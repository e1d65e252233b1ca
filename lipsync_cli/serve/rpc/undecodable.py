"""A request that is not the protobuf message its method takes is the client's error, on every method of
the gRPC face: INVALID_ARGUMENT, never UNKNOWN or INTERNAL. grpcio would raise the decoding error inside
the call; here each method's deserializer hands back an `Undecodable` instead, and the method is refused
before it runs (one request), or when its request stream reaches it (a stream: a ProtocolError that
Live/Stream answers with its Error message, and any other method with the status)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from lipsync_cli.serve.protocol import POLICY, ProtocolError


class Undecodable:
    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _decoder(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError, or whatever a deserializer raises
            return Undecodable(f"a request that is not a valid protobuf message ({exc})")

    return decode


async def _refuse(context: grpc.aio.ServicerContext, request: Any) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            raise ProtocolError(request.message, POLICY, "bad_message")
        yield request


def _one(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A method taking one request."""
    if inspect.isasyncgenfunction(behavior):
        async def responses(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await _refuse(context, request)
            async for response in behavior(request, context):
                yield response

        return responses

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _refuse(context, request)
        result = behavior(request, context)
        return await result if isinstance(result, Awaitable) else result

    return call


def _stream(behavior: Callable[..., Any]) -> Callable[..., Any]:
    """A method taking a stream of requests."""
    if inspect.isasyncgenfunction(behavior):
        async def responses(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            try:
                async for response in behavior(_checked(requests), context):
                    yield response
            except ProtocolError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

        return responses

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        try:
            result = behavior(_checked(requests), context)
            return await result if isinstance(result, Awaitable) else result
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    return call


def checked(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same method, refusing what cannot be decoded."""
    if handler.request_deserializer is None:
        return handler
    decode, serialize = _decoder(handler.request_deserializer), handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(_stream(handler.stream_stream), decode, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(_stream(handler.stream_unary), decode, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(_one(handler.unary_stream), decode, serialize)
    return grpc.unary_unary_rpc_method_handler(_one(handler.unary_unary), decode, serialize)


class RefuseUndecodable(grpc.aio.ServerInterceptor):
    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        return None if handler is None else checked(handler)
