"""Reading a camera: the newest valid frame, stamped with the host time it arrived, for the controller's cycle.

A camera delivers frames at its own rate whether anyone reads them or not, and a read blocks until the next one. In
real time a background thread (:meth:`CameraReader.start`) reads the source without pause and keeps the newest valid
frame, so the controller's :meth:`CameraReader.poll` never waits and never gets a frame that queued up behind others.
A frame of the wrong size or dtype is counted (``rejected``) and dropped; a source that stops delivering shows as a
frame that stops getting younger, which the controller's ``camera.max_frame_age_s`` watchdog turns into a safety stop.
A source that fails to read counts a read error; a source that is gone for good (:class:`CameraLost`) is raised by
the next poll as :class:`robot.bus.PortLost`: the controller stops as ``port_lost``.

**Lock-step** (``expected``, a lock-step emulator's frame request): no thread. Each :meth:`~CameraReader.poll` has the
emulator render the frame of the present simulated time and learns how many frames its stream has carried in total;
it reads exactly up to that count, so the frame it returns is the one rendered from the state of that cycle, however
late the host's network stack hands it over, and a run is the same on an idle or a loaded machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from robot.bus import PortLost
from robot.config import CameraConfig
from robot.streams import StreamCounters

REJECT_KINDS = ("shape", "read")
"""Kinds of rejected frames: ``shape`` not an RGB uint8 frame of the configured size; ``read`` a read that returned
no frame (a timeout, a broken stream)."""
MAX_READ_ERRORS_IN_A_ROW = 50
"""The background thread gives up after this many failed reads in a row (the stream is gone): the frame goes stale,
and the watchdog stops the robot."""


CLOSE_TIMEOUT_S = 5.0
"""Longest wait for the background thread's read in progress to end at :meth:`CameraReader.close` (s)."""


class CameraLost(OSError):
    """The camera is gone for good (unplugged, the stream closed)."""


class FrameSource(Protocol):
    """Where frames come from: ``cv2.VideoCapture`` (:class:`robot.camera.opencv.OpenCvFrameSource`), or a fake."""

    @property
    def name(self) -> str:
        """What it reads (a device index or URL), for messages."""
        ...

    def read(self) -> NDArray[np.uint8] | None:
        """The next frame (RGB uint8, height x width x 3), blocking until it arrives; ``None`` when the read failed
        (a timeout); :class:`CameraLost` when the camera is gone."""
        ...

    def close(self) -> None:
        """Release the camera; idempotent."""
        ...


@dataclass(frozen=True)
class CameraFrame:
    """The newest valid frame."""

    image: NDArray[np.uint8]
    """RGB uint8, height x width x 3."""
    sequence: int
    """Valid frames taken before it (0 for the first)."""
    receive_time: float
    """Host time it was read (s, the reader's clock)."""


@dataclass(frozen=True, kw_only=True)
class CameraCounters(StreamCounters):
    """A snapshot of a camera reader's counters: ``received`` valid frames, ``rejected`` ones by kind
    (:data:`REJECT_KINDS`)."""

    ITEMS: ClassVar[str] = "frames"
    REJECTED: ClassVar[str] = "bad"
    MISSED: ClassVar[str] = "frames_missed"
    KINDS: ClassVar[tuple[str, ...] | None] = REJECT_KINDS


class CameraSource(Protocol):
    """What the controller needs from a camera; :class:`CameraReader` implements it."""

    def poll(self) -> CameraFrame | None:
        """The newest valid frame (``None`` before the first); :class:`robot.bus.PortLost` when the camera is gone."""
        ...

    @property
    def counters(self) -> CameraCounters:
        """Every counter, as a snapshot."""
        ...

    def close(self) -> None:
        """Release the camera; idempotent."""
        ...


class CameraReader:
    """Frames of ``source`` checked against ``config``; see the module docstring. ``expected``: lock-step (the
    emulator's frame request, returning the total frames its stream has carried to this reader)."""

    def __init__(self, source: FrameSource, config: CameraConfig, *, clock: Callable[[], float] = time.monotonic,
                 expected: Callable[[], int] | None = None) -> None:
        self.source = source
        self.config = config
        self._clock = clock
        self._expected = expected
        self._lock = threading.Lock()
        self._latest: CameraFrame | None = None
        self._read = 0
        self._received = 0
        self._rejected = dict.fromkeys(REJECT_KINDS, 0)
        self._lost: CameraLost | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def frames_read(self) -> int:
        """Frames taken from the source, good or bad (lock-step: what the emulator's total counts)."""
        return self._read

    def grab(self) -> bool:
        """Read one frame from the source (blocking) and keep it if it is valid; whether the source delivered one."""
        try:
            image = self.source.read()
        except CameraLost as exc:
            with self._lock:
                self._lost = exc
            raise
        now = self._clock()
        with self._lock:
            if image is None:
                self._rejected["read"] += 1
                return False
            self._read += 1
            shape = (self.config.height, self.config.width, 3)
            if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.shape == shape):
                self._rejected["shape"] += 1
                return True
            self._latest = CameraFrame(image, self._received, now)
            self._received += 1
        return True

    def start(self) -> None:
        """Real time: read the source without pause in a background thread (a daemon, ended by :meth:`close`)."""
        if self._expected is not None:
            raise ValueError("a lock-step camera reader reads on poll, not in a thread")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"camera {self.source.name}", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failed = 0
        while not self._stop.is_set():
            try:
                failed = 0 if self.grab() else failed + 1
            except CameraLost:
                return
            if failed >= MAX_READ_ERRORS_IN_A_ROW:
                with self._lock:
                    self._lost = CameraLost(f"the camera {self.source.name} gave no frame in {failed} reads in a row")
                return

    def poll(self) -> CameraFrame | None:
        if self._expected is not None:
            want = self._expected()
            while self._read < want and self._lost is None:
                try:
                    self.grab()
                except CameraLost:
                    break
                if self._rejected["read"] >= MAX_READ_ERRORS_IN_A_ROW:
                    self._lost = CameraLost(f"{want - self._read} frames the emulator sent did not arrive")
        with self._lock:
            if self._lost is not None:
                raise PortLost(f"camera {self.source.name} lost: {self._lost}")
            return self._latest

    @property
    def latest(self) -> CameraFrame | None:
        """The newest valid frame, without polling."""
        with self._lock:
            return self._latest

    @property
    def counters(self) -> CameraCounters:
        with self._lock:
            return CameraCounters(received=self._received, rejected=dict(self._rejected),
                                  last_receive_time=None if self._latest is None else self._latest.receive_time)

    def close(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            # Released under a read in progress, a capture may crash: the thread's read times out first.
            thread.join(timeout=CLOSE_TIMEOUT_S)
        self.source.close()

    def __enter__(self) -> CameraReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
