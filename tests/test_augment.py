"""Training-time image augmentations (:mod:`policies.augment`): DrQ's shift and the photometric camera model."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")

from policies.augment import photometric, random_shift  # noqa: E402 -- after the torch check
from policies.perception import standardized  # noqa: E402
from policies.perception_config import PerceptionTrainConfig, PhotometricConfig  # noqa: E402
from s2r.core.errors import ParameterError  # noqa: E402

IDENTITY = PhotometricConfig(gain=(1.0, 1.0), tint=1.0, gamma=(1.0, 1.0), saturation=(1.0, 1.0),
                             contrast=(1.0, 1.0), offset=0.0, blur_sigma=0.0, noise_std=0.0)


def test_the_shift_moves_each_frame_by_whole_pixels_within_the_pad_and_repeats_the_edges() -> None:
    frames = torch.randint(0, 256, (32, 12, 10, 3), dtype=torch.uint8)
    shifted = random_shift(frames, 3, torch.Generator().manual_seed(0))
    assert shifted.shape == frames.shape and shifted.dtype == torch.uint8
    seen = set()
    for f, s in zip(frames, shifted, strict=True):
        rows = (torch.arange(12)[:, None] + torch.arange(-3, 4)[None]).clamp(0, 11)  # (H, candidate dy)
        cols = (torch.arange(10)[:, None] + torch.arange(-3, 4)[None]).clamp(0, 9)
        matches = [(dy, dx) for dy in range(7) for dx in range(7)
                   if torch.equal(f[rows[:, dy]][:, cols[:, dx]], s)]
        assert matches, "a frame is not a whole-pixel shift of its original"
        seen.add(matches[0])
    assert len(seen) > 10  # each frame draws its own shift
    assert torch.equal(random_shift(frames, 0, torch.Generator()), frames)
    again = random_shift(frames, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again, shifted)


def test_photometric_with_every_range_at_identity_gives_the_frames_back() -> None:
    frames = torch.randint(0, 256, (8, 12, 10, 3), dtype=torch.uint8)
    out = photometric(frames, IDENTITY, torch.Generator().manual_seed(0))
    assert out.dtype == torch.uint8 and torch.equal(out, frames)


def test_photometric_draws_per_image_is_seeded_and_stays_in_the_sensor_range() -> None:
    frames = torch.full((16, 12, 10, 3), 128, dtype=torch.uint8).repeat(2, 1, 1, 1)
    out = photometric(frames, PhotometricConfig(), torch.Generator().manual_seed(3))
    again = photometric(frames, PhotometricConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    means = out.float().mean(dim=(1, 2, 3))
    assert len(set(means.round().tolist())) > 8  # each image draws its own camera
    assert int(out.min()) >= 0 and int(out.max()) <= 255


def test_each_photometric_effect_does_what_its_field_says() -> None:
    g = torch.Generator().manual_seed(0)
    frames = torch.zeros((4, 16, 16, 3), dtype=torch.uint8)
    frames[:, :, 8:] = torch.tensor([200, 40, 40], dtype=torch.uint8)  # right half red on black
    dark = photometric(frames, replace(IDENTITY, gain=(0.5, 0.5)), g)
    assert torch.allclose(dark.float(), (frames.float() * 0.5).round(), atol=1.0)
    grey = photometric(frames, replace(IDENTITY, saturation=(0.0, 0.0)), g)
    assert torch.all(grey[..., 0] == grey[..., 1]) and torch.all(grey[..., 1] == grey[..., 2])
    blurred = photometric(frames, replace(IDENTITY, blur_sigma=1.5), g)
    assert torch.all(blurred[:, :, 0] == 0) and torch.all(blurred[:, :, -1, 0] == 200)  # far from the edge
    assert torch.all(blurred[:, :, 7, 0] <= blurred[:, :, 8, 0])  # the step stays a rise ...
    assert int(blurred[:, :, 7, 0].max()) > 0 or int(blurred[:, :, 8, 0].min()) < 200  # ... once some blur is drawn
    noisy = photometric(frames, replace(IDENTITY, noise_std=0.05), g)
    assert not torch.equal(noisy, frames)
    assert (noisy.float() - frames.float()).abs().mean() < 0.05 * 255


def test_standardized_images_do_not_depend_on_gain_or_offset() -> None:
    x = torch.rand((3, 3, 12, 10)) * 0.5
    a, b = standardized(x), standardized(0.3 * x - 0.2)
    assert torch.allclose(a, b, atol=1e-5)
    flat = standardized(torch.full((1, 3, 4, 4), 0.7))
    assert torch.allclose(flat, torch.zeros_like(flat), atol=1e-5)  # no noise blown up


@pytest.mark.parametrize("field, value, message", [
    ("gain", (2.0, 1.0), "gain must be a (low, high) pair"),
    ("noise_std", -0.1, "noise_std must be in [0, 1.0]"),
    ("tint", 1.5, "tint must be in [0, 1.0]"),
])
def test_a_bad_photometric_range_is_named(field: str, value: object, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        PerceptionTrainConfig(photometric=PhotometricConfig(**{field: value})).validated()  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="shift"):
        PerceptionTrainConfig(shift=-1).validated()


def test_standardized_does_not_depend_on_the_order_pixels_are_summed_in() -> None:
    """onnxruntime sums in another order than PyTorch; a dark image's small spread would scale that difference up
    (float32 sums differ here by 6e-6, the export check allows 1e-4 rad at the end of the network)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (16, 3, 84, 84), generator=g).to(torch.float32) * (2 / 255) - 0.7  # 4 grey levels
    perm = torch.randperm(84 * 84, generator=g)

    def shuffled(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        return t.reshape(16, 3, -1)[..., order].reshape(16, 3, 84, 84)

    again = shuffled(standardized(shuffled(x, perm)), torch.argsort(perm))
    assert float((standardized(x) - again).abs().max()) <= 1e-6
