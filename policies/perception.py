"""A small CNN that reads the valve angle from one task-camera image, and its supervised training.

The network takes the camera's uint8 ``(B, H, W, 3)`` frames as they come (the scaling to [-1, 1] and, by default,
a per-image standardization are its first layers, so the exported graph holds the whole preprocessing), runs strided
3x3 convolutions, turns each feature map into the expected image position of its activation (a spatial soft-argmax:
Levine et al. 2016, "End-to-End Training of Deep Visuomotor Policies", JMLR), and maps those keypoints through an MLP
to a 2-vector whose direction is the angle: ``angle = atan2(sin, cos)``. Keypoints suit the task: the angle is
where the marked spoke lies relative to the hub, whatever its colours, and a camera moved by a centimetre moves both.

The valve has k identical spokes but one marked by its colour, so its image repeats every 2 pi / k but for that
colour. With ``symmetry`` k the MLP gives a second 2-vector, the direction of ``k * angle``, which every spoke shows
alike; the first only picks which of the k angles it allows is meant. So the precise angle comes from all spokes and
the colour only has to be read to within half a spoke's spacing (README, *Reading the valve angle from the camera*,
measures both).

Training moves and re-exposes every batch afresh (:mod:`policies.augment`): the renders randomize the scene, the
augmentations the camera that sees it.

Checkpoints are ``torch.save`` of a dict of tensors, numbers, strings and lists only, read back with
``torch.load(weights_only=True)``: a checkpoint is never unpickled as arbitrary objects.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from policies.augment import photometric, random_shift, shifted
from policies.perception_config import AngleNetConfig, PerceptionTrainConfig
from s2r.core.atomicio import atomic_path
from s2r.core.errors import UserError

CHECKPOINT_FORMAT = "s2r-perception-checkpoint"
"""The ``format`` entry of a checkpoint."""
CHECKPOINT_VERSION = 1
"""Version of the checkpoint's layout."""
STRIDED_LAYERS = 2
"""The first convolutions that halve the image; the rest keep its size."""
MIN_SPREAD = 0.02
"""Smallest pixel spread :func:`standardized` divides by (of [-1, 1] values: about 2.5 grey levels)."""


class SpatialSoftArgmax(nn.Module):
    """Each of ``C`` feature maps ``(B, C, H, W)`` to the expected (x, y) of its softmax over the pixels, in [-1, 1]
    from the left (top) edge to the right (bottom) one: ``(B, 2 C)``."""

    def __init__(self, height: int, width: int) -> None:
        super().__init__()
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("grid", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1))  # (H W, 2)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: Tensor) -> Tensor:
        b, c = features.shape[0], features.shape[1]
        weights = torch.softmax(features.reshape(b, c, -1) * torch.exp(-self.log_temperature), dim=-1)
        grid: Tensor = self.grid  # type: ignore[assignment]
        return (weights @ grid).reshape(b, 2 * c)


class AngleNet(nn.Module):
    """uint8 frames ``(B, H, W, 3)`` to ``(angle (B,), cos_sin (B, 2))``: the angle in (-pi, pi] (rad) and its unit
    direction. :meth:`raw` is the unnormalized 2-vector the training loss sees."""

    def __init__(self, height: int, width: int, config: AngleNetConfig | None = None) -> None:
        super().__init__()
        self.config = (config or AngleNetConfig()).validated()
        self.height, self.width = height, width
        layers: list[nn.Module] = []
        c_in, h, w = 3, height, width
        for i, c_out in enumerate(self.config.channels):
            stride = 2 if i < STRIDED_LAYERS else 1
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.ReLU()]
            c_in = c_out
            if stride == 2:
                h, w = (h + 1) // 2, (w + 1) // 2
        self.features = nn.Sequential(*layers[:-1])  # the soft-argmax takes the last maps before any ReLU
        self.keypoints = SpatialSoftArgmax(h, w)
        self.head = nn.Sequential(nn.Linear(2 * c_in, self.config.hidden), nn.ReLU(),
                                  nn.Linear(self.config.hidden, self.config.hidden), nn.ReLU(),
                                  nn.Linear(self.config.hidden, raw_size(self.config.symmetry)))

    def raw(self, frames: Tensor) -> Tensor:
        """The unnormalized directions ``(B, 2)`` of the angle, or with symmetry k ``(B, 4)`` of the angle and of
        k times it, for uint8 frames ``(B, H, W, 3)``."""
        x = frames.to(torch.float32).permute(0, 3, 1, 2) * (2.0 / 255.0) - 1.0
        if self.config.standardize:
            x = standardized(x)
        return self.head(self.keypoints(self.features(x)))

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        return angle_and_direction(self.raw(frames), self.config.symmetry)


class AngleEnsemble(nn.Module):
    """Several trained :class:`AngleNet` read together, each on the frame and on copies of it moved by ``shift``
    pixels each way (edges repeated): the mean of their unit directions, then the angle as one network gives it.
    Averaging nets trained from other seeds, and views a few pixels apart, takes out the errors they do not share;
    the wrong spoke on held-out images most of all (README, *Two networks, five views*). Same contract as
    :class:`AngleNet`: uint8 frames ``(B, H, W, 3)`` to ``(angle, cos_sin)``."""

    def __init__(self, members: Sequence[AngleNet], shift: int = 0) -> None:
        super().__init__()
        if not members:
            raise UserError("an estimator ensemble needs at least one trained network")
        first = members[0]
        for k, m in enumerate(members[1:], start=1):
            if (m.height, m.width, m.config.symmetry) != (first.height, first.width, first.config.symmetry):
                raise UserError(f"network {k + 1} reads {m.height} x {m.width} images with symmetry "
                                f"{m.config.symmetry}; expected {first.height} x {first.width} and symmetry "
                                f"{first.config.symmetry}, as network 1")
        if not 0 <= shift < min(first.height, first.width) // 2:
            raise UserError(f"test-time shift must be a whole number of pixels in [0, "
                            f"{min(first.height, first.width) // 2}), got {shift}")
        self.members = nn.ModuleList(members)  # registered: weights, eval mode and export follow them
        self.nets: tuple[AngleNet, ...] = tuple(members)
        """The members, typed (a ``ModuleList`` yields plain modules)."""
        self.height, self.width, self.symmetry = first.height, first.width, first.config.symmetry
        moves = [(0, 0)] if shift == 0 else [(0, 0), (shift, 0), (-shift, 0), (0, shift), (0, -shift)]
        self.moves = tuple(moves)

    def raw(self, frames: Tensor) -> Tensor:
        """The sum of the members' unit directions over every view, ``(B, 2)`` or ``(B, 4)`` as :meth:`AngleNet.raw`."""
        views = [shifted(frames, dx, dy) for dx, dy in self.moves]
        return torch.stack([_unit_pairs(net.raw(view)) for net in self.nets for view in views]).sum(dim=0)

    def forward(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        return angle_and_direction(self.raw(frames), self.symmetry)


def _unit_pairs(v: Tensor) -> Tensor:
    """Each (cos, sin) pair of a raw output scaled to unit length, so every member and view weighs alike."""
    pairs = v.reshape(v.shape[0], -1, 2)
    return (pairs / torch.sqrt((pairs * pairs).sum(dim=2, keepdim=True) + 1e-12)).reshape(v.shape)


def standardized(x: Tensor) -> Tensor:
    """Images ``(B, C, H, W)`` less each channel's mean, over the spread of all their pixels: the same for any
    exposure, light strength or contrast, but for clipping and noise. A flat image (spread below
    :data:`MIN_SPREAD`) is not blown up."""
    # In float64: the division scales the sums' rounding by 1 / spread, and the exported graph's sums (onnxruntime)
    # add in another order than PyTorch's; in float32 a dark image's angle then differs by more than the export
    # check allows.
    d = x.to(torch.float64)
    centred = d - d.mean(dim=(2, 3), keepdim=True)
    spread = torch.sqrt((centred * centred).mean(dim=(1, 2, 3), keepdim=True))
    return (centred / torch.clamp(spread, min=MIN_SPREAD)).to(torch.float32)


def angle_and_direction(raw: Tensor, symmetry: int) -> tuple[Tensor, Tensor]:
    """The angle (rad, in (-pi, pi]) and its unit direction ``(B, 2)`` that a raw output ``(B, 2)`` (symmetry 1) or
    ``(B, 4)`` (:func:`symmetric_angle`) gives."""
    if symmetry == 1:
        unit = _unit_pairs(raw)
        return torch.atan2(unit[:, 1], unit[:, 0]), unit
    angle = symmetric_angle(raw, symmetry)
    return angle, torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)


def symmetric_angle(raw: Tensor, symmetry: int) -> Tensor:
    """The angle (rad, in (-pi, pi]) of a raw ``(B, 4)`` output with ``symmetry`` k: of the k angles that the
    direction of k times the angle (columns 2 and 3) allows, the one nearest the coarse direction (columns 0 and 1).
    Exact whenever the coarse angle is within half the spacing, pi / k, of the true one."""
    coarse = torch.atan2(raw[:, 1], raw[:, 0])
    fine = torch.atan2(raw[:, 3], raw[:, 2]) / symmetry
    spacing = 2.0 * math.pi / symmetry
    return _wrap(fine + spacing * torch.round(_wrap(coarse - fine) / spacing))


def _wrap(angle: Tensor) -> Tensor:
    """Angles (rad) wrapped to (-pi, pi], in operations ONNX exports."""
    return torch.atan2(torch.sin(angle), torch.cos(angle))


def raw_size(symmetry: int) -> int:
    """Length of :meth:`AngleNet.raw`'s vector: (cos, sin) of the angle, and of ``symmetry`` times it when > 1."""
    return 2 if symmetry == 1 else 4


@dataclass(frozen=True)
class TrainedAngleNet:
    """A trained network and how it got there."""

    model: AngleNet
    """The network, in eval mode."""
    config: PerceptionTrainConfig
    """The training settings."""
    losses: tuple[float, ...]
    """Mean training loss of each epoch."""
    train_time_s: float
    """Wall time of the gradient steps (s)."""


def cos_sin_targets(angles: NDArray[np.floating], symmetry: int = 1) -> Tensor:
    """What :meth:`AngleNet.raw` is trained to give for ``angles`` (rad): (cos, sin) of each, then with ``symmetry``
    k > 1 (cos, sin) of k times each."""
    a = torch.as_tensor(np.asarray(angles, dtype=np.float64))
    columns = [torch.cos(a), torch.sin(a)]
    if symmetry > 1:
        columns += [torch.cos(symmetry * a), torch.sin(symmetry * a)]
    return torch.stack(columns, dim=1).to(torch.float32)


def train_angle_net(images: NDArray[np.uint8], angles: NDArray[np.floating], config: PerceptionTrainConfig,
                    progress: Callable[[int, float], None] | None = None) -> TrainedAngleNet:
    """Fit an :class:`AngleNet` to ``images`` ``(N, H, W, 3)`` uint8 and their ``angles`` (rad): squared error
    between its raw vector and :func:`cos_sin_targets` (summed over both directions with a symmetry), AdamW with a
    cosine-decayed learning rate, every batch shifted and re-exposed afresh (:mod:`policies.augment`, as
    ``config`` says). ``progress`` gets each finished epoch's number and mean loss."""
    cfg = config.validated()
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise UserError(f"training images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(angles) != len(images) or len(images) == 0:
        raise UserError(f"need one angle per image and at least one image, got {len(angles)} and {len(images)}")
    torch.manual_seed(cfg.seed)
    model = AngleNet(images.shape[1], images.shape[2], cfg.net)
    x, y = torch.from_numpy(np.ascontiguousarray(images)), cos_sin_targets(angles, cfg.net.symmetry)
    n = len(x)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    order = torch.Generator().manual_seed(cfg.seed)
    augment = torch.Generator().manual_seed(cfg.seed + 1)
    losses = []
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=order)
        total = 0.0
        for k in range(steps_per_epoch):
            idx = perm[k * cfg.batch_size:(k + 1) * cfg.batch_size]
            frames = random_shift(x[idx], cfg.shift, augment)
            if cfg.photometric is not None:
                frames = photometric(frames, cfg.photometric, augment)
            loss = ((model.raw(frames) - y[idx]) ** 2).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if progress is not None:
            progress(epoch + 1, losses[-1])
    model.eval()
    return TrainedAngleNet(model, cfg, tuple(losses), time.perf_counter() - start)


def predict_angles(model: AngleNet | AngleEnsemble, images: NDArray[np.uint8],
                   batch: int = 256) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The model's angles ``(N,)`` (rad) and unit directions ``(N, 2)`` for uint8 ``images`` ``(N, H, W, 3)``."""
    # Written into arrays made up front: a small result kept from every batch, between the batches' large
    # temporaries, fragments the heap so that it grows with N (peak 1.7 GB against 0.8 for 12,000 images; a
    # 120,000-image training peaked at 13 GB here, and two side by side ran out of memory).
    angles, directions = np.empty(len(images)), np.empty((len(images), 2))
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            a, v = model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
            angles[i:i + batch] = a.numpy()
            directions[i:i + batch] = v.numpy()
    return angles, directions


# --- checkpoints -----------------------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, model: AngleNet, info: Mapping[str, Any]) -> Path:
    """Write ``model``'s weights and shape with ``info`` (JSON-like: what it saw, how it trained) to ``path``,
    atomically."""
    data = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "height": model.height,
            "width": model.width, "net": model.config.to_json(), "state_dict": model.state_dict(), "info": dict(info)}
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> tuple[AngleNet, dict[str, Any]]:
    """The network and ``info`` :func:`save_checkpoint` wrote (tensors and plain values only: ``weights_only``)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"no perception checkpoint at {str(p)!r}")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged or foreign file
        raise UserError(f"cannot read perception checkpoint {str(p)!r}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{str(p)!r} is not a perception checkpoint (written by s2r train-perception)")
    model = AngleNet(int(data["height"]), int(data["width"]), AngleNetConfig.from_json(data["net"]))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model, dict(data["info"])
