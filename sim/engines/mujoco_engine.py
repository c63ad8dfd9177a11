"""MuJoCo backend: the primary engine."""

from __future__ import annotations

import os
from collections.abc import Sequence

# Headless by default: EGL renders offscreen without a display; on a machine without a GPU, Mesa's EGL runs its
# llvmpipe software rasterizer (LP_NUM_THREADS threads). OSMesa needs libOSMesa, which Mesa no longer ships by default.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

from sim.camera import CameraSpec
from sim.engines.base import IMAGE_KINDS, TERRAIN_KINDS, VISUAL_KINDS, ParamSpec
from sim.models.terrain import Terrain, ground_height, is_flat, terrain_heights
from sim.state import BASE_QPOS_SIZE, BASE_QVEL_SIZE, RobotState, SimState
from sim.tasks.spec import FloatArray
from sim.visual import CAMERA_KINDS, CameraJitter, Distractor, aimed_light, distractor_layout, fovy_scale, jitter_camera

_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
CAMERA_MESH_SLICES = 12
"""Slices around (and, halved, stacks along) the meshes MuJoCo draws capsules, spheres and cylinders with, in task
camera images: at 84 x 84 the default 28 x 16 costs 3-4x the frame time for no visible difference."""
_ENGINE_KINDS = frozenset(
    {"joint_damping", "joint_frictionloss", "actuator_kp", "contact_friction", "contact_timeconst", "contact_impratio",
     "body_mass", "body_mass_scale"}
) | (VISUAL_KINDS - IMAGE_KINDS)
_DISTRACTOR_GEOM = {"box": mujoco.mjtGeom.mjGEOM_BOX, "sphere": mujoco.mjtGeom.mjGEOM_SPHERE}


class MujocoEngine:
    """A MuJoCo scene with position actuators named after the joints they drive."""

    name = "mujoco"

    def __init__(self, xml: str, joint_names: Sequence[str], passive_joints: Sequence[str],
                 base_joint: str | None = None, cameras: Sequence[CameraSpec] = (),
                 terrain: Terrain | None = None) -> None:
        self.model = mujoco.MjModel.from_xml_string(xml)
        self.data = mujoco.MjData(self.model)
        self.timestep = float(self.model.opt.timestep)
        m = self.model
        self._joint_ids = np.array([m.joint(n).id for n in joint_names], dtype=np.int64)
        self._passive_ids = np.array([m.joint(n).id for n in passive_joints], dtype=np.int64)
        all_ids = np.concatenate([self._joint_ids, self._passive_ids])
        self._qadr = m.jnt_qposadr[all_ids]
        self._vadr = m.jnt_dofadr[all_ids]
        # A floating base is the free joint named by the task: 7 qpos (position, quaternion w x y z) and
        # 6 dofs (linear velocity in the world frame, angular velocity in the body frame), MuJoCo's layout
        # and the one SimState uses.
        self._base_qadr = np.zeros(0, dtype=np.int64)
        self._base_vadr = np.zeros(0, dtype=np.int64)
        if base_joint is not None:
            jid = m.joint(base_joint).id
            if m.jnt_type[jid] != mujoco.mjtJoint.mjJNT_FREE:
                raise ValueError(f"base joint {base_joint!r} of the MuJoCo scene is not a free joint")
            self._base_qadr = m.jnt_qposadr[jid] + np.arange(BASE_QPOS_SIZE)
            self._base_vadr = m.jnt_dofadr[jid] + np.arange(BASE_QVEL_SIZE)
        self._state_qadr = np.concatenate([self._qadr, self._base_qadr])
        self._state_vadr = np.concatenate([self._vadr, self._base_vadr])
        self._n_act = len(joint_names)
        self._act_ids = np.array([m.actuator(n).id for n in joint_names], dtype=np.int64)
        self._nominal = {
            "dof_damping": m.dof_damping.copy(),
            "dof_frictionloss": m.dof_frictionloss.copy(),
            "gainprm": m.actuator_gainprm.copy(),
            "biasprm": m.actuator_biasprm.copy(),
            "geom_friction": m.geom_friction.copy(),
            "body_mass": m.body_mass.copy(),
            "body_inertia": m.body_inertia.copy(),
        }
        # Visual parameters: colours and light strengths are written into the model (the renderer reads them at
        # every frame); the lights' and cameras' poses and the distractors are applied to the renderer's scene
        # after update_scene, so that nothing of MjData, and so nothing of the physics, is touched.
        self._nominal["visual_rgba"] = m.geom_rgba.copy()
        self._nominal["light_diffuse"] = m.light_diffuse.copy()
        self._light_gain = {"light_intensity": 1.0, "light_r": 1.0, "light_g": 1.0, "light_b": 1.0}
        self._light_offsets: dict[int, FloatArray] = {}
        self._camera_jitter: dict[str, CameraJitter] = {}
        self._distractor_values = {"distractor_count": 0.0, "distractor_seed": 0.0}
        self._distractors: tuple[Distractor, ...] = ()
        self._terrain = terrain
        self._terrain_values = {"terrain_roughness": 0.0, "terrain_slope": 0.0, "terrain_seed": 0.0}
        if terrain is not None:
            # The heightfield geom, and the body's other geoms (the flat floor) it stands in for while not flat.
            self._hfield_geom = m.geom(terrain.name).id
            if m.geom_type[self._hfield_geom] != mujoco.mjtGeom.mjGEOM_HFIELD:
                raise ValueError(f"geom {terrain.name!r} of the MuJoCo scene is not a heightfield")
            self._hfield = int(m.geom_dataid[self._hfield_geom])
            if (m.hfield_nrow[self._hfield], m.hfield_ncol[self._hfield]) != (terrain.n, terrain.n):
                raise ValueError(f"heightfield {terrain.name!r} is not the terrain's {terrain.n} x {terrain.n} grid")
            body = m.body(terrain.body).id
            self._flat_geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] == body and g != self._hfield_geom]
            # Swapped in, the heightfield takes the floor's collision bits and colour; the floor drops to just below
            # it, the ground beyond its edge.
            self._nominal["geom_contype"] = m.geom_contype.copy()
            self._nominal["geom_conaffinity"] = m.geom_conaffinity.copy()
            self._nominal["geom_rgba"] = m.geom_rgba.copy()
            self._nominal["geom_pos"] = m.geom_pos.copy()
            ref = self._flat_geoms[0] if self._flat_geoms else self._hfield_geom
            self._terrain_contype = (int(m.geom_contype[ref]), int(m.geom_conaffinity[ref]))
        self._renderer: mujoco.Renderer | None = None
        self._cameras = {c.name: c for c in cameras}
        for c in cameras:
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, c.name) < 0:
                raise ValueError(f"the MuJoCo scene has no camera {c.name!r} for the task's camera of that name")
        self._camera_renderers: dict[str, mujoco.Renderer] = {}
        self._state_buf = np.empty(mujoco.mj_stateSize(m, _STATE_SPEC))

    # --- state -------------------------------------------------------------------------------
    def reset(self, joint_pos: FloatArray, passive_pos: FloatArray, base_pose: FloatArray | None = None) -> None:
        mujoco.mj_resetData(self.model, self.data)
        qpos = np.concatenate([joint_pos, passive_pos])
        self.data.qpos[self._qadr] = qpos
        if base_pose is not None:
            if self._base_qadr.size == 0:
                raise ValueError("a base pose was given, but this scene has no floating base")
            pose = np.asarray(base_pose, dtype=np.float64)
            if pose.shape != (BASE_QPOS_SIZE,):
                raise ValueError(f"a base pose has {BASE_QPOS_SIZE} values (x, y, z, qw, qx, qy, qz), got {pose.shape}")
            self.data.qpos[self._base_qadr] = np.concatenate([pose[:3], pose[3:] / np.linalg.norm(pose[3:])])
        self.data.ctrl[self._act_ids] = joint_pos
        mujoco.mj_forward(self.model, self.data)

    def set_command(self, command: FloatArray) -> None:
        self.data.ctrl[self._act_ids] = command

    def step(self, n: int) -> None:
        mujoco.mj_step(self.model, self.data, nstep=int(n))

    def read(self) -> RobotState:
        d = self.data
        qpos = d.qpos[self._qadr]
        qvel = d.qvel[self._vadr]
        k = self._n_act
        base_q, base_v = d.qpos[self._base_qadr], d.qvel[self._base_vadr]
        return RobotState(
            time=float(d.time),
            joint_pos=qpos[:k].copy(),
            joint_vel=qvel[:k].copy(),
            passive_pos=qpos[k:].copy(),
            passive_vel=qvel[k:].copy(),
            joint_effort=d.actuator_force[self._act_ids].copy(),
            base_quat=base_q[3:].copy(),
            base_angvel=base_v[3:].copy(),
            base_pos=base_q[:3].copy(),
            base_linvel=base_v[:3].copy(),
        )

    def get_state(self) -> SimState:
        mujoco.mj_getState(self.model, self.data, self._state_buf, _STATE_SPEC)
        return SimState(
            qpos=self.data.qpos[self._state_qadr].copy(),
            qvel=self.data.qvel[self._state_vadr].copy(),
            command=self.data.ctrl[self._act_ids].copy(),
            physics=self._state_buf.copy(),
        )

    def set_state(self, state: SimState) -> None:
        if state.physics is not None and state.physics.size == self._state_buf.size:
            mujoco.mj_setState(self.model, self.data, np.asarray(state.physics, dtype=np.float64), _STATE_SPEC)
        else:
            nq, nv = self._state_qadr.size, self._state_vadr.size
            if np.shape(state.qpos) != (nq,) or np.shape(state.qvel) != (nv,):
                raise ValueError(f"a state for this scene has {nq} positions and {nv} velocities (actuated, passive, "
                                 f"then base), got {np.shape(state.qpos)} and {np.shape(state.qvel)}")
            self.data.qpos[self._state_qadr] = state.qpos
            self.data.qvel[self._state_vadr] = state.qvel
            self.data.qacc_warmstart[:] = 0.0
            self.data.ctrl[self._act_ids] = state.command
        # Pushes are inputs the caller renews, not state (the same on every engine).
        self.data.xfrc_applied[:] = 0.0
        self.data.qfrc_applied[:] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def set_external_force(self, body: str, force: FloatArray) -> None:
        f = np.asarray(force, dtype=np.float64)
        if f.shape != (3,):
            raise ValueError(f"an external force has 3 components (N, world frame), got shape {f.shape}")
        # xfrc_applied acts at the body's centre of mass, in world axes: force, then torque.
        self.data.xfrc_applied[self.model.body(body).id] = np.concatenate([f, np.zeros(3)])

    def set_passive_torque(self, torque: FloatArray) -> None:
        t = np.asarray(torque, dtype=np.float64)
        if t.shape != (self._passive_ids.size,):
            raise ValueError(f"a passive torque has one value per passive joint ({self._passive_ids.size}), "
                             f"got shape {t.shape}")
        # qfrc_applied is a generalized force: on a hinge, a torque about its axis (mj_resetData zeroes it).
        self.data.qfrc_applied[self._vadr[self._n_act:]] = t

    # --- named parameters -------------------------------------------------------------------
    def supports(self, spec: ParamSpec) -> bool:
        return spec.kind in _ENGINE_KINDS or (spec.kind in TERRAIN_KINDS and self._terrain is not None)

    def _apply_terrain(self) -> None:
        """Write the heightfield for the current terrain values and swap it in for the flat floor, or back out."""
        assert self._terrain is not None
        m, nom, t = self.model, self._nominal, self._terrain
        v = self._terrain_values
        g, flat = self._hfield_geom, self._flat_geoms
        if is_flat(v["terrain_roughness"], v["terrain_slope"]):
            for key, field in (("geom_contype", m.geom_contype), ("geom_conaffinity", m.geom_conaffinity),
                               ("geom_rgba", m.geom_rgba), ("geom_pos", m.geom_pos)):
                field[[g, *flat]] = nom[key][[g, *flat]]
        else:
            heights = terrain_heights(t, v["terrain_roughness"], v["terrain_slope"], v["terrain_seed"])
            # Elevation data in [0, 1] times the fixed height range, from the geom's base at -range / 2.
            start, size = m.hfield_adr[self._hfield], t.n * t.n
            m.hfield_data[start:start + size] = (heights.ravel() / t.height_range_m + 0.5).astype(np.float32)
            m.geom_contype[g], m.geom_conaffinity[g] = self._terrain_contype
            m.geom_pos[flat, 2] = nom["geom_pos"][flat, 2] + ground_height(heights)
            m.geom_rgba[g, 3] = 1.0
        # A static geom's world pose is a derived constant: recompute it (on a scratch MjData, as for the masses).
        mujoco.mj_setConst(m, mujoco.MjData(m))
        # The renderer holds its own copy of the heightfield: a new one uploads the new heights.
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def set_param(self, spec: ParamSpec, value: float) -> None:
        m, nom = self.model, self._nominal
        if spec.kind == "joint_damping":
            dofs = [m.jnt_dofadr[m.joint(t).id] for t in spec.targets]
            m.dof_damping[dofs] = value
        elif spec.kind == "joint_frictionloss":
            dofs = [m.jnt_dofadr[m.joint(t).id] for t in spec.targets]
            m.dof_frictionloss[dofs] = value
        elif spec.kind == "actuator_kp":
            # A MuJoCo position servo is force = kp * ctrl - kp * qpos: gain and bias move together.
            acts = [m.actuator(t).id for t in spec.targets]
            m.actuator_gainprm[acts, 0] = value
            m.actuator_biasprm[acts, 1] = -value
        elif spec.kind == "contact_friction":
            body_ids = {m.body(t).id for t in spec.targets}
            geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] in body_ids]
            m.geom_friction[geoms, 0] = value
        elif spec.kind == "contact_timeconst":
            # solref's first term on both sides of the contact (MuJoCo mixes the two geoms' solref).
            body_ids = {m.body(t).id for t in spec.targets}
            geoms = [g for g in range(m.ngeom) if m.geom_bodyid[g] in body_ids]
            m.geom_solref[geoms, 0] = value
        elif spec.kind == "contact_impratio":
            m.opt.impratio = value
        elif spec.kind in ("body_mass", "body_mass_scale"):
            bodies = [m.body(t).id for t in spec.targets]
            scale = value / nom["body_mass"][bodies].sum() if spec.kind == "body_mass" else value
            m.body_mass[bodies] = nom["body_mass"][bodies] * scale
            m.body_inertia[bodies] = nom["body_inertia"][bodies] * scale
            # Masses feed derived constants (subtree masses, inverse weights): recompute them on a
            # scratch MjData, because mj_setConst overwrites the state of the data it is given.
            mujoco.mj_setConst(m, mujoco.MjData(m))
        elif spec.kind in TERRAIN_KINDS and self._terrain is not None:
            self._terrain_values[spec.kind] = value
            self._apply_terrain()
        elif spec.kind in VISUAL_KINDS and spec.kind not in IMAGE_KINDS:
            self._set_visual(spec, value)
        else:
            raise KeyError(f"the mujoco engine cannot apply parameter kind {spec.kind!r} ({spec.name})")

    def _set_visual(self, spec: ParamSpec, value: float) -> None:
        m, nom, kind = self.model, self._nominal, spec.kind
        if kind in ("color_r", "color_g", "color_b"):
            ids = [m.geom(t).id for t in spec.targets]
            m.geom_rgba[ids, "rgb".index(kind[-1])] = value
        elif kind in ("light_intensity", "light_r", "light_g", "light_b"):
            self._light_gain[kind] = value
            ids = [m.light(t).id for t in spec.targets]
            g = self._light_gain
            gain = g["light_intensity"] * np.array([g["light_r"], g["light_g"], g["light_b"]])
            m.light_diffuse[ids] = nom["light_diffuse"][ids] * gain
        elif kind in ("light_dx", "light_dy", "light_dz"):
            for t in spec.targets:
                offset = self._light_offsets.setdefault(m.light(t).id, np.zeros(3))
                offset["xyz".index(kind[-1])] = value
        elif kind in CAMERA_KINDS:
            for t in spec.targets:
                if t not in self._cameras:
                    raise KeyError(f"parameter {spec.name!r}: the task has no camera {t!r}")
                self._camera_jitter[t] = self._camera_jitter.get(t, CameraJitter()).with_kind(kind, value)
        elif kind in ("distractor_count", "distractor_seed"):
            self._distractor_values[kind] = value
            # Resting on the top of the target geom (a plane's top is its position).
            floor_z = float(m.geom_pos[m.geom(spec.targets[0]).id, 2]) if spec.targets else 0.0
            v = self._distractor_values
            self._distractors = distractor_layout(int(v["distractor_count"]), int(v["distractor_seed"]), floor_z)
        else:
            raise KeyError(f"the mujoco engine cannot apply parameter kind {kind!r} ({spec.name})")

    def _decorate(self, scene: mujoco.MjvScene, camera: str | None) -> None:
        """Apply the visual parameters that act on a frame's scene: moved lights, a jittered task camera and the
        distractors. Nothing is changed at nominal values, so a nominal frame is the unrandomized one."""
        m = self.model
        for i in range(scene.nlight):
            light = scene.lights[i]
            offset = self._light_offsets.get(int(light.id))
            if offset is not None and offset.any():
                pos, direction = aimed_light(tuple(m.light_pos[light.id]), tuple(m.light_dir[light.id]),
                                             (float(offset[0]), float(offset[1]), float(offset[2])))
                light.pos, light.dir = pos, direction
        jitter = self._camera_jitter.get(camera) if camera is not None else None
        if camera is not None and jitter is not None and not jitter.is_zero:
            spec = self._cameras[camera]
            moved = jitter_camera(spec, jitter)
            r = moved.rotation
            scale = fovy_scale(spec, jitter.dfovy)
            for gl in scene.camera:
                gl.pos, gl.forward, gl.up = moved.position, -r[:, 2], r[:, 1]
                gl.frustum_center *= scale
                gl.frustum_width *= scale
                gl.frustum_bottom *= scale
                gl.frustum_top *= scale
        for d in self._distractors:
            if scene.ngeom >= scene.maxgeom:
                break
            c, s = np.cos(d.yaw), np.sin(d.yaw)
            mat = np.array([c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0])
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], _DISTRACTOR_GEOM[d.shape], np.full(3, d.half_size),
                                np.asarray(d.position), mat, np.asarray(d.rgba, dtype=np.float32))
            scene.ngeom += 1

    # --- rendering ---------------------------------------------------------------------------
    def render(self, width: int, height: int, camera: str | None = None) -> np.ndarray:
        if self._renderer is None or (self._renderer.width, self._renderer.height) != (width, height):
            if self._renderer is not None:
                self._renderer.close()
            self._renderer = _renderer(self.model, width, height)
        self._renderer.update_scene(self.data, camera=camera if camera is not None else -1)
        self._decorate(self._renderer.scene, camera if camera in self._cameras else None)
        return self._renderer.render().copy()

    def render_camera(self, name: str) -> np.ndarray:
        renderer = self._camera_renderers.get(name)
        if renderer is None:
            if name not in self._cameras:
                raise KeyError(f"the task has no camera {name!r}; its cameras are {list(self._cameras)}")
            renderer = self._camera_renderers[name] = self._camera_renderer(self._cameras[name])
        renderer.update_scene(self.data, camera=name)
        self._decorate(renderer.scene, name)
        return renderer.render()

    def _camera_renderer(self, cam: CameraSpec) -> mujoco.Renderer:
        """A renderer whose context suits a small camera image: an offscreen buffer of the image's size (clearing
        and resolving a larger one costs more than drawing the scene), no multisampling, coarser meshes and no
        shadows (PyBullet's images have neither). The context takes these from the model when it is made, so
        they are set on the model just for that and put back."""
        vis = self.model.vis
        saved = (vis.global_.offwidth, vis.global_.offheight, vis.quality.offsamples, vis.quality.numslices,
                 vis.quality.numstacks, vis.quality.numquads)
        try:
            vis.global_.offwidth, vis.global_.offheight = cam.width, cam.height
            vis.quality.offsamples, vis.quality.numquads = 0, 1
            vis.quality.numslices, vis.quality.numstacks = CAMERA_MESH_SLICES, CAMERA_MESH_SLICES // 2
            renderer = _renderer(self.model, cam.width, cam.height)
        finally:
            (vis.global_.offwidth, vis.global_.offheight, vis.quality.offsamples, vis.quality.numslices,
             vis.quality.numstacks, vis.quality.numquads) = saved
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        return renderer

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        for renderer in self._camera_renderers.values():
            renderer.close()
        self._camera_renderers.clear()


def _renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """An offscreen renderer; a machine where the ``MUJOCO_GL`` backend cannot start gets an error saying so."""
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except (mujoco.FatalError, RuntimeError, ImportError, AttributeError) as exc:
        backend = os.environ.get("MUJOCO_GL", "")
        raise RuntimeError(f"MuJoCo cannot render offscreen with MUJOCO_GL={backend!r} ({exc}); on a machine without "
                           f"a display, egl needs libEGL (Mesa's, e.g. the libegl1 package, renders on the CPU) and "
                           f"osmesa needs libOSMesa") from exc
