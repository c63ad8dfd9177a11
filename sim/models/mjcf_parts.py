"""The MuJoCo XML that the claw (:mod:`sim.models.dclaw`) and the quadruped (:mod:`sim.models.dkitty`) write alike:
the file's head, the default classes of servoed hinges, links and contact geoms, and position servos."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sim.models.servo import ServoJoints

LINK_RGBA = (0.25, 0.28, 0.32, 1.0)
"""Colour of the ``link`` class: the grey colliding links."""


def fmt(*values: float) -> str:
    """Numbers as MJCF writes them: space-separated, six significant digits."""
    return " ".join(f"{v:.6g}" for v in values)


def head(model: str, timestep: float) -> str:
    """From ``<mujoco>`` to the end of ``<visual>``: radians, the implicit-fast integrator, a pyramidal friction cone,
    a 640x480 offscreen buffer."""
    # A small shadow map: the software renderer of headless machines is 3x faster than at 4096.
    return f"""<mujoco model="{model}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{timestep:.6g}" integrator="implicitfast" cone="pyramidal"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <quality shadowsize="1024"/>
  </visual>"""


def servo_defaults(joint_class: str, servo: ServoJoints, contact_class: str, friction: float) -> str:
    """The default classes ``joint_class`` (a limited hinge with the ``servo``'s joint dynamics), ``link`` (the grey
    colliding links) and ``contact_class`` (the black geoms that touch the world, with sliding ``friction``),
    indented for ``<default>``."""
    return f"""<default class="{joint_class}">
      <joint type="hinge" damping="{servo.damping:.6g}" armature="{servo.armature:.6g}"
             frictionloss="{servo.frictionloss:.6g}" limited="true"/>
    </default>
    <default class="link"><geom rgba="{fmt(*LINK_RGBA)}" contype="1" conaffinity="1" condim="3"/></default>
    <default class="{contact_class}">
      <geom rgba="0.1 0.1 0.1 1" contype="1" conaffinity="1" condim="3" friction="{friction:.6g} 0.005 0.0001"/>
    </default>"""


def position_actuators(names: Iterable[str], servo: ServoJoints,
                       joint_ranges: Mapping[str, tuple[float, float]]) -> str:
    """One ``<position>`` servo per joint in ``names`` (named as the joint, with the ``servo``'s stiffness and torque
    limit, its command range the joint's range), indented for ``<actuator>``."""
    return "\n    ".join(
        f'<position name="{n}" joint="{n}" kp="{servo.kp:.6g}" '
        f'forcerange="{-servo.force_limit:.6g} {servo.force_limit:.6g}" '
        f'ctrlrange="{fmt(*joint_ranges[n])}"/>'
        for n in names
    )
