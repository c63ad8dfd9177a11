"""PyBullet backend: the second engine, built to behave like :mod:`sim.engines.mujoco_engine`.

The scene is the task's URDF (``task.model_urdf()``), loaded into this instance's own ``DIRECT`` client:
with a fixed base, or split at a floating base (below). How MuJoCo's model semantics are reproduced:

* **Position servos.** MuJoCo's ``<position kp>`` actuator is ``clip(kp * (ctrl - q), forcerange)``,
  evaluated at the start of every physics step. The same torque is applied each substep with
  ``TORQUE_CONTROL``; PyBullet's default velocity motors are switched off first. ``kp`` comes from the
  task's ``actuator_kp`` parameters, the torque limit from the URDF's ``<limit effort>``.
* **Viscous damping, integrated implicitly.** MuJoCo's ``implicitfast`` integrator computes all forces
  explicitly (damping ``-B v`` included; contacts, joint limits and dry friction are solved with the
  mass matrix ``M``) and then turns the net force ``f`` into a velocity change with ``M + dt B``:
  ``dv = dt (M + dt B)^-1 f``. Here PyBullet takes the step, and its velocity change is mapped onto
  that update: ``dv = (M + dt B)^-1 (M_pb dv_pb + dt (tau_pb - tau))``, ``tau`` being the damping torque
  MuJoCo applies and ``tau_pb`` the one PyBullet was given; the position is then re-integrated with the
  corrected velocity (semi-implicit Euler, as in both engines). In free motion this reproduces MuJoCo
  to rounding; it is unconditionally stable (the valve at 3x nominal damping has ``B dt / I`` near 2,
  where an explicit damping torque rings); and a static contact (``dv_pb = 0``) keeps its full force.
  ``tau_pb`` is the damping torque already divided by ``1 + dt B / M_pb`` so that the velocities
  PyBullet's contact solver works with do not overshoot. PyBullet's own ``jointDamping`` is 0.
* **Joint limits hold as PyBullet holds them.** The map above re-spreads every impulse of the step with
  MuJoCo's ``M``, a limit's too; but a limit's impulse is whatever stops the joint, sized by PyBullet's solver for
  ``M_pb``, and under the armature-laden ``M`` it stops the joint only part way, so hard falls pressed joints
  further past their ranges than either engine alone does. So a joint past its range that the map would move
  further in than PyBullet's step did gets the joint impulse (an internal torque between its two links: momentum
  is kept) that brings its velocity back to PyBullet's.
* **Armature** (reflected rotor inertia; MuJoCo adds it to the diagonal of ``M``). It goes into the
  child link's inertia about a principal axis whose angular speed is a fixed combination ``w . qdot``
  of joint speeds, so PyBullet's contact solver sees inertias of the right size. For the valve and
  the top and middle finger joints ``w`` is the joint's own speed: exact. The bottom link also turns
  with the middle joint (``w = qdot_mid + qdot_bot``); the extra ``M_pb - M`` terms that adds are taken
  out again by the velocity map above (whose ``M`` includes the armature). Mass matrices come from an
  armature-free twin of the scene in a second client: PyBullet's mass-matrix routine rejects inertias
  that break the triangle inequality, which armature does.
* **Dry friction** (``frictionloss``): a velocity motor with target 0 whose force limit is the
  friction torque, solved by PyBullet's constraint solver together with the contacts, as MuJoCo
  solves its friction-loss constraint.
* **Contact friction.** MuJoCo combines two geoms' coefficients with ``max``; PyBullet multiplies the
  two links' coefficients. Each link therefore stores the square root of its coefficient, so a contact
  between two links with coefficient ``mu`` (fingertip and valve, what ``tip_friction`` describes) has
  exactly ``mu``; a pair with different coefficients gets their geometric mean instead of the larger.
* **Snapshots and resets.** :meth:`get_state` carries PyBullet's own serialized world (joint state and
  contact manifolds with their warm-start impulses). :meth:`reset` and :meth:`set_state` rebuild the
  world from scratch (``resetSimulation`` and a reload with the current parameters), so nothing from an
  earlier episode carries over and a snapshot restores identically here or in another instance.

* **Floating base.** URDF's six-degree-of-freedom joint (``type="floating"``), named by the task spec's
  ``base_joint``, is MuJoCo's free joint; PyBullet has no such joint, so the scene is split there: the links
  above it (the floor) become a fixed body and the subtree below it (the robot) a free-base body placed at
  the joint's origin. The velocity map above then runs over PyBullet's full generalized velocity: the
  base's angular velocity and centre-of-mass velocity in its inertial frame, then the joints (the
  coordinates of ``calculateMassMatrix`` and ``calculateJacobian``), all taken in the base frame at the start
  of the step; damping and armature act on the joints only, and the base pose is re-integrated with the
  corrected velocity like the joints. PyBullet keeps a free base at its inertial frame; readings and
  states report the URDF link frame (MuJoCo's body frame), converted both ways here.
* **External forces** (pushes): applied before every physics step at the body's centre of mass in world
  axes, as MuJoCo's ``xfrc_applied`` (PyBullet forgets them after each step). Resets and restores end them.
* **Cameras**: :meth:`PybulletEngine.render` draws the MJCF's world cameras (``pos``, ``xyaxes``, ``fovy``; the
  first is the default); :meth:`PybulletEngine.render_camera` the task's :class:`sim.camera.CameraSpec` with its
  intrinsics, in the pixel convention MuJoCo and :meth:`sim.camera.CameraSpec.project` share.
* **Visual parameters** (:mod:`sim.visual`): colours through ``changeVisualShape`` on the URDF visuals named as the
  MJCF geoms (put back after every rebuild), ``light_*`` through TinyRenderer's one directional light, camera jitter
  through the task cameras' matrices; distractors are not drawn (they would be bodies of the physics world).
* **Terrain** (scenes with a :class:`~sim.models.terrain.Terrain`): a ``GEOM_HEIGHTFIELD`` body with the same
  heights as MuJoCo's hfield, with the floor box dropped to just below it as the ground beyond its edge; it carries
  the floor's friction. The world is rebuilt at every reset and restore, so a new terrain takes effect there
  (MuJoCo's at once).

Contacts themselves differ between the engines (MuJoCo's are soft, PyBullet's are rigid with error
reduction), so trajectories agree closely in free motion and only qualitatively while pushing the valve.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pybullet as pb

from s2r.core.atomicio import write_text_atomic
from sim.camera import CAMERA_FAR_M, CAMERA_NEAR_M
from sim.engines.base import IMAGE_KINDS, MUJOCO_ONLY_KINDS, TERRAIN_KINDS, VISUAL_KINDS, ParamSpec
from sim.models.terrain import ground_height, is_flat, task_terrain, terrain_heights
from sim.rotations import (
    normalize_quat,
    quat_conj,
    quat_from_rotvec,
    quat_mul,
    quat_to_matrix,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)
from sim.state import BASE_QPOS_SIZE, BASE_QVEL_SIZE, RobotState, SimState
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray
from sim.visual import CAMERA_KINDS, CameraJitter, aimed_light, jitter_camera

GRAVITY_M_S2 = -9.81
"""Gravity along world z (m/s^2), as MuJoCo's default."""
_ENGINE_KINDS = frozenset(
    {"joint_damping", "joint_frictionloss", "actuator_kp", "contact_friction", "body_mass", "body_mass_scale"}
) | (VISUAL_KINDS - IMAGE_KINDS - MUJOCO_ONLY_KINDS)
"""Distractors are MuJoCo's only: here they would be bodies of the physics world, which snapshots carry."""
TINY_RENDERER_DIFFUSE = 0.35
"""TinyRenderer's default diffuse coefficient of its light (-), which ``light_intensity`` scales (passing it gives
the same images as leaving it out: tests/test_visual.py)."""
_LOAD_FLAGS = pb.URDF_USE_INERTIA_FROM_FILE | pb.URDF_USE_SELF_COLLISION
"""Take the URDF's inertias as written; let links collide except parent with child (MuJoCo's filter)."""
_MOVABLE = (pb.JOINT_REVOLUTE, pb.JOINT_PRISMATIC)
_PHYSICS_TAG = -8191.0625
"""First entry of :attr:`SimState.physics` from this engine (format 1); negative, so never a MuJoCo time."""
_HEADER_SIZE = 3
"""``physics`` = [tag, time (s), serialized length (bytes)] + the serialized world, packed."""
_BYTES_PER_FLOAT = 6
"""Serialized bytes packed per float64 of ``physics`` (48 bits: exact integers survive any float round trip)."""
_MAX_JOINT_VELOCITY_RAD_S = 1.0e4
"""PyBullet clamps joint speeds (default 100 rad/s); lift the clamp so only the physics limits them."""
_ARMATURE_CHECK_CONFIGS = 4
"""Random joint configurations on which an armature-in-link placement is verified."""
_ALIGN_TOL = 1e-9
"""Tolerance (-) on the Jacobian tests that place armature in a link's inertia."""

CameraPose = tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float]
"""Eye (m), viewing direction, up vector and vertical field of view (deg) of a camera."""
MJCF_DEFAULT_FOVY_DEG = 45.0
"""MuJoCo's vertical field of view for cameras without ``fovy`` (deg)."""
TINY_RENDERER_PIXEL_SHIFT = (-0.5, 0.5)
"""Where PyBullet's TinyRenderer samples a pixel, relative to the pixel's centre (pixels, right and down): its
images are shifted by this against MuJoCo's and the pinhole projection, so the task cameras' principal point is moved
back by it (measured: tests/test_cameras.py finds a projected point within a tenth of a pixel with it)."""
LIGHT_DIRECTION = (0.4, -0.4, 1.0)
"""Direction towards the light (-): from the front left, above."""
_FLOATING = "floating"
"""URDF joint type of a free six-degree-of-freedom joint."""
_FIXED = "fixed"
BASE_DOFS = 6
"""Generalized velocities of a free base in PyBullet's mass matrix: angular, then linear (base frame)."""
LinkKey = tuple[int, int]


class JointInfo(NamedTuple):
    """``pb.getJointInfo``'s tuple, field by field (PyBullet Quickstart Guide, *getJointInfo*)."""

    joint_index: int
    name: bytes
    type: int
    q_index: int
    u_index: int
    flags: int
    damping: float
    friction: float
    lower_limit: float
    """Lower position limit (rad or m); PyBullet reports an unlimited joint with ``lower_limit > upper_limit``."""
    upper_limit: float
    max_force: float
    """The URDF's ``<limit effort>`` (N m or N)."""
    max_velocity: float
    link_name: bytes
    """The joint's child link."""
    axis: tuple[float, float, float]
    parent_frame_pos: tuple[float, float, float]
    parent_frame_orn: tuple[float, float, float, float]
    parent_index: int


class DynamicsInfo(NamedTuple):
    """``pb.getDynamicsInfo``'s tuple, field by field (PyBullet Quickstart Guide, *getDynamicsInfo*)."""

    mass: float
    lateral_friction: float
    local_inertia_diagonal: tuple[float, float, float]
    local_inertial_pos: tuple[float, float, float]
    """The link's inertial frame in its link frame (for the base: in the base link's frame)."""
    local_inertial_orn: tuple[float, float, float, float]
    """... its orientation, x y z w."""
    restitution: float
    rolling_friction: float
    spinning_friction: float
    contact_damping: float
    contact_stiffness: float
    body_type: int
    collision_margin: float


class LinkState(NamedTuple):
    """``pb.getLinkState``'s tuple without link velocities (PyBullet Quickstart Guide, *getLinkState*)."""

    com_pos: tuple[float, float, float]
    """The link's centre of mass (its inertial frame's origin), world frame (m)."""
    com_orn: tuple[float, float, float, float]
    """... and the inertial frame's orientation, x y z w."""
    local_inertial_pos: tuple[float, float, float]
    local_inertial_orn: tuple[float, float, float, float]
    link_frame_pos: tuple[float, float, float]
    """The URDF link frame, world frame (m)."""
    link_frame_orn: tuple[float, float, float, float]


class JointState(NamedTuple):
    """``pb.getJointStates``' per-joint tuple (PyBullet Quickstart Guide, *getJointState*)."""

    position: float
    velocity: float
    reaction_forces: tuple[float, float, float, float, float, float]
    applied_motor_torque: float


class VisualShape(NamedTuple):
    """``pb.getVisualShapeData``'s per-shape tuple (PyBullet Quickstart Guide, *getVisualShapeData*)."""

    body: int
    link: int
    geometry_type: int
    dimensions: tuple[float, float, float]
    mesh_file: bytes
    local_pos: tuple[float, float, float]
    local_orn: tuple[float, float, float, float]
    rgba: tuple[float, float, float, float]


def _joint_info(body: int, joint: int, client: int) -> JointInfo:
    return JointInfo(*pb.getJointInfo(body, joint, physicsClientId=client))


def _dynamics_info(body: int, link: int, client: int) -> DynamicsInfo:
    return DynamicsInfo(*pb.getDynamicsInfo(body, link, physicsClientId=client))


def _link_state(body: int, link: int, client: int) -> LinkState:
    return LinkState(*pb.getLinkState(body, link, computeForwardKinematics=1, physicsClientId=client))
"""A link as (body slot, PyBullet link index): slot 0 is the robot, later slots the fixed parts; -1 is a base."""


@dataclass(frozen=True)
class _JointDynamics:
    damping: float
    frictionloss: float
    armature: float


def _urdf_joint_dynamics(urdf: str) -> dict[str, _JointDynamics]:
    """``<dynamics damping friction armature>`` of every joint of ``urdf``, zeros where absent."""
    out: dict[str, _JointDynamics] = {}
    for joint in ET.fromstring(urdf).iter("joint"):
        dyn = joint.find("dynamics")
        attrs = dyn.attrib if dyn is not None else {}
        out[joint.attrib["name"]] = _JointDynamics(
            float(attrs.get("damping", 0.0)), float(attrs.get("friction", 0.0)), float(attrs.get("armature", 0.0))
        )
    return out


def _pack_bytes(data: bytes) -> FloatArray:
    pad = (-len(data)) % _BYTES_PER_FLOAT
    raw = np.frombuffer(data + b"\0" * pad, dtype=np.uint8).reshape(-1, _BYTES_PER_FLOAT).astype(np.uint64)
    weights = np.uint64(256) ** np.arange(_BYTES_PER_FLOAT, dtype=np.uint64)
    return (raw * weights).sum(axis=1).astype(np.float64)


def _unpack_bytes(values: FloatArray, n_bytes: int) -> bytes:
    ints = np.asarray(values, dtype=np.float64).astype(np.uint64)
    shifts = np.uint64(8) * np.arange(_BYTES_PER_FLOAT, dtype=np.uint64)
    raw = ((ints[:, None] >> shifts[None, :]) & np.uint64(255)).astype(np.uint8)
    return raw.tobytes()[:n_bytes]


def _release(clients: tuple[int, ...], tmpdir: str) -> None:
    for client in clients:
        if pb.isConnected(physicsClientId=client):
            pb.disconnect(physicsClientId=client)
    shutil.rmtree(tmpdir, ignore_errors=True)


def mjcf_cameras(xml: str) -> dict[str, CameraPose]:
    """The world cameras of an MJCF scene, by name, in document order.

    A camera's frame is given by ``pos`` and ``xyaxes`` (MuJoCo's default frame when absent: looking down
    world -z with y up); it looks along its -z axis. A camera given by pixel intrinsics gets the vertical field of
    view of its focal length. Cameras on moving bodies, or oriented another way,
    are not world-fixed views and are left out.
    """
    world = ET.fromstring(xml).find("worldbody")
    cams: dict[str, CameraPose] = {}
    if world is None:
        return cams
    for i, cam in enumerate(world.findall("camera")):
        if any(k in cam.attrib for k in ("quat", "euler", "axisangle", "zaxis", "target", "mode")):
            continue
        pos = [float(v) for v in cam.attrib.get("pos", "0 0 0").split()]
        axes = [float(v) for v in cam.attrib.get("xyaxes", "1 0 0 0 1 0").split()]
        x = np.array(axes[:3]) / np.linalg.norm(axes[:3])
        y = np.array(axes[3:])
        y = y - (y @ x) * x
        y /= np.linalg.norm(y)
        z = np.cross(x, y)
        eye = (pos[0], pos[1], pos[2])
        forward = (float(-z[0]), float(-z[1]), float(-z[2]))
        up = (float(y[0]), float(y[1]), float(y[2]))
        fovy = float(cam.attrib.get("fovy", MJCF_DEFAULT_FOVY_DEG))
        if "focalpixel" in cam.attrib and "resolution" in cam.attrib:
            # A camera given by intrinsics (sim.camera.CameraSpec.mjcf): its vertical field of view, principal point
            # taken as centred, for views at other sizes; render_camera draws it exactly.
            fy_px = float(cam.attrib["focalpixel"].split()[1])
            fovy = math.degrees(2.0 * math.atan(0.5 * float(cam.attrib["resolution"].split()[1]) / fy_px))
        cams[cam.attrib.get("name", f"camera{i}")] = (eye, forward, up, fovy)
    return cams


def mjcf_lights(xml: str) -> dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """The named world lights of an MJCF scene: position (m) and direction (-), MuJoCo's defaults where absent."""
    world = ET.fromstring(xml).find("worldbody")
    out: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {}
    for light in [] if world is None else world.findall("light"):
        if "name" in light.attrib:
            pos = _floats(light.attrib.get("pos", "0 0 0"), 3)
            d = _floats(light.attrib.get("dir", "0 0 -1"), 3)
            out[light.attrib["name"]] = ((pos[0], pos[1], pos[2]), (d[0], d[1], d[2]))
    return out


def urdf_visual_names(urdf: str) -> dict[str, list[str]]:
    """The ``<visual>`` names of every link of a URDF, in document order (PyBullet's order of a link's shapes)."""
    return {link.attrib["name"]: [v.attrib.get("name", "") for v in link.findall("visual")]
            for link in ET.fromstring(urdf).findall("link")}


@dataclass(frozen=True)
class SceneBodies:
    """A task's URDF as the bodies PyBullet loads."""

    robot: str
    """URDF of the body holding the task's joints (the whole scene when nothing floats)."""
    statics: tuple[str, ...]
    """URDFs of the fixed parts split off above a floating base (the floor)."""
    floating: bool
    """Whether the robot body has a free base."""
    base_xyz: tuple[float, float, float]
    """Origin of the floating joint: where the robot's base link starts (m)."""
    base_rpy: tuple[float, float, float]
    """Orientation of the floating joint's origin (URDF roll, pitch, yaw; rad)."""


def _child(joint: ET.Element) -> str:
    el = joint.find("child")
    if el is None:
        raise ValueError(f"URDF joint {joint.attrib.get('name')!r} has no <child>")
    return el.attrib["link"]


def _parent(joint: ET.Element) -> str:
    el = joint.find("parent")
    if el is None:
        raise ValueError(f"URDF joint {joint.attrib.get('name')!r} has no <parent>")
    return el.attrib["link"]


def _floats(text: str | None, n: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split()) if text else (0.0,) * n
    if len(values) != n:
        raise ValueError(f"expected {n} numbers, got {text!r}")
    return values


def split_scene(urdf: str, base_joint: str | None) -> SceneBodies:
    """The bodies of a URDF scene: the whole tree, or (``base_joint`` set) the tree cut at that floating joint.

    The floating joint must hang from the URDF's root link, and the fixed part above it may hold only
    fixed joints: it is the world (floor, mounts), loaded with a fixed base.
    """
    root = ET.fromstring(urdf)
    joints = root.findall("joint")
    floating = [j.attrib["name"] for j in joints if j.attrib.get("type") == _FLOATING]
    if base_joint is None:
        if floating:
            raise ValueError(f"the URDF has floating joint(s) {', '.join(floating)}, but the task names no base joint")
        return SceneBodies(urdf, (), False, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    if floating != [base_joint]:
        raise ValueError(f"the task's base joint {base_joint!r} must be the URDF's one joint of type "
                         f"{_FLOATING!r}; its floating joints are: {', '.join(floating) or 'none'}")
    base = next(j for j in joints if j.attrib["name"] == base_joint)
    children: dict[str, list[str]] = {}
    for j in joints:
        children.setdefault(_parent(j), []).append(_child(j))
    if _parent(base) in {_child(j) for j in joints}:
        raise ValueError(f"floating joint {base_joint!r} must hang from the URDF's root link, not from "
                         f"{_parent(base)!r}")
    robot_links = {_child(base)}
    stack = [_child(base)]
    while stack:
        for c in children.get(stack.pop(), []):
            robot_links.add(c)
            stack.append(c)
    moving = [j.attrib["name"] for j in joints
              if j is not base and _child(j) not in robot_links and j.attrib.get("type") != _FIXED]
    if moving:
        raise ValueError(f"joint(s) {', '.join(moving)} move but lie outside the floating robot; the world part of "
                         "a floating-base scene may only hold fixed joints")

    def part(in_robot: bool, suffix: str) -> str:
        out = ET.Element("robot", {"name": root.attrib.get("name", "scene") + suffix})
        out.extend(root.findall("material"))
        out.extend(link for link in root.findall("link") if (link.attrib["name"] in robot_links) == in_robot)
        out.extend(j for j in joints if j is not base and (_child(j) in robot_links) == in_robot)
        return '<?xml version="1.0"?>\n' + ET.tostring(out, encoding="unicode") + "\n"

    origin = base.find("origin")
    xyz = _floats(origin.attrib.get("xyz") if origin is not None else None, 3)
    rpy = _floats(origin.attrib.get("rpy") if origin is not None else None, 3)
    return SceneBodies(part(True, ""), (part(False, "_world"),), True, (xyz[0], xyz[1], xyz[2]),
                       (rpy[0], rpy[1], rpy[2]))


class PybulletEngine:
    """A task's scene in PyBullet, with MuJoCo's servo, damping, armature and friction semantics."""

    name = "pybullet"

    def __init__(self, task: Task, timestep: float) -> None:
        if not (timestep > 0 and math.isfinite(timestep)):
            raise ValueError(f"timestep must be a positive number of seconds, got {timestep!r}")
        self.timestep = float(timestep)
        spec = task.spec
        urdf = task.model_urdf()
        scene = split_scene(urdf, spec.base_joint)
        self._floating = scene.floating
        self._nb = BASE_DOFS if scene.floating else 0
        self._base_start = (list(scene.base_xyz), list(pb.getQuaternionFromEuler(scene.base_rpy)))
        xml = task.model_xml(timestep)
        self._cameras = mjcf_cameras(xml)
        self._lights = mjcf_lights(xml)
        self._task_cameras = {c.name: c for c in spec.cameras}
        self._camera_matrices = {c.name: (c.view_matrix(), c.projection_matrix(pixel_shift=TINY_RENDERER_PIXEL_SHIFT))
                                 for c in spec.cameras}
        self._terrain = task_terrain(task) if self._floating else None
        self._terrain_values = {"terrain_roughness": 0.0, "terrain_slope": 0.0, "terrain_seed": 0.0}
        self._terrain_heights: FloatArray | None = None
        self._terrain_body: int | None = None
        self._tmpdir = tempfile.mkdtemp(prefix="s2r-pybullet-")
        self._state_path = os.path.join(self._tmpdir, "state.bullet")
        self._urdf_paths = [self._write(f"scene{i}.urdf", text) for i, text in enumerate((scene.robot, *scene.statics))]
        # The simulated world, and a twin holding the same robot without armature: PyBullet's mass
        # matrix routine rejects the armature-laden inertias (they break the triangle inequality).
        self._client = pb.connect(pb.DIRECT)
        self._twin = pb.connect(pb.DIRECT)
        self._finalizer = weakref.finalize(self, _release, (self._client, self._twin), self._tmpdir)
        self._bodies = self._load(self._client)
        body = self._bodies[0]

        # --- names -> indices -------------------------------------------------------------------
        c = self._client
        infos = [_joint_info(body, j, c) for j in range(pb.getNumJoints(body, physicsClientId=c))]
        joint_index = {info.name.decode(): j for j, info in enumerate(infos)}
        self._link_index: dict[str, LinkKey] = {}
        for slot, b in enumerate(self._bodies):
            base_name, _ = pb.getBodyInfo(b, physicsClientId=c)
            self._link_index[base_name.decode()] = (slot, -1)
            for j in range(pb.getNumJoints(b, physicsClientId=c)):
                self._link_index[_joint_info(b, j, c).link_name.decode()] = (slot, j)
        self._dof_joints = [j for j, info in enumerate(infos) if info.type in _MOVABLE]
        dof_of_joint = {j: k for k, j in enumerate(self._dof_joints)}
        self._dof_of_name = {info.name.decode(): dof_of_joint[j] for j, info in enumerate(infos) if j in dof_of_joint}
        names = (*spec.joint_names, *spec.passive_joints)
        for n in names:
            if n not in joint_index:
                raise ValueError(f"the URDF has no joint {n!r}; its joints are {', '.join(joint_index)}")
            if n not in self._dof_of_name:
                raise ValueError(f"joint {n!r} of the URDF is not a one-degree-of-freedom joint")
        self._n_act = len(spec.joint_names)
        self._obs_dofs = np.array([self._dof_of_name[n] for n in names], dtype=np.int64)
        self._act_dofs = self._obs_dofs[: self._n_act]
        self._act_names = tuple(spec.joint_names)
        self._effort_limit = np.array([infos[self._dof_joints[d]].max_force for d in self._act_dofs], dtype=np.float64)
        self._ndof = len(self._dof_joints)
        self._limits = [(float(infos[j].lower_limit), float(infos[j].upper_limit)) for j in self._dof_joints]
        lower, upper = np.array(self._limits).reshape(-1, 2).T
        # PyBullet reports an unlimited joint as lower > upper (0, -1).
        self._lower = np.where(lower < upper, lower, -np.inf)
        self._upper = np.where(lower < upper, upper, np.inf)

        # --- nominal model ----------------------------------------------------------------------
        dyn = _urdf_joint_dynamics(urdf)
        dof_names = [infos[j].name.decode() for j in self._dof_joints]
        zero = _JointDynamics(0.0, 0.0, 0.0)
        self._nominal_damping = np.array([dyn.get(n, zero).damping for n in dof_names])
        self._nominal_frictionloss = np.array([dyn.get(n, zero).frictionloss for n in dof_names])
        self._armature = np.array([dyn.get(n, zero).armature for n in dof_names])
        kp: dict[str, float] = {}
        for s in task.param_specs():
            if s.kind == "actuator_kp":
                kp.update({t: s.nominal for t in s.targets})
        missing = [n for n in spec.joint_names if n not in kp]
        if missing:
            raise ValueError(f"no actuator_kp parameter gives the servo gain of joint(s) {', '.join(missing)}")
        self._nominal_kp = np.array([kp[n] for n in spec.joint_names])
        self._links: list[LinkKey] = sorted(self._link_index.values())
        self._nominal_mass: dict[LinkKey, float] = {}
        self._nominal_inertia: dict[LinkKey, FloatArray] = {}
        self._nominal_friction: dict[LinkKey, float] = {}
        for key in self._links:
            info = _dynamics_info(self._bodies[key[0]], key[1], c)
            self._nominal_mass[key] = float(info.mass)
            self._nominal_friction[key] = float(info.lateral_friction)
            self._nominal_inertia[key] = np.array(info.local_inertia_diagonal, dtype=np.float64)
        # Where PyBullet keeps a free base (its inertial frame) in the base link's frame.
        base_info = _dynamics_info(body, -1, c)
        self._inertial_pos = np.array(base_info.local_inertial_pos, dtype=np.float64)
        self._inertial_quat = xyzw_to_wxyz(base_info.local_inertial_orn)

        # --- current model (set_param writes here, always from the nominal values) -----------------
        self._damping = self._nominal_damping.copy()
        self._frictionloss = self._nominal_frictionloss.copy()
        self._kp = self._nominal_kp.copy()
        self._mass_scale = {key: 1.0 for key in self._links}
        self._friction = dict(self._nominal_friction)

        self._init_visuals(scene)

        self._twin_body = self._load_twin()
        self._link_armature, self._armature_coupling = self._place_armature()
        self._command = np.zeros(self._n_act)
        self._effort = np.zeros(self._n_act)
        self._forces: dict[str, FloatArray] = {}
        self._passive_torque = np.zeros(len(spec.passive_joints))
        self._time = 0.0
        self._q = np.zeros(self._ndof)
        self._v = np.zeros(self._ndof)
        # Free base in PyBullet's terms: inertial-frame position (m) and orientation (w, x, y, z), its
        # velocity and angular velocity (world frame).
        self._bp, self._bq = np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])
        self._bv, self._bw = np.zeros(3), np.zeros(3)
        self.reset(spec.reset, np.zeros(len(spec.passive_joints)))

    @property
    def client(self) -> int:
        """This engine's PyBullet client id, for read-only queries (ray tests, contact points)."""
        return self._client

    # --- world construction ----------------------------------------------------------------------
    def _write(self, name: str, text: str) -> str:
        path = os.path.join(self._tmpdir, name)
        # Scratch files of this engine alone: nothing reads them after a crash, so no fsync.
        write_text_atomic(path, text, durable=False)
        return path

    def _load(self, client: int, twin: bool = False) -> list[int]:
        """A fresh world in ``client`` holding only the scene (the twin: only the robot, at the origin)."""
        pb.resetSimulation(physicsClientId=client)
        pb.setGravity(0.0, 0.0, GRAVITY_M_S2, physicsClientId=client)
        # deterministicOverlappingPairs sorts contact pairs, so the solver's order does not depend on history.
        pb.setPhysicsEngineParameter(fixedTimeStep=self.timestep, numSubSteps=0, deterministicOverlappingPairs=1,
                                     physicsClientId=client)
        pos, orn = ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]) if twin else self._base_start
        robot = int(pb.loadURDF(self._urdf_paths[0], pos, orn, useFixedBase=not self._floating, flags=_LOAD_FLAGS,
                                physicsClientId=client))
        if twin:
            return [robot]
        statics = [int(pb.loadURDF(p, useFixedBase=True, flags=_LOAD_FLAGS, physicsClientId=client))
                   for p in self._urdf_paths[1:]]
        self._terrain_body = None
        if self._terrain_heights is not None:
            self._terrain_body = self._load_terrain(client, statics)
        return [robot, *statics]

    def _load_terrain(self, client: int, statics: list[int]) -> int:
        """The heightfield as a fixed body; the scene's fixed parts (the flat floor) drop to just below it, the ground
        beyond its edge."""
        assert self._terrain is not None and self._terrain_heights is not None
        t, heights = self._terrain, self._terrain_heights
        # Bullet's heightfield: data[i * rows + j] at (x_j, y_i), rows counting along x, centred in x and y and
        # vertically on the middle of its height range, so the body sits at that middle.
        shape = pb.createCollisionShape(pb.GEOM_HEIGHTFIELD, meshScale=[t.spacing_m, t.spacing_m, 1.0],
                                        heightfieldData=heights.ravel().tolist(), numHeightfieldRows=t.n,
                                        numHeightfieldColumns=t.n, physicsClientId=client)
        middle = float(heights.max() + heights.min()) / 2.0
        body = int(pb.createMultiBody(0.0, shape, -1, [0.0, 0.0, middle], physicsClientId=client))
        floor_slot, _ = self._link_index[t.body]
        pb.resetBasePositionAndOrientation(statics[floor_slot - 1], [0.0, 0.0, ground_height(heights)],
                                          [0.0, 0.0, 0.0, 1.0], physicsClientId=client)
        return body

    def _load_twin(self) -> int:
        """(Re)load the armature-free twin with the current link masses; it only answers mass-matrix queries."""
        body = self._load(self._twin, twin=True)[0]
        for key in self._links:
            if key[0] == 0 and self._nominal_mass[key] > 0.0:
                scale = self._mass_scale[key]
                pb.changeDynamics(body, key[1], mass=self._nominal_mass[key] * scale,
                                  localInertiaDiagonal=(self._nominal_inertia[key] * scale).tolist(),
                                  physicsClientId=self._twin)
        return body

    def _rebuild(self, state_file: str | None = None) -> None:
        """Reload the scene with the current model; restore a serialized world state if given."""
        c = self._client
        self._bodies = self._load(c)
        body = self._bodies[0]
        pb.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0,
                          activationState=pb.ACTIVATION_STATE_DISABLE_SLEEPING, physicsClientId=c)
        for key in self._links:
            self._apply_link(key)
        for j in self._dof_joints:
            # Two calls: PyBullet 3.2.7 drops jointDamping when maxJointVelocity comes in the same call.
            pb.changeDynamics(body, j, jointDamping=0.0, physicsClientId=c)
            pb.changeDynamics(body, j, maxJointVelocity=_MAX_JOINT_VELOCITY_RAD_S, physicsClientId=c)
        self._apply_frictionloss()
        for shape, rgba in self._rgba.items():  # the reload drew the URDF's colours
            if not np.array_equal(rgba, self._nominal_rgba[shape]):
                self._apply_rgba(shape)
        if state_file is not None:
            pb.restoreState(fileName=state_file, physicsClientId=c)
        self._forces.clear()
        self._passive_torque = np.zeros_like(self._passive_torque)
        self._pull_state()

    def _apply_link(self, key: LinkKey) -> None:
        scale = self._mass_scale[key]
        kwargs: dict[str, object] = {"lateralFriction": math.sqrt(self._friction[key])}
        if self._nominal_mass[key] > 0.0:  # fixed and massless links (the world) keep mass 0
            kwargs["mass"] = self._nominal_mass[key] * scale
            inertia = self._nominal_inertia[key] * scale + self._link_armature.get(key, 0.0)
            kwargs["localInertiaDiagonal"] = inertia.tolist()
        pb.changeDynamics(self._bodies[key[0]], key[1], physicsClientId=self._client, **kwargs)
        if self._terrain_body is not None and self._terrain is not None and key == self._link_index[self._terrain.body]:
            pb.changeDynamics(self._terrain_body, -1, lateralFriction=kwargs["lateralFriction"],
                              physicsClientId=self._client)

    def _init_visuals(self, scene: SceneBodies) -> None:
        """The visual model: each named URDF visual as (body slot, link, shape index), its nominal colour, and the
        lights' and cameras' nominal offsets."""
        c = self._client
        self._visual_shapes: dict[str, list[tuple[int, int, int]]] = {}
        for slot, text in enumerate((scene.robot, *scene.statics)):
            for link_name, visuals in urdf_visual_names(text).items():
                if link_name in self._link_index and self._link_index[link_name][0] == slot:
                    link = self._link_index[link_name][1]
                    for k, vname in enumerate(visuals):
                        self._visual_shapes.setdefault(vname, []).append((slot, link, k))
        self._nominal_rgba: dict[tuple[int, int, int], FloatArray] = {}
        for slot, b in enumerate(self._bodies):
            counts: dict[int, int] = {}
            for shape in map(VisualShape._make, pb.getVisualShapeData(b, physicsClientId=c)):
                k = counts[shape.link] = counts.get(shape.link, -1) + 1
                self._nominal_rgba[(slot, shape.link, k)] = np.array(shape.rgba, dtype=np.float64)
        self._rgba = {key: v.copy() for key, v in self._nominal_rgba.items()}
        self._light_offsets: dict[str, FloatArray] = {}
        self._light_gain = {"light_intensity": 1.0, "light_r": 1.0, "light_g": 1.0, "light_b": 1.0}
        self._camera_jitter = {name: CameraJitter() for name in self._task_cameras}

    def _apply_rgba(self, key: tuple[int, int, int]) -> None:
        slot, link, shape = key
        pb.changeVisualShape(self._bodies[slot], link, shapeIndex=shape, rgbaColor=self._rgba[key].tolist(),
                             physicsClientId=self._client)

    def _apply_frictionloss(self) -> None:
        # A velocity motor with target 0 and force limit = friction torque is Coulomb friction; a limit
        # of 0 also switches off PyBullet's default motors, which would otherwise hold every joint.
        pb.setJointMotorControlArray(self._bodies[0], self._dof_joints, pb.VELOCITY_CONTROL,
                                     targetVelocities=[0.0] * self._ndof, forces=self._frictionloss.tolist(),
                                     physicsClientId=self._client)

    def _place_armature(self) -> tuple[dict[LinkKey, FloatArray], FloatArray]:
        """Extra principal inertia per link that carries the joints' armature, and what it adds to ``M``.

        Armature ``a`` on joint ``j`` is ``a qdot_j^2 / 2`` of kinetic energy. Extra inertia ``d`` about
        principal axis ``k`` of the child link is ``d (w . u)^2 / 2``, ``u`` the generalized velocity (a
        free base's six, then the joints) and ``w`` row ``k`` of ``R^T J_w`` (``J_w`` the link's angular
        Jacobian, ``R`` its principal frame; both relative to the base frame). An axis qualifies when ``w``
        is the same in every configuration (checked on random ones) and has ``|w_j| >= 0.5``; the one
        touching fewest coordinates wins, ``d = a / w_j^2``, and ``d w w^T`` is added to PyBullet's mass
        matrix (removed again in :meth:`step`). A constant ``w`` adds a constant term to the mass matrix and
        so no Coriolis forces, except where ``w`` involves a free base's angular velocity: that is a body-frame
        quasi-velocity, and inertia on it brings gyroscopic torques MuJoCo's armature does not have (they
        measurably break free-flight agreement). Such axes do not qualify. A joint without a qualifying axis
        (every joint of a free-base robot) keeps its armature in the velocity map only.
        """
        t, body, nb = self._twin, self._twin_body, self._nb
        rng = np.random.default_rng(0)
        zeros = [0.0] * self._ndof
        rows: dict[int, list[FloatArray]] = {}
        for _ in range(_ARMATURE_CHECK_CONFIGS):
            q = [rng.uniform(lo, hi) if lo < hi else rng.uniform(-math.pi, math.pi) for lo, hi in self._limits]
            pb.resetJointStatesMultiDof(body, self._dof_joints, [[x] for x in q], physicsClientId=t)
            for dof, j in enumerate(self._dof_joints):
                if self._armature[dof] > 0.0:
                    state = _link_state(body, j, t)
                    rot = np.array(pb.getMatrixFromQuaternion(state.com_orn), dtype=np.float64).reshape(3, 3)
                    _, ang = pb.calculateJacobian(body, j, [0.0, 0.0, 0.0], q, zeros, zeros, physicsClientId=t)
                    rows.setdefault(dof, []).append(rot.T @ np.asarray(ang, dtype=np.float64))
        link_armature: dict[LinkKey, FloatArray] = {}
        n = nb + self._ndof
        coupling = np.zeros((n, n))
        for dof, mats in rows.items():
            col = nb + dof
            best: tuple[int, float, int, FloatArray] | None = None
            for k in range(3):
                w = np.array([m[k] for m in mats])  # one row per configuration
                if np.max(np.abs(w - w[0])) > _ALIGN_TOL or abs(w[0, col]) < 0.5:
                    continue
                if nb and np.max(np.abs(w[0, :3])) > _ALIGN_TOL:  # turns with the free base
                    continue
                row = np.where(np.abs(w[0]) > _ALIGN_TOL, w[0], 0.0)
                key = (int(np.count_nonzero(row)), -abs(float(row[col])), k, row)
                if best is None or key[:3] < best[:3]:
                    best = key
            if best is None:
                continue  # no principal axis fits: this armature lives in the velocity map only
            _, _, k, row = best
            extra = self._armature[dof] / row[col] ** 2
            link = (0, self._dof_joints[dof])
            link_armature.setdefault(link, np.zeros(3))[k] += extra
            coupling += extra * np.outer(row, row)
        return link_armature, coupling

    def _pull_state(self) -> None:
        c, body = self._client, self._bodies[0]
        states = [JointState(*s) for s in pb.getJointStates(body, self._dof_joints, physicsClientId=c)]
        self._q = np.array([s.position for s in states], dtype=np.float64)
        self._v = np.array([s.velocity for s in states], dtype=np.float64)
        if self._floating:
            pos, orn = pb.getBasePositionAndOrientation(body, physicsClientId=c)
            lin, ang = pb.getBaseVelocity(body, physicsClientId=c)
            self._bp, self._bq = np.array(pos, dtype=np.float64), xyzw_to_wxyz(orn)
            self._bv, self._bw = np.array(lin, dtype=np.float64), np.array(ang, dtype=np.float64)

    def _servo(self) -> FloatArray:
        q = self._q[self._act_dofs]
        return np.minimum(np.maximum(self._kp * (self._command - q), -self._effort_limit), self._effort_limit)

    # --- free base: PyBullet's inertial frame <-> the URDF link frame --------------------------------
    def _base_link_state(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Base link origin (m), orientation (w, x, y, z), origin velocity (m/s, world), body-frame rate (rad/s)."""
        quat = normalize_quat(quat_mul(self._bq, quat_conj(self._inertial_quat)))
        rot = quat_to_matrix(quat)
        offset = rot @ self._inertial_pos  # link origin -> centre of mass, world axes
        pos = self._bp - offset
        linvel = self._bv - np.cross(self._bw, offset)
        return pos, quat, linvel, rot.T @ self._bw

    def _write_base_link(self, pos: FloatArray, quat: FloatArray, linvel: FloatArray, angvel_body: FloatArray) -> None:
        rot = quat_to_matrix(quat)
        offset = rot @ self._inertial_pos
        angvel = rot @ np.asarray(angvel_body, dtype=np.float64)
        self._write_base(np.asarray(pos, dtype=np.float64) + offset, quat_mul(quat, self._inertial_quat),
                         np.asarray(linvel, dtype=np.float64) + np.cross(angvel, offset), angvel)

    def _write_base(self, pos: FloatArray, quat: FloatArray, linvel: FloatArray, angvel: FloatArray) -> None:
        """Set the free base in PyBullet's terms (inertial frame; world-frame velocities)."""
        c, body = self._client, self._bodies[0]
        pb.resetBasePositionAndOrientation(body, pos.tolist(), wxyz_to_xyzw(normalize_quat(quat)).tolist(),
                                           physicsClientId=c)
        pb.resetBaseVelocity(body, linvel.tolist(), angvel.tolist(), physicsClientId=c)
        # Read back what PyBullet stored (it renormalizes the quaternion), so a snapshot reports exactly the
        # state a restore of it reproduces.
        pos_pb, orn = pb.getBasePositionAndOrientation(body, physicsClientId=c)
        lin, ang = pb.getBaseVelocity(body, physicsClientId=c)
        self._bp, self._bq = np.array(pos_pb, dtype=np.float64), xyzw_to_wxyz(orn)
        self._bv, self._bw = np.array(lin, dtype=np.float64), np.array(ang, dtype=np.float64)

    def _generalized_velocity(self, rot: FloatArray) -> FloatArray:
        """PyBullet's mass-matrix coordinates: base angular and linear velocity in frame ``rot``, then the joints."""
        if not self._floating:
            return self._v
        return np.concatenate([rot.T @ self._bw, rot.T @ self._bv, self._v])

    # --- state -------------------------------------------------------------------------------------
    def reset(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None = None) -> None:
        self._rebuild()
        q = self._q.copy()
        q[self._obs_dofs] = np.concatenate([np.asarray(joint_pos, dtype=np.float64),
                                            np.asarray(passive_pos, dtype=np.float64)])
        self._write_joints(q, np.zeros(self._ndof))
        if base_pose is not None:
            if not self._floating:
                raise ValueError("a base pose was given, but this scene has no floating base")
            pose = np.asarray(base_pose, dtype=np.float64)
            if pose.shape != (BASE_QPOS_SIZE,):
                raise ValueError(f"a base pose has {BASE_QPOS_SIZE} values (x, y, z, qw, qx, qy, qz), got {pose.shape}")
            self._write_base_link(pose[:3], normalize_quat(pose[3:]), np.zeros(3), np.zeros(3))
        self._command = np.asarray(joint_pos, dtype=np.float64).copy()
        self._time = 0.0
        self._effort = self._servo()

    def _write_joints(self, q: FloatArray, v: FloatArray) -> None:
        pb.resetJointStatesMultiDof(self._bodies[0], self._dof_joints, q.reshape(-1, 1).tolist(),
                                    v.reshape(-1, 1).tolist(), physicsClientId=self._client)
        self._q, self._v = q.copy(), v.copy()

    def set_command(self, command: FloatArray) -> None:
        self._command = np.asarray(command, dtype=np.float64).copy()

    def set_external_force(self, body: str, force: FloatArray) -> None:
        if body not in self._link_index:
            raise KeyError(f"the pybullet scene has no body {body!r}; its links are {', '.join(self._link_index)}")
        f = np.asarray(force, dtype=np.float64)
        if f.shape != (3,):
            raise ValueError(f"an external force has 3 components (N, world frame), got shape {f.shape}")
        if np.any(f != 0.0):
            self._forces[body] = f.copy()
        else:
            self._forces.pop(body, None)

    def set_passive_torque(self, torque: FloatArray) -> None:
        t = np.asarray(torque, dtype=np.float64)
        if t.shape != self._passive_torque.shape:
            raise ValueError(f"a passive torque has one value per passive joint ({self._passive_torque.size}), "
                             f"got shape {t.shape}")
        # Added to the joint torques of every step; PyBullet's step then carries it into v1, so the velocity
        # map below keeps it (only damping is re-integrated).
        self._passive_torque = t.copy()

    def _apply_forces(self) -> None:
        c = self._client
        for name, force in self._forces.items():
            slot, link = self._link_index[name]
            b = self._bodies[slot]
            if link < 0:
                com, _ = pb.getBasePositionAndOrientation(b, physicsClientId=c)
            else:
                com = _link_state(b, link, c).com_pos
            pb.applyExternalForce(b, link, force.tolist(), list(com), pb.WORLD_FRAME, physicsClientId=c)

    def step(self, n: int) -> None:
        c, body, dt, nb = self._client, self._bodies[0], self.timestep, self._nb
        # MuJoCo's velocity update divides by M + armature + dt * damping (see the module docstring).
        target_extra = np.diag(np.concatenate([np.zeros(nb), self._armature + dt * self._damping]))
        for _ in range(int(n)):
            q0, v0 = self._q, self._v
            # A free base's velocities are taken in its frame at the start of the step, before and after.
            rot0 = quat_to_matrix(self._bq) if self._floating else np.eye(3)
            u0 = self._generalized_velocity(rot0)
            m_phys = np.asarray(pb.calculateMassMatrix(self._twin_body, q0.tolist(), physicsClientId=self._twin),
                                dtype=np.float64)
            m_pb = m_phys + self._armature_coupling  # what PyBullet itself integrates with
            servo = self._servo()
            damping = self._damping * v0
            # PyBullet gets the damping torque its own step would see implicitly, so the velocities its
            # contact solver works with do not overshoot; the exact damping is restored below.
            damping_pb = damping / (1.0 + dt * self._damping / np.diag(m_pb)[nb:])
            torque = -damping_pb
            torque[self._act_dofs] += servo
            torque[self._obs_dofs[self._n_act:]] += self._passive_torque
            pb.setJointMotorControlArray(body, self._dof_joints, pb.TORQUE_CONTROL, forces=torque.tolist(),
                                         physicsClientId=c)
            self._apply_forces()
            pb.stepSimulation(physicsClientId=c)
            self._pull_state()
            v1 = self._v
            impulse = m_pb @ (self._generalized_velocity(rot0) - u0)
            impulse[nb:] -= dt * (damping - damping_pb)
            m_target = m_phys + target_extra
            u_new = self._hold_limits(u0 + np.linalg.solve(m_target, impulse), m_target)
            self._write_joints(self._q + dt * (u_new[nb:] - v1), u_new[nb:])
            if self._floating:
                angvel, linvel = rot0 @ u_new[:3], rot0 @ u_new[3:nb]
                quat = quat_mul(quat_from_rotvec(dt * (angvel - self._bw)), self._bq)
                self._write_base(self._bp + dt * (linvel - self._bv), quat, linvel, angvel)
            self._effort = servo
            self._time += dt

    def _hold_limits(self, u: FloatArray, m_target: FloatArray) -> FloatArray:
        """``u`` (mapped generalized velocity) with each joint past its range moving no further into it than PyBullet's
        step left it (``self._v``): joint impulses through ``m_target`` on just those joints (module docstring)."""
        nb, v1 = self._nb, self._v
        v = u[nb:]
        held = np.flatnonzero(((self._q > self._upper) & (v > v1)) | ((self._q < self._lower) & (v < v1)))
        if held.size == 0:
            return u
        cols = nb + held
        response = np.linalg.solve(m_target, np.eye(len(u))[:, cols])  # velocity per unit impulse on each held joint
        return u + response @ np.linalg.solve(response[cols], v1[held] - v[held])

    def read(self) -> RobotState:
        k = self._n_act
        q, v = self._q[self._obs_dofs], self._v[self._obs_dofs]
        empty = np.zeros(0)
        pos, quat, linvel, angvel = self._base_link_state() if self._floating else (empty, empty, empty, empty)
        return RobotState(
            time=self._time,
            joint_pos=q[:k].copy(),
            joint_vel=v[:k].copy(),
            passive_pos=q[k:].copy(),
            passive_vel=v[k:].copy(),
            joint_effort=self._effort.copy(),
            base_quat=quat,
            base_angvel=angvel,
            base_pos=pos,
            base_linvel=linvel,
        )

    def _state_vectors(self) -> tuple[FloatArray, FloatArray]:
        qpos, qvel = self._q[self._obs_dofs].copy(), self._v[self._obs_dofs].copy()
        if not self._floating:
            return qpos, qvel
        pos, quat, linvel, angvel = self._base_link_state()
        return np.concatenate([qpos, pos, quat]), np.concatenate([qvel, linvel, angvel])

    def get_state(self) -> SimState:
        pb.saveBullet(self._state_path, physicsClientId=self._client)
        with open(self._state_path, "rb") as f:
            data = f.read()
        header = np.array([_PHYSICS_TAG, self._time, float(len(data))])
        qpos, qvel = self._state_vectors()
        return SimState(qpos=qpos, qvel=qvel, command=self._command.copy(),
                        physics=np.concatenate([header, _pack_bytes(data)]))

    def set_state(self, state: SimState) -> None:
        physics = state.physics
        if physics is not None and physics.size > _HEADER_SIZE and physics[0] == _PHYSICS_TAG:
            restore = self._state_path + ".restore"
            with open(restore, "wb") as f:
                f.write(_unpack_bytes(physics[_HEADER_SIZE:], int(physics[2])))
            self._rebuild(restore)
            self._time = float(physics[1])
        else:
            n = len(self._obs_dofs)
            nq, nv = n + (BASE_QPOS_SIZE if self._floating else 0), n + (BASE_QVEL_SIZE if self._floating else 0)
            if np.shape(state.qpos) != (nq,) or np.shape(state.qvel) != (nv,):
                raise ValueError(f"a state for this scene has {nq} positions and {nv} velocities (actuated, passive, "
                                 f"then base), got {np.shape(state.qpos)} and {np.shape(state.qvel)}")
            self._rebuild()
            q, v = self._q.copy(), np.zeros(self._ndof)
            q[self._obs_dofs] = state.qpos[:n]
            v[self._obs_dofs] = state.qvel[:n]
            self._write_joints(q, v)
            if self._floating:
                self._write_base_link(state.qpos[n:n + 3], normalize_quat(state.qpos[n + 3:]),
                                      state.qvel[n:n + 3], state.qvel[n + 3:])
        self._command = np.asarray(state.command, dtype=np.float64).copy()
        # As MuJoCo's mj_forward after a restore: the servo torque for the restored position and command.
        self._effort = self._servo()

    # --- named parameters ----------------------------------------------------------------------------
    def supports(self, spec: ParamSpec) -> bool:
        return spec.kind in _ENGINE_KINDS or (spec.kind in TERRAIN_KINDS and self._terrain is not None)

    def _dofs(self, spec: ParamSpec) -> list[int]:
        unknown = [t for t in spec.targets if t not in self._dof_of_name]
        if unknown:
            raise KeyError(f"parameter {spec.name!r}: the pybullet scene has no joint(s) {', '.join(unknown)}")
        return [self._dof_of_name[t] for t in spec.targets]

    def _target_links(self, spec: ParamSpec) -> list[LinkKey]:
        unknown = [t for t in spec.targets if t not in self._link_index]
        if unknown:
            raise KeyError(f"parameter {spec.name!r}: the pybullet scene has no link(s) {', '.join(unknown)}")
        return [self._link_index[t] for t in spec.targets]

    def set_param(self, spec: ParamSpec, value: float) -> None:
        if spec.kind == "joint_damping":
            self._damping[self._dofs(spec)] = value
        elif spec.kind == "joint_frictionloss":
            self._frictionloss[self._dofs(spec)] = value
            self._apply_frictionloss()
        elif spec.kind == "actuator_kp":
            unknown = [t for t in spec.targets if t not in self._act_names]
            if unknown:
                raise KeyError(f"parameter {spec.name!r}: no servo drives joint(s) {', '.join(unknown)}")
            self._kp[[self._act_names.index(t) for t in spec.targets]] = value
        elif spec.kind == "contact_friction":
            for key in self._target_links(spec):
                self._friction[key] = value
                self._apply_link(key)
        elif spec.kind in ("body_mass", "body_mass_scale"):
            links = self._target_links(spec)
            fixed = [t for t, key in zip(spec.targets, links, strict=True) if self._nominal_mass[key] <= 0.0]
            if fixed:
                raise ValueError(f"parameter {spec.name!r}: link(s) {', '.join(fixed)} are fixed or massless; "
                                 "only moving links have a mass to set")
            if spec.kind == "body_mass":
                scale = value / sum(self._nominal_mass[key] for key in links)
            else:
                scale = value
            for key in links:
                self._mass_scale[key] = scale
                self._apply_link(key)
            # PyBullet builds its mass-matrix model once per loaded body: reload the twin.
            self._twin_body = self._load_twin()
        elif spec.kind in _ENGINE_KINDS and spec.kind in VISUAL_KINDS:
            self._set_visual(spec, value)
        elif spec.kind in TERRAIN_KINDS and self._terrain is not None:
            # The world is rebuilt at every reset and restore: the new ground takes effect there.
            self._terrain_values[spec.kind] = value
            v = self._terrain_values
            roughness, slope = v["terrain_roughness"], v["terrain_slope"]
            self._terrain_heights = (None if is_flat(roughness, slope)
                                     else terrain_heights(self._terrain, roughness, slope, v["terrain_seed"]))
        else:
            raise KeyError(f"the pybullet engine cannot apply parameter kind {spec.kind!r} ({spec.name})")

    def _set_visual(self, spec: ParamSpec, value: float) -> None:
        kind = spec.kind
        if kind in ("color_r", "color_g", "color_b"):
            unknown = [t for t in spec.targets if t not in self._visual_shapes]
            if unknown:
                raise KeyError(f"parameter {spec.name!r}: the pybullet scene has no visual(s) {', '.join(unknown)}")
            for t in spec.targets:
                for key in self._visual_shapes[t]:
                    self._rgba[key]["rgb".index(kind[-1])] = value
                    self._apply_rgba(key)
        elif kind in ("light_intensity", "light_r", "light_g", "light_b"):
            self._light_gain[kind] = value
        elif kind in ("light_dx", "light_dy", "light_dz"):
            for t in spec.targets:
                if t not in self._lights:
                    raise KeyError(f"parameter {spec.name!r}: the scene has no light {t!r}")
                self._light_offsets.setdefault(t, np.zeros(3))["xyz".index(kind[-1])] = value
        elif kind in CAMERA_KINDS:
            for t in spec.targets:
                if t not in self._task_cameras:
                    raise KeyError(f"parameter {spec.name!r}: the task has no camera {t!r}")
                self._camera_jitter[t] = jitter = self._camera_jitter[t].with_kind(kind, value)
                cam = jitter_camera(self._task_cameras[t], jitter)
                self._camera_matrices[t] = (cam.view_matrix(),
                                            cam.projection_matrix(pixel_shift=TINY_RENDERER_PIXEL_SHIFT))
        else:
            raise KeyError(f"the pybullet engine cannot apply parameter kind {kind!r} ({spec.name})")

    def _light_args(self) -> dict[str, object]:
        """TinyRenderer's light for the visual parameters: its defaults (and :data:`LIGHT_DIRECTION`) where they
        are nominal. It has one directional light: the first moved light of the scene turns it."""
        args: dict[str, object] = {"lightDirection": list(LIGHT_DIRECTION)}
        for name, offset in self._light_offsets.items():
            if offset.any():
                pos, direction = self._lights[name]
                _, d = aimed_light(pos, direction, (float(offset[0]), float(offset[1]), float(offset[2])))
                args["lightDirection"] = (-d).tolist()  # TinyRenderer takes the direction towards the light
                break
        # Always given: TinyRenderer keeps a light coefficient from one call to the next once it was passed.
        g = self._light_gain
        args["lightDiffuseCoeff"] = TINY_RENDERER_DIFFUSE * g["light_intensity"]
        args["lightColor"] = [g["light_r"], g["light_g"], g["light_b"]]
        return args

    # --- rendering -----------------------------------------------------------------------------------
    def render(self, width: int, height: int, camera: str | None = None) -> np.ndarray:
        if not self._cameras:
            raise ValueError("the scene has no world-fixed camera to render from")
        name = next(iter(self._cameras)) if camera is None else camera
        if name not in self._cameras:
            raise ValueError(f"unknown camera {name!r}; the pybullet scene has {', '.join(self._cameras)}")
        if name in self._task_cameras and (width, height) == (self._task_cameras[name].width,
                                                               self._task_cameras[name].height):
            return self.render_camera(name)
        eye, forward, up, fovy = self._cameras[name]
        target = [e + f for e, f in zip(eye, forward, strict=True)]
        view = pb.computeViewMatrix(list(eye), target, list(up), physicsClientId=self._client)
        proj = pb.computeProjectionMatrixFOV(fovy, width / height, CAMERA_NEAR_M, CAMERA_FAR_M,
                                             physicsClientId=self._client)
        _, _, rgba, _, _ = pb.getCameraImage(width, height, view, proj, shadow=0, renderer=pb.ER_TINY_RENDERER,
                                             physicsClientId=self._client, **self._light_args())
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def render_camera(self, name: str) -> np.ndarray:
        if name not in self._task_cameras:
            raise KeyError(f"the task has no camera {name!r}; its cameras are {list(self._task_cameras)}")
        cam = self._task_cameras[name]
        view, proj = self._camera_matrices[name]
        _, _, rgba, _, _ = pb.getCameraImage(cam.width, cam.height, view, proj, shadow=0,
                                             renderer=pb.ER_TINY_RENDERER, physicsClientId=self._client,
                                             **self._light_args())
        return np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)[:, :, :3].copy()

    def close(self) -> None:
        self._finalizer()
