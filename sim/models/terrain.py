"""Uneven ground as a heightfield: one description, one height function, both engines.

A scene with a :class:`Terrain` carries, besides its flat floor, a square heightfield centred on the origin. Its
heights (m) come from :func:`terrain_heights` and three named parameters:

* ``terrain_roughness`` (m): standard deviation of random bumps, white noise on a lattice ``bump_spacing_m``
  apart, interpolated bilinearly onto the grid and scaled to exactly this standard deviation over the grid;
* ``terrain_slope`` (rad): an incline along world x, the walking direction (positive: uphill towards +x);
* ``terrain_seed`` (-): its integer part seeds the bump pattern, so a terrain is a pure function of the three.

The slope is in the heights, not a tilted gravity: the two are the same for contact dynamics on an infinite
incline, but only a real incline makes the IMU read the tilt and keeps the walk's target a horizontal 2 m away,
as on a real ramp. So that the robot never starts inside the ground, the whole field is lowered until its highest
point within ``pad_radius_m`` of the origin (where every task places the robot) is at z = 0: the robot, placed
just above z = 0, drops at most a few centimetres onto it.

While the terrain is flat (roughness and slope 0) the engines keep today's plane (MuJoCo) or box (PyBullet)
floor and the heightfield takes no part in contacts, so the nominal scene behaves exactly as a scene without
terrain. While it is not, the flat floor stays as the ground beyond the heightfield, lowered to just below its lowest
point (:func:`ground_height`): a robot that walks off the field's edge steps down onto ground. (Without it a
walk that wandered 3 m over unattended episodes fell out of the world, and PyBullet's physics diverged.) Across the
field's rim (``rim_m``) the heights descend smoothly to that lowest point, so walking off the field, or back onto
it, crosses no ledge.

Grid layout (both engines): ``heights[i, j]`` is the height at ``y = -h + i * spacing``,
``x = -h + j * spacing``, ``h`` the half extent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from sim.tasks.spec import FloatArray


@dataclass(frozen=True)
class Terrain:
    """Extent, resolution and limits of a scene's heightfield."""

    name: str = "terrain"
    """Name of the MJCF heightfield asset and of its geom."""
    body: str = "floor"
    """The static body (MJCF) or link (URDF) carrying the ground; its friction is the terrain's friction."""
    half_extent_m: float = 3.0
    """Half side of the square heightfield (m): the walk's target lies 2 m ahead."""
    spacing_m: float = 0.04
    """Distance between grid points (m): two foot diameters."""
    bump_spacing_m: float = 0.16
    """Distance between independent bump heights (m); between them heights are interpolated."""
    pad_radius_m: float = 0.3
    """Radius around the origin (m) whose highest point is put at z = 0: the robot's start footprint lies inside."""
    max_roughness_m: float = 0.05
    """Largest ``terrain_roughness`` accepted (m)."""
    max_slope_rad: float = 0.35
    """Largest ``terrain_slope`` magnitude accepted (rad, 20 degrees)."""
    base_m: float = 0.1
    """Thickness of the solid below the lowest height (m)."""
    rim_m: float = 0.5
    """Width of the field's rim (m): across it the heights descend smoothly to the field's lowest point, where the flat
    ground beyond meets the field, so a robot walking off or back onto the field crosses no ledge. The walk's start
    and target (2 m ahead) lie well inside."""

    def __post_init__(self) -> None:
        n = 2.0 * self.half_extent_m / self.spacing_m
        if abs(n - round(n)) > 1e-9 or n < 2:
            raise ValueError(f"terrain half_extent_m {self.half_extent_m} m must be a whole number of spacings "
                             f"({self.spacing_m} m)")
        if not 0.0 <= self.rim_m <= self.half_extent_m - self.pad_radius_m:
            raise ValueError(f"terrain rim_m {self.rim_m} m must be in [0, {self.half_extent_m - self.pad_radius_m:g}] "
                             "m: the rim may not reach the start pad")

    @property
    def n(self) -> int:
        """Grid points per side."""
        return round(2.0 * self.half_extent_m / self.spacing_m) + 1

    @property
    def height_range_m(self) -> float:
        """Span of heights every allowed terrain fits in (m), centred on z = 0: MuJoCo's fixed elevation scale."""
        incline = (self.half_extent_m + self.pad_radius_m) * math.tan(self.max_slope_rad)
        return 2.0 * (incline + MAX_BUMP_SIGMAS * self.max_roughness_m)

    def axis(self) -> FloatArray:
        """Grid coordinates along x (and y) (m)."""
        return np.linspace(-self.half_extent_m, self.half_extent_m, self.n)


MAX_BUMP_SIGMAS = 12.0
"""Headroom for bumps in standard deviations (-): 6 for the highest bump, 6 for the pad's highest point below it."""
DEFAULT_TERRAIN = Terrain()
GROUND_BELOW_M = 0.001
"""Gap between the heightfield's lowest point and the flat ground beyond it (m): under the field the ground is
never touched, since nothing reaches through the field."""


def ground_height(heights: FloatArray) -> float:
    """Height of the flat ground under and beyond a heightfield of these heights (m)."""
    return float(np.min(heights)) - GROUND_BELOW_M


def task_terrain(task: object) -> Terrain | None:
    """The heightfield of a task's scene (its ``terrain`` attribute), or ``None`` for a scene without one."""
    terrain = getattr(task, "terrain", None)
    return terrain if isinstance(terrain, Terrain) else None


def is_flat(roughness: float, slope: float) -> bool:
    """Whether these values describe the flat floor (the scene's own, not the heightfield)."""
    return roughness == 0.0 and slope == 0.0


@lru_cache(maxsize=16)
def _unit_bumps(terrain: Terrain, seed: int) -> FloatArray:
    """Bumps of zero mean and unit standard deviation over the grid, from ``seed`` alone (read-only)."""
    rng = np.random.default_rng(seed)
    coarse_n = math.ceil(2.0 * terrain.half_extent_m / terrain.bump_spacing_m) + 1
    coarse = rng.standard_normal((coarse_n, coarse_n))
    u = (terrain.axis() + terrain.half_extent_m) / terrain.bump_spacing_m
    i0 = np.minimum(np.floor(u).astype(np.int64), coarse_n - 2)
    f = u - i0
    # Bilinear interpolation: rows along y, columns along x.
    rows = coarse[i0] * (1.0 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    grid = rows[:, i0] * (1.0 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    grid = (grid - grid.mean()) / grid.std()
    grid.setflags(write=False)
    return grid


def terrain_heights(terrain: Terrain, roughness: float, slope: float, seed: float) -> FloatArray:
    """Heights (m) on the grid, shape (n, n): rows along y, columns along x (see the module docstring)."""
    if not 0.0 <= roughness <= terrain.max_roughness_m:
        raise ValueError(f"terrain_roughness {roughness!r} m is outside [0, {terrain.max_roughness_m}]")
    if not abs(slope) <= terrain.max_slope_rad:
        raise ValueError(f"terrain_slope {slope!r} rad is outside [-{terrain.max_slope_rad}, {terrain.max_slope_rad}]")
    x = terrain.axis()
    heights = np.broadcast_to(math.tan(slope) * x, (terrain.n, terrain.n)).copy()
    if roughness > 0.0:
        heights += roughness * _unit_bumps(terrain, math.floor(seed))
    xx, yy = np.meshgrid(x, x)
    heights -= heights[np.hypot(xx, yy) <= terrain.pad_radius_m].max()
    if terrain.rim_m > 0.0:
        # Down to the lowest point across the rim (a smoothstep in the distance to the border): the ground beyond
        # lies just below it, so the field's edge is no ledge. Without it an unattended walk that had wandered to
        # the edge of 5 mm bumps could not climb back on (a step of up to 2 cm), and fell.
        low = heights.min()
        inside = np.clip((terrain.half_extent_m - np.maximum(np.abs(xx), np.abs(yy))) / terrain.rim_m, 0.0, 1.0)
        rim = inside < 1.0  # inside the rim the field stays exactly as it was
        heights[rim] = low + (inside * inside * (3.0 - 2.0 * inside))[rim] * (heights[rim] - low)
    limit = terrain.height_range_m / 2.0
    if np.abs(heights).max() > limit:
        raise ValueError(f"terrain heights reach {np.abs(heights).max():.3f} m, beyond the +-{limit:.3f} m the "
                         "heightfield holds")
    return heights

