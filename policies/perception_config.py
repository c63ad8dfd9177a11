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

    channels: tuple[int, ...] = (32, 32, 64)
    """Output channels of each 3x3 convolution; the first two halve the image (stride 2), the rest keep it."""
    hidden: int = 128
    """Units of the MLP's hidden layer."""
    symmetry: int = NOMINAL_GEOMETRY.spoke_count
    """Rotational symmetry of the object's shape, the valve's spoke count (1: none). With ``k > 1`` the head also
    regresses (cos k theta, sin k theta), an angle that all k spokes show alike whatever their colours, and the
    plain (cos theta, sin theta) only picks which of its k candidates is meant: the precise angle comes from
    every spoke, the marked spoke only settles which is which."""

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
        return self

    def to_json(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden, "symmetry": self.symmetry}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AngleNetConfig:
        """The config :meth:`to_json` wrote (a checkpoint's), validated; checkpoints from before ``symmetry`` had
        none (1)."""
        return cls(tuple(int(c) for c in data["channels"]), int(data["hidden"]),
                   int(data.get("symmetry", 1))).validated()


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
        self.net.validated()
        return self

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "net": self.net.to_json()}
