"""Roll a policy out in a simulated task and keep the frames; write them as an animated GIF.

Shared by ``s2r render`` and anything else that shows a rollout (e.g. a demo): the caller builds the
env and the policy, this module only steps, renders and writes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.env import SimEnv

Policy = Callable[[np.ndarray], np.ndarray]
"""Observation in, normalized action in [-1, 1] out (the shape of the env's action space)."""

MS_PER_S = 1000.0


@dataclass(frozen=True)
class FrameOptions:
    """How each frame of a rollout is rendered."""

    width: int = 320
    """Image width (pixels)."""
    height: int = 240
    """Image height (pixels)."""
    camera: str | None = None
    """Named camera of the scene; ``None`` for the engine's default view."""
    inset: str | None = None
    """A task camera whose image (what a policy reading that camera sees, :meth:`SimEnv.render_camera`: its
    resolution, the visual parameters and pixel effects) is drawn in the frame's top-left corner, framed in white;
    ``None`` for none."""

    def __post_init__(self) -> None:
        for label, v in (("width", self.width), ("height", self.height)):
            if not (isinstance(v, int) and v > 0):
                raise UserError(f"frame {label} must be a positive number of pixels, got {v!r}")


@dataclass
class Rollout:
    """What a rendered rollout produced."""

    frames: list[np.ndarray] = field(default_factory=list)
    """RGB frames (height, width, 3) uint8: the reset state, then one per control step, episode after episode."""
    returns: list[float] = field(default_factory=list)
    """Sum of rewards of each episode."""
    successes: list[bool] = field(default_factory=list)
    """Whether each episode ended with the task's success condition met."""
    frame_period: float = 0.0
    """Simulated time between two frames (s): the control period."""


def random_policy(action_space: gym.Space, seed: int) -> Policy:
    """A policy that ignores the observation and draws seeded uniform actions from a bounded Box ``action_space``."""
    if not isinstance(action_space, gym.spaces.Box) or not action_space.is_bounded():
        raise TypeError(f"random actions need a bounded Box action space, got {action_space}")
    rng = np.random.default_rng(seed)
    low = np.asarray(action_space.low, dtype=np.float64)
    high = np.asarray(action_space.high, dtype=np.float64)

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high).astype(action_space.dtype)

    return act


def sim_env(env: gym.Env) -> SimEnv:
    """The :class:`~sim.env.SimEnv` inside ``env``'s wrappers."""
    inner = env.unwrapped
    if not isinstance(inner, SimEnv):
        raise TypeError(f"rendering needs an s2r simulated env, got {type(inner).__name__}")
    return inner


def render_frame(env: gym.Env, options: FrameOptions) -> np.ndarray:
    """The current scene of ``env`` as an RGB image, with the ``inset`` camera's image in its corner; an unknown
    camera is a ``UserError`` naming it."""
    sim = sim_env(env)
    engine = sim.engine
    try:
        frame = engine.render(options.width, options.height, options.camera)
    except (ValueError, KeyError) as exc:
        if options.camera is None:
            raise
        raise UserError(f"camera {options.camera!r} cannot be rendered by the {engine.name} engine: {exc}") from exc
    frame = np.asarray(frame, dtype=np.uint8)
    if options.inset is None:
        return frame
    try:
        view = sim.render_camera(options.inset)
    except KeyError as exc:
        raise UserError(f"inset: {exc.args[0] if exc.args else exc}") from exc
    return with_inset(frame, view)


INSET_MAX_FRACTION = 0.5
"""Largest share of the frame's height or width an inset may cover: the scene stays visible."""


def with_inset(frame: np.ndarray, view: np.ndarray) -> np.ndarray:
    """``frame`` with ``view`` drawn in its top-left corner behind a 1-pixel white border, enlarged by the largest
    whole factor (pixels repeated, none invented) that keeps it within :data:`INSET_MAX_FRACTION` of the frame, or
    shrunk by striding when even factor 1 would not fit."""
    fh, fw = frame.shape[:2]
    vh, vw = view.shape[:2]
    limit_h, limit_w = int(fh * INSET_MAX_FRACTION) - 2, int(fw * INSET_MAX_FRACTION) - 2
    if limit_h < 1 or limit_w < 1:
        return frame
    factor = min(limit_h // vh, limit_w // vw)
    if factor >= 1:
        image = np.repeat(np.repeat(view, factor, axis=0), factor, axis=1)
    else:
        stride = max(-(-vh // limit_h), -(-vw // limit_w))
        image = view[::stride, ::stride]
    h, w = image.shape[:2]
    out = frame.copy()
    out[: h + 2, : w + 2] = 255
    out[1 : h + 1, 1 : w + 1] = image
    return out


def _checked_action(policy: Policy, obs: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    action = np.asarray(policy(obs), dtype=np.float32)
    if action.size != int(np.prod(shape)):
        raise UserError(f"the policy returned {action.size} action values, the task expects {shape}")
    return action.reshape(shape)


def rollout_frames(
    env: gym.Env,
    policy: Policy,
    *,
    episodes: int,
    seed: int,
    options: FrameOptions = FrameOptions(),
) -> Rollout:
    """Run ``episodes`` episodes of ``policy`` in ``env`` and render every state.

    The first episode is reset with ``seed`` and later ones continue the env's random stream, so the
    whole rollout is reproducible from ``seed``. Episodes end when the env truncates or terminates.
    """
    if episodes < 1:
        raise UserError(f"episodes must be at least 1, got {episodes}")
    period = sim_env(env).spec_.control_period
    shape = tuple(env.action_space.shape or ())
    out = Rollout(frame_period=period)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        out.frames.append(render_frame(env, options))
        total, done = 0.0, False
        info: dict[str, Any] = {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(_checked_action(policy, obs, shape))
            total += float(reward)
            done = terminated or truncated
            out.frames.append(render_frame(env, options))
        out.returns.append(total)
        out.successes.append(bool(info.get("success", False)))
    return out


def write_gif(frames: Sequence[np.ndarray], path: str | os.PathLike[str], frame_period: float) -> Path:
    """Write ``frames`` as a looping GIF showing each for ``frame_period`` seconds; atomic (temp file, rename).

    GIF stores frame durations in hundredths of a second, so the period is rounded to 10 ms. The GIF writer
    folds a frame identical to the one before into it (adding its duration), so a still scene plays for the
    same time with fewer stored frames.
    """
    import imageio.v3 as iio

    out = Path(path)
    if out.suffix.lower() != ".gif":
        raise UserError(f"output file {str(out)!r} must end in .gif")
    if not frames:
        raise UserError("no frames to write")
    if not (frame_period > 0 and np.isfinite(frame_period)):
        raise UserError(f"frame period must be a positive number of seconds, got {frame_period!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        iio.imwrite(
            tmp, np.stack(frames), extension=".gif", duration=round(frame_period * MS_PER_S), loop=0
        )
    return out
