"""A frame slot of a live session: what the frame is to be (speech, a fade, the template), its patch once
the scheduler has drawn it, and its moments for the latency parts; and the picture made of it."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from lipsync_cli.frames.template import TemplateFrame
from lipsync_cli.live.frames import LatencyParts
from lipsync_cli.render.compositor import Compositor
from lipsync_cli.render.renderer import Patch


@dataclass(eq=False)
class Slot:
    index: int
    generation: int
    speech: bool
    audio: np.ndarray
    features: np.ndarray | None = None  # the UNet's audio input (None: silence)
    frame: TemplateFrame | None = None
    fade: float = 0.0  # weight of the template (cross-fade to idle)
    patch: Patch | BaseException | None = None
    drawn: bool = False  # the model draws it (else: the template as it is)
    own_at: float = 0.0
    need_at: float = 0.0
    submitted: float = 0.0
    waited: float = 0.0
    inference: float = 0.0
    underrun: bool = False
    done: threading.Event = field(default_factory=threading.Event)



def picture(slot: Slot, compositor: Compositor) -> tuple[np.ndarray, LatencyParts | None]:
    """The slot's frame, I420 and read-only, and for a speech frame its latency parts."""
    made_at = time.monotonic()
    assert slot.frame is not None and not isinstance(slot.patch, BaseException)
    if slot.patch is not None:
        image = compositor.one(slot.frame, slot.patch)
        if slot.fade > 0:
            image = cv2.addWeighted(slot.frame.i420, slot.fade, image, 1 - slot.fade, 0)
    else:
        image = np.array(slot.frame.i420)
    image.flags.writeable = False
    if not slot.speech:
        return image, None
    return image, LatencyParts(max(0.0, slot.need_at - slot.own_at), max(0.0, slot.submitted - slot.need_at)
                               + slot.waited, slot.inference, time.monotonic() - made_at)
