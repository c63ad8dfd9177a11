"""Export an end-to-end camera policy (the actor of ``s2r train-pixels``) to the camera policy contract of
:mod:`export.pixels_policy`, verified before it appears.

The graph is the actor's deterministic action ``tanh(mu)`` of ``image`` (uint8, the scaling inside) and the vector
inputs, and as ``angle`` the direction of its image features' auxiliary read-out of the valve. The file is written
under a temporary name, run through onnxruntime on observations of the camera env (rollouts of the policy) and on
random ones, compared with PyTorch, and renamed into place only when they agree. Needs torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from export.config import DEFAULT_OPSET
from export.onnx_export import torch_to_onnx
from export.pixels_export import (
    MAX_ACTION_DIFF,
    RANDOM_OBSERVATIONS,
    PixelsExport,
    PixelsVerification,
    header,
    input_specs,
    random_observations,
    rollouts,
)
from export.pixels_policy import END_TO_END, INPUTS, OUTPUTS, CameraPolicyInfo, OnnxPixelsPolicy
from policies.envs import make_env
from policies.pixels_sac import ALGO, PixelsActor, PixelsPolicy, load_actor
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.pixels_env import PixelsEnv
from sim.tasks.actions import wrap_angle

MAX_ANGLE_DIFF_RAD = 1e-4
"""Largest |onnx - torch| read-out angle (rad, wrapped); the angle is only logged."""


class CameraGraph(nn.Module):
    """The actor as the contract's graph: the camera env's inputs to ``(action, angle)``."""

    def __init__(self, actor: PixelsActor) -> None:
        super().__init__()
        self.actor = actor

    def forward(self, image: Tensor, joint_pos: Tensor, last_action: Tensor, goal: Tensor) -> tuple[Tensor, Tensor]:
        mu, _, aux = self.actor(image, torch.cat([joint_pos, last_action, goal], dim=1))
        return torch.tanh(mu), torch.atan2(aux[:, 1], aux[:, 0])


def export_pixels_sac(checkpoint: Path, out: Path, seed: int = 0, opset: int = DEFAULT_OPSET) -> PixelsExport:
    """Write the policy of ``checkpoint`` (``s2r train-pixels``'s ``best.pt`` or ``last.pt``) to ``out``, checked
    against PyTorch on two rollouts and :data:`export.pixels_export.RANDOM_OBSERVATIONS` random observations from
    ``seed``; otherwise a ``UserError`` and nothing written."""
    if out.suffix.lower() != ".onnx":
        raise UserError(f"output {str(out)!r} must end in .onnx")
    actor, cfg, meta = load_actor(checkpoint)
    graph = CameraGraph(actor).eval()
    env = make_env(cfg.task, cfg.engine, None, dict_obs=True)
    try:
        inner = env.unwrapped
        assert isinstance(inner, PixelsEnv)
        observations = rollouts(env, PixelsPolicy(actor), seed) + random_observations(inner, seed)
        spec = inner.task.spec
        info = CameraPolicyInfo(END_TO_END, cfg.task, cfg.engine, {}, spec.name, spec.joint_names,
                                spec.control_period, ALGO, int(meta["step"]))
        props = {**header(info, input_specs(inner, inner.goal_names), inner.camera),
                 "training": json.dumps(cfg.to_json(), sort_keys=True), "source_checkpoint": str(checkpoint)}
        camera = inner.camera
    finally:
        env.close()
    batch = {k: np.stack([np.asarray(o[k], dtype=np.uint8 if k == "image" else np.float32) for o in observations])
             for k in INPUTS}
    with torch.no_grad():
        expected_action, expected_angle = (t.numpy() for t in graph(*(torch.from_numpy(batch[k]) for k in INPUTS)))
    example = tuple(torch.from_numpy(batch[k][:2]) for k in INPUTS)
    model = torch_to_onnx(graph, example, list(INPUTS), list(OUTPUTS), opset, "the camera policy", props,
                          "s2r export")
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        actions, angles = OnnxPixelsPolicy(tmp, camera=camera).predict(batch)
        verification = PixelsVerification(
            len(observations) - RANDOM_OBSERVATIONS, RANDOM_OBSERVATIONS,
            float(np.max(np.abs(actions.astype(np.float64) - expected_action))),
            float(np.max(np.abs(wrap_angle(angles.astype(np.float64) - expected_angle)))),
            angle_limit_rad=MAX_ANGLE_DIFF_RAD)
        if not verification.passed:
            raise UserError(f"the camera policy failed verification: onnxruntime and PyTorch differ by up to "
                            f"{verification.max_action_diff:.3g} in the action (limit {MAX_ACTION_DIFF:g}) and "
                            f"{verification.max_angle_diff_rad:.3g} rad in the angle (limit {MAX_ANGLE_DIFF_RAD:g}) "
                            f"over {len(observations)} observations; no file was written")
    return PixelsExport(out, cfg.task, verification)
