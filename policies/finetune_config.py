"""The settings of ``s2r finetune`` (:mod:`policies.finetune`), importable without torch (the CLI reads the
defaults for its help)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from policies.gate import DEFAULT_CONFIDENCE, Schedule
from s2r.core.errors import ParameterError

FINETUNE = "finetune"
"""How errors name these settings (``finetune sim_fraction must be in [0, 1)``)."""
DEFAULT_OUT = "finetune"
"""Output directory inside the run directory unless ``--out`` says otherwise."""


@dataclass(frozen=True)
class FinetuneConfig:
    """One fine-tuning run on a robot."""

    run_dir: Path
    """The simulation run whose deployed checkpoint fine-tuning starts from: a run directory (its ``best.pt``, else
    ``last.pt``, as ``s2r export RUN_DIR`` takes), or one of its checkpoints (``RUN_DIR/last.pt``) when that is the
    one deployed."""
    robot: Path
    """Hardware config of the robot (``hardware_configs/dclaw.yaml``)."""
    driver: str = "emulator"
    """Bus driver: ``emulator``, ``dynamixel`` or ``mock``."""
    port: str | None = None
    """Serial device (or an emulator's pty) instead of the config's."""
    reality: Path | None = None
    """Reality file of an emulator this run starts itself."""
    lockstep: bool = False
    """Run the emulator this run starts in simulated time (``robot.emulator.lockstep``): deterministic, and not paced
    by the wall clock. The emulator driver without ``port`` only."""
    episodes: int = 10
    """Real episodes in total, of every kind, across resumes."""
    out: Path | None = None
    """Output directory; default ``RUN_DIR/finetune``."""
    updates_per_step: float = 4.0
    """Gradient steps per real transition of an exploration episode (run before the next episode)."""
    critic_warmup: int = 500
    """Critic-only gradient steps before the actor's first, on the robot transitions gathered so far."""
    sim_fraction: float = 0.5
    """Share of each batch drawn from the simulation replay (0 = real transitions only)."""
    batch_size: int | None = None
    """Transitions per gradient step; default the simulation run's."""
    seed: int = 0
    """Seed of the episodes' start states and of exploration."""
    resume: bool = False
    """Continue the run in ``out``."""
    incumbent_episodes: int = 10
    """Episodes measuring the deployed policy before the first round."""
    explore_episodes: int = 4
    """Exploration episodes per round."""
    gate_episodes: int = 10
    """Episodes measuring each round's candidate."""
    reeval_episodes: int = 0
    """Episodes measuring the incumbent again in each round (before the candidate's)."""
    gate_looks: int = 1
    """Looks a comparison may take (:class:`policies.gate.Schedule`): a candidate ahead of the incumbent that did
    not pass gets ``gate_episodes`` more episodes, and so does the incumbent, each look testing at the confidence
    split over the looks."""
    confidence: float = DEFAULT_CONFIDENCE
    """Confidence of the one-sided test a candidate must pass to replace the incumbent."""
    goal: Mapping[str, float] | None = None
    """The goal of every episode, the task's named goal values in SI units (``{"target": 1.57}``, rad), as
    ``s2r deploy --goal``; ``None``: the task draws each episode's goal (or ``goal_schedule``)."""
    goal_schedule: Path | None = None
    """A YAML file of one goal per episode, in order (:mod:`robot.goals`), episode ``k`` taking entry ``k``: it
    must hold at least ``episodes`` goals. Not together with ``goal``."""

    def __post_init__(self) -> None:
        if self.episodes < 0:
            raise ParameterError("episodes", f"must be >= 0, got {self.episodes}", FINETUNE)
        if not 0.0 <= self.sim_fraction < 1.0:
            raise ParameterError("sim_fraction", f"must be in [0, 1), got {self.sim_fraction}", FINETUNE)
        if not (self.updates_per_step >= 0 and math.isfinite(self.updates_per_step)):
            raise ParameterError("updates_per_step", f"must be a finite number >= 0, got {self.updates_per_step}",
                                 FINETUNE)
        if self.critic_warmup < 0:
            raise ParameterError("critic_warmup", f"must be >= 0, got {self.critic_warmup}", FINETUNE)
        if not 0.0 < self.confidence < 1.0:
            raise ParameterError("confidence", f"must be in (0, 1), got {self.confidence}", FINETUNE)
        for name in ("incumbent_episodes", "explore_episodes", "gate_episodes", "gate_looks"):
            if getattr(self, name) < 1:
                raise ParameterError(name, f"must be at least 1, got {getattr(self, name)}", FINETUNE)
        if self.lockstep and (self.driver not in ("emulator", "mock") or self.port is not None):
            raise ParameterError("lockstep", "runs a simulated robot this run starts (an emulator or the mock) in "
                                 "simulated time: it needs driver emulator or mock, and no port", FINETUNE)
        if self.goal is not None and self.goal_schedule is not None:
            raise ParameterError("goal_schedule", "and {goal} do not go together: give one goal for every episode "
                                 "or a schedule of one per episode", FINETUNE)
        if self.reeval_episodes < 0:
            raise ParameterError("reeval_episodes", f"must be >= 0, got {self.reeval_episodes}", FINETUNE)

    @property
    def out_dir(self) -> Path:
        return self.out if self.out is not None else self.run_root / DEFAULT_OUT

    @property
    def run_root(self) -> Path:
        """The run directory (``run_dir``'s, when that names one of its checkpoints)."""
        return self.run_dir.parent if self.run_dir.is_file() else self.run_dir

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.incumbent_episodes, self.explore_episodes, self.gate_episodes, self.reeval_episodes,
                        self.gate_looks)
