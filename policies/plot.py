"""The learning-curve figure of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from s2r.core.atomicio import atomic_path


def plot_learning_curve(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Training return, evaluation return (± std) and evaluation success rate against environment steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r.get("kind") == "train" and r.get("return_mean") is not None]
    evals = [r for r in rows if r.get("kind") == "eval"]
    has_success = any(r.get("success_rate") is not None for r in evals)
    fig, axes = plt.subplots(
        2 if has_success else 1, 1, figsize=(7, 6 if has_success else 3.5), sharex=True, squeeze=False
    )
    ax = axes[0][0]
    if train:
        ax.plot([r["step"] for r in train], [r["return_mean"] for r in train], label="training episodes", alpha=0.6)
    if evals:
        steps = [r["step"] for r in evals]
        mean = [r["return_mean"] for r in evals]
        std = [r["return_std"] for r in evals]
        ax.plot(steps, mean, marker="o", markersize=3, label="evaluation (deterministic)")
        ax.fill_between(
            steps,
            [m - s for m, s in zip(mean, std, strict=True)],
            [m + s for m, s in zip(mean, std, strict=True)],
            alpha=0.2,
        )
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or evals:
        ax.legend(loc="lower right")
    if has_success:
        ax2 = axes[1][0]
        pts = [(r["step"], r["success_rate"]) for r in evals if r.get("success_rate") is not None]
        ax2.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, color="tab:green")
        ax2.set_ylim(-0.05, 1.05)
        ax2.set_ylabel("evaluation success rate")
        ax2.grid(alpha=0.3)
    axes[-1][0].set_xlabel("environment steps")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
