"""The joints that a position servo drives, as the claw (:mod:`sim.models.dclaw`) and the quadruped
(:mod:`sim.models.dkitty`) both model them; :mod:`sim.models.mjcf_parts` writes them as MuJoCo XML and
:mod:`sim.models.urdf` as URDF."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServoJoints:
    """Gain, torque limit and joint dynamics shared by every hinge of one kind of position servo."""

    kp: float
    """Position-servo stiffness (N m / rad)."""
    force_limit: float
    """Peak servo torque (N m)."""
    damping: float = 0.1
    """Viscous damping in each joint (N m s / rad)."""
    armature: float = 0.001
    """Reflected rotor inertia of each joint (kg m^2)."""
    frictionloss: float = 0.0
    """Dry friction in each joint (N m)."""
