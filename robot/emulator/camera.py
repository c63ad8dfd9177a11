"""The emulated robot's camera: the reality's rendering of the task camera, as an MJPEG stream over HTTP on loopback.

It runs in the emulator's one serving thread next to the servo chain and shares its physics (the renderers of both
engines belong to the thread that made them): every ``1 / camera.fps`` s the serving loop renders the task camera
from the simulated state (at most one physics step old), with the reality file's look (its visual parameters, applied
to the engine like the physical ones, and its ``image_*`` pixel effects with a noise stream of their own), encodes it
as JPEG and hands it to every connected client. A loop that wakes late renders one frame for the missed due times
(``camera_frames_merged``). In lock-step nothing is periodic: each frame request of the client renders the frame of
the present simulated time (:meth:`EmulatedCamera.frame`), so the frame a cycle reads shows that cycle's state.

The stream (:class:`MjpegServer`) is what a network camera serves: ``GET /`` on ``127.0.0.1:<port>`` (the OS picks
the port) answers ``multipart/x-mixed-replace`` with one ``image/jpeg`` part per frame, so ``cv2.VideoCapture(url)``
opens it as it would a real one. A client that connects first gets :data:`PRIME_FRAMES` copies of the newest frame:
FFmpeg's MJPEG probe reads that much before ``VideoCapture`` returns, and in lock-step no frame comes while the
client is still opening. Each connection counts the frames queued for it; the lock-step client reads up to that
count. A client that does not keep up is a slow network: its queue drops the oldest frames beyond
:data:`MAX_QUEUED_FRAMES` (``camera_frames_dropped``).
"""

from __future__ import annotations

import socket
import threading
from collections import Counter, deque
from collections.abc import Callable

import cv2
import numpy as np
from numpy.typing import NDArray

from robot.config import CameraConfig
from robot.emulator.schedule import FrameSchedule
from sim.visual import ImageEffects, postprocess

LOOPBACK = "127.0.0.1"
JPEG_QUALITY = 95
"""JPEG quality of the stream's frames (0-100): a network camera's high setting; its artefacts are the stream's."""
PRIME_FRAMES = 3
"""Copies of the newest frame a new client gets first: FFmpeg's MJPEG probe reads two frames and the start of a third
before ``cv2.VideoCapture`` opens a stream (measured with opencv-python-headless 4.14, FFmpeg's libavformat 62)."""
MAX_QUEUED_FRAMES = 64
"""Most frames queued for one client; older ones are dropped (a real stream's server drops them too)."""
BOUNDARY = b"s2rframe"
REQUEST_BYTES = 4096
SEND_TIMEOUT_S = 5.0
"""Longest a blocked send to one client may take before that client is dropped (s)."""


def jpeg(image: NDArray[np.uint8]) -> bytes:
    """An RGB uint8 image as JPEG bytes at :data:`JPEG_QUALITY`."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"OpenCV could not encode a frame of shape {image.shape} as JPEG")
    return bytes(data.tobytes())


def mjpeg_part(data: bytes) -> bytes:
    """One part of the multipart stream: the boundary, its headers and the JPEG."""
    return (b"--" + BOUNDARY + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
            + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")


class _Client:
    """One connected client: its frames waiting to be sent, and how many were queued in all."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.dropped = 0
        self.alive = True


class MjpegServer:
    """An MJPEG stream on ``127.0.0.1:<port>`` (any free port), one thread per client; see the module docstring."""

    def __init__(self) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(4)
        self.port: int = self._listener.getsockname()[1]
        """The TCP port the OS chose."""
        self._cond = threading.Condition()
        self._clients: list[_Client] = []
        self._latest: bytes | None = None
        self._closed = False
        self._accepter = threading.Thread(target=self._accept, name="mjpeg accept", daemon=True)
        self._accepter.start()

    @property
    def url(self) -> str:
        """The stream's address, for ``cv2.VideoCapture``."""
        return f"http://{LOOPBACK}:{self.port}/"

    def publish(self, data: bytes) -> None:
        """A new frame (JPEG bytes) for every connected client."""
        with self._cond:
            self._latest = data
            for client in self._clients:
                self._enqueue(client, data)
            self._cond.notify_all()

    def _enqueue(self, client: _Client, data: bytes) -> None:
        client.queue.append(data)
        client.queued += 1
        while len(client.queue) > MAX_QUEUED_FRAMES:
            client.queue.popleft()
            client.dropped += 1

    @property
    def newest_client_frames(self) -> int:
        """Frames queued in all for the newest live client (0 without one): what a lock-step reader reads up to."""
        with self._cond:
            live = [c for c in self._clients if c.alive]
            return live[-1].queued if live else 0

    @property
    def dropped(self) -> int:
        """Frames dropped from slow clients' queues."""
        with self._cond:
            return sum(c.dropped for c in self._clients)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve_client, args=(sock,), name="mjpeg client", daemon=True).start()

    def _serve_client(self, sock: socket.socket) -> None:
        sock.settimeout(SEND_TIMEOUT_S)
        try:
            sock.recv(REQUEST_BYTES)  # any request gets the stream: there is one resource
            sock.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=" + BOUNDARY
                         + b"\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n")
        except OSError:
            sock.close()
            return
        client = _Client(sock)
        with self._cond:
            if self._closed:
                sock.close()
                return
            if self._latest is not None:
                for _ in range(PRIME_FRAMES):
                    self._enqueue(client, self._latest)
            self._clients.append(client)
        try:
            while True:
                with self._cond:
                    while not client.queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    data = client.queue.popleft()
                sock.sendall(mjpeg_part(data))
        except OSError:
            pass  # the client went away
        finally:
            with self._cond:
                client.alive = False
                if client in self._clients:
                    self._clients.remove(client)
            sock.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            clients = list(self._clients)
        self._listener.close()
        for client in clients:
            try:
                client.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class EmulatedCamera:
    """The task camera of the emulated scene on an MJPEG stream; :meth:`serve` is called by the serving loop whenever
    it wakes (real time), :meth:`frame` by a lock-step client's request."""

    def __init__(self, config: CameraConfig, render: Callable[[str], NDArray[np.uint8]], effects: ImageEffects,
                 seed: int, *, t_start: float) -> None:
        self.config = config
        self._render = render
        self._effects = effects
        self._rng = np.random.default_rng([seed, 3])  # apart from the servos', the IMU's and the tracker's streams
        self._schedule = FrameSchedule(config.frame_period_s, t_start)
        self.server = MjpegServer()
        self.stats: Counter[str] = Counter()
        """``camera_frames`` rendered, ``camera_frames_merged``."""

    @property
    def url(self) -> str:
        """The stream's address."""
        return self.server.url

    def open(self) -> None:
        """Render the first frame, so that a client connecting before the first due time gets one."""
        self._publish()

    def next_due(self) -> float:
        """When the next frame falls due (s, the serving loop's clock)."""
        return self._schedule.next_due

    def serve(self, now: float) -> None:
        """Render and send the frame that fell due, if one did."""
        missed = self._schedule.due(now)
        if missed is None:
            return
        self.stats["camera_frames_merged"] += missed
        self._publish()

    def frame(self) -> int:
        """Lock-step: render the frame of the present state now; the frames queued in all for the newest client."""
        self._publish()
        return self.server.newest_client_frames

    def _publish(self) -> None:
        image = postprocess(np.asarray(self._render(self.config.name), dtype=np.uint8), self._effects, self._rng)
        self.server.publish(jpeg(image))
        self.stats["camera_frames"] += 1

    def close(self) -> None:
        self.server.close()
