"""Cameras of a task: where they are, what they see, and how a world point lands on their image.

One :class:`CameraSpec` is the whole description both engines render from: MuJoCo as a named camera in the
scene's MJCF (:meth:`CameraSpec.mjcf`), PyBullet with the view and projection matrices built here
(:meth:`CameraSpec.view_matrix`, :meth:`CameraSpec.projection_matrix`). :meth:`CameraSpec.project` is the
analytic projection the renders are tested against.

Conventions:

* **Camera frame**: x to the right of the image, y up, looking along -z (MuJoCo's and OpenGL's camera frame).
  ``orientation`` is this frame's rotation in the world as a quaternion (w, x, y, z).
* **Pixels**: ``u`` to the right, ``v`` down, in pixels from the top-left *corner* of the image, so the pixel in
  row ``r`` and column ``c`` of a rendered array covers ``[c, c + 1) x [r, r + 1)`` and its centre is
  ``(c + 0.5, r + 0.5)``. A camera with its principal point at the centre has ``cx = width / 2``,
  ``cy = height / 2``. Intrinsics follow the pinhole model ``u = fx * X / Z + cx``, ``v = fy * Y / Z + cy``
  with (X, Y, Z) = (x, -y, -z) in the camera frame (the OpenCV camera frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Vec3 = tuple[float, float, float]
FloatArray = NDArray[np.float64]

CAMERA_NEAR_M = 0.01
"""Near clipping distance of the projection matrix (m)."""
CAMERA_FAR_M = 5.0
"""Far clipping distance of the projection matrix (m)."""
_PARALLEL_TOL = 1e-6
"""Smallest |sin| between a look-at direction and its up vector: below it the image's roll is undefined."""


def _vec(label: str, name: str, value: tuple[float, ...], n: int) -> tuple[float, ...]:
    if len(value) != n or not all(isinstance(v, int | float) and math.isfinite(v) for v in value):
        raise ValueError(f"camera {name!r}: {label} must be {n} finite numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _quat_to_matrix(q: FloatArray) -> FloatArray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


@dataclass(frozen=True)
class CameraSpec:
    """A world-fixed pinhole camera: its name, image size, intrinsics and pose (see the module conventions).

    Give the intrinsics either as ``fovy_deg`` (square pixels, principal point at the image centre) or as all of
    ``fx, fy, cx, cy``; give the orientation either as a ``target`` to look at (with ``up``) or as an
    ``orientation`` quaternion.
    """

    name: str
    """Name the engines render it by (:meth:`sim.engines.base.Engine.render_camera`) and the MJCF camera's name."""
    width: int
    """Image width (pixels)."""
    height: int
    """Image height (pixels)."""
    position: Vec3
    """Optical centre in the world frame (m)."""
    target: Vec3 | None = None
    """World point (m) the optical axis passes through; ``None`` when ``orientation`` is given."""
    up: Vec3 = (0.0, 0.0, 1.0)
    """World direction (-) that points up in the image when looking at ``target``; must not be parallel to the
    viewing direction. Unused with ``orientation``."""
    orientation: tuple[float, float, float, float] | None = None
    """Rotation (w, x, y, z) of the camera frame (x right, y up, looking along -z) in the world; ``None`` when
    ``target`` is given. Normalized on use."""
    fovy_deg: float | None = None
    """Vertical field of view (deg), with square pixels and the principal point at the centre; ``None`` when
    ``fx, fy, cx, cy`` are given."""
    fx: float | None = None
    """Horizontal focal length (pixels)."""
    fy: float | None = None
    """Vertical focal length (pixels)."""
    cx: float | None = None
    """Principal point's column (pixels from the left edge)."""
    cy: float | None = None
    """Principal point's row (pixels from the top edge)."""

    def __post_init__(self) -> None:
        n = self.name
        if not (isinstance(n, str) and n and n.replace("_", "").replace("-", "").isalnum()):
            raise ValueError(f"camera name must be a non-empty word (letters, digits, '_', '-'), got {n!r}")
        for label, v in (("width", self.width), ("height", self.height)):
            if not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
                raise ValueError(f"camera {n!r}: {label} must be a positive whole number of pixels, got {v!r}")
        _vec("position", n, self.position, 3)
        _vec("up", n, self.up, 3)
        if (self.target is None) == (self.orientation is None):
            raise ValueError(f"camera {n!r}: give exactly one of target (a point to look at) and orientation "
                             f"(a quaternion w, x, y, z)")
        if self.target is not None:
            forward = np.subtract(_vec("target", n, self.target, 3), self.position)
            up = np.asarray(self.up, dtype=np.float64)
            if np.linalg.norm(forward) < _PARALLEL_TOL or np.linalg.norm(up) < _PARALLEL_TOL:
                raise ValueError(f"camera {n!r}: target must differ from position and up must be non-zero")
            sin = np.linalg.norm(np.cross(forward, up)) / (np.linalg.norm(forward) * np.linalg.norm(up))
            if sin < _PARALLEL_TOL:
                raise ValueError(f"camera {n!r}: up {self.up} is parallel to the viewing direction; "
                                 f"expected a direction that is up in the image")
        if self.orientation is not None:
            q = _vec("orientation", n, self.orientation, 4)
            if np.linalg.norm(q) < _PARALLEL_TOL:
                raise ValueError(f"camera {n!r}: orientation must be a non-zero quaternion (w, x, y, z)")
        intrinsics = (self.fx, self.fy, self.cx, self.cy)
        if self.fovy_deg is not None:
            if any(v is not None for v in intrinsics):
                raise ValueError(f"camera {n!r}: give either fovy_deg or fx, fy, cx, cy, not both")
            if not (math.isfinite(self.fovy_deg) and 0.0 < self.fovy_deg < 180.0):
                raise ValueError(f"camera {n!r}: fovy_deg must be a field of view in (0, 180) degrees, "
                                 f"got {self.fovy_deg!r}")
        else:
            if any(v is None for v in intrinsics):
                raise ValueError(f"camera {n!r}: give fovy_deg, or all of fx, fy, cx, cy (pixels); got "
                                 f"fx={self.fx}, fy={self.fy}, cx={self.cx}, cy={self.cy}")
            fx, fy, _, _ = _vec("fx, fy, cx, cy", n, intrinsics, 4)  # type: ignore[arg-type]
            if fx <= 0 or fy <= 0:
                raise ValueError(f"camera {n!r}: focal lengths fx, fy must be positive pixels, got {fx}, {fy}")

    # --- intrinsics -------------------------------------------------------------------------------
    @property
    def intrinsics(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in pixels, derived from ``fovy_deg`` where that is how the camera is given."""
        if self.fovy_deg is not None:
            f = 0.5 * self.height / math.tan(math.radians(self.fovy_deg) / 2.0)
            return f, f, 0.5 * self.width, 0.5 * self.height
        assert self.fx is not None and self.fy is not None and self.cx is not None and self.cy is not None
        return self.fx, self.fy, self.cx, self.cy

    @property
    def matrix(self) -> FloatArray:
        """The 3x3 intrinsic matrix K (pixels)."""
        fx, fy, cx, cy = self.intrinsics
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])

    # --- pose -------------------------------------------------------------------------------------
    @property
    def rotation(self) -> FloatArray:
        """World-from-camera rotation (3x3): its columns are the camera's x (right), y (up) and z (backwards)
        axes in the world frame."""
        if self.orientation is not None:
            q = np.asarray(self.orientation, dtype=np.float64)
            return _quat_to_matrix(q / np.linalg.norm(q))
        assert self.target is not None
        back = np.subtract(self.position, self.target).astype(np.float64)
        back /= np.linalg.norm(back)
        right = np.cross(np.asarray(self.up, dtype=np.float64), back)
        right /= np.linalg.norm(right)
        return np.column_stack([right, np.cross(back, right), back])

    def project(self, points: FloatArray) -> FloatArray:
        """Pixel coordinates ``(u, v)`` of world points (m), shape (..., 3) -> (..., 2); points behind the camera
        give ``nan``."""
        p = np.asarray(points, dtype=np.float64)
        cam = (p - np.asarray(self.position)) @ self.rotation  # camera-frame coordinates, row vectors
        depth = -cam[..., 2]
        fx, fy, cx, cy = self.intrinsics
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(depth > 0, fx * cam[..., 0] / depth + cx, np.nan)
            v = np.where(depth > 0, -fy * cam[..., 1] / depth + cy, np.nan)
        return np.stack([u, v], axis=-1)

    # --- the engines' forms -----------------------------------------------------------------------
    def mjcf(self) -> str:
        """The ``<camera>`` element of a MuJoCo world body that renders this camera at its own resolution."""
        r = self.rotation
        xyaxes = " ".join(f"{v:.9g}" for v in (*r[:, 0], *r[:, 1]))
        pos = " ".join(f"{v:.9g}" for v in self.position)
        head = f'<camera name="{self.name}" pos="{pos}" xyaxes="{xyaxes}"'
        if self.fovy_deg is not None:
            return f'{head} fovy="{self.fovy_deg:.9g}"/>'
        fx, fy, cx, cy = self.intrinsics
        # MuJoCo's sensor is the image in pixels; its principal point is the optical axis's offset from the
        # sensor's centre, measured leftwards and upwards (checked against project() by tests/test_cameras.py).
        px, py = 0.5 * self.width - cx, 0.5 * self.height - cy
        return (f'{head} resolution="{self.width} {self.height}" sensorsize="{self.width} {self.height}" '
                f'focalpixel="{fx:.9g} {fy:.9g}" principalpixel="{px:.9g} {py:.9g}"/>')

    def view_matrix(self) -> list[float]:
        """The OpenGL view matrix (world to camera frame), 16 values in column-major order, as PyBullet takes it."""
        r = self.rotation
        view = np.eye(4)
        view[:3, :3] = r.T
        view[:3, 3] = -r.T @ np.asarray(self.position, dtype=np.float64)
        return [float(v) for v in view.T.reshape(-1)]

    def projection_matrix(self, near: float = CAMERA_NEAR_M, far: float = CAMERA_FAR_M,
                          pixel_shift: tuple[float, float] = (0.0, 0.0)) -> list[float]:
        """The OpenGL projection matrix of the intrinsics (clip space with y up, so image row 0 is the top), 16
        values in column-major order, as PyBullet takes it.

        ``pixel_shift`` (pixels, right and down) moves the principal point, for a rasterizer that samples pixels
        elsewhere than at their centres."""
        fx, fy, cx, cy = self.intrinsics
        cx, cy = cx + pixel_shift[0], cy + pixel_shift[1]
        w, h = self.width, self.height
        proj = np.zeros((4, 4))
        proj[0, 0] = 2.0 * fx / w
        proj[0, 2] = 1.0 - 2.0 * cx / w
        proj[1, 1] = 2.0 * fy / h
        proj[1, 2] = 2.0 * cy / h - 1.0
        proj[2, 2] = -(far + near) / (far - near)
        proj[2, 3] = -2.0 * far * near / (far - near)
        proj[3, 2] = -1.0
        return [float(v) for v in proj.T.reshape(-1)]
