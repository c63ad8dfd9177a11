"""The settings of the valve-angle estimator's network and training (:mod:`policies.perception`), importable without
torch (the command line reads them for its help and checks them before loading torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from s2r.core.errors import ParameterError
from sim.models.dclaw import NOMINAL_GEOMETRY

PERCEPTION = "perception"
"""How errors name these settings (``perception epochs must be ...``)."""


@dataclass(frozen=True)
class AngleNetConfig:
    """The network's shape: strided convolutions, a spatial soft-argmax per feature map, an MLP to (cos, sin)."""

    channels: tuple[int, ...] = (32, 32, 64, 64)
    """Output channels of each 3x3 convolution; the first two halve the image (stride 2), the rest keep it. The
    fourth layer and the wider MLP cost half again the training time and bring PyBullet's renders, an engine the
    network never trained on, within the 10 deg goal (README, *Reading the valve angle from the camera*)."""
    hidden: int = 256
    """Units of the MLP's hidden layers."""
    symmetry: int = NOMINAL_GEOMETRY.spoke_count
    """Rotational symmetry of the object's shape, the valve's spoke count (1: none). With ``k > 1`` the head also
    regresses (cos k theta, sin k theta), an angle that all k spokes show alike whatever their colours, and the
    plain (cos theta, sin theta) only picks which of its k candidates is meant: the precise angle comes from
    every spoke, the marked spoke only settles which is which."""
    standardize: bool = True
    """Scale each image to zero mean per channel and unit spread over all its pixels before the convolutions (in the
    graph): a dimmer, brighter or flatter image of the same scene reaches them alike, so the exposure and the light's
    strength need not be learned away."""

    def validated(self) -> AngleNetConfig:
        """This config, or a :class:`ParameterError` naming the bad field."""
        if not self.channels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                        for c in self.channels):
            raise ParameterError("channels", f"must be one or more whole numbers >= 1, got {self.channels!r}",
                                 PERCEPTION)
        if isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1:
            raise ParameterError("hidden", f"must be a whole number >= 1, got {self.hidden!r}", PERCEPTION)
        if isinstance(self.symmetry, bool) or not isinstance(self.symmetry, int) or self.symmetry < 1:
            raise ParameterError("symmetry", f"must be a whole number >= 1 (1: no symmetry), got {self.symmetry!r}",
                                 PERCEPTION)
        if not isinstance(self.standardize, bool):
            raise ParameterError("standardize", f"must be true or false, got {self.standardize!r}", PERCEPTION)
        return self

    def to_json(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden, "symmetry": self.symmetry,
                "standardize": self.standardize}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AngleNetConfig:
        """The config :meth:`to_json` wrote (a checkpoint's), validated; checkpoints from before ``symmetry`` had
        none (1), from before ``standardize`` no standardization."""
        return cls(tuple(int(c) for c in data["channels"]), int(data["hidden"]), int(data.get("symmetry", 1)),
                   bool(data.get("standardize", False))).validated()


def _range(name: str, value: tuple[float, float], low: float, high: float) -> None:
    ok = (isinstance(value, tuple) and len(value) == 2 and all(math.isfinite(v) for v in value)
          and low <= value[0] <= value[1] <= high)
    if not ok:
        raise ParameterError(name, f"must be a (low, high) pair with {low} <= low <= high <= {high}, got {value!r}",
                             PERCEPTION)


@dataclass(frozen=True)
class PhotometricConfig:
    """Ranges of :func:`policies.augment.photometric`, each drawn uniformly per image (the gain log-uniformly).
    Fractions of full scale where not factors. Wider ranges (a quarter of the gain, saturation down to 0.3) cost the
    estimator the marked spoke's colour: it then picked the wrong spoke more often, in distribution too."""

    gain: tuple[float, float] = (0.4, 1.5)
    """Exposure and light strength: the image times this factor (40 % as bright to half again)."""
    tint: float = 0.85
    """Each channel's own further factor lies in [tint, 1]: a coloured light or white balance."""
    gamma: tuple[float, float] = (0.8, 1.25)
    """The sensor's response: each value to this power."""
    saturation: tuple[float, float] = (0.7, 1.3)
    """Colour: 0 is grey, 1 unchanged, above 1 more vivid."""
    contrast: tuple[float, float] = (0.6, 1.3)
    """Distance from the image's mean times this factor."""
    offset: float = 0.1
    """A black level added, uniform in [-offset, offset]."""
    blur_sigma: float = 1.0
    """Defocus: a Gaussian of standard deviation up to this (pixels)."""
    noise_std: float = 0.04
    """Sensor noise: Gaussian, standard deviation up to this."""

    def validated(self) -> PhotometricConfig:
        """This config, or a :class:`ParameterError` naming the bad field."""
        _range("gain", self.gain, 1e-3, 1e3)
        _range("gamma", self.gamma, 1e-2, 1e2)
        _range("saturation", self.saturation, 0.0, 10.0)
        _range("contrast", self.contrast, 0.0, 10.0)
        for name, high in (("tint", 1.0), ("offset", 1.0), ("blur_sigma", 10.0), ("noise_std", 1.0)):
            v = getattr(self, name)
            if not (isinstance(v, float | int) and math.isfinite(v) and 0.0 <= v <= high):
                raise ParameterError(name, f"must be in [0, {high}], got {v!r}", PERCEPTION)
        return self


@dataclass(frozen=True)
class PerceptionTrainConfig:
    """Supervised training of the estimator on rendered images."""

    epochs: int = 12
    """Passes over the training images (at least 1)."""
    batch_size: int = 64
    """Images per gradient step."""
    lr: float = 2e-3
    """Adam's learning rate at the start; it decays to zero along a cosine over the run."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    seed: int = 0
    """Seed of the initial weights and the batch order."""
    net: AngleNetConfig = AngleNetConfig()
    """The network."""
    shift: int = 4
    """Every training image moved by up to this many pixels each way (DrQ's random shift; 0: none): the camera
    mounted a little off."""
    photometric: PhotometricConfig | None = PhotometricConfig()
    """Every training image as another camera under another light would see it (``None``: as rendered)."""

    def validated(self) -> PerceptionTrainConfig:
        """This config, or a :class:`ParameterError` naming the bad field."""
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(name, f"must be a whole number >= 1, got {v!r}", PERCEPTION)
        if not (math.isfinite(self.lr) and self.lr > 0.0):
            raise ParameterError("lr", f"must be a positive learning rate, got {self.lr!r}", PERCEPTION)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0.0):
            raise ParameterError("weight_decay", f"must be >= 0, got {self.weight_decay!r}", PERCEPTION)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ParameterError("seed", f"must be a whole number >= 0, got {self.seed!r}", PERCEPTION)
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or not 0 <= self.shift <= 16:
            raise ParameterError("shift", f"must be a whole number of pixels in [0, 16], got {self.shift!r}",
                                 PERCEPTION)
        if self.photometric is not None:
            self.photometric.validated()
        self.net.validated()
        return self

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "net": self.net.to_json()}
