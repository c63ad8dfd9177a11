"""Labelled camera images for a valve-angle estimator: renders of random scene states under visual randomization.

Each sample is one still scene of the D'Claw valve turn: the valve at an angle drawn uniformly from [-pi, pi), the
fingers either near their reset pose (as while turning, where they cover the spokes) or anywhere in their joint
ranges, and the scene's visual parameters drawn from a :class:`~randomization.distributions.ParameterDistribution`
(colours, light, camera jitter, image effects). The label is the valve angle the simulator reads back after the
state is set, wrapped to [-pi, pi). Nothing is stepped: the physics never runs, so a finger placed inside a spoke is
rendered as it stands.

Three random streams, all from the one seed: the scene states, the parameter draws (the stream
:class:`~randomization.wrapper.RandomizedEnv` uses) and the image noise (the env's own,
:meth:`sim.env.SimEnv.render_camera`); the same seed and distribution give the same images, byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from randomization.distributions import ParameterDistribution, task_spec_name
from randomization.wrapper import check_applicable, param_rng
from s2r.core.errors import ParameterError, UserError
from sim import make_task, resolve_env_id
from sim.camera import CameraSpec
from sim.env import SimEnv
from sim.tasks.actions import wrap_angle

PERCEPTION_TASK = "dclaw-turn"
"""The task whose valve angle the estimator reads."""
PERCEPTION_CAMERA = "top"
"""The task camera it reads it from."""
STATE_STREAM_KEY = 0x5CE4E
"""Spawn key of the scene-state stream, apart from the parameter draws and the image noise of the same seed."""
HELD_OUT_KEY = 0xE7A1
"""Spawn key of a held-out set's seed: its images differ from the training images of the same seed."""


@dataclass(frozen=True)
class SceneConfig:
    """How the scene states of a dataset are drawn and rendered."""

    samples: int = 1000
    """Images to render (at least 1)."""
    engine: str = "mujoco"
    """Physics engine that renders them: ``mujoco`` or ``pybullet``."""
    seed: int = 0
    """Seed of the scene states, the parameter draws and the image noise."""
    near_reset_fraction: float = 0.5
    """Share of samples whose fingers are near their reset pose (-); the rest are uniform in the joint ranges."""
    near_reset_spread_rad: float = 0.35
    """Half width of the uniform offset of each finger joint from its reset pose (rad), clipped to its range."""
    held_out: bool = False
    """Draw from streams apart from the training set's (an evaluation): the same seed gives other images."""

    @property
    def stream_seed(self) -> int:
        """The seed of the three streams: ``seed``, or for a held-out set one derived from it."""
        if not self.held_out:
            return self.seed
        return int(np.random.SeedSequence(self.seed, spawn_key=(HELD_OUT_KEY,)).generate_state(1)[0])

    def validated(self) -> SceneConfig:
        """This config, or a :class:`ParameterError` naming the bad field."""
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise ParameterError("samples", f"must be a whole number >= 1, got {self.samples!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError("seed", f"must be a whole number >= 0, got {self.seed!r}")
        if not (math.isfinite(self.near_reset_fraction) and 0.0 <= self.near_reset_fraction <= 1.0):
            raise ParameterError("near_reset_fraction", f"must be in [0, 1], got {self.near_reset_fraction!r}")
        if not (math.isfinite(self.near_reset_spread_rad) and self.near_reset_spread_rad >= 0.0):
            raise ParameterError("near_reset_spread_rad", f"must be >= 0 rad, got {self.near_reset_spread_rad!r}")
        return self


@dataclass(frozen=True)
class AngleDataset:
    """Rendered images and the valve angles they show."""

    images: NDArray[np.uint8]
    """``(N, H, W, 3)`` RGB images of the camera."""
    angles: NDArray[np.float64]
    """``(N,)`` valve angle of each image (rad), in [-pi, pi)."""
    joint_pos: NDArray[np.float64]
    """``(N, J)`` finger joint positions of each image (rad)."""
    params: tuple[dict[str, float], ...]
    """The parameter values each image was rendered with."""
    camera: CameraSpec
    """The nominal camera (jitter parameters move it per image)."""
    skipped: tuple[str, ...]
    """Visual parameters of the distribution the engine cannot render, left out (e.g. distractors on PyBullet)."""


def renderable_part(distribution: ParameterDistribution, env: SimEnv) -> tuple[ParameterDistribution, tuple[str, ...]]:
    """``distribution`` without the visual parameters ``env``'s engine cannot render, and their names.

    Only visual parameters are left out (they change images, never a label); any other parameter the engine lacks
    is an error, as for training (:func:`randomization.wrapper.check_applicable`)."""
    unsupported = tuple(n for n in distribution.names()
                        if n in env.params.names() and not env.params.supported(n) and env.params.spec(n).is_visual)
    if not unsupported:
        check_applicable(distribution, env)
        return distribution, ()
    if distribution.joint is not None and set(unsupported) & set(distribution.joint.names):
        raise UserError(f"the joint Gaussian of the randomization holds {', '.join(unsupported)}, which the "
                        f"{env.engine.name} engine cannot render; give them as separate parameters")
    kept = ParameterDistribution(distribution.task,
                                 {n: m for n, m in distribution.marginals.items() if n not in unsupported},
                                 distribution.joint)
    check_applicable(kept, env)
    return kept, unsupported


def _scene_state(env: SimEnv, cfg: SceneConfig, rng: np.random.Generator) -> tuple[NDArray[np.float64], float]:
    spec = env.spec_
    low, high = np.asarray(spec.joint_low), np.asarray(spec.joint_high)
    if rng.uniform() < cfg.near_reset_fraction:
        offset = rng.uniform(-cfg.near_reset_spread_rad, cfg.near_reset_spread_rad, low.shape)
        joints = np.clip(spec.reset + offset, low, high)
    else:
        joints = rng.uniform(low, high)
    return joints, float(rng.uniform(-math.pi, math.pi))


def render_angle_dataset(cfg: SceneConfig, distribution: ParameterDistribution | None,
                         progress: Callable[[int], None] | None = None) -> AngleDataset:
    """``cfg.samples`` images of the task camera with their valve angles (see the module docstring).

    ``distribution`` (for the valve-turn task; ``None``: the nominal scene) gives each image's parameters; visual
    parameters the engine cannot render are left out and named in :attr:`AngleDataset.skipped`. ``progress`` is
    called with the number of images rendered so far."""
    cfg = cfg.validated()
    task = make_task(resolve_env_id(PERCEPTION_TASK))
    if distribution is not None and task_spec_name(distribution.task) != task.spec.name:
        raise UserError(f"the randomization is for task {distribution.task!r}; the valve-angle estimator needs one "
                        f"for {PERCEPTION_TASK!r}")
    env = SimEnv(task, engine=cfg.engine)
    try:
        camera = next(c for c in task.spec.cameras if c.name == PERCEPTION_CAMERA)
        skipped: tuple[str, ...] = ()
        if distribution is not None:
            distribution, skipped = renderable_part(distribution, env)
        seed = cfg.stream_seed
        env.reset(seed=seed)  # seeds the image-noise stream
        states = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(STATE_STREAM_KEY,)))
        draws = param_rng(seed)
        n = cfg.samples
        images = np.empty((n, camera.height, camera.width, 3), dtype=np.uint8)
        angles = np.empty(n)
        joints = np.empty((n, task.spec.n_joints))
        params: list[dict[str, float]] = []
        for i in range(n):
            values = distribution.sample(draws) if distribution is not None else {}
            env.params.assign(values)
            q, valve = _scene_state(env, cfg, states)
            env.engine.reset(q, np.array([valve]))
            state = env.read()
            images[i] = env.render_camera(PERCEPTION_CAMERA)
            angles[i] = float(wrap_angle(state.passive_pos[0]))
            joints[i] = state.joint_pos
            params.append(values)
            if progress is not None:
                progress(i + 1)
    finally:
        env.close()
    return AngleDataset(images, angles, joints, tuple(params), camera, skipped)


def angle_error_deg(predicted: NDArray[np.floating], true: NDArray[np.floating]) -> NDArray[np.float64]:
    """Absolute angle errors (deg), wrapped: 359 deg off is 1 deg off."""
    return np.abs(np.degrees(wrap_angle(np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64))))
