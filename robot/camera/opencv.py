"""A camera through OpenCV's ``VideoCapture``: a USB device by index (V4L2) or a stream URL (FFmpeg).

Frames come out RGB (OpenCV decodes to BGR). Opening and every read are bounded in time (:data:`OPEN_TIMEOUT_S`,
:data:`READ_TIMEOUT_S`), so a dead stream makes the reader's frame stale instead of hanging it. Needs the
``camera`` extra (``opencv-python-headless``).
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

from robot.camera.reader import CameraLost
from robot.config import CameraConfig
from s2r.core.errors import UserError

OPEN_TIMEOUT_S = 10.0
"""Longest wait for a camera or a stream to open (s)."""
READ_TIMEOUT_S = 2.0
"""Longest wait for one frame of a stream (s): longer than any frame period, short enough to notice a dead stream."""
MS_PER_S = 1000.0


class OpenCvFrameSource:
    """``cv2.VideoCapture`` on ``source`` (an index or a URL; see :class:`robot.config.CameraConfig`)."""

    def __init__(self, source: int | str, config: CameraConfig) -> None:
        self.name = f"/dev/video{source}" if isinstance(source, int) else source
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(OPEN_TIMEOUT_S * MS_PER_S),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(READ_TIMEOUT_S * MS_PER_S)]
        if isinstance(source, int):
            cap = cv2.VideoCapture(source, cv2.CAP_V4L2)
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
            cap.set(cv2.CAP_PROP_FPS, config.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not one queued behind others
        else:
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, timeouts)
        if not cap.isOpened():
            cap.release()
            raise UserError(f"cannot open the camera {self.name} (camera.source) within {OPEN_TIMEOUT_S:g} s: no such "
                            "device, or no video stream at that address")
        self._cap: cv2.VideoCapture | None = cap

    def read(self) -> NDArray[np.uint8] | None:
        if self._cap is None:
            raise CameraLost(f"the camera {self.name} is closed")
        ok, frame = self._cap.read()
        if not ok or frame is None:
            return None
        return np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
