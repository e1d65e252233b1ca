"""Per-session video encoders: H.264 with zero-latency settings (x264 through PyAV: each frame's access unit
comes out as soon as the frame goes in; no B-frames; a keyframe first, on request and at least every 2 s;
SPS/PPS before each keyframe; Annex B) or JPEG, the seed's format."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import cv2
import numpy as np

JPEG_QUALITY = 75  # the seed's


class H264Encoder:
    def __init__(self, width: int, height: int, fps: Fraction, preset: str = "veryfast", crf: int = 23) -> None:
        import av

        self._av = av
        self.codec_string = "avc1.42E01F" if width * height <= 1280 * 720 else "avc1.640028"
        c = av.CodecContext.create("libx264", "w")
        c.width, c.height, c.pix_fmt = width, height, "yuv420p"
        c.time_base, c.framerate = Fraction(1) / fps, fps
        gop = max(1, int(2 * fps))
        profile = "baseline" if self.codec_string.startswith("avc1.42") else "high"
        c.options = {"preset": preset, "tune": "zerolatency", "crf": str(crf), "bf": "0", "g": str(gop),
                     "profile": profile, "x264-params": f"repeat-headers=1:keyint={gop}:scenecut=0"}
        c.open()
        self._context: Any = c
        self._pts = 0
        self._force = True

    def keyframe_next(self) -> None:
        self._force = True

    def close(self) -> None:
        """x264's buffers go back now, not when the garbage collector finds this object."""
        self._context = None

    def encode(self, i420: np.ndarray) -> tuple[bytes, bool]:
        """One I420 frame -> its access unit and whether it is a keyframe."""
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(i420), format="yuv420p")
        frame.pts = self._pts
        self._pts += 1
        if self._force:
            frame.pict_type = self._av.video.frame.PictureType.I
            self._force = False
        packets = self._context.encode(frame)
        if len(packets) != 1:  # zerolatency x264 gives every frame's packet at once
            raise RuntimeError(f"the H.264 encoder gave {len(packets)} packets for one frame")
        return bytes(packets[0]), bool(packets[0].is_keyframe)


class JpegEncoder:
    codec_string = "jpeg"

    def __init__(self, quality: int = JPEG_QUALITY) -> None:
        self.quality = quality

    def keyframe_next(self) -> None:
        pass

    def close(self) -> None:
        pass

    def encode(self, i420: np.ndarray) -> tuple[bytes, bool]:
        bgr = cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420)
        ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        return data.tobytes(), True
