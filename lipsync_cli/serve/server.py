"""What every face of `lipsync serve` shares (the WebSocket, gRPC, the HTTP routes): its configuration, one
runtime, the session manager, the metrics. Nothing per connection is kept on it beyond the manager's count."""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request

from lipsync_cli.models.devices import DeviceRequest
from lipsync_cli.models.inference import shrink_next
from lipsync_cli.runtime import Runtime
from lipsync_cli.serve.config import ServeConfig
from lipsync_cli.serve.heap import HeapTrimmer
from lipsync_cli.serve.manager import SessionManager
from lipsync_cli.serve.metrics import Metrics


class Server:
    def __init__(self, config: ServeConfig, runtime: Runtime) -> None:
        self.config, self.runtime = config, runtime
        self.trust = config.trust
        self.manager = SessionManager(config, len(runtime.devices()[0]))
        self.metrics = Metrics(runtime, self.unet_batches)
        self.device_request = DeviceRequest("auto")  # placed on the runtime's devices (--devices)
        self.jpeg_quality = config.jpeg_quality
        self.replica: str | None = None  # on a cluster: the replica's name, told to clients in `ready`
        self.heap = HeapTrimmer(before=self.shrink_arenas)  # what ended sessions freed goes back to the system

    def unet_batches(self) -> dict[int, int]:
        total: Counter[int] = Counter()
        for scheduler in self.runtime.shared_objects():
            total.update(getattr(scheduler, "batches", {}))
        return dict(total)

    def shrink_arenas(self) -> None:
        shrink_next(self.runtime.registry.sessions())

    def authorized(self, request: Request) -> bool:
        return self.trust.token_ok(request.headers, request.query_params)
