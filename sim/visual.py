"""Visual randomization: what the camera sees changes, the physics does not.

The visual parameters of a task (``ParamSpec`` kinds in :data:`sim.engines.base.VISUAL_KINDS`) act on rendering
only: colours of the scene's parts, the key light, the task cameras' pose and field of view, distractor objects on
the floor, and pixel-level effects on the rendered image. This module holds the pure functions both engines and the
env share, so the two engines cannot disagree about what a value means:

* :func:`jitter_camera`: a task camera moved and turned by the ``camera_*`` offsets (what
  :meth:`sim.camera.CameraSpec.project` of the result says is where the engines draw things).
* :func:`aimed_light`: the key light moved by the ``light_*`` offsets, still aimed where it was.
* :func:`distractor_layout`: the boxes and spheres ``distractor_count`` and ``distractor_seed`` put on the floor.
* :func:`postprocess`: brightness, contrast, blur and pixel noise on a rendered image (the env applies it, with a
  random stream of its own, so the physics' random stream is untouched).

Every function returns its input unchanged at the nominal values, so a nominal render is byte-identical to one
without visual randomization.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from sim.camera import CameraSpec, FloatArray, Vec3

# --- camera ------------------------------------------------------------------------------------------------
CAMERA_KINDS = ("camera_dx", "camera_dy", "camera_dz", "camera_droll", "camera_dpitch", "camera_dyaw", "camera_dfovy")
"""The camera-jitter kinds, in :class:`CameraJitter`'s field order."""


@dataclass(frozen=True)
class CameraJitter:
    """A task camera's offsets from its nominal pose and field of view."""

    dx: float = 0.0
    """Shift of the optical centre along world x (m)."""
    dy: float = 0.0
    """Shift of the optical centre along world y (m)."""
    dz: float = 0.0
    """Shift of the optical centre along world z (m)."""
    droll: float = 0.0
    """Turn about the camera's optical axis (its z, pointing backwards) (rad)."""
    dpitch: float = 0.0
    """Turn about the camera's x axis (right in the image) (rad): positive tilts the view up."""
    dyaw: float = 0.0
    """Turn about the camera's y axis (up in the image) (rad): positive turns the view left."""
    dfovy: float = 0.0
    """Change of the vertical field of view, ``2 atan(height / (2 fy))`` (rad); the principal point stays."""

    @property
    def is_zero(self) -> bool:
        """Whether the camera is exactly at its nominal pose and field of view."""
        return self == CameraJitter()

    def with_kind(self, kind: str, value: float) -> CameraJitter:
        """This jitter with the offset of ``kind`` (one of :data:`CAMERA_KINDS`) set to ``value``."""
        return replace(self, **{kind.removeprefix("camera_"): float(value)})


def _axis_rotation(axis: int, angle: float) -> FloatArray:
    c, s = math.cos(angle), math.sin(angle)
    i, j = (axis + 1) % 3, (axis + 2) % 3  # cyclic, so each is the right-handed turn about its axis
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _matrix_to_quat(r: FloatArray) -> tuple[float, float, float, float]:
    """A unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method: stable for every rotation)."""
    t = np.trace(r)
    if t > 0:
        s = 2.0 * math.sqrt(1.0 + t)
        q = (0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s)
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        v = [0.0, 0.0, 0.0]
        v[i] = 0.25 * s
        v[j] = (r[j, i] + r[i, j]) / s
        v[k] = (r[k, i] + r[i, k]) / s
        q = ((r[k, j] - r[j, k]) / s, v[0], v[1], v[2])
    n = math.sqrt(sum(x * x for x in q))
    return (q[0] / n, q[1] / n, q[2] / n, q[3] / n)


def fovy_scale(cam: CameraSpec, dfovy: float) -> float:
    """Factor on the image-plane extent (1 / focal length) when the vertical field of view grows by ``dfovy``
    (rad); a ``ValueError`` when the field of view leaves (0, pi)."""
    _, fy, _, _ = cam.intrinsics
    old = 2.0 * math.atan(0.5 * cam.height / fy)
    new = old + dfovy
    if not 0.0 < new < math.pi:
        raise ValueError(f"camera {cam.name!r}: a field of view of {math.degrees(old):g} deg changed by "
                         f"{math.degrees(dfovy):g} deg leaves (0, 180) deg")
    return math.tan(new / 2.0) / math.tan(old / 2.0)


def jitter_camera(cam: CameraSpec, jitter: CameraJitter) -> CameraSpec:
    """``cam`` moved by ``jitter``: position shifted in the world, orientation turned about the camera's own axes
    (``R · Rx(dpitch) · Ry(dyaw) · Rz(droll)``), focal lengths divided by :func:`fovy_scale`. ``cam`` itself at
    zero jitter."""
    if jitter.is_zero:
        return cam
    r = (cam.rotation @ _axis_rotation(0, jitter.dpitch) @ _axis_rotation(1, jitter.dyaw)
         @ _axis_rotation(2, jitter.droll))
    pos = (cam.position[0] + jitter.dx, cam.position[1] + jitter.dy, cam.position[2] + jitter.dz)
    scale = fovy_scale(cam, jitter.dfovy)
    fx, fy, cx, cy = cam.intrinsics
    return CameraSpec(cam.name, cam.width, cam.height, position=pos, orientation=_matrix_to_quat(r),
                      fx=fx / scale, fy=fy / scale, cx=cx, cy=cy)


# --- light -------------------------------------------------------------------------------------------------
LIGHT_AIM_PLANE_Z_M = 0.0
"""Height of the plane (m) where a light's nominal direction is taken to aim (the valve's base): a moved light turns
to keep aiming at the same point there."""


def light_aim(pos: Vec3, direction: Vec3) -> FloatArray:
    """Where a light at ``pos`` shining along ``direction`` hits the plane z = :data:`LIGHT_AIM_PLANE_Z_M` (m); one
    unit along ``direction`` when it never does."""
    p, d = np.asarray(pos, dtype=np.float64), np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    if d[2] < -1e-9:
        return p + d * (LIGHT_AIM_PLANE_Z_M - p[2]) / d[2]
    return p + d


def aimed_light(pos: Vec3, direction: Vec3, offset: Vec3) -> tuple[FloatArray, FloatArray]:
    """A light's position (m) and unit direction after moving it by ``offset`` (m), still aimed at
    :func:`light_aim` of its nominal pose."""
    aim = light_aim(pos, direction)
    new = np.asarray(pos, dtype=np.float64) + np.asarray(offset, dtype=np.float64)
    d = aim - new
    norm = float(np.linalg.norm(d))
    if norm < 1e-9:
        raise ValueError(f"a light moved to {new.tolist()} sits on the point it aims at")
    return new, d / norm


# --- distractors -------------------------------------------------------------------------------------------
MAX_DISTRACTORS = 8
"""Most distractor objects a scene gets (``distractor_count``'s upper bound)."""
DISTRACTOR_RING_M = (0.13, 0.21)
"""Distance range (m) of distractors from the valve axis: outside the fingers' reach (their mounts stand 0.09 m
out), inside the 0.3 m floor, partly in the top camera's view (it sees 0.15 m to the sides at the floor)."""
DISTRACTOR_SIZE_M = (0.008, 0.02)
"""Range of a distractor's half size (box) or radius (sphere) (m)."""


@dataclass(frozen=True)
class Distractor:
    """One visual-only object on the floor."""

    shape: str
    """``"box"`` or ``"sphere"``."""
    half_size: float
    """Half side of the cube, or the sphere's radius (m)."""
    position: Vec3
    """Centre in the world (m); it rests on the floor."""
    yaw: float
    """Turn of a box about the vertical (rad)."""
    rgba: tuple[float, float, float, float]
    """Colour (-), opaque."""


def distractor_layout(count: int, seed: int, floor_z: float) -> tuple[Distractor, ...]:
    """``count`` distractors resting on the floor at height ``floor_z`` (m), laid out by ``seed``: the first ``k``
    of a seed's layout are the same whatever the count, so raising the count adds objects without moving others."""
    if not 0 <= count <= MAX_DISTRACTORS:
        raise ValueError(f"distractor count must be in [0, {MAX_DISTRACTORS}], got {count}")
    rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(0xD15,)))
    out = []
    for _ in range(MAX_DISTRACTORS):
        radius = rng.uniform(*DISTRACTOR_RING_M)
        azimuth = rng.uniform(0.0, 2.0 * math.pi)
        half = rng.uniform(*DISTRACTOR_SIZE_M)
        shape = "box" if rng.uniform() < 0.5 else "sphere"
        yaw = rng.uniform(0.0, math.pi / 2)
        r, g, b = (float(v) for v in rng.uniform(0.0, 1.0, 3))
        out.append(Distractor(shape, float(half),
                              (float(radius * math.cos(azimuth)), float(radius * math.sin(azimuth)), floor_z + half),
                              float(yaw), (r, g, b, 1.0)))
    return tuple(out[:count])


# --- pixels --------------------------------------------------------------------------------------------
BLUR_RADIUS_SIGMAS = 3.0
"""The Gaussian blur kernel reaches this many standard deviations either side."""


@dataclass(frozen=True)
class ImageEffects:
    """Pixel-level effects on a rendered image, with intensities in units of full scale (255 for uint8)."""

    brightness: float = 0.0
    """Added to every channel of every pixel (-, full scale)."""
    contrast: float = 1.0
    """Factor on every pixel's difference from the image's mean grey (-)."""
    blur_sigma: float = 0.0
    """Standard deviation of a Gaussian blur (pixels)."""
    noise_std: float = 0.0
    """Standard deviation of independent Gaussian noise per pixel and channel (-, full scale)."""

    @property
    def is_identity(self) -> bool:
        """Whether these effects leave every image as it is."""
        return self == ImageEffects()


def gaussian_blur(image: NDArray[np.floating], sigma: float) -> NDArray[np.floating]:
    """A separable Gaussian blur of an (H, W, C) float image, edges reflected; the image's dtype is kept."""
    if sigma <= 0.0:
        return image
    radius = max(1, math.ceil(BLUR_RADIUS_SIGMAS * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(image.dtype)
    out = image
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.moveaxis(np.pad(out, pad, mode="reflect" if n > radius else "edge"), axis, 0)
        acc = kernel[0] * padded[0:n]
        for k in range(1, kernel.size):
            acc += kernel[k] * padded[k:k + n]
        out = np.moveaxis(acc, 0, axis)
    return out


def postprocess(image: NDArray[np.uint8], effects: ImageEffects, rng: np.random.Generator) -> NDArray[np.uint8]:
    """``image`` (H, W, 3 uint8) blurred, then contrast-stretched about its mean, brightened and noised, rounded and
    clipped to uint8. At :attr:`ImageEffects.is_identity` it is returned as it is and ``rng`` is not drawn from; noise
    draws ``H * W * 3`` float32 normals from ``rng``, so the same stream gives the same image."""
    if effects.is_identity:
        return image
    full = np.float32(255.0)
    # float32: a quarter of a grey level is far below what uint8 keeps, at half the time of float64.
    x = np.asarray(image, dtype=np.float32) / full
    x = gaussian_blur(x, effects.blur_sigma)
    if effects.contrast != 1.0:
        mean = x.mean(dtype=np.float64)
        x = (mean + effects.contrast * (x - mean)).astype(np.float32)
    if effects.brightness != 0.0:
        x += np.float32(effects.brightness)
    if effects.noise_std > 0.0:
        x += np.float32(effects.noise_std) * rng.standard_normal(x.shape, dtype=np.float32)
    return np.clip(np.rint(x * full), 0.0, full).astype(np.uint8)
