"""`monolithic.MonolithicService` on grpcio's asyncio server, backed by the server's runtime.

Every call answers with gRPC status OK; what went wrong is `success=false` and a one-line `error`, as the
seed's clients expect. Blocking work runs on threads, never on the event loop: loads (LoadModel's, and a
batch's whose model is not loaded yet) on a pool of their own, batches of loaded models on another
(`workers` at a time), the listings on a third, so a model being loaded holds up no batch of another.
Batches beyond `queue` in flight or waiting are refused at once ("server busy") rather than queued without
bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lipsync_cli.errors import LipsyncError
from lipsync_cli.serve.protocol import ProtocolError
from lipsync_cli.serve.rpc import monolithic_pb2 as pb
from lipsync_cli.serve.rpc import monolithic_pb2_grpc
from lipsync_cli.serve.rpc.composite import BatchRequest, check_shape, ready_model, render_batch
from lipsync_cli.serve.rpc.models import gpu_id, health_facts, load_model, model_facts, unload_model

if TYPE_CHECKING:
    from lipsync_cli.serve.server import Server

log = logging.getLogger("lipsync.grpc")
T = TypeVar("T")


@dataclass(frozen=True)
class GrpcOptions:
    jpeg_quality: int = 75  # the seed's
    queue: int = 16  # InferBatchComposite calls in flight or waiting; more are refused ("server busy")
    workers: int = 2  # InferBatchComposite calls computed at once


def one_line(exc: BaseException) -> str:
    if isinstance(exc, LipsyncError | ProtocolError):
        text = str(exc)
    else:
        log.exception("gRPC call failed")
        text = f"internal error: {type(exc).__name__}: {exc}"
    return " ".join(text.split())[:500]


class MonolithicService(monolithic_pb2_grpc.MonolithicServiceServicer):
    def __init__(self, server: Server, options: GrpcOptions) -> None:
        self.server, self.options = server, options
        self._batches = ThreadPoolExecutor(options.workers, thread_name_prefix="lipsync-grpc-batch")
        self._loads = ThreadPoolExecutor(4, thread_name_prefix="lipsync-grpc-load")
        self._admin = ThreadPoolExecutor(2, thread_name_prefix="lipsync-grpc-admin")
        self._pending = 0  # touched only on the event loop

    def close(self) -> None:
        self._batches.shutdown(wait=False, cancel_futures=True)
        self._loads.shutdown(wait=False, cancel_futures=True)
        self._admin.shutdown(wait=False, cancel_futures=True)

    @property
    def runtime(self):
        return self.server.runtime

    def _folder(self, model_id: str) -> Path:
        return self.server.manager.folder(model_id)

    async def _on(self, pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def InferBatchComposite(self, request: pb.CompositeBatchRequest, context: Any) -> pb.CompositeBatchResponse:
        started = time.perf_counter()
        if self._pending >= self.options.queue:
            return pb.CompositeBatchResponse(success=False, gpu_id=-1, error=(
                f"server busy: {self._pending} batches in flight or waiting (the limit is {self.options.queue}); "
                "try again later"))
        self._pending += 1
        try:
            batch = BatchRequest(request.model_id, request.visual_frames, request.raw_audio, request.audio_features,
                                 request.batch_size, request.start_frame_idx, request.sample_rate)
            check_shape(batch)
            folder = self._folder(request.model_id)
            model = await self._on(self._loads, ready_model, self.runtime, folder, self.server.device_request)
            result = await self._on(self._batches, render_batch, self.runtime, model, batch,
                                    self.options.jpeg_quality)
        except Exception as exc:
            return pb.CompositeBatchResponse(success=False, error=one_line(exc), gpu_id=-1)
        finally:
            self._pending -= 1
        return pb.CompositeBatchResponse(
            composited_frames=result.frames, inference_time_ms=result.inference_ms,
            composite_time_ms=result.composite_ms, total_time_ms=(time.perf_counter() - started) * 1000,
            audio_processing_ms=result.audio_ms, model_loaded=model.load_ms is not None,
            model_load_time_ms=model.load_ms or 0.0, success=True, gpu_id=gpu_id(model.device))

    async def ListModels(self, request: pb.ListModelsRequest, context: Any) -> pb.ListModelsResponse:
        facts = await self._on(self._admin, model_facts, self.runtime, self.server.manager.characters)
        return pb.ListModelsResponse(models=[
            pb.ModelInfo(model_id=f.model_id, loaded=f.loaded, gpu_id=f.gpu_id, memory_mb=f.memory_mb,
                         request_count=f.requests, avg_inference_ms=f.avg_inference_ms) for f in facts])

    async def GetModelStats(self, request: pb.GetModelStatsRequest, context: Any) -> pb.GetModelStatsResponse:
        facts = await self._on(self._admin, model_facts, self.runtime, self.server.manager.characters)
        return pb.GetModelStatsResponse(models=[
            pb.ModelStats(model_id=f.model_id, loaded=f.loaded, gpu_id=f.gpu_id, memory_mb=f.memory_mb,
                          request_count=f.requests, total_inference_ms=f.total_inference_ms,
                          avg_inference_ms=f.avg_inference_ms, last_used_timestamp=f.last_used) for f in facts])

    async def LoadModel(self, request: pb.LoadModelRequest, context: Any) -> pb.LoadModelResponse:
        try:
            folder = self._folder(request.model_id)
            loaded = await self._on(self._loads, load_model, self.runtime, folder, request.preferred_gpu)
        except Exception as exc:
            return pb.LoadModelResponse(success=False, error=one_line(exc), gpu_id=-1)
        return pb.LoadModelResponse(success=True, error=loaded.note, gpu_id=gpu_id(loaded.device),
                                    load_time_ms=loaded.load_ms)

    async def UnloadModel(self, request: pb.UnloadModelRequest, context: Any) -> pb.UnloadModelResponse:
        try:
            folder = self._folder(request.model_id)
            await self._on(self._admin, unload_model, self.runtime, request.model_id, folder)
        except Exception as exc:
            return pb.UnloadModelResponse(success=False, error=one_line(exc))
        return pb.UnloadModelResponse(success=True)

    async def Health(self, request: pb.HealthRequest, context: Any) -> pb.HealthResponse:
        facts = await self._on(self._admin, health_facts, self.runtime)
        return pb.HealthResponse(healthy=not self.server.manager.draining.is_set(),
                                 loaded_models=facts.loaded_models, max_models=facts.max_models,
                                 gpu_ids=facts.gpu_ids, gpu_memory_used_gb=facts.gpu_memory_used_gb)
