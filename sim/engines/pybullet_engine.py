"""PyBullet backend: the second engine, built to behave like :mod:`sim.engines.mujoco_engine`.

The scene is the task's URDF (``task.model_urdf()``), loaded with a fixed base into this instance's
own ``DIRECT`` client. How MuJoCo's model semantics are reproduced:

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

import numpy as np
import pybullet as pb

from sim.engines.base import ParamSpec
from sim.state import RobotState, SimState
from sim.tasks.base import Task
from sim.tasks.spec import FloatArray

GRAVITY_M_S2 = -9.81
"""Gravity along world z (m/s^2), as MuJoCo's default."""
_ENGINE_KINDS = frozenset(
    {"joint_damping", "joint_frictionloss", "actuator_kp", "contact_friction", "body_mass", "body_mass_scale"}
)
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

CAMERAS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], tuple[float, float, float], float]] = {
    "front": ((0.0, -0.42, 0.32), (0.0, 0.8, -0.6), (0.0, 0.6, 0.8), 45.0),
    "top": ((0.0, 0.0, 0.55), (0.0, 0.0, -1.0), (0.0, 1.0, 0.0), 45.0),
}
"""Camera name -> (eye (m), viewing direction, up vector, vertical field of view (deg)), from the MJCF cameras."""
DEFAULT_CAMERA = "front"
CAMERA_NEAR_M = 0.01
CAMERA_FAR_M = 5.0
LIGHT_DIRECTION = (0.4, -0.4, 1.0)
"""Direction towards the light (-), the MJCF key light reversed."""


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


class PybulletEngine:
    """A task's scene in PyBullet, with MuJoCo's servo, damping, armature and friction semantics."""

    name = "pybullet"

    def __init__(self, task: Task, timestep: float) -> None:
        if not (timestep > 0 and math.isfinite(timestep)):
            raise ValueError(f"timestep must be a positive number of seconds, got {timestep!r}")
        self.timestep = float(timestep)
        spec = task.spec
        urdf = task.model_urdf()
        self._tmpdir = tempfile.mkdtemp(prefix="s2r-pybullet-")
        self._urdf_path = os.path.join(self._tmpdir, "scene.urdf")
        self._state_path = os.path.join(self._tmpdir, "state.bullet")
        with open(self._urdf_path + ".tmp", "w", encoding="utf-8") as f:
            f.write(urdf)
        os.replace(self._urdf_path + ".tmp", self._urdf_path)
        # The simulated world, and a twin holding the same links without armature: PyBullet's mass
        # matrix routine rejects the armature-laden inertias (they break the triangle inequality).
        self._client = pb.connect(pb.DIRECT)
        self._twin = pb.connect(pb.DIRECT)
        self._finalizer = weakref.finalize(self, _release, (self._client, self._twin), self._tmpdir)
        body = self._load(self._client)

        # --- names -> indices -------------------------------------------------------------------
        c = self._client
        infos = [pb.getJointInfo(body, j, physicsClientId=c) for j in range(pb.getNumJoints(body, physicsClientId=c))]
        joint_index = {info[1].decode(): j for j, info in enumerate(infos)}
        self._link_index = {"world": -1, **{info[12].decode(): j for j, info in enumerate(infos)}}
        self._dof_joints = [j for j, info in enumerate(infos) if info[2] in _MOVABLE]
        dof_of_joint = {j: k for k, j in enumerate(self._dof_joints)}
        self._dof_of_name = {info[1].decode(): dof_of_joint[j] for j, info in enumerate(infos) if j in dof_of_joint}
        names = (*spec.joint_names, *spec.passive_joints)
        for n in names:
            if n not in joint_index:
                raise ValueError(f"the URDF has no joint {n!r}; its joints are {', '.join(joint_index)}")
            if n not in self._dof_of_name:
                raise ValueError(f"joint {n!r} of the URDF is not a one-degree-of-freedom joint")
        self._n_act = len(spec.joint_names)
        self._obs_dofs = np.array([self._dof_of_name[n] for n in names])
        self._act_dofs = self._obs_dofs[: self._n_act]
        self._act_names = tuple(spec.joint_names)
        self._effort_limit = np.array([infos[self._dof_joints[d]][10] for d in self._act_dofs], dtype=np.float64)
        self._ndof = len(self._dof_joints)
        self._limits = [(float(infos[j][8]), float(infos[j][9])) for j in self._dof_joints]

        # --- nominal model ----------------------------------------------------------------------
        dyn = _urdf_joint_dynamics(urdf)
        dof_names = [infos[j][1].decode() for j in self._dof_joints]
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
        self._links = sorted(self._link_index.values())
        self._nominal_mass: dict[int, float] = {}
        self._nominal_inertia: dict[int, FloatArray] = {}
        self._nominal_friction: dict[int, float] = {}
        for link in self._links:
            info = pb.getDynamicsInfo(body, link, physicsClientId=c)
            self._nominal_mass[link] = float(info[0])
            self._nominal_friction[link] = float(info[1])
            self._nominal_inertia[link] = np.array(info[2], dtype=np.float64)

        # --- current model (set_param writes here, always from the nominal values) -----------------
        self._damping = self._nominal_damping.copy()
        self._frictionloss = self._nominal_frictionloss.copy()
        self._kp = self._nominal_kp.copy()
        self._mass_scale = {link: 1.0 for link in self._links}
        self._friction = dict(self._nominal_friction)

        self._twin_body = self._load_twin()
        self._link_armature, self._armature_coupling = self._place_armature()
        self._body = body
        self._command = np.zeros(self._n_act)
        self._effort = np.zeros(self._n_act)
        self._time = 0.0
        self._q = np.zeros(self._ndof)
        self._v = np.zeros(self._ndof)
        self.reset(spec.reset, np.zeros(len(spec.passive_joints)))

    # --- world construction ----------------------------------------------------------------------
    def _load(self, client: int) -> int:
        """A fresh world in ``client`` holding only the scene, with the solver settings this engine relies on."""
        pb.resetSimulation(physicsClientId=client)
        pb.setGravity(0.0, 0.0, GRAVITY_M_S2, physicsClientId=client)
        # deterministicOverlappingPairs sorts contact pairs, so the solver's order does not depend on history.
        pb.setPhysicsEngineParameter(fixedTimeStep=self.timestep, numSubSteps=0, deterministicOverlappingPairs=1,
                                     physicsClientId=client)
        return int(pb.loadURDF(self._urdf_path, useFixedBase=True, flags=_LOAD_FLAGS, physicsClientId=client))

    def _load_twin(self) -> int:
        """(Re)load the armature-free twin with the current link masses; it only answers mass-matrix queries."""
        body = self._load(self._twin)
        for link in self._links:
            if link >= 0:
                scale = self._mass_scale[link]
                pb.changeDynamics(body, link, mass=self._nominal_mass[link] * scale,
                                  localInertiaDiagonal=(self._nominal_inertia[link] * scale).tolist(),
                                  physicsClientId=self._twin)
        return body

    def _rebuild(self, state_file: str | None = None) -> None:
        """Reload the scene with the current model; restore a serialized world state if given."""
        c = self._client
        self._body = body = self._load(c)
        pb.changeDynamics(body, -1, linearDamping=0.0, angularDamping=0.0,
                          activationState=pb.ACTIVATION_STATE_DISABLE_SLEEPING, physicsClientId=c)
        for link in self._links:
            self._apply_link(link)
        for j in self._dof_joints:
            # Two calls: PyBullet 3.2.7 drops jointDamping when maxJointVelocity comes in the same call.
            pb.changeDynamics(body, j, jointDamping=0.0, physicsClientId=c)
            pb.changeDynamics(body, j, maxJointVelocity=_MAX_JOINT_VELOCITY_RAD_S, physicsClientId=c)
        self._apply_frictionloss()
        if state_file is not None:
            pb.restoreState(fileName=state_file, physicsClientId=c)
        self._pull_state()

    def _apply_link(self, link: int) -> None:
        scale = self._mass_scale[link]
        kwargs: dict[str, object] = {"lateralFriction": math.sqrt(self._friction[link])}
        if link >= 0:
            kwargs["mass"] = self._nominal_mass[link] * scale
            inertia = self._nominal_inertia[link] * scale + self._link_armature.get(link, 0.0)
            kwargs["localInertiaDiagonal"] = inertia.tolist()
        pb.changeDynamics(self._body, link, physicsClientId=self._client, **kwargs)

    def _apply_frictionloss(self) -> None:
        # A velocity motor with target 0 and force limit = friction torque is Coulomb friction; a limit
        # of 0 also switches off PyBullet's default motors, which would otherwise hold every joint.
        pb.setJointMotorControlArray(self._body, self._dof_joints, pb.VELOCITY_CONTROL,
                                     targetVelocities=[0.0] * self._ndof, forces=self._frictionloss.tolist(),
                                     physicsClientId=self._client)

    def _place_armature(self) -> tuple[dict[int, FloatArray], FloatArray]:
        """Extra principal inertia per link that carries the joints' armature, and what it adds to ``M``.

        Armature ``a`` on joint ``j`` is ``a qdot_j^2 / 2`` of kinetic energy. Extra inertia ``d`` about
        principal axis ``k`` of the child link is ``d (w . qdot)^2 / 2``, ``w`` being row ``k`` of
        ``R^T J_w`` (``J_w`` the link's angular Jacobian, ``R`` its principal frame). An axis qualifies
        when ``w`` is the same in every configuration (checked on random ones) and has ``|w_j| >= 0.5``;
        the one touching fewest joints wins, ``d = a / w_j^2``, and ``d w w^T`` is added to PyBullet's
        mass matrix (removed again in :meth:`step`). A joint without such an axis keeps its armature in
        the velocity map only.
        """
        t, body = self._twin, self._twin_body
        rng = np.random.default_rng(0)
        zeros = [0.0] * self._ndof
        rows: dict[int, list[FloatArray]] = {}
        for _ in range(_ARMATURE_CHECK_CONFIGS):
            q = [rng.uniform(lo, hi) if lo < hi else rng.uniform(-math.pi, math.pi) for lo, hi in self._limits]
            pb.resetJointStatesMultiDof(body, self._dof_joints, [[x] for x in q], physicsClientId=t)
            for dof, j in enumerate(self._dof_joints):
                if self._armature[dof] > 0.0:
                    state = pb.getLinkState(body, j, computeForwardKinematics=1, physicsClientId=t)
                    rot = np.array(pb.getMatrixFromQuaternion(state[1]), dtype=np.float64).reshape(3, 3)
                    _, ang = pb.calculateJacobian(body, j, [0.0, 0.0, 0.0], q, zeros, zeros, physicsClientId=t)
                    rows.setdefault(dof, []).append(rot.T @ np.asarray(ang, dtype=np.float64))
        link_armature: dict[int, FloatArray] = {}
        coupling = np.zeros((self._ndof, self._ndof))
        for dof, mats in rows.items():
            best: tuple[int, float, int, FloatArray] | None = None
            for k in range(3):
                w = np.array([m[k] for m in mats])  # one row per configuration
                if np.max(np.abs(w - w[0])) > _ALIGN_TOL or abs(w[0, dof]) < 0.5:
                    continue
                row = np.where(np.abs(w[0]) > _ALIGN_TOL, w[0], 0.0)
                key = (int(np.count_nonzero(row)), -abs(float(row[dof])), k, row)
                if best is None or key[:3] < best[:3]:
                    best = key
            if best is None:
                continue  # no principal axis fits: this armature lives in the velocity map only
            _, _, k, row = best
            extra = self._armature[dof] / row[dof] ** 2
            link = self._dof_joints[dof]
            link_armature.setdefault(link, np.zeros(3))[k] += extra
            coupling += extra * np.outer(row, row)
        return link_armature, coupling

    def _pull_state(self) -> None:
        states = pb.getJointStates(self._body, self._dof_joints, physicsClientId=self._client)
        self._q = np.array([s[0] for s in states], dtype=np.float64)
        self._v = np.array([s[1] for s in states], dtype=np.float64)

    def _servo(self) -> FloatArray:
        q = self._q[self._act_dofs]
        return np.minimum(np.maximum(self._kp * (self._command - q), -self._effort_limit), self._effort_limit)

    # --- state -------------------------------------------------------------------------------------
    def reset(self, joint_pos: FloatArray, passive_pos: FloatArray) -> None:
        self._rebuild()
        q = self._q.copy()
        q[self._obs_dofs] = np.concatenate([np.asarray(joint_pos, dtype=np.float64),
                                            np.asarray(passive_pos, dtype=np.float64)])
        self._write_joints(q, np.zeros(self._ndof))
        self._command = np.asarray(joint_pos, dtype=np.float64).copy()
        self._time = 0.0
        self._effort = self._servo()

    def _write_joints(self, q: FloatArray, v: FloatArray) -> None:
        pb.resetJointStatesMultiDof(self._body, self._dof_joints, q.reshape(-1, 1).tolist(),
                                    v.reshape(-1, 1).tolist(), physicsClientId=self._client)
        self._q, self._v = q.copy(), v.copy()

    def set_command(self, command: FloatArray) -> None:
        self._command = np.asarray(command, dtype=np.float64).copy()

    def step(self, n: int) -> None:
        c, body, dt = self._client, self._body, self.timestep
        # MuJoCo's velocity update divides by M + armature + dt * damping (see the module docstring).
        target_extra = np.diag(self._armature + dt * self._damping)
        for _ in range(int(n)):
            q0, v0 = self._q, self._v
            m_phys = np.asarray(pb.calculateMassMatrix(self._twin_body, q0.tolist(), physicsClientId=self._twin),
                                dtype=np.float64)
            m_pb = m_phys + self._armature_coupling  # what PyBullet itself integrates with
            servo = self._servo()
            damping = self._damping * v0
            # PyBullet gets the damping torque its own step would see implicitly, so the velocities its
            # contact solver works with do not overshoot; the exact damping is restored below.
            damping_pb = damping / (1.0 + dt * self._damping / np.diag(m_pb))
            torque = -damping_pb
            torque[self._act_dofs] += servo
            pb.setJointMotorControlArray(body, self._dof_joints, pb.TORQUE_CONTROL, forces=torque.tolist(),
                                         physicsClientId=c)
            pb.stepSimulation(physicsClientId=c)
            self._pull_state()
            v1 = self._v
            impulse = m_pb @ (v1 - v0) - dt * (damping - damping_pb)
            v_new = v0 + np.linalg.solve(m_phys + target_extra, impulse)
            self._write_joints(self._q + dt * (v_new - v1), v_new)
            self._effort = servo
            self._time += dt

    def read(self) -> RobotState:
        k = self._n_act
        q, v = self._q[self._obs_dofs], self._v[self._obs_dofs]
        return RobotState(
            time=self._time,
            joint_pos=q[:k].copy(),
            joint_vel=v[:k].copy(),
            passive_pos=q[k:].copy(),
            passive_vel=v[k:].copy(),
            joint_effort=self._effort.copy(),
        )

    def get_state(self) -> SimState:
        pb.saveBullet(self._state_path, physicsClientId=self._client)
        with open(self._state_path, "rb") as f:
            data = f.read()
        header = np.array([_PHYSICS_TAG, self._time, float(len(data))])
        return SimState(
            qpos=self._q[self._obs_dofs].copy(),
            qvel=self._v[self._obs_dofs].copy(),
            command=self._command.copy(),
            physics=np.concatenate([header, _pack_bytes(data)]),
        )

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
            if np.shape(state.qpos) != (n,) or np.shape(state.qvel) != (n,):
                raise ValueError(f"a state for this scene has {n} joint positions and velocities (actuated, then "
                                 f"passive), got {np.shape(state.qpos)} and {np.shape(state.qvel)}")
            self._rebuild()
            q, v = self._q.copy(), np.zeros(self._ndof)
            q[self._obs_dofs] = state.qpos
            v[self._obs_dofs] = state.qvel
            self._write_joints(q, v)
        self._command = np.asarray(state.command, dtype=np.float64).copy()
        # As MuJoCo's mj_forward after a restore: the servo torque for the restored position and command.
        self._effort = self._servo()

    # --- named parameters ----------------------------------------------------------------------------
    def supports(self, spec: ParamSpec) -> bool:
        return spec.kind in _ENGINE_KINDS

    def _dofs(self, spec: ParamSpec) -> list[int]:
        unknown = [t for t in spec.targets if t not in self._dof_of_name]
        if unknown:
            raise KeyError(f"parameter {spec.name!r}: the pybullet scene has no joint(s) {', '.join(unknown)}")
        return [self._dof_of_name[t] for t in spec.targets]

    def _target_links(self, spec: ParamSpec) -> list[int]:
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
            for link in self._target_links(spec):
                self._friction[link] = value
                self._apply_link(link)
        elif spec.kind in ("body_mass", "body_mass_scale"):
            links = self._target_links(spec)
            fixed = [t for t, link in zip(spec.targets, links, strict=True) if self._nominal_mass[link] <= 0.0]
            if fixed:
                raise ValueError(f"parameter {spec.name!r}: link(s) {', '.join(fixed)} are fixed or massless; "
                                 "only moving links have a mass to set")
            if spec.kind == "body_mass":
                scale = value / sum(self._nominal_mass[link] for link in links)
            else:
                scale = value
            for link in links:
                self._mass_scale[link] = scale
                self._apply_link(link)
            # PyBullet builds its mass-matrix model once per loaded body: reload the twin.
            self._twin_body = self._load_twin()
        else:
            raise KeyError(f"the pybullet engine cannot apply parameter kind {spec.kind!r} ({spec.name})")

    # --- rendering -----------------------------------------------------------------------------------
    def render(self, width: int, height: int, camera: str | None = None) -> np.ndarray:
        name = DEFAULT_CAMERA if camera is None else camera
        if name not in CAMERAS:
            raise ValueError(f"unknown camera {name!r}; the pybullet scene has {', '.join(CAMERAS)}")
        eye, forward, up, fovy = CAMERAS[name]
        target = [e + f for e, f in zip(eye, forward, strict=True)]
        view = pb.computeViewMatrix(list(eye), target, list(up), physicsClientId=self._client)
        proj = pb.computeProjectionMatrixFOV(fovy, width / height, CAMERA_NEAR_M, CAMERA_FAR_M,
                                             physicsClientId=self._client)
        _, _, rgba, _, _ = pb.getCameraImage(width, height, view, proj, lightDirection=list(LIGHT_DIRECTION),
                                             shadow=0, renderer=pb.ER_TINY_RENDERER, physicsClientId=self._client)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def close(self) -> None:
        self._finalizer()
