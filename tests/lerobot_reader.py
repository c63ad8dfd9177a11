"""Read a LeRobot v3.0 dataset with LeRobot's own loader and save every frame's columns to an npz file.

Run by ``tests/test_datasets.py`` in the interpreter named by ``S2R_LEROBOT_PYTHON``: LeRobot's loader needs
torchvision, whose wheels pin a torch other than this stack's 2.13.0, so it lives in a venv of its own
(``make lerobot-check`` builds it from ``ci/lerobot-requirements.txt``). This file imports nothing of s2r.

Usage: python lerobot_reader.py REPO_ID ROOT OUT.npz
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def _dataset_class() -> type:
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError:
        from ledataset.datasets.lerobot_dataset import LeRobotDataset  # the standalone lerobot-dataset package
    return LeRobotDataset


def main(repo_id: str, root: str, out: str) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the dataset is local; never ask the Hub
    dataset = _dataset_class()(repo_id, root=root)
    items = [dataset[i] for i in range(len(dataset))]
    columns = {key: np.stack([np.asarray(item[key]) for item in items])
               for key in items[0] if key != "task"}
    header = {"num_episodes": dataset.num_episodes, "num_frames": dataset.num_frames, "fps": dataset.fps,
              "tasks": sorted({item["task"] for item in items}), "s2r": dataset.meta.info.get("s2r")}
    np.savez(out, header=np.array(json.dumps(header)), **columns)


if __name__ == "__main__":
    main(*sys.argv[1:4])
