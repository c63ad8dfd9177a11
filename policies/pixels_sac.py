"""End-to-end SAC from pixels (``s2r train-pixels``): a claw policy that reads the camera, learned in one loop.

The actor sees what a robot without a valve encoder has (:class:`sim.pixels_env.PixelsEnv`: the camera image, the
joint readings, the last action, the goal); the twin critics see the simulator's state (the flat task's observation,
valve included), which only training has: an asymmetric actor-critic (Pinto et al. 2018). The critics are CrossQ's
(:class:`policies.crossq.RenormTwinCritic`: batch-renormalized, no target network, the current and next batches in
one pass), with ``s2r train``'s CrossQ defaults. The actor's images are moved by a few pixels at random in every
batch, DrQ's augmentation (Kostrikov et al. 2020; :func:`policies.augment.random_shift`). Its encoder reads
keypoints as the valve-angle estimator does (strided 3x3 convolutions and a spatial soft-argmax), and a linear
read-out of them is trained on the valve's (cos, sin): an auxiliary target that gives the encoder a direct signal
besides the actor's loss.

The loop reads top to bottom as CleanRL's: act (uniformly during warm-up), step, store, update
(:func:`pixels_sac_update`, the whole update), and every ``eval_interval`` steps evaluate the averaged policy and
save ``last.pt`` (and ``best.pt``). Autograd throughout: the convolutions dominate the update, not per-operation
overhead.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from policies.augment import random_shift
from policies.crossq import CROSSQ_BETA1, RenormTwinCritic
from policies.envs import make_env
from policies.evaluate import evaluate_env
from policies.networks import LOG_STD_MAX, LOG_STD_MIN
from policies.perception import SpatialSoftArgmax
from policies.pixels_config import PixelsSacConfig
from policies.sac import squashed_sample
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError
from sim.pixels_env import GOAL_KEY, IMAGE_KEY, STATE_KEY, PixelsEnv

PROPRIO_KEYS = ("joint_pos", "last_action", GOAL_KEY)
"""The vector part of the actor's observation, in this order."""
CHECKPOINT_FORMAT = "s2r-pixels-sac"
ALGO = "pixels-crossq"
"""The learner's name in exported metadata."""
EVAL_SEED = 10_000
"""First episode seed of the periodic evaluations (plus the run's seed)."""
FINAL_SEED = 20_000
"""First episode seed of the final evaluation, apart from the periodic ones (which chose the best policy)."""
BEST_NAME, LAST_NAME, METRICS_NAME = "best.pt", "last.pt", "metrics.jsonl"


# --- networks -----------------------------------------------------------------------------------------------------
class KeypointEncoder(nn.Module):
    """uint8 frames ``(B, H, W, 3)`` to ``(B, 2 C)`` keypoints: 3x3 convolutions of stride 2 and a spatial soft-argmax
    over the last one's ``C`` maps, as :class:`policies.perception.AngleNet` reads the valve."""

    def __init__(self, height: int, width: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in, h, w = 3, height, width
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
            h, w = (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers[:-1])  # the soft-argmax takes the last maps before any ReLU
        self.keypoints = SpatialSoftArgmax(h, w)
        self.size = 2 * c_in

    def forward(self, frames: Tensor) -> Tensor:
        x = frames.to(torch.float32).permute(0, 3, 1, 2) * (2.0 / 255.0) - 1.0
        out: Tensor = self.keypoints(self.features(x))
        return out


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PixelsActor(nn.Module):
    """Camera frame and proprioception to the squashed Gaussian's ``(mu, log_std)``, and the auxiliary read-out of
    the valve's ``(cos, sin)`` from the keypoints."""

    def __init__(self, height: int, width: int, proprio: int, actions: int, cfg: PixelsSacConfig) -> None:
        super().__init__()
        self.encoder = KeypointEncoder(height, width, cfg.channels)
        self.head = mlp([self.encoder.size + proprio, *cfg.hidden, 2 * actions])
        self.aux = nn.Linear(self.encoder.size, 2)

    def forward(self, frames: Tensor, proprio: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        keys = self.encoder(frames)
        mu, log_std = self.head(torch.cat([keys, proprio], dim=1)).chunk(2, dim=1)
        return mu, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX), self.aux(keys)

    def deterministic(self, frames: Tensor, proprio: Tensor) -> Tensor:
        """The mean action ``tanh(mu)``, the one evaluation and deployment run."""
        return torch.tanh(self(frames, proprio)[0])


def sample_action(actor: PixelsActor, frames: Tensor, proprio: Tensor, generator: torch.Generator
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, log pi(a|o), aux)``: a reparameterized draw of the squashed Gaussian and the auxiliary read-out."""
    mu, log_std, aux = actor(frames, proprio)
    eps = torch.randn(mu.shape, generator=generator)
    a, logp, _ = squashed_sample(mu, log_std, eps)
    return a, logp.squeeze(-1), aux


@dataclass
class PixelsSacModel:
    """The actor, its average (the policy), the critics, the temperature, the optimizers."""

    actor: PixelsActor
    average: PixelsActor
    """The actor averaged over recent steps (``policy_average``): what is evaluated and saved."""
    critics: RenormTwinCritic
    log_alpha: nn.Parameter
    actor_opt: torch.optim.Adam
    critic_opt: torch.optim.Adam
    alpha_opt: torch.optim.Adam
    target_entropy: float
    updates: int = 0
    """Critic updates so far (the policy delay's counter)."""


def make_model(cfg: PixelsSacConfig, height: int, width: int, proprio: int, state: int,
               actions: int) -> PixelsSacModel:
    actor = PixelsActor(height, width, proprio, actions, cfg)
    average = copy.deepcopy(actor).requires_grad_(False)
    critics = RenormTwinCritic(state, actions, cfg.hidden, "relu")
    log_alpha = nn.Parameter(torch.full((1,), math.log(cfg.init_alpha)))
    betas = (CROSSQ_BETA1, 0.999)
    return PixelsSacModel(actor, average, critics, log_alpha, torch.optim.Adam(actor.parameters(), cfg.lr, betas=betas),
                          torch.optim.Adam(critics.parameters(), cfg.lr, betas=betas),
                          torch.optim.Adam([log_alpha], cfg.lr, betas=betas), -float(actions))


# --- replay -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelsBatch:
    """Transitions as tensors; frames uint8 ``(B, H, W, 3)``."""

    frames: Tensor
    proprio: Tensor
    state: Tensor
    action: Tensor
    reward: Tensor
    terminated: Tensor
    next_frames: Tensor
    next_proprio: Tensor
    next_state: Tensor


class PixelsReplay:
    """A ring of transitions with the frames kept as uint8."""

    def __init__(self, capacity: int, frame_shape: tuple[int, ...], proprio: int, state: int, actions: int) -> None:
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.frames = np.zeros((capacity, *frame_shape), np.uint8)
        self.next_frames = np.zeros((capacity, *frame_shape), np.uint8)
        self.vectors = {name: np.zeros((capacity, n), np.float32) for name, n in
                        (("proprio", proprio), ("state", state), ("action", actions), ("next_proprio", proprio),
                         ("next_state", state))}
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)

    def add(self, obs: Mapping[str, NDArray[Any]], action: NDArray[Any], reward: float,
            next_obs: Mapping[str, NDArray[Any]], terminated: bool) -> None:
        i = self.pos
        self.frames[i], self.next_frames[i] = obs[IMAGE_KEY], next_obs[IMAGE_KEY]
        for name, value in (("proprio", proprio_of(obs)), ("state", obs[STATE_KEY]), ("action", action),
                            ("next_proprio", proprio_of(next_obs)), ("next_state", next_obs[STATE_KEY])):
            self.vectors[name][i] = value
        self.reward[i], self.terminated[i] = reward, float(terminated)
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator) -> PixelsBatch:
        idx = rng.integers(0, self.size, n)
        v = {k: torch.from_numpy(a[idx]) for k, a in self.vectors.items()}
        return PixelsBatch(torch.from_numpy(self.frames[idx]), v["proprio"], v["state"], v["action"],
                           torch.from_numpy(self.reward[idx]), torch.from_numpy(self.terminated[idx]),
                           torch.from_numpy(self.next_frames[idx]), v["next_proprio"], v["next_state"])


def proprio_of(obs: Mapping[str, NDArray[Any]]) -> NDArray[np.float32]:
    """The actor's vector input: :data:`PROPRIO_KEYS` concatenated."""
    return np.concatenate([np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in PROPRIO_KEYS])


# --- the update ---------------------------------------------------------------------------------------------------
def pixels_sac_update(model: PixelsSacModel, batch: PixelsBatch, cfg: PixelsSacConfig, valve: slice,
                      generator: torch.Generator) -> dict[str, float]:
    """One update: CrossQ's critic step on the state (``(s, a)`` and ``(s', a')`` in one batch-renormalized pass,
    ``a' ~ pi`` of the next shifted frames); every ``policy_delay``-th call the actor (its encoder included) on the
    first ``actor_batch_size`` shifted frames with the auxiliary valve read-out (``valve``: the state's ``(cos, sin)``
    columns), then the temperature."""
    n = batch.state.shape[0]
    alpha = model.log_alpha.detach().exp()
    with torch.no_grad():
        next_a, next_logp, _ = sample_action(model.actor, random_shift(batch.next_frames, cfg.shift, generator),
                                             batch.next_proprio, generator)
    model.critics.train()
    q_all = model.critics(torch.cat([batch.state, batch.next_state]), torch.cat([batch.action, next_a]))[..., 0]
    q, q_next = q_all[:, :n], q_all[:, n:].detach()
    target = batch.reward + cfg.gamma * (1.0 - batch.terminated) * (q_next.min(0).values - alpha * next_logp)
    critic_loss = 0.5 * (q - target).square().mean(1).sum()
    model.critic_opt.zero_grad(set_to_none=True)
    critic_loss.backward()
    model.critic_opt.step()
    model.updates += 1
    stats = {"critic_loss": critic_loss.item(), "alpha": alpha.item()}
    if model.updates % cfg.policy_delay:
        return stats

    m = cfg.actor_batch_size
    frames = random_shift(batch.frames[:m], cfg.shift, generator)
    model.critics.eval()
    a, logp, aux = sample_action(model.actor, frames, batch.proprio[:m], generator)
    q_pi = model.critics(batch.state[:m], a)[..., 0].min(0).values
    actor_loss = (alpha * logp - q_pi).mean()
    aux_loss = (aux - batch.state[:m, valve]).square().sum(1).mean()
    model.actor_opt.zero_grad(set_to_none=True)
    (actor_loss + cfg.aux_weight * aux_loss).backward(inputs=list(model.actor.parameters()))
    model.actor_opt.step()
    model.critics.train()
    alpha_loss = -(model.log_alpha * (logp.detach() + model.target_entropy)).mean()
    model.alpha_opt.zero_grad(set_to_none=True)
    alpha_loss.backward()
    model.alpha_opt.step()
    return {**stats, "actor_loss": actor_loss.item(), "aux_loss": aux_loss.item(),
            "entropy": -logp.detach().mean().item()}


def average_(model: PixelsSacModel, rate: float) -> None:
    """Move the averaged policy towards the actor by ``rate`` (all of the way at 0: the policy is the actor)."""
    with torch.no_grad():
        for avg, p in zip(model.average.parameters(), model.actor.parameters(), strict=True):
            avg.lerp_(p, rate if rate > 0.0 else 1.0)


# --- the policy it learns -----------------------------------------------------------------------------------------
class PixelsPolicy:
    """The learned actor as a policy of the camera env's observation (deterministic: ``tanh(mu)``)."""

    def __init__(self, actor: PixelsActor) -> None:
        self.actor = actor.eval()

    @torch.no_grad()
    def __call__(self, obs: Mapping[str, NDArray[Any]]) -> NDArray[np.float32]:
        frames = torch.from_numpy(np.ascontiguousarray(obs[IMAGE_KEY]))[None]
        proprio = torch.from_numpy(proprio_of(obs))[None]
        out: NDArray[np.float32] = self.actor.deterministic(frames, proprio)[0].numpy()
        return out


def save_checkpoint(path: Path, model: PixelsSacModel, cfg: PixelsSacConfig, dims: dict[str, int],
                    step: int, success: float | None) -> Path:
    """The policy's (the averaged actor's), the online actor's and the critics' weights with the config and the
    shapes, written atomically; read back with ``torch.load(weights_only=True)`` (:func:`load_actor`)."""
    payload = {"format": CHECKPOINT_FORMAT, "config": json.dumps(cfg.to_json()), "dims": dict(dims), "step": step,
               "success": success, "actor": model.average.state_dict(), "online_actor": model.actor.state_dict(),
               "critics": model.critics.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def is_pixels_checkpoint(path: Path) -> bool:
    """Whether ``path`` (a file) was written by :func:`save_checkpoint`; anything unreadable is not."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged or foreign file fails in many ways; its own loader names the problem
        return False
    return isinstance(data, dict) and data.get("format") == CHECKPOINT_FORMAT


def run_checkpoint(path: Path) -> Path | None:
    """The pixels SAC checkpoint ``path`` names: the file itself, or a run directory's ``best.pt`` (else
    ``last.pt``); ``None`` when it names none."""
    if path.is_dir():
        for name in (BEST_NAME, LAST_NAME):
            if (path / name).is_file() and is_pixels_checkpoint(path / name):
                return path / name
        return None
    return path if path.is_file() and is_pixels_checkpoint(path) else None


def load_actor(path: Path) -> tuple[PixelsActor, PixelsSacConfig, dict[str, Any]]:
    """The policy (averaged actor) of a checkpoint written by :func:`save_checkpoint` (tensors only:
    ``weights_only``)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged or foreign file fails in many ways
        raise UserError(f"cannot read pixels SAC checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{str(path)!r} is not a pixels SAC checkpoint (written by `s2r train-pixels`)")
    cfg = PixelsSacConfig.from_json(json.loads(data["config"]))
    d = data["dims"]
    actor = PixelsActor(d["height"], d["width"], d["proprio"], d["actions"], cfg)
    actor.load_state_dict(data["actor"])
    return actor.eval(), cfg, {"step": data["step"], "success": data["success"]}


# --- the loop -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PixelsTrainResult:
    """What :func:`train_pixels` learned, measured and wrote."""

    curve: tuple[dict[str, float], ...]
    """One row per evaluation: ``step``, ``success``, ``return_mean``, ``train_s`` (update and env time so far)."""
    best: Path
    """``best.pt``: the actor of the best evaluation (the latest among equals)."""
    last: Path
    """``last.pt``: the actor at the last evaluation."""
    train_s: float
    """Wall time of the loop without evaluations (s)."""
    update_ms: float
    """Mean wall time of one update (ms)."""
    best_step: int
    """The step ``best.pt`` was saved at."""
    final: dict[str, Any]
    """The best policy over ``final_episodes`` episodes from seed :data:`FINAL_SEED`: ``success_rate``,
    ``return_mean``, ..."""

    def to_json(self) -> dict[str, Any]:
        return {"curve": list(self.curve), "best": str(self.best), "last": str(self.last), "best_step": self.best_step,
                "train_s": round(self.train_s, 1), "update_ms": round(self.update_ms, 2), "final": self.final}


def train_pixels(cfg: PixelsSacConfig, out: Path, progress: Callable[[str], None] | None = None) -> PixelsTrainResult:
    """Learn ``cfg.task`` from pixels; write ``out/last.pt``, ``out/best.pt`` and ``out/metrics.jsonl``."""
    cfg = cfg.validated()
    say = progress or (lambda _text: None)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    env = make_env(cfg.task, cfg.engine, {"privileged": True}, dict_obs=True)
    eval_env = make_env(cfg.task, cfg.engine, None, dict_obs=True)
    try:
        inner = env.unwrapped
        assert isinstance(inner, PixelsEnv)
        layout = inner.sim.spec_.obs_layout
        obs, _ = env.reset(seed=cfg.seed)
        dims = {"height": inner.camera.height, "width": inner.camera.width, "proprio": proprio_of(obs).size,
                "state": int(obs[STATE_KEY].size), "actions": int(np.prod(env.action_space.shape or (1,)))}
        model = make_model(cfg, dims["height"], dims["width"], dims["proprio"], dims["state"], dims["actions"])
        replay = PixelsReplay(cfg.capacity, obs[IMAGE_KEY].shape, dims["proprio"], dims["state"], dims["actions"])
        policy = PixelsPolicy(model.average)
        curve: list[dict[str, float]] = []
        best_success, best_step, train_s, update_s, updates = -1.0, 0, 0.0, 0.0, 0
        stats: dict[str, float] = {}
        episode_seed = cfg.seed
        out.mkdir(parents=True, exist_ok=True)
        metrics = out / METRICS_NAME
        metrics.write_text("")
        tick = time.perf_counter()
        for step in range(1, cfg.steps + 1):
            if step <= cfg.warmup_steps:
                action = rng.uniform(-1.0, 1.0, dims["actions"]).astype(np.float32)
            else:
                with torch.no_grad():
                    action = sample_action(model.actor, torch.from_numpy(np.ascontiguousarray(obs[IMAGE_KEY]))[None],
                                           torch.from_numpy(proprio_of(obs))[None], generator)[0][0].numpy()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            replay.add(obs, action, float(reward), next_obs, terminated)
            obs = next_obs
            if terminated or truncated:
                episode_seed += 1
                obs, _ = env.reset(seed=episode_seed)

            if step > cfg.warmup_steps and replay.size >= cfg.batch_size:
                start = time.perf_counter()
                # The actor's numbers stay those of its last update (every policy_delay-th).
                stats = stats | pixels_sac_update(model, replay.sample(cfg.batch_size, rng), cfg,
                                                  layout.slice("valve_cos_sin"), generator)
                average_(model, cfg.policy_average)
                update_s += time.perf_counter() - start
                updates += 1

            if step % cfg.eval_interval == 0 or step == cfg.steps:
                train_s += time.perf_counter() - tick
                result = evaluate_env(policy, eval_env, cfg.eval_episodes, EVAL_SEED + cfg.seed)
                success = float(result["success_rate"])
                row = {"step": step, "success": success, "return_mean": float(result["return_mean"]),
                       "train_s": round(train_s, 1),
                       **({k: round(v, 4) for k, v in stats.items()} if updates else {})}
                curve.append(row)
                with metrics.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                save_checkpoint(out / LAST_NAME, model, cfg, dims, step, success)
                if success >= best_success:
                    best_success, best_step = success, step
                    save_checkpoint(out / BEST_NAME, model, cfg, dims, step, success)
                say(f"step {step}: success {success:.2f}, return {row['return_mean']:.1f}, train {train_s:.0f} s"
                    + (f", aux {stats['aux_loss']:.3f}, alpha {stats['alpha']:.3f}" if "aux_loss" in stats else ""))
                tick = time.perf_counter()
        final = evaluate_env(PixelsPolicy(load_actor(out / BEST_NAME)[0]), eval_env, cfg.final_episodes, FINAL_SEED)
        say(f"best policy (step {best_step}) over {cfg.final_episodes} episodes: success {final['success_rate']:.2f}")
    finally:
        env.close()
        eval_env.close()
    return PixelsTrainResult(tuple(curve), out / BEST_NAME, out / LAST_NAME, train_s,
                             1000.0 * update_s / max(updates, 1), best_step, final)
