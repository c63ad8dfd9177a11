"""The capsule links that the claw's fingers (:mod:`sim.models.dclaw`) and the quadruped's legs
(:mod:`sim.models.dkitty`) are built from: one description for both robots and both engines."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capsule:
    """A link modelled as a capsule along its length, from the joint it hangs on to the next one."""

    length: float
    """Axis to axis: from the joint at the link's start to the next joint or the tip's centre (m)."""
    radius: float
    """Capsule radius (m)."""
    mass: float
    """Mass of the link with what it carries, the servo that drives the next joint included (kg)."""
