"""Physics backends behind one interface; :func:`make_engine` picks one by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from s2r.core.extras import quiet_native_output, require
from sim.engines.base import Engine, ParamSpec, UnsupportedParameter
from sim.models.terrain import task_terrain

if TYPE_CHECKING:
    from sim.tasks.base import Task

ENGINES = ("mujoco", "pybullet")


def make_engine(name: str, task: Task, timestep: float) -> Engine:
    """The ``name`` backend loaded with ``task``'s scene at a physics step of ``timestep`` (s)."""
    if name == "mujoco":
        from sim.engines.mujoco_engine import MujocoEngine

        return MujocoEngine(task.model_xml(timestep), task.spec.joint_names, task.spec.passive_joints,
                            task.spec.base_joint, task.spec.cameras, task_terrain(task))
    if name == "pybullet":
        require("pybullet", extra="pybullet", purpose="the PyBullet engine")
        with quiet_native_output():  # pybullet prints its build time on import
            from sim.engines.pybullet_engine import PybulletEngine

        return PybulletEngine(task, timestep)
    raise ValueError(f"unknown engine {name!r}; expected one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "Engine", "ParamSpec", "UnsupportedParameter", "make_engine"]
