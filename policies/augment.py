"""Image augmentations for networks that read the task camera: pure functions of a batch of uint8 frames
``(B, H, W, 3)`` and a seeded generator, applied to training batches only (never at run time).

- :func:`random_shift`: DrQ's shift (Kostrikov et al. 2020), what a camera moved sideways looks like.
- :func:`photometric`: what another camera, exposure and light make of the same scene: a gain, a tint, a gamma,
  less or more colour, less or more contrast, an offset, a defocus and sensor noise, each drawn per image, in the
  order light meets the sensor. The ranges (:class:`policies.perception_config.PhotometricConfig`) cover the
  rendered image effects' (``image_*`` parameters in ``randomization/configs/dclaw_visual.yaml``) and reach a little
  past them: renders randomize the scene, this randomizes the camera that sees it, cheaply, on every batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from policies.perception_config import PhotometricConfig

BLUR_RADIUS_SIGMAS = 3.0
"""The blur kernel reaches this many standard deviations each way."""


def random_shift(frames: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """DrQ's augmentation: every frame ``(B, H, W, C)`` moved by its own random whole number of pixels in
    ``[-pad, pad]`` along each axis, the edge pixels repeated into the uncovered border."""
    if pad == 0:
        return frames
    b, h, w = frames.shape[:3]
    padded = edge_padded(frames, pad)
    offsets = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, y:y + h, x:x + w] for i, (y, x) in enumerate(offsets)])


def shifted(frames: Tensor, dx: int, dy: int) -> Tensor:
    """Frames ``(B, H, W, C)`` all moved ``dx`` pixels right and ``dy`` down, the edge pixels repeated into the
    uncovered border (test-time views; the operations export to ONNX)."""
    if dx == 0 and dy == 0:
        return frames
    h, w = frames.shape[1], frames.shape[2]
    pad = max(abs(dx), abs(dy))
    return edge_padded(frames, pad)[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w]


def edge_padded(frames: Tensor, pad: int) -> Tensor:
    """Frames ``(B, H, W, C)`` grown by ``pad`` pixels on every side, each edge row and column repeated."""
    # Concatenated repeated edges, not gathers: gathers of uint8 pixels (fancy indexing, index_select) cost ten
    # times more on a CPU.
    rows = torch.cat([frames[:, :1].expand(-1, pad, -1, -1), frames, frames[:, -1:].expand(-1, pad, -1, -1)], 1)
    return torch.cat([rows[:, :, :1].expand(-1, -1, pad, -1), rows, rows[:, :, -1:].expand(-1, -1, pad, -1)], 2)


def _uniform(b: int, low: float, high: float, generator: torch.Generator, *shape: int) -> Tensor:
    return low + (high - low) * torch.rand((b, *shape), generator=generator)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Each image of ``x`` ``(B, C, H, W)`` convolved with a Gaussian of its own ``sigma`` (pixels, ``(B,)``; 0 is
    none), separably, the edges repeated."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(BLUR_RADIUS_SIGMAS * float(sigma.max())))
    taps = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (taps[None, :] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B C, taps)
    y = torch.nn.functional.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    y = torch.nn.functional.conv2d(y, kernel[:, None, None, :], groups=b * c)
    y = torch.nn.functional.conv2d(y, kernel[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def photometric(frames: Tensor, cfg: PhotometricConfig, generator: torch.Generator) -> Tensor:
    """uint8 frames ``(B, H, W, 3)`` as another camera under another light would give them, uint8 again: per image
    a log-uniform gain, a tint (a gain per channel), a gamma, a saturation and a contrast factor, an offset (all
    as fractions of full scale), a Gaussian defocus and Gaussian noise, clipped to the sensor's range."""
    b = frames.shape[0]
    x = frames.to(torch.float32).permute(0, 3, 1, 2) / 255.0
    gain = torch.exp(_uniform(b, math.log(cfg.gain[0]), math.log(cfg.gain[1]), generator, 1, 1, 1))
    tint = _uniform(b, cfg.tint, 1.0, generator, 3, 1, 1)
    x = (x * gain * tint).clamp(0.0, 1.0)
    x = x ** _uniform(b, *cfg.gamma, generator, 1, 1, 1)
    grey = x.mean(dim=1, keepdim=True)
    x = grey + _uniform(b, *cfg.saturation, generator, 1, 1, 1) * (x - grey)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = mean + _uniform(b, *cfg.contrast, generator, 1, 1, 1) * (x - mean)
    x = x + _uniform(b, -cfg.offset, cfg.offset, generator, 1, 1, 1)
    if cfg.blur_sigma > 0.0:
        x = _blur(x, _uniform(b, 0.0, cfg.blur_sigma, generator))
    x = x + _uniform(b, 0.0, cfg.noise_std, generator, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return torch.round(x.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
