"""The settings of end-to-end SAC from pixels (:mod:`policies.pixels_sac`), importable without torch (the command line
reads them for its help and checks them before loading torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from policies.config import CLAW_GAMMA, CROSSQ_INIT_ALPHA, CROSSQ_LR, CROSSQ_POLICY_AVERAGE, CROSSQ_POLICY_DELAY
from s2r.core.errors import ParameterError
from sim.engines import ENGINES
from sim.tasks import PIXEL_IDS

PIXELS = "train-pixels"
"""How errors name these settings (``train-pixels steps must be ...``)."""


@dataclass(frozen=True)
class PixelsSacConfig:
    """SAC whose actor reads the camera (DrQ's random shift on its images) and whose critics read the simulator's
    state (an asymmetric actor-critic), with the valve's direction as an auxiliary target of the image features. The
    critics are CrossQ's (batch-renormalized, no target network), with its defaults, as ``s2r train``'s."""

    task: str = "s2r/DClawTurnPixels-v0"
    """Camera env to learn on (:data:`sim.tasks.PIXEL_IDS`)."""
    engine: str = "mujoco"
    """Physics engine and renderer."""
    steps: int = 30_000
    """Environment steps."""
    seed: int = 0
    """Seed of the environment's episodes, the warm-up actions, the networks and the batches."""
    warmup_steps: int = 1_000
    """Uniformly random steps before the first update."""
    buffer_size: int | None = None
    """Transitions the replay keeps (two uint8 images each, about 42 kB at 84 x 84); auto: ``steps``."""
    batch_size: int = 128
    """Transitions per critic update."""
    actor_batch_size: int = 64
    """Of those, the transitions the actor's update reads (its encoder's backward pass is the update's costliest
    part)."""
    gamma: float = CLAW_GAMMA
    """Discount (-); the claw's (:data:`policies.config.CLAW_GAMMA`)."""
    lr: float = CROSSQ_LR
    """Adam learning rate of the actor (its encoder included), the critics and the temperature (CrossQ's)."""
    init_alpha: float = CROSSQ_INIT_ALPHA
    """Initial entropy temperature; tuned towards an entropy of minus the action size."""
    policy_delay: int = CROSSQ_POLICY_DELAY
    """Critic updates per actor and temperature update."""
    policy_average: float = CROSSQ_POLICY_AVERAGE
    """The policy evaluated and saved is the actor averaged at this rate per step (0: the actor itself)."""
    channels: tuple[int, ...] = (16, 16, 32)
    """Output channels of the actor's 3x3 convolutions, each of stride 2, read out by a spatial soft-argmax as the
    valve-angle estimator's are (:class:`policies.perception.SpatialSoftArgmax`). Three strided layers of 16, 16
    and 32 channels cost a fifth of the estimator's first three layers per image (its 32, 32, 64 with two strided)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of the actor's head and of each critic."""
    shift: int = 4
    """DrQ's augmentation: each training image moved by up to this many pixels each way, edges repeated (0: none)."""
    aux_weight: float = 1.0
    """Weight of the auxiliary loss: the image features' linear read-out of the valve's (cos, sin) against the
    simulator's (0: none; the encoder then learns from the actor's loss alone)."""
    eval_interval: int = 5_000
    """Steps between evaluations (deterministic actions; the best is kept)."""
    eval_episodes: int = 20
    """Episodes per evaluation."""
    final_episodes: int = 50
    """Episodes of the final evaluation of the best policy (seeds apart from the periodic evaluations')."""
    threads: int = 1
    """torch threads."""

    def validated(self) -> PixelsSacConfig:
        """This config, or a :class:`ParameterError` naming the bad field."""
        if self.task not in PIXEL_IDS:
            raise ParameterError("task", f"must be a camera env ({', '.join(PIXEL_IDS)}), got {self.task!r}", PIXELS)
        if self.engine not in ENGINES:
            raise ParameterError("engine", f"must be one of {', '.join(ENGINES)}, got {self.engine!r}", PIXELS)
        for name in ("steps", "batch_size", "actor_batch_size", "policy_delay", "eval_interval", "eval_episodes",
                     "final_episodes", "threads"):
            _whole(self, name, 1)
        if self.actor_batch_size > self.batch_size:
            raise ParameterError("actor_batch_size", f"must be at most batch_size ({self.batch_size}), got "
                                 f"{self.actor_batch_size}", PIXELS)
        for name in ("seed", "warmup_steps", "shift"):
            _whole(self, name, 0)
        if self.buffer_size is not None:
            _whole(self, "buffer_size", self.batch_size)
        if not 0.0 < self.gamma <= 1.0:
            raise ParameterError("gamma", f"must be in (0, 1], got {self.gamma!r}", PIXELS)
        if not 0.0 <= self.policy_average <= 1.0:
            raise ParameterError("policy_average", f"must be in [0, 1], got {self.policy_average!r}", PIXELS)
        for name in ("lr", "init_alpha"):
            if not getattr(self, name) > 0.0:
                raise ParameterError(name, f"must be > 0, got {getattr(self, name)!r}", PIXELS)
        if not self.aux_weight >= 0.0:
            raise ParameterError("aux_weight", f"must be >= 0, got {self.aux_weight!r}", PIXELS)
        for name in ("channels", "hidden"):
            widths = getattr(self, name)
            if not widths or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in widths):
                raise ParameterError(name, f"must be one or more whole numbers >= 1, got {widths!r}", PIXELS)
        return self

    @property
    def capacity(self) -> int:
        """Transitions the replay keeps."""
        return self.buffer_size if self.buffer_size is not None else self.steps

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["channels"], data["hidden"] = list(self.channels), list(self.hidden)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PixelsSacConfig:
        return cls(**{**data, "channels": tuple(data["channels"]), "hidden": tuple(data["hidden"])}).validated()


def _whole(cfg: PixelsSacConfig, name: str, low: int) -> None:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(name, f"must be a whole number >= {low}, got {value!r}", PIXELS)
