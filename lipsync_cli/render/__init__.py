"""Rendering: jobs as data, `plan` (every check, before work) and `execute` (the streaming pipeline)."""

from lipsync_cli.render.execute import execute
from lipsync_cli.render.jobs import (
    Finished,
    FramesDone,
    RenderEvent,
    RenderJob,
    RenderOptions,
    RenderPlan,
    RenderResult,
    Started,
    default_batch,
)
from lipsync_cli.render.planning import default_output, plan

__all__ = ["Finished", "FramesDone", "RenderEvent", "RenderJob", "RenderOptions", "RenderPlan", "RenderResult",
           "Started", "default_batch", "default_output", "execute", "plan"]
